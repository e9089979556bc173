"""U-Net++ (Zhou et al. 2018): a nested U-Net with dense skip connections.

Node X[i][j] (level i, column j, i + j <= depth) is a double conv block. Column 0 is the
encoder; for j >= 1, X[i][j] sees the concatenation of X[i][0..j-1] and the up-sampled
X[i+1][j-1] (up-sampling halves the channels to level i's count), so its input has
(j + 1) * width * 2**i channels. Each top node X[0][j], j = 1..depth, can have a 1x1 head.

Parameter count, width=64, depth=4, bilinear, batch norm, 1 in / 1 out channel:
33,411,780 with the four deep-supervision heads (33,411,585 with the single head built
without deep supervision). The seed study's 36.6 M matches concatenating the up-sampled
node below at full width (no channel-halving 1x1 conv), which widens every nested node's
input: that variant counts 36,621,380. Here the up step is the same as the U-Net's.
"""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import DoubleConv, down, up


class UNetPlusPlus(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 16,
        depth: int = 4,
        norm: str = "batch",
        upsample: str = "bilinear",
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.deep_supervision = deep_supervision
        chans = [width * 2**i for i in range(depth + 1)]
        self.pool = down()
        # nodes[i][j] is X[i][j]; ups[i][j] up-samples X[i+1][j] onto level i.
        self.nodes = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(depth + 1):
            first = DoubleConv(in_channels if i == 0 else chans[i - 1], chans[i], norm)
            row = [first] + [
                DoubleConv((j + 1) * chans[i], chans[i], norm) for j in range(1, depth - i + 1)
            ]
            self.nodes.append(nn.ModuleList(row))
            if i < depth:
                self.ups.append(nn.ModuleList(up(chans[i + 1], upsample) for _ in range(depth - i)))
        # Without deep supervision only the last head is built: unused heads would hold
        # parameters that never get a gradient, which DistributedDataParallel rejects.
        n_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(
            nn.Conv2d(chans[0], out_channels, kernel_size=1) for _ in range(n_heads)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        # grid[i] holds the computed nodes X[i][0..] of level i.
        grid: list[list[torch.Tensor]] = []
        for i in range(self.depth + 1):
            x = self.nodes[i][0](x if i == 0 else self.pool(x))
            grid.append([x])
        # Fill anti-diagonals so X[i+1][j-1] is ready before X[i][j].
        for j in range(1, self.depth + 1):
            for i in range(self.depth - j + 1):
                below = self.ups[i][j - 1](grid[i + 1][j - 1])
                grid[i].append(self.nodes[i][j](torch.cat([*grid[i], below], dim=1)))
        if self.deep_supervision and self.training:
            return [head(top) for head, top in zip(self.heads, grid[0][1:])]
        # No output activation: the denoised image is a plain regression target.
        return self.heads[-1](grid[0][-1])
