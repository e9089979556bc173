"""The GPU check: install the GPU kit, train a few small cells on the machine's own torch and
check the values their records hold, not only that they ran. `scripts/gpu-check.sh` runs it.

    python3 scripts/gpu_check.py --device cuda [--kit gpu-kit] [--out DIR] [--work DIR]
    .venv/bin/python scripts/gpu_check.py --device cpu ...     (the CPU rehearsal)

Stages: (1) the kit: MANIFEST.json's sizes and SHA-256, then `pip install --no-index --no-deps
--target TARGET` of its wheels that this interpreter can install (never torch, triton, numpy or
NVIDIA's libraries: the machine's own stack stays as it is), BENCH_ASSETS's files, and the
imports bench needs (lpips, pydicom, deepspeed, hjson, pydantic) with PYTHONPATH=TARGET:REPO;
(2) cells through `python -m bench run`; (3) DDP on one device against single-device fp32
(`bench parity`'s own functions, so the largest relative difference is read, not just an exit
status). Every check is one line of the table (name, value, verdict); verdicts are PASS, FAIL,
SKIP (cannot apply here, with the reason: on a CPU the GPU-only checks say "skipped: no CUDA"),
WARN and INFO (reported, never failing). Exit 1 when any check FAILs.

Under DIR: checks.txt (the table), checks.json, records.tar.gz (every record.json with its
steps and telemetry tables and cell log; no weights). Cells run under WORK (default DIR/work).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from build_gpu_kit import sha256  # this folder: the kit's own hash

REPO = Path(__file__).resolve().parent.parent
MODULES = ("lpips", "pydicom", "deepspeed", "hjson", "pydantic")
ASSETS = ("alexnet.ckpt", "RG1_UNCR.dcm")
# Never installed from a kit: the machine's own GPU stack (torch and what it is built against).
PROTECTED = re.compile(r"^(torch|torchvision|torchaudio|triton|numpy|jax|jaxlib|nvidia-.*|cuda-.*)$")
TIMING_TOL = 0.05  # CUDA-event step times vs the wall-clock window
CLOCK_SLACK = 0.01  # the device's clock and the host's may disagree by this much over a window
PARITY_RTOL = 1e-4  # fp32: bench parity's own default
CELL_TIMEOUT_S = 240  # `bench run --timeout`: a hung cell ends as `timeout`, the check goes on
ARTEFACTS = ("record.json", "steps.parquet", "telemetry.parquet", "cell.log", "job.json",
             "spec.yaml", "spec.json", "summary.json")

# (group, `bench run` flags, measured): measured cells are sized so that the GPU, not the
# loader or the launch queue, sets the pace (seed U-Net, width 64, 256 px, 4 pinned-memory
# workers): on them step times, window, energy, busy % and MFU are checked.
GPU_CELLS = [
    ("precisions", ["--model", "unet", "--arch", "seed", "--width", "64", "--depth", "4",
                    "--image-size", "256", "--batch", "32", "--steps", "80", "--warmup", "15",
                    "--strategy", "single", "--precision", "fp32", "--precision", "tf32",
                    "--precision", "bf16", "--precision", "fp16", "--workers", "4",
                    "--pin-memory"], True),
    ("deepspeed", ["--model", "unet", "--width", "16", "--depth", "3", "--image-size", "64",
                   "--batch", "16", "--steps", "20", "--warmup", "5", "--strategy", "deepspeed",
                   "--zero", "2", "--devices", "1", "--precision", "bf16"], False),
]
CPU_CELLS = [
    ("tiny", ["--model", "unet", "--width", "4", "--depth", "2", "--image-size", "32",
              "--batch", "8", "--steps", "6", "--warmup", "2", "--strategy", "single",
              "--precision", "fp32"], True),
]
GPU_PARITY = ["--model", "unet", "--width", "16", "--depth", "3", "--image-size", "64",
              "--batch", "16", "--check-steps", "5"]
CPU_PARITY = ["--model", "unet", "--width", "4", "--depth", "2", "--image-size", "32",
              "--batch", "8", "--check-steps", "3"]


@dataclass
class Check:
    name: str
    value: str
    verdict: str  # PASS, FAIL, SKIP, WARN or INFO


def passed(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def no_cuda(name: str, what: str) -> Check:
    return Check(name, f"skipped: no CUDA ({what})", "SKIP")


def num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# ----------------------------------------------------------------------------- the kit



def check_manifest(kit: Path) -> Check:
    manifest = kit / "MANIFEST.json"
    if not manifest.is_file():
        return Check("kit manifest", f"no {manifest}: sizes and hashes not checked", "WARN")
    files = json.loads(manifest.read_text())["files"]
    bad = [f["path"] for f in files if not (kit / f["path"]).is_file()
           or (kit / f["path"]).stat().st_size != f["bytes"] or sha256(kit / f["path"]) != f["sha256"]]
    return Check("kit manifest", f"{len(files) - len(bad)}/{len(files)} files match"
                 + (f"; differ or missing: {', '.join(bad)}" if bad else ""), passed(not bad))


def installable(wheel: Path) -> bool:
    """Whether this interpreter can install the wheel (one of its tags is supported here)."""
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:  # pip vendors the same module
        from pip._vendor.packaging.tags import sys_tags
        from pip._vendor.packaging.utils import parse_wheel_filename
    supported = set(sys_tags())
    return any(tag in supported for tag in parse_wheel_filename(wheel.name)[3])


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project(wheel: Path) -> str:
    return normalise(wheel.name.split("-")[0])


def install_kit(kit: Path, target: Path, device: str = "cpu") -> tuple[Check, list[Path]]:
    """pip install --no-index --no-deps --target of the kit's wheels this Python can take. On
    the CPU rehearsal the kit's compiled wheels (for the GPU machine's Python) cannot be; on a
    GPU machine one that cannot is a kit built for another machine (WARN)."""
    wheels_dir = kit / "wheels"
    wheels = sorted(wheels_dir.glob("*.whl"))
    if not wheels:
        return Check("kit install", f"no wheels in {wheels_dir}: build the kit with `make "
                     "gpu-kit` and carry gpu-kit/", "FAIL"), []
    protected = [w for w in wheels if PROTECTED.match(project(w))]
    here = [w for w in wheels if w not in protected and installable(w)]
    elsewhere = [w for w in wheels if w not in protected and w not in here]
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    notes = []
    if elsewhere:
        notes.append(f"{len(elsewhere)} not for Python {sys.version_info[0]}.{sys.version_info[1]} "
                     f"here ({', '.join(project(w) for w in elsewhere)}; their modules come from "
                     "this interpreter's own packages)")
    if protected:
        notes.append(f"left to the machine: {', '.join(project(w) for w in protected)}")
    if not here:
        return Check("kit install", "; ".join(["0 wheels to install", *notes]),
                     "WARN" if elsewhere else "FAIL"), []
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-index", "--find-links", str(wheels_dir), "--no-deps", "--target", str(target),
           *map(str, here)]
    print("$", " ".join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    landed = {normalise(p.name.split("-")[0]) for p in target.glob("*.dist-info")}
    missing = [project(w) for w in here if project(w) not in landed]
    if proc.returncode != 0 or missing:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return Check("kit install", f"pip exit {proc.returncode}; not installed: "
                     f"{', '.join(missing) or '-'}; {' | '.join(tail)}", "FAIL"), here
    return Check("kit install", "; ".join([f"{len(here)}/{len(wheels)} wheels into {target}",
                                           *notes]),
                 "WARN" if elsewhere and device == "cuda" else "PASS"), here


def check_assets(assets: Path) -> Check:
    found = {n: (assets / n).stat().st_size for n in ASSETS if (assets / n).is_file()}
    missing = [n for n in ASSETS if not found.get(n)]
    value = ", ".join(f"{n} {b / 2**20:.1f} MiB" for n, b in found.items()) or "none"
    return Check("kit assets", f"BENCH_ASSETS={assets}: {value}"
                 + (f"; missing: {', '.join(missing)}" if missing else ""), passed(not missing))


IMPORT = """import importlib, importlib.metadata, json, sys
m = importlib.import_module(sys.argv[1])
try:
    v = importlib.metadata.version(sys.argv[1])
