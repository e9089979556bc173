"""One cell's training, as run by every rank process (`python -m bench.worker CELL_DIR`).

Order of work: runtime → seeded model → strategy wrap → warm-up steps → timed steps →
gather per-rank results → evaluation on rank 0 with a fresh fp32 model → record.
Only the steps between the two window boundaries are timed.
"""
from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import store
from bench.cell import SCHEMA_VERSION, Cell, Job

PROGRESS_INTERVAL_S = 0.5


def model_options(cell: Cell) -> dict:
    return {"width": cell.width, "depth": cell.depth, "norm": cell.norm,
            "upsample": cell.upsample, "deep_supervision": cell.deep_supervision,
            "residual": cell.residual}


def build_seeded_model(cell: Cell):
    """Same code and same initial weights for every strategy: seeded just before building."""
    import torch

    from models import build_model
    torch.manual_seed(cell.workload_seed)
    return build_model(cell.model, **model_options(cell))


class ProgressWriter:
    """Rank 0 tells the runner how far it is, at most twice a second (outside step timing)."""

    def __init__(self, cell_dir: Path, total: int):
        self.path = Path(cell_dir) / store.PROGRESS
        self.total = total
        self.last = 0.0

    def update(self, step: int, phase: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": step, "steps": self.total, "phase": phase}))
            os.replace(tmp, self.path)


def run_job(cell_dir: Path) -> int:
    """Entry of a rank process. Returns its exit status; a failure leaves its traceback in
    error-rank<R>.txt so the runner can put it in the cell's record."""
    from launchers import get_strategy

    cell_dir = Path(cell_dir)
    rank = int(os.environ.get("RANK", "0"))
    try:
        job = Job.from_dict(json.loads((cell_dir / store.JOB).read_text()))
        strategy = get_strategy(job.cell.strategy)
        runtime = strategy.init_runtime(job.cell)
        try:
            train_cell(job, strategy, runtime, cell_dir)
        finally:
            strategy.shutdown()
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the record
        import traceback
        (cell_dir / f"error-rank{rank}.txt").write_text(
            f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        return 1
    return 0


@dataclass
class Training:
    engine: object
    loader: object
    flops_per_step: int | None


def build_training(cell: Cell, strategy, runtime, prepared) -> Training:
    """Seeded model, optimizer, strategy wrapper and the rank's share of the global batches."""
    import torch

    from bench.data import DenoiseDataset, GlobalBatchSampler

    if runtime.device_type == "cuda":
        torch.backends.cudnn.benchmark = cell.cudnn_benchmark
    model = build_seeded_model(cell).to(runtime.device)
    if cell.channels_last:
        model = model.to(memory_format=torch.channels_last)
    flops_per_step = count_flops(model, cell, runtime) if runtime.is_main else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cell.effective_lr)
    engine = strategy.wrap(model, optimizer, cell, runtime)
    if cell.compile:
        engine.model = torch.compile(engine.model)

    dataset = DenoiseDataset(prepared, "train", sigmas=cell.noise, seed=cell.workload_seed,
                             noise_mean=cell.noise_mean, augment=True)
    batches = GlobalBatchSampler(len(dataset), global_batch=cell.effective_global_batch,
                                 world_size=runtime.world_size, rank=runtime.rank,
                                 steps=cell.steps, seed=cell.workload_seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=cell.workers,
        pin_memory=cell.pin_memory and runtime.device_type == "cuda",
        persistent_workers=cell.workers > 0)
    return Training(engine, loader, flops_per_step)


def train_cell(job: Job, strategy, runtime, cell_dir: Path) -> None:
    from bench.data import PreparedData

    cell = job.cell
    sampler = start_telemetry(job, runtime)
    prepared = PreparedData.from_json(job.prepared_data)

    training = build_training(cell, strategy, runtime, prepared)
    engine = training.engine

    progress = ProgressWriter(cell_dir, cell.steps) if runtime.is_main else None
    loop = timed_loop(engine, training.loader, cell, runtime.device, sampler=sampler, progress=progress,
                      track_grad_norm=bool(job.extra.get("parity")))
    _phase(sampler, "eval")

    local = {
        "step_times_s": loop.step_times_s,
        "data_wait_s": loop.data_wait_s,
        "losses": loop.losses,
        "grad_norms": loop.grad_norms,
        "peak_mem_mb": peak_memory_mb(runtime),
        "skipped_steps": engine.skipped_steps,
    }
    per_rank = gather(local, runtime)
    state = engine.full_state_dict(runtime)
    if not runtime.is_main:
        return

    if progress:
        progress.update(cell.steps, "eval", force=True)
    from bench.evaluate import evaluate
    eval_start = time.monotonic()
    eval_model = build_seeded_model(cell)
    eval_model.load_state_dict(state)
    quality, samples = [], {}
    if not job.extra.get("parity"):  # a parity run compares steps, not trained models
        quality, samples = evaluate(eval_model, prepared, sigmas=cell.noise,
                                    seed=cell.workload_seed, noise_mean=cell.noise_mean,
                                    device=runtime.device)
    eval_s = time.monotonic() - eval_start
    rows = sampler.stop() if sampler else []
    telemetry_info = (rows, sampler.gpu_reason if sampler else None)
    write_results(job, strategy, runtime, cell_dir, per_rank, quality, samples, telemetry_info,
                  window=loop.window, eval_s=eval_s,
                  flops_per_step=training.flops_per_step, data_info=prepared)


@dataclass
class LoopResult:
    step_times_s: list[float]
    data_wait_s: list[float]
    losses: list[float]
    grad_norms: list[float]
    window: tuple[float, float]  # time.monotonic() bounds of the timed steps


def timed_loop(engine, loader, cell: Cell, device: str, *, sampler=None, progress=None,
               track_grad_norm: bool = False) -> LoopResult:
    """Warm-up steps, then the timed window: the only code whose time is reported.

    Inside the window nothing synchronises with the device except what training itself
    does: losses stay on the device until the end, step times come from the StepTimer.
    """
    import torch

    from bench.timing import StepTimer, synchronize

    device_type = device.split(":")[0]
    timer = StepTimer(device_type)
    losses, waits, grad_norms = [], [], []
    window_start = None
    _phase(sampler, "warmup")
    batch_iter = iter(loader)
    for step in range(cell.steps):
        if step == cell.warmup:
            synchronize(device_type)
            window_start = time.monotonic()
            _phase(sampler, "timed")
        t_wait = time.perf_counter()
        noisy, clean = next(batch_iter)
        noisy = noisy.to(device, non_blocking=True)
        clean = clean.to(device, non_blocking=True)
        if cell.channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        waits.append(time.perf_counter() - t_wait)
        timer.start()
        loss = engine.train_step(noisy, clean)
        timer.stop()
        losses.append(loss)
        if track_grad_norm:  # parity checks only: reading the norm synchronises
            grad_norms.append(engine.grad_norm())
        if progress:
            progress.update(step + 1, "warmup" if step < cell.warmup else "timed")
    synchronize(device_type)
    window_end = time.monotonic()
    return LoopResult(timer.step_times_s(), waits,
                      [float(v) for v in torch.stack(losses).float().cpu()], grad_norms,
                      (window_start, window_end))


def _phase(sampler, name: str) -> None:
    if sampler is not None:
        sampler.set_phase(name)


def start_telemetry(job: Job, runtime):
    """Rank 0 samples the whole cell (every rank's process and every GPU the cell uses)."""
    if not runtime.is_main or job.cell.sample_hz <= 0:
        return None
    from bench.telemetry import Sampler
    # t0=0: samples carry absolute time.monotonic(), the clock of the timed window.
    sampler = Sampler(job.cell.sample_hz, gpu_indices=gpu_indices(job.cell),
                      root_pid=cell_root_pid(), t0=0.0)
    sampler.start()
    sampler.set_phase("setup")
    return sampler


def cell_root_pid() -> int:
    """The process whose tree holds every rank of this node: torchrun's agent (it starts each
    worker in a session of its own, so the process group would miss them), else this one."""
    return os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else os.getpid()


def gpu_indices(cell: Cell) -> list[int]:
    """NVML numbers GPUs physically and ignores CUDA_VISIBLE_DEVICES: translate."""
    if cell.device_type != "cuda":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v for v in visible.split(",") if v.strip()]
    if ids and all(v.strip().isdigit() for v in ids):
        return [int(v) for v in ids[:cell.devices]]
    return list(range(cell.devices))


