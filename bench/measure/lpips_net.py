"""LPIPS v0.1 with AlexNet (Zhang et al. 2018), built here from its definition.

The `lpips` package computes the same thing, but importing it pulls in torchvision's model
zoo and with it torch._dynamo: about 1.5 s of start-up in every rank process that evaluates,
which is most of a small cell's evaluation time. Only its shipped v0.1 linear heads are used,
read as a file; the tests check this network against the package and against an independent
functional version.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# AlexNet's feature convs that LPIPS taps (torchvision's `features` indices): stride, padding,
# and whether a 3×3/2 max-pool comes before the conv. Each conv's ReLU output is one layer.
ALEX_TAPS = {0: (4, 2, False), 3: (1, 2, True), 6: (1, 1, True), 8: (1, 1, False),
             10: (1, 1, False)}
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS's ScalingLayer, for inputs in [-1, 1]
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # as lpips.normalize_tensor


def heads_file() -> Path | None:
    """The v0.1 AlexNet linear heads that ship inside the lpips package (not imported)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


def load_heads(path: Path) -> list[torch.Tensor]:
    """The five 1×1 head kernels as (C,) vectors, layer by layer."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    heads = [state[f"lin{i}.model.1.weight"].float().reshape(-1) for i in range(len(ALEX_TAPS))]
    return heads


class AlexLPIPS(nn.Module):
    """forward(x, y) -> (N,) distances for (N, 3, H, W) images in [-1, 1]."""

    def __init__(self, backbone: dict[int, tuple[torch.Tensor, torch.Tensor]],
                 heads: list[torch.Tensor]):
        super().__init__()
        self.convs = nn.ModuleDict()
        for idx, (weight, bias) in backbone.items():
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2])
            with torch.no_grad():
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
            self.convs[str(idx)] = conv
        self.heads = nn.ParameterList(nn.Parameter(h.clone()) for h in heads)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def features(self, z: torch.Tensor) -> list[torch.Tensor]:
        z, out = (z - self.shift) / self.scale, []
        for idx, (stride, padding, pool_first) in ALEX_TAPS.items():
            if pool_first:
                z = F.max_pool2d(z, 3, 2)
            conv = self.convs[str(idx)]
            z = F.relu(F.conv2d(z, conv.weight, conv.bias, stride=stride, padding=padding))
            out.append(z)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], device=x.device)
        for head, a, b in zip(self.heads, self.features(x), self.features(y)):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + EPS)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + EPS)
            total = total + ((a - b) ** 2 * head.view(1, -1, 1, 1)).sum(1).mean((1, 2))
        return total
