"""Building blocks shared by the U-Net and U-Net++ denoisers."""

from __future__ import annotations

from torch import nn

NORMS = ("batch", "group", "none")
UPSAMPLES = ("transpose", "bilinear")


def group_count(channels: int, most: int = 8) -> int:
    """Largest group count <= `most` that divides `channels` (GroupNorm needs a divisor)."""
    groups = min(most, channels)
    while channels % groups:
        groups -= 1
    return groups


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation layer after each conv; "none" gives an identity."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")


class DoubleConv(nn.Sequential):
    """(3x3 conv -> norm -> ReLU) x 2, spatial size preserved."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch") -> None:
        # A norm layer right after the conv makes the conv bias redundant.
        bias = norm == "none"
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [
                nn.Conv2d(c_in, out_channels, kernel_size=3, padding=1, bias=bias),
                make_norm(norm, out_channels),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


def down() -> nn.Module:
    """Halve the spatial size."""
    return nn.MaxPool2d(2)


def up(channels: int, upsample: str) -> nn.Module:
    """Double the spatial size and halve the channel count."""
    if upsample == "transpose":
        return nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2)
    if upsample == "bilinear":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(channels, channels // 2, kernel_size=1),
        )
    raise ValueError(f"unknown upsample {upsample!r}; choose one of: {', '.join(UPSAMPLES)}")


class GlobalResidual(nn.Module):
    """Output = input + net(input): the network learns the noise to remove (global residual
    learning, as in DnCNN). It starts from the noisy image instead of from a random one, which
    is what lets a short CPU run denoise at all. Deep-supervision heads each get the input."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        if isinstance(out, list):
            return [x + o for o in out]
        return x + out