def count_flops(model, cell: Cell, runtime) -> int | None:
    """FLOPs of one optimizer step over the global batch (forward + backward), counted once."""
    import copy

    import torch

    from bench.flops import train_step_flops
    batch = min(cell.per_device_batch, 2)  # count on a small batch; FLOPs scale linearly
    example = torch.zeros(batch, 1, cell.image_size, cell.image_size, device=runtime.device)
    try:
        flops = train_step_flops(copy.deepcopy(model), example)
    except Exception:  # counting is a nicety; it must never stop a run
        return None
    return int(flops * cell.effective_global_batch / batch)


def peak_memory_mb(runtime) -> float:
    import torch
    if runtime.device_type == "cuda":
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    # ru_maxrss is the peak resident set of this process, in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gather(local: dict, runtime) -> list[dict]:
    """Every rank's timings on rank 0, once, after the timed window (never inside it)."""
    if runtime.world_size == 1:
        return [local]
    import torch.distributed as dist
    out: list = [None] * runtime.world_size
    dist.all_gather_object(out, local)
    return out


def first_nonfinite(losses: list[float]) -> int | None:
    for step, value in enumerate(losses):
        if not math.isfinite(value):
            return step
    return None


def write_results(job: Job, strategy, runtime, cell_dir: Path, per_rank: list[dict],
                  quality: list[dict], samples: dict, telemetry_info: tuple, *,
                  window: tuple[float, float], eval_s: float, flops_per_step: int | None,
                  data_info) -> None:
    import pandas as pd

    from bench import envinfo, telemetry
    from bench.flops import mfu
    from bench.timing import summarize_steps

    cell = job.cell
    steps = np.arange(cell.steps)
    # The step that counts is the slowest rank's; the loss is the mean over equal shards.
    step_times = np.max([r["step_times_s"] for r in per_rank], axis=0)
    waits = np.max([r["data_wait_s"] for r in per_rank], axis=0)
    losses = np.mean([r["losses"] for r in per_rank], axis=0)
    warm = steps < cell.warmup
    table = pd.DataFrame({"step": steps, "loss": losses, "step_time_s": step_times,
                          "data_wait_s": waits, "warmup": warm})
    for r, rank in enumerate(per_rank):
        table[f"step_time_rank{r}_s"] = rank["step_times_s"]
    if per_rank[0]["grad_norms"]:  # parity runs: every rank holds the same reduced gradient
        table["grad_norm"] = per_rank[0]["grad_norms"]
    store.write_table(Path(cell_dir) / store.STEPS, table)

    timed_images = cell.effective_global_batch * int((~warm).sum())
    train_time_s = window[1] - window[0]
    timed = step_times[~warm]
    timing = {
        "train_time_s": train_time_s,
        "time_to_train_s": time.time() - job.launch_time,
        "eval_time_s": eval_s,
        "timed_steps": int((~warm).sum()),
        "warmup_steps": cell.warmup,
        "throughput_img_s": timed_images / train_time_s if train_time_s > 0 else None,
        "data_wait_frac": float(waits[~warm].sum() / max(train_time_s, 1e-12)),
        "peak_mem_mb": max(r["peak_mem_mb"] for r in per_rank),
        "peak_mem_mb_per_rank": [r["peak_mem_mb"] for r in per_rank],
        "clock": "cuda-events" if runtime.device_type == "cuda" else "host-monotonic",
        **summarize_steps(timed),
    }
    telemetry_rows, gpu_reason = telemetry_info
    telemetry_summary = {}
    if telemetry_rows:
        store.write_table(Path(cell_dir) / store.TELEMETRY, telemetry.to_table(telemetry_rows))
        telemetry_summary = telemetry.summarize(
            telemetry_rows, timed_start_s=window[0], timed_end_s=window[1],
            images=timed_images, gpu_indices=gpu_indices(cell), gpu_reason=gpu_reason)
    env = envinfo.capture()
    dtype = {"fp32": "fp32", "tf32": "tf32", "bf16": "bf16", "fp16": "fp16"}[cell.precision]
    device_name = env["gpus"][0] if env["gpus"] and cell.device_type == "cuda" else env["cpu"]
    if flops_per_step and timing["step_time_median_s"]:
        value, reason = mfu(flops_per_step, timing["step_time_median_s"], device_name, dtype,
                            cell.devices)
        telemetry_summary.update({
            "flops_per_step": flops_per_step,
            "tflops": flops_per_step / timing["step_time_median_s"] / 1e12,
            "mfu": value, "mfu_note": reason})
    telemetry_summary["input_bound"] = timing["data_wait_frac"] > INPUT_BOUND_FRAC
    if samples:
        np.savez_compressed(Path(cell_dir) / "samples.npz", **samples)

    diverged_at = first_nonfinite(list(losses))
    record = {
        "schema_version": SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "cell": cell.to_dict(),
        "fingerprint": job.fingerprint,
        "status": "diverged" if diverged_at is not None else "ok",
        "diverged_at_step": diverged_at,
        "runtime": {
            "world_size": runtime.world_size, "per_device_batch": cell.per_device_batch,
            "global_batch": cell.effective_global_batch, "lr": cell.effective_lr,
            "lr_rule": "linear (lr × devices)" if cell.scaling == "weak" else "none (strong)",
            "backend": runtime.backend, "device": runtime.device,
            "threads_per_rank": runtime.threads,
            "strategy": strategy.description, "strategy_options": strategy_options(cell),
            "skipped_steps": sum(r["skipped_steps"] for r in per_rank),
            "batchnorm_per_rank_stats": cell.norm == "batch" and runtime.world_size > 1,
        },
        "loss": {"first": float(losses[0]), "last": float(losses[-1]),
                 "last10_mean": float(np.mean(losses[-10:]))},
        "timing": timing,
        "quality": quality,
        "telemetry": telemetry_summary,
        "data": {"source": cell.data, "description": data_info.description,
                 "skipped_images": data_info.skipped, "digest": data_info.digest,
                 "train_images": len(data_info.split("train")),
                 "test_images": len(data_info.split("test"))},
        "notes": strategy.notes(cell),
        "env": env,
        "error": None,
    }
    store.write_json(Path(cell_dir) / store.RECORD, record)


INPUT_BOUND_FRAC = 0.10  # a cell whose steps wait >10% of the window on data is input-bound


def strategy_options(cell: Cell) -> dict:
    options = {"channels_last": cell.channels_last, "compile": cell.compile,
               "cudnn_benchmark": cell.cudnn_benchmark, "workers": cell.workers,
               "pin_memory": cell.pin_memory}
    if cell.strategy == "deepspeed":
        options["zero_stage"] = cell.zero_stage or 0
    return options