except importlib.metadata.PackageNotFoundError:
    v = getattr(m, "__version__", None)
print(json.dumps({"file": getattr(m, "__file__", None), "version": str(v)}))"""


def import_module(py: str, name: str, pythonpath: str) -> tuple[dict | None, str]:
    env = {**os.environ, "PYTHONPATH": pythonpath, "DS_BUILD_OPS": "0"}
    proc = subprocess.run([py, "-c", IMPORT, name], env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1]), ""
    return None, (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]


def check_imports(target: Path, device: str) -> list[Check]:
    """Each module bench needs, imported in a fresh process with PYTHONPATH=TARGET:REPO. On
    the CPU rehearsal a kit copy that cannot work here (its compiled half is for another
    Python) falls back to the venv's own, and the line says so (WARN)."""
    out = []
    for name in MODULES:
        got, err = import_module(sys.executable, name, f"{target}{os.pathsep}{REPO}")
        if got is None and device == "cpu":
            alone, _ = import_module(sys.executable, name, str(REPO))
            if alone is not None:
                out.append(Check(f"import {name}", f"the kit's copy fails here ({err}); this "
                                 f"interpreter's own {alone['version']} imports", "WARN"))
                continue
        if got is None:
            out.append(Check(f"import {name}", err, "FAIL"))
            continue
        where = "kit" if got["file"] and Path(got["file"]).resolve().is_relative_to(
            target.resolve()) else ("venv" if device == "cpu" else "machine")
        out.append(Check(f"import {name}", f"{got['version']} from the {where} "
                         f"({got['file']})", "PASS"))
    return out


