"""U-Net (Ronneberger et al. 2015) as a plain-regression denoiser.

Level k carries width * 2**k channels; there are `depth` down-samplings. With width=64,
depth=4, batch norm and transposed-conv up-sampling (channels 64..1024) and one input and
output channel it has 31,036,481 parameters, the seed study's U-Net.
"""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import DoubleConv, down, up


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 16,
        depth: int = 4,
        norm: str = "batch",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        self.depth = depth
        chans = [width * 2**k for k in range(depth + 1)]
        self.stem = DoubleConv(in_channels, chans[0], norm)
        self.pool = down()
        self.encoders = nn.ModuleList(
            DoubleConv(chans[k - 1], chans[k], norm) for k in range(1, depth + 1)
        )
        # ups[k] takes level k+1 to level k; the skip concat restores 2 * chans[k] channels.
        self.ups = nn.ModuleList(up(chans[k + 1], upsample) for k in range(depth))
        self.decoders = nn.ModuleList(
            DoubleConv(2 * chans[k], chans[k], norm) for k in range(depth)
        )
        self.head = nn.Conv2d(chans[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = [x]
        for encoder in self.encoders:
            x = encoder(self.pool(x))
            skips.append(x)
        for k in reversed(range(self.depth)):
            x = self.decoders[k](torch.cat([skips[k], self.ups[k](x)], dim=1))
        # No output activation: the denoised image is a plain regression target.
        return self.head(x)
