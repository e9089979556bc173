"""The seed study's own networks, layer for layer, so that its checkpoints load by key name.

The module attribute names are the seed code's own, so `state_dict()` keys (and their order)
equal those of a checkpoint saved by the seed study: at width 64, depth 4, one channel in and
out, the notebook U-Net (arch "seed") has keys conv1.0.weight .. conv5.*, upconv6.weight,
conv6.* .. conv9.*, final_conv.* and 31,036,481 parameters; the DDP-script U-Net (arch
"seed-ddp") has the same names with a BatchNorm after each conv (31,042,369); the U-Net++ has
conv{i}_{j}.block.*, final.* (36,621,185). Other depths extend the numbering: the U-Net has
encoder blocks conv1..conv{depth+1}, then upconv{n} / conv{n} for n = depth+2 .. 2*depth+1.

Norm (BatchNorm), up-sampling, no residual and one head are what the seed code fixes; the
bench networks (models.unet, models.unetpp) are where those are options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SEED_ARCHS = ("seed", "seed-ddp")


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    # The seed keeps the conv bias even where a BatchNorm follows; its parameter counts need it.
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)


def notebook_block(c_in: int, c_out: int) -> nn.Sequential:
    """The seed notebook's conv_block: Conv -> ReLU -> Conv -> BatchNorm -> ReLU (one BN)."""
    return nn.Sequential(_conv3(c_in, c_out), nn.ReLU(inplace=True), _conv3(c_out, c_out),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def ddp_block(c_in: int, c_out: int) -> nn.Sequential:
    """The seed DDP script's block: (Conv -> BatchNorm -> ReLU) x 2."""
    return nn.Sequential(_conv3(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         _conv3(c_out, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _check_arch(arch: str) -> None:
    if arch not in SEED_ARCHS:
        raise ValueError(f"unknown seed arch {arch!r}; choose one of: {', '.join(SEED_ARCHS)}")


class SeedUNet(nn.Module):
    """The seed's U-Net: arch "seed" is the notebook's (one BatchNorm per block, decoder input
    cat(skip, up)); arch "seed-ddp" is the DDP script's (two BatchNorms, cat(up, skip))."""

    model_name = "unet"

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 64,
                 depth: int = 4, arch: str = "seed") -> None:
        super().__init__()
        _check_arch(arch)
        self.arch, self.width, self.depth = arch, width, depth
        self.skip_first = arch == "seed"
        block = notebook_block if arch == "seed" else ddp_block
        chans = [width * 2**k for k in range(depth + 1)]
        self.pool = nn.MaxPool2d(2)
        # Registration order is state_dict order: encoder, then (upconv, conv) per level.
        for k in range(depth + 1):
            c_in = in_channels if k == 0 else chans[k - 1]
            self.add_module(f"conv{k + 1}", block(c_in, chans[k]))
        for k in reversed(range(depth)):
            n = 2 * depth + 1 - k
            self.add_module(f"upconv{n}", nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2))
            self.add_module(f"conv{n}", block(2 * chans[k], chans[k]))
        self.final_conv = nn.Conv2d(chans[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k in range(self.depth + 1):
            x = getattr(self, f"conv{k + 1}")(x if k == 0 else self.pool(x))
            skips.append(x)
        for k in reversed(range(self.depth)):
            n = 2 * self.depth + 1 - k
            up = getattr(self, f"upconv{n}")(x)
            pair = (skips[k], up) if self.skip_first else (up, skips[k])
            x = getattr(self, f"conv{n}")(torch.cat(pair, dim=1))
        # The notebook returns {"final": out}; bench trains on a tensor, so return the tensor.
        return self.final_conv(x)


class ConvBlock(nn.Module):
    """The seed U-Net++'s node: the notebook conv_block held as `.block` (its key prefix)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.block = notebook_block(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class SeedUNetPlusPlus(nn.Module):
    """The seed's U-Net++: node X[i][j] is conv{i}_{j}; for j >= 1 its input is
    cat(X[i][0..j-1], up(X[i+1][j-1])) at full width, up being bilinear interpolation with
    align_corners=True (no conv); one 1x1 head `final` on X[0][depth]. The seed's DDP script
    builds this same one-head network, so arch "seed-ddp" gives it too (its notebook version
    adds three untrained heads final_X01..final_X03, not built here)."""

    model_name = "unetpp"

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 64,
                 depth: int = 4, arch: str = "seed") -> None:
        super().__init__()
        _check_arch(arch)
        self.arch, self.width, self.depth = arch, width, depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.pool = nn.MaxPool2d(2)
        # The seed registers column by column (conv0_0..conv4_0, conv0_1..conv3_1, ...).
        for j in range(depth + 1):
            for i in range(depth + 1 - j):
                if j == 0:
                    c_in = in_channels if i == 0 else chans[i - 1]
                else:
                    c_in = j * chans[i] + chans[i + 1]
                self.add_module(f"conv{i}_{j}", ConvBlock(c_in, chans[i]))
        self.final = nn.Conv2d(chans[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # grid[i] holds the computed nodes X[i][0..] of level i.
        grid: list[list[torch.Tensor]] = []
        for i in range(self.depth + 1):
            x = getattr(self, f"conv{i}_0")(x if i == 0 else self.pool(x))
            grid.append([x])
        # Fill column by column so X[i+1][j-1] is ready before X[i][j].
        for j in range(1, self.depth + 1):
            for i in range(self.depth - j + 1):
                below = F.interpolate(grid[i + 1][j - 1], scale_factor=2, mode="bilinear",
                                      align_corners=True)
                grid[i].append(getattr(self, f"conv{i}_{j}")(torch.cat([*grid[i], below], dim=1)))
        return self.final(grid[0][self.depth])


def build_seed_model(name: str, arch: str, in_channels: int, out_channels: int, width: int,
                     depth: int) -> nn.Module:
    """The seed network for model `name` ("unet" or "unetpp") and `arch`."""
    cls = SeedUNet if name == "unet" else SeedUNetPlusPlus
    return cls(in_channels, out_channels, width, depth, arch)