# ----------------------------------------------------------------------------- cells

def run_cells(group: str, flags: list[str], device: str, work: Path,
              cells: int) -> tuple[int, str]:
    """`python -m bench run FLAGS` into WORK/GROUP: (exit status, its last line of stderr)."""
    out = work / group
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bench", "run", *flags, "--device", device, "--sample-hz", "20",
           "--timeout", str(CELL_TIMEOUT_S), "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=CELL_TIMEOUT_S * cells + 120)
    except subprocess.TimeoutExpired:
        return 124, f"`bench run` ({group}) exceeded its time"
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", flush=True)
    print(f"({group}: {time.monotonic() - start:.0f} s)", flush=True)
    return proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]


def load_cells(folder: Path) -> list[tuple[dict, "pandas.DataFrame | None"]]:  # noqa: F821
    import pandas as pd
    cells = []
    for record in sorted(folder.glob("*/record.json")):
        steps = record.parent / "steps.parquet"
        cells.append((json.loads(record.read_text()),
                      pd.read_parquet(steps) if steps.is_file() else None))
    return cells


def label(record: dict) -> str:
    cell = record.get("cell", {})
    return f"{cell.get('strategy')}-{cell.get('precision')}"


def check_status(record: dict) -> Check:
    ok = record.get("status") == "ok"
    why = "" if ok else f": {(record.get('error') or {}).get('message', '')}"[:200]
    return Check(f"{label(record)} status", f"{record.get('status')}{why}", passed(ok))


