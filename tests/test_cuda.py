"""The CUDA code paths: CUDA-event step timing, NVML telemetry and energy in a real cell,
GradScaler's skipped fp16 steps, and the TF32 switches of fp32 and tf32.

The tests marked `needs_cuda` run only where torch sees a CUDA GPU; the rest check the same
logic without one (the host clock, the skip counting with a CPU GradScaler, the TF32 flags a
"cuda" Precision sets), so a CPU host still covers what it can.
"""
import math
import time

import pandas as pd
import pytest
import torch

from bench.config.cell import Cell
from bench.record import store
from conftest import run_spec

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="needs a CUDA GPU")


@pytest.fixture
def tf32_flags():
    """TF32 switches are process-wide: put them back as they were."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# --------------------------------------------------------------------------- on every host

def test_auto_device_follows_the_visible_gpus():
    from bench.sweep import hardware
    assert hardware.visible_gpus() == (torch.cuda.device_count() if CUDA else 0)
    assert hardware.default_device_type("auto") == ("cuda" if CUDA else "cpu")
    assert hardware.amp_precision("cuda") == "fp16" and hardware.amp_precision("cpu") == "bf16"


def test_host_clock_step_time_agrees_with_the_wall_clock():
    """The CPU half of StepTimer: work is synchronous, so the host clock is the step."""
    from bench.measure.timing import StepTimer
    timer, walls = StepTimer("cpu"), []
    for _ in range(3):
        t0 = time.perf_counter()
        timer.start()
        time.sleep(0.02)
        timer.stop()
        walls.append(time.perf_counter() - t0)
    times = timer.step_times_s()
    assert len(times) == 3
    for t, wall in zip(times, walls):
        assert 0.02 <= t <= wall


def test_cuda_precision_switches_tf32_for_fp32_and_tf32(tf32_flags):
    """The flags a "cuda" Precision sets need no GPU to be read: fp32 turns TF32 off (cuDNN
    would use it by default), tf32 turns it on, and a CPU cell leaves them alone."""
    from launchers.base import Precision
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    assert Precision("fp32", "cuda").scaler is None
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    Precision("tf32", "cuda")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    Precision("fp32", "cpu")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def _model(device):
    from bench.worker.setup import build_seeded_model
    return build_seeded_model(Cell(width=4, depth=2, image_size=32)).to(device)


def _train_with_injected_infs(engine, device, bad_steps):
    """Train a step per entry of `bad_steps`; where it is True, one input pixel is inf, so the
    loss and the gradients are non-finite and GradScaler must skip the update."""
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 1, 32, 32, generator=g).to(device)
    noisy = (clean + 0.1 * torch.randn(4, 1, 32, 32, generator=g).to(device))
    params = list(engine.unwrapped().parameters())
    for step, bad in enumerate(bad_steps):
        before = [p.detach().clone() for p in params]
        x = noisy.clone()
        if bad:
            x[0, 0, 0, 0] = math.inf
        loss = engine.train_step(x, clean)
        assert math.isfinite(float(loss)) != bad, (step, float(loss))
        changed = any(not torch.equal(b, p.detach()) for b, p in zip(before, params))
        assert changed == (not bad), f"step {step}: updated={changed}, inf injected={bad}"


BAD_STEPS = [False, True, False, False, True, True, False]


def test_skipped_steps_count_each_skipped_update_once_cpu_scaler():
    """Engine.train_step's counting, driven by a CPU GradScaler (the fp16 path's scaler is a
    CUDA one; the logic that reads its scale is the same)."""
    from launchers.base import Engine, Precision
    model = _model("cpu")
    precision = Precision("fp32", "cpu")
    precision.scaler = torch.amp.GradScaler("cpu")
    engine = Engine(model, torch.optim.Adam(model.parameters(), lr=1e-3), precision)
    _train_with_injected_infs(engine, "cpu", BAD_STEPS)
    assert engine.skipped_steps == sum(BAD_STEPS) == 3


def test_the_record_counts_the_skips_of_the_timed_window_apart_from_the_warm_up():
    """GradScaler skips most while it finds its scale, in the warm-up; the record's
    `skipped_steps` are the timed window's, the warm-up's stand apart. Bench's own loop,
    gathering and record section, driven by a CPU GradScaler on batches with an inf pixel:
    2 in the 3 warm-up steps, 1 among the 4 timed ones."""
    from launchers import get_strategy
    from launchers.base import Engine, Precision, Runtime
    from bench.worker.loop import timed_loop
    from bench.worker.results import History, local_results, runtime_section
    cell = Cell(width=4, depth=2, image_size=32, steps=7, warmup=3, sample_hz=0.0)
    model = _model("cpu")
    precision = Precision("fp32", "cpu")
    precision.scaler = torch.amp.GradScaler("cpu")
    engine = Engine(model, torch.optim.Adam(model.parameters(), lr=1e-3), precision)
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 1, 32, 32, generator=g)
    batches = []
    for bad in (True, True, False, False, True, False, False):
        noisy = clean + 0.1 * torch.randn(4, 1, 32, 32, generator=g)
        if bad:
            noisy[0, 0, 0, 0] = math.inf
        batches.append((noisy, clean))
    loop = timed_loop(engine, batches, cell, "cpu")
    assert engine.skipped_steps == 3  # the engine's running count: all of them
    assert (loop.warmup_skipped_steps, loop.skipped_steps) == (2, 1)
    runtime = Runtime(rank=0, world_size=1, local_rank=0, device="cpu", backend=None,
                      threads=1)
    history = History.resume(None).extend([local_results(loop, runtime)], loop)
    section = runtime_section(cell, get_strategy("single"), runtime, history)
    assert (section["skipped_steps"], section["warmup_skipped_steps"]) == (1, 2)


# --------------------------------------------------------------------------- CUDA only

@needs_cuda
def test_cuda_event_step_time_agrees_with_a_synchronized_wall_clock():
    from bench.measure.timing import StepTimer, synchronize
    a = torch.randn(4096, 4096, device="cuda")

    def step():
        for _ in range(10):
            a @ a

    step()
    synchronize("cuda")  # cuBLAS set-up outside the measurement
    events, host, walls = StepTimer("cuda"), StepTimer("cpu"), []
    for _ in range(5):
        synchronize("cuda")
        t0 = time.perf_counter()
        events.start()
        host.start()
        step()
        host.stop()
        events.stop()
        synchronize("cuda")
        walls.append(time.perf_counter() - t0)
    times = events.step_times_s()
    assert len(times) == 5
    for t, wall in zip(times, walls):
        assert 0 < t <= wall + 1e-4, (t, wall)
        assert t >= 0.9 * wall - 2e-3, (t, wall)  # the launch and the synchronize, no more
    # Without a synchronize the host clock sees the launches, not the work: why events.
    assert sum(host.step_times_s()) < 0.5 * sum(times)

    # Back to back, as in the timed loop: the events tile the synchronized window.
    loop = StepTimer("cuda")
    synchronize("cuda")
    t0 = time.perf_counter()
    for _ in range(5):
        loop.start()
        step()
        loop.stop()
    synchronize("cuda")
    window = time.perf_counter() - t0
    assert sum(loop.step_times_s()) == pytest.approx(window, rel=0.05)


@needs_cuda
def test_fp16_skipped_steps_are_counted_by_the_real_grad_scaler():
    from launchers.base import Engine, Precision
    model = _model("cuda")
    precision = Precision("fp16", "cuda")
    assert precision.scaler is not None and precision.use_autocast
    engine = Engine(model, torch.optim.Adam(model.parameters(), lr=1e-3), precision)
    scale = precision.scaler.get_scale()
    _train_with_injected_infs(engine, "cuda", BAD_STEPS)
    assert engine.skipped_steps == sum(BAD_STEPS) == 3
    assert precision.scaler.get_scale() == scale * 0.5 ** 3  # halved once per skipped step


def _relative_error(device_result, reference):
    return float((device_result.double().cpu() - reference).norm() / reference.norm())


@needs_cuda
def test_fp32_computes_in_fp32_and_tf32_in_tf32(tf32_flags):
    """Not only the flags: a large fp32 matmul under an fp32 cell's Precision matches float64
    as fp32 does (~1e-6), under a tf32 cell's as TF32's 10-bit mantissa does (~1e-3)."""
    from launchers.base import Precision
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    reference = a.double() @ b.double()
    a, b = a.cuda(), b.cuda()
    Precision("fp32", "cuda")
    exact = _relative_error(a @ b, reference)
    Precision("tf32", "cuda")
    tf32 = _relative_error(a @ b, reference)
    assert exact < 2e-5, exact
    assert tf32 > 1e-4, tf32
    Precision("fp32", "cuda")
    assert _relative_error(a @ b, reference) < 2e-5


CUDA_SPEC = {
    "name": "cuda",
    # Long enough a timed window (~150 steps) for a 20 Hz sampler to see it many times.
    "workload": {"device": "cuda", "steps": 150, "warmup": 5, "global_batch": 16, "width": 16,
                 "depth": 3, "image_size": 64, "sample_hz": 20},
    "matrix": {"models": ["unet"], "configurations": [
        {"strategy": "single", "precision": "fp32"},
        {"strategy": "single", "precision": "tf32"},
        {"strategy": "single", "precision": "fp16"}]}}


@pytest.fixture(scope="module")
def cuda_cells(tmp_path_factory):
    if not CUDA:
        pytest.skip("needs a CUDA GPU")
    records = run_spec(tmp_path_factory.mktemp("cuda"), CUDA_SPEC)
    return {r["cell"]["precision"]: r for r in records}


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
def test_a_cuda_cell_is_timed_by_events_and_sampled_by_nvml(cuda_cells, precision):
    record = cuda_cells[precision]
    assert record["status"] == "ok", record.get("error")
    assert record["cell"]["device_type"] == "cuda"
    assert record["runtime"]["device"].startswith("cuda") and record["runtime"]["backend"] is None
    assert record["env"]["gpus"] and record["env"]["cuda"]
    assert record["loss"]["last"] < record["loss"]["first"]
    timing = record["timing"]
    assert timing["clock"] == "cuda-events"
    steps = pd.read_parquet(f"{record['_dir']}/{store.STEPS}")
    timed = steps[~steps["warmup"]]
    assert len(timed) == timing["timed_steps"] == 145 and (timed["step_time_s"] > 0).all()
    assert timed["step_time_s"].sum() <= timing["train_time_s"] * 1.0001  # device time ≤ window
    skipped = record["runtime"]["skipped_steps"]
    if precision == "fp16":  # GradScaler may skip a few while it finds its scale
        assert 0 <= skipped < 145
    else:
        assert skipped == 0

    tele = record["telemetry"]
    assert tele["gpu_reason"] is None, tele["gpu_reason"]
    assert tele["window_marked"] and tele["samples_in_window"] >= 3
    assert len(tele["per_gpu"]) == 1
    assert 0 < tele["gpu_busy_pct_mean"] <= 100
    assert tele["mem_used_peak_mb"] > 0
    assert 10 < tele["power_mean_w"] < 2000  # watts of one board
    assert tele["energy_method"].startswith(("counter", "power-integral")), tele["energy_method"]
    assert tele["energy_j"] > 0
    images = record["cell"]["global_batch"] * timing["timed_steps"]
    assert tele["energy_per_img_j"] == pytest.approx(tele["energy_j"] / images)
    assert tele["input_bound_signal"] == "device idle between steps"
    assert tele["mfu"] is not None or record["env"]["gpus"][0] in tele["mfu_note"]
    table = pd.read_parquet(f"{record['_dir']}/{store.TELEMETRY}")
    (index,) = tele["per_gpu"]
    power = table.loc[table["phase"] == "timed", f"power_w_{index}"]
    assert power.notna().all() and (power > 0).all()


@needs_cuda
def test_auto_on_a_gpu_host_sizes_the_study_to_its_gpus(capsys, tmp_path, monkeypatch):
    """`bench spec quick` with no --device: CUDA here, so the study's AMP is fp16 with loss
    scaling and its multi-device configurations span the visible GPUs."""
    from bench.config import spec as specs
    from bench.sweep import plan as planner
    from conftest import run_main
    monkeypatch.chdir(tmp_path)
    result = run_main(capsys, "spec", "quick")
    assert result.returncode == 0, result.stderr
    gpus = torch.cuda.device_count()
    cells = planner.expand(specs.load_spec("quick"), "cuda", gpus).cells
    assert f"# {len(cells)} cells on cuda:" in result.stdout
    assert all(c.cell_id in result.stdout for c in cells)
    assert {c.precision for c in cells} == {"fp32", "fp16"}
    assert {c.devices for c in cells if c.strategy != "single"} == {gpus}


@needs_cuda
def test_attribution_probe_reads_the_kernel_timeline():
    """On a GPU the probe profiles CUDA activity too: its phases hold their kernels (a sync
    closes each), and the device's copies of its ranges (kineto's `gpu_user_annotation`)
    are not taken for kernels. One GPU runs no NCCL kernel; the NCCL timelines, annotated
    the way kineto annotates them, are test_attribution.py's, on every host."""
    from bench.measure import attribution
    from bench.worker.probe import profile_steps, run_probe
    from launchers.base import Engine, Precision
    model = _model("cuda")
    engine = Engine(model, torch.optim.Adam(model.parameters()), Precision("bf16", "cuda"))
    x = torch.rand(4, 1, 32, 32, device="cuda")
    spans = profile_steps(engine, (x, x), "cuda", 2)
    kernels = [s for s in spans if s.on_device]
    assert kernels and not any(s.name.startswith("bench.") for s in kernels)
    for phase in attribution.PHASES:
        lo, hi = next((s.start, s.end) for s in spans
                      if s.name == attribution.PHASE_RANGE[phase] and not s.on_device)
        assert any(k.start < hi and k.end > lo for k in kernels), phase
    summary = run_probe(engine, (x, x), "cuda")
    shares = summary["step_shares"]
    assert shares["forward"] > 0 and shares["backward"] > 0 and shares["optimizer"] > 0
    assert shares["comm_exposed"] == 0 and summary["comm_message_bytes_per_step"] == 0