def check_timing(record: dict, steps) -> Check:
    """The CUDA-event step times of the timed steps against the wall-clock window that holds
    them: their sum (the device busy with steps) and the median step against the window's
    time per step. fp16 reads GradScaler's scale every step, a host sync that leaves the device
    idle while the next batch is fetched: reported there, not judged."""
    name = f"{label(record)} event vs window"
    timing = record.get("timing") or {}
    window, n = num(timing.get("train_time_s")), timing.get("timed_steps")
    if steps is None or not window or not n:
        return Check(name, "no timed window or steps table", "FAIL")
    timed = steps.loc[~steps["warmup"].astype(bool), "step_time_s"].astype(float)
    ratio = float(timed.sum()) / window
    median = num(timing.get("step_time_median_s")) or math.nan
    median_ratio = median / (window / n)
    recorded_idle = num(timing.get("idle_between_steps_frac"))
    value = (f"Σ steps {timed.sum():.3f} s / window {window:.3f} s = {ratio:.3f}; median "
             f"{median * 1e3:.2f} ms / window per step {window / n * 1e3:.2f} ms = "
             f"{median_ratio:.3f}")
    if timing.get("clock") != "cuda-events":
        return no_cuda(name, f"clock {timing.get('clock')}: {value}")
    consistent = recorded_idle is not None and abs((1 - ratio) - recorded_idle) < 1e-6 \
        or (recorded_idle == 0.0 and ratio > 1)
    if not consistent:
        return Check(name, f"{value}; the record's idle_between_steps_frac {recorded_idle} "
                     "disagrees with its own steps table", "FAIL")
    ok = 1 - TIMING_TOL <= ratio <= 1 + CLOCK_SLACK and abs(median_ratio - 1) <= TIMING_TOL \
        and len(timed) == n
    if record["cell"].get("precision") == "fp16":
        return Check(name, value + " (fp16: a host sync per step)", "INFO")
    return Check(name, value, passed(ok))


def check_energy(record: dict) -> Check:
    name = f"{label(record)} energy"
    t = record.get("telemetry") or {}
    method, per_img = t.get("energy_method"), num(t.get("energy_per_img_j"))
    value = (f"{per_img:.4g} J/img" if per_img is not None else "no J/img") + \
        f" by {method!r}, coverage {t.get('window_coverage')}"
    if record["cell"].get("device_type") != "cuda":
        return no_cuda(name, f"energy_method {method!r}")
    return Check(name, value, passed(isinstance(method, str) and method.startswith("counter")
                                     and per_img is not None and per_img > 0))


def check_busy(record: dict) -> Check:
    name = f"{label(record)} GPU busy"
    t = record.get("telemetry") or {}
    busy = num(t.get("gpu_busy_pct_mean"))
    if record["cell"].get("device_type") != "cuda":
        return no_cuda(name, f"gpu_busy_pct_mean {busy}")
    return Check(name, f"{busy}% over {t.get('samples_in_window')} samples in the window",
                 passed(busy is not None and 0 < busy <= 100))


def check_mfu(record: dict) -> Check:
    """MFU in (0, 1), and equal to the counted FLOPs over the window's time per step over the
    dense peak the table holds for this GPU and precision."""
    name = f"{label(record)} MFU"
    t, timing, cell = record.get("telemetry") or {}, record.get("timing") or {}, record["cell"]
    mfu = num(t.get("mfu"))
    if cell.get("device_type") != "cuda":
        return no_cuda(name, f"mfu {mfu}: {t.get('mfu_note')}")
    from bench.measure.flops import peak_tflops
    gpus = (record.get("env") or {}).get("gpus") or ["?"]
    peak = peak_tflops(gpus[0], cell["precision"])
    flops, window, n = num(t.get("flops_per_step")), num(timing.get("train_time_s")), \
        timing.get("timed_steps")
    if mfu is None or peak is None or not flops or not window or not n:
        return Check(name, f"mfu {mfu}, peak {peak} for {gpus[0]!r}: {t.get('mfu_note')}", "FAIL")
    tflops = flops / (window / n) / 1e12
    expected = tflops / (peak * cell.get("devices", 1))
    value = f"{mfu:.3f} = {tflops:.1f} TFLOP/s of {peak:g} {cell['precision']} ({gpus[0]})"
    ok = 0 < mfu < 1 and abs(mfu - expected) <= 1e-6 * expected
    if ok and "H200" not in gpus[0]:
        return Check(name, value + "; not an H200", "WARN")
    return Check(name, value, passed(ok))


def check_skips(record: dict) -> Check:
    """GradScaler's skipped fp16 steps in the timed window: an integer in [0, timed steps);
    any other precision skips nothing, so its count must be 0."""
    cell, runtime = record["cell"], record.get("runtime") or {}
    name = f"{label(record)} skipped steps"
    n = runtime.get("skipped_steps")
    if not isinstance(n, int) or isinstance(n, bool):
        return Check(name, f"{n!r} is not an integer", "FAIL")
    if cell.get("precision") != "fp16":
        return Check(name, f"{n} ({cell.get('precision')} scales no loss)", passed(n == 0))
    timed = (record.get("timing") or {}).get("timed_steps") or cell["steps"]
    return Check(name, f"{n} of {timed} timed steps skipped by GradScaler (warm-up: "
                       f"{runtime.get('warmup_skipped_steps')})", passed(0 <= n < timed))


def check_lpips(record: dict) -> Check:
    q = (record.get("quality") or [{}])[0]
    value = num(q.get("lpips"))
    return Check(f"{label(record)} LPIPS", f"{value} (weights: {q.get('lpips_weights')})",
                 passed(value is not None and value >= 0))


def check_breakdown(record: dict) -> Check:
    """The attribution probe's fractions add up; a distributed cell saw its collectives."""
    b = record.get("breakdown") or {}
    keys = ("data", "forward", "backward", "comm_exposed", "optimizer", "other")
    values = [num(b.get(k)) for k in keys]
    if any(v is None for v in values):
        return Check(f"{label(record)} breakdown", "missing", "FAIL")
    distributed = int(record["cell"].get("devices", 1)) > 1 and \
        record["cell"].get("strategy") != "dp"
    comm = num(b.get("comm_message_bytes_per_step")) or 0
    ok = all(v >= 0 for v in values) and abs(sum(values) - 1) <= 0.05 \
        and (comm > 0) == distributed
    text = " ".join(f"{k} {v:.1%}" for k, v in zip(keys, values)) + \
        f", {comm / 2**20:.2f} MiB/step, overlap {b.get('comm_overlap')}"
    return Check(f"{label(record)} breakdown", text, passed(ok))


def cell_checks(record: dict, steps, measured: bool) -> list[Check]:
    out = [check_status(record), check_skips(record)]
    if record.get("status") != "ok":
        return out
    out += [check_lpips(record), check_breakdown(record)]
    if measured:
        out += [check_timing(record, steps), check_energy(record), check_busy(record),
                check_mfu(record)]
    return out


def fp16_check(records: list[dict], device: str) -> list[Check]:
    if device != "cuda":
        return [no_cuda("fp16 GradScaler skips", "fp16 needs a CUDA GPU")]
    if not any(r["cell"].get("precision") == "fp16" for r in records):
        return [Check("fp16 GradScaler skips", "no fp16 cell recorded", "FAIL")]
    return []  # the fp16 cell's own "skipped steps" line is the check


# ----------------------------------------------------------------------------- parity

def parity(device: str) -> tuple[Check, dict | None]:
    """DDP on one device against single-device fp32, through `bench parity`'s functions."""
    name = "parity ddp×1 vs single fp32"
    flags = CPU_PARITY if device == "cpu" else GPU_PARITY
    try:
        from bench.cli.parsers import build_parser
        from bench.cli.run import resolve
        from bench.sweep.parity import run_parity
        from bench.sweep.plan import plan_sweep
        args = build_parser().parse_args(["parity", *flags, "--strategy", "ddp", "--devices",
                                          "1", "--norm", "group", "--device", device])
        args.steps, args.warmup = args.check_steps, 0  # as cmd_parity does
        resolved, _ = resolve(args, Path("parity"))
        plan = plan_sweep(resolved, None)
        report = run_parity(plan.cells, plan.prepared, plan.fingerprints)
    except Exception as exc:  # the check says why; the other checks still run
        return Check(name, f"{type(exc).__name__}: {exc}"[:300], "FAIL"), None
    checks = report["checks"]
    if len(checks) != 1:
        return Check(name, f"{len(checks)} comparisons, expected 1", "FAIL"), report
    c = checks[0]
    worst = c.get("worst_rel")
    value = (f"largest relative difference {worst:.2e} over {len(c['steps'])} steps "
             f"(rtol {c['rtol']:g})" if worst is not None else c["reason"])
    return Check(name, value, passed(c["passed"] and worst is not None
                                     and worst <= PARITY_RTOL)), report


# ----------------------------------------------------------------------------- main

def table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  verdict  value", "-" * (width + 60)]
    lines += [f"{c.name:<{width}}  {c.verdict:<7}  {c.value}" for c in checks]
    failed = sum(c.verdict == "FAIL" for c in checks)
    lines.append(f"{len(checks)} checks: {failed} failed, "
                 f"{sum(c.verdict == 'SKIP' for c in checks)} skipped")
    return "\n".join(lines)


def pack(work: Path, groups: list[str], dest: Path) -> None:
    """The cells' records and tables (no weights, no samples) and the parity report."""
    with tarfile.open(dest, "w:gz") as tar:
        for path in [work / "parity.json", *(p for g in groups for p in sorted((work / g).rglob("*")))]:
            if path.is_file() and (path.name in ARTEFACTS or path.name == "parity.json"):
                tar.add(path, arcname=path.relative_to(work).as_posix())


def environment(device: str) -> Check:
    import torch
    cuda = torch.cuda.is_available()
    value = (f"Python {sys.version.split()[0]}, torch {torch.__version__}, CUDA "
             f"{torch.version.cuda}, {torch.cuda.device_count() if cuda else 0} GPU(s)")
    if device == "cuda" and not cuda:
        return Check("environment", value + ": --device cuda without a visible GPU", "FAIL")
    return Check("environment", value, "INFO")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--kit", type=Path, default=REPO / "gpu-kit")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-check")
    p.add_argument("--work", type=Path, default=None, help="where cells run (default OUT/work)")
    p.add_argument("--target", type=Path, default=None, help="pip --target (default WORK/site)")
    args = p.parse_args(argv)
    kit, out = args.kit.resolve(), args.out.resolve()
    work = (args.work or out / "work").resolve()
    target = (args.target or work / "site").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    assets = Path(os.environ.setdefault("BENCH_ASSETS", str(kit / "assets")))
    os.environ.setdefault("BENCH_CACHE_DIR", str(work / "cache"))
    os.environ.update(PYTHONUNBUFFERED="1", DS_BUILD_OPS="0")
    start = time.monotonic()

    checks = [environment(args.device)]
    if kit.is_dir():
        checks.append(check_manifest(kit))
    install, _ = install_kit(kit, target, args.device)
    checks += [install, check_assets(assets), *check_imports(target, args.device)]
    # Cells and parity see the kit before the machine's packages, and the repo's bench.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(target), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path[:0] = [str(target), str(REPO)]

    records: list[dict] = []
    groups = GPU_CELLS if args.device == "cuda" else CPU_CELLS
    for group, flags, measured in groups:
        expected = flags.count("--precision")  # one model, one strategy: a cell per precision
        rc, last = run_cells(group, flags, args.device, work, cells=expected)
        cells = load_cells(work / group)
        if rc != 0 or len(cells) != expected:
            checks.append(Check(f"{group} cells", f"`bench run` exit {rc}, {len(cells)} of "
                                f"{expected} records; {last}"[:300], "FAIL"))
        for record, steps in cells:
            records.append(record)
            checks += cell_checks(record, steps, measured)
    checks += fp16_check(records, args.device)
    check, report = parity(args.device)
    checks.append(check)
    if report is not None:
        (work / "parity.json").write_text(json.dumps(report, indent=1, default=str))
    checks.append(Check("every cell ok", f"{sum(r.get('status') == 'ok' for r in records)} of "
                        f"{len(records)} ok", passed(bool(records) and all(
                            r.get("status") == "ok" for r in records))))
    checks.append(Check("elapsed", f"{time.monotonic() - start:.0f} s", "INFO"))

    text = table(checks)
    print("\n" + text, flush=True)
    (out / "checks.txt").write_text(text + "\n")
    (out / "checks.json").write_text(json.dumps([asdict(c) for c in checks], indent=1) + "\n")
    pack(work, [g for g, _, _ in groups], out / "records.tar.gz")
    return 1 if any(c.verdict == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
