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

from bench.record import store
from bench.config.cell import SCHEMA_VERSION, Cell, Job

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


EXIT_PREEMPTED = 3  # the cell stopped on SIGTERM after saving a checkpoint


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
            preempted = train_cell(job, strategy, runtime, cell_dir)
        finally:
            strategy.shutdown()
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the record
        import traceback
        store.write_text(cell_dir / f"error-rank{rank}.txt",
                         f"{describe_error(exc, job)}\n\n{traceback.format_exc()}")
        return 1
    return EXIT_PREEMPTED if preempted else 0


def describe_error(exc: BaseException, job: "Job | None" = None) -> str:
    """The first line of a failed cell's record: what happened, in the user's terms."""
    import torch
    if isinstance(exc, torch.OutOfMemoryError) and job is not None:
        return (f"out of memory at a per-device batch of {job.cell.per_device_batch} "
                f"({job.cell.model}, width {job.cell.width}, image {job.cell.image_size} px): "
                f"{str(exc).splitlines()[0]}")
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Training:
    engine: object
    loader: object
    flops_per_step: int | None


def build_training(cell: Cell, strategy, runtime, prepared, start_step: int = 0) -> Training:
    """Seeded model, optimizer, strategy wrapper and the rank's share of the global batches."""
    import torch

    from bench.data import GlobalBatchSampler, training_dataset

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

    # Clean images plus seeded noise, or (two-site) an obfuscated folder's noisy pairs.
    dataset = training_dataset(prepared, "train", target=cell.target, sigmas=cell.noise,
                               seed=cell.workload_seed, noise_mean=cell.noise_mean, augment=True)
    batches = GlobalBatchSampler(len(dataset), global_batch=cell.effective_global_batch,
                                 world_size=runtime.world_size, rank=runtime.rank,
                                 steps=cell.steps, seed=cell.workload_seed,
                                 start_step=start_step)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=cell.workers,
        pin_memory=cell.pin_memory and runtime.device_type == "cuda",
        persistent_workers=cell.workers > 0)
    return Training(engine, loader, flops_per_step)


def train_cell(job: Job, strategy, runtime, cell_dir: Path) -> bool:
    """Train, gather, evaluate and record one cell; True when it stopped for SIGTERM."""
    from bench.worker import checkpoint
    from bench.data import PreparedData, is_obfuscated

    cell = job.cell
    sampler = start_telemetry(job, runtime)
    prepared = PreparedData.from_json(job.prepared_data)
    resume = checkpoint.load(cell_dir, cell.cell_id, job.fingerprint)
    start_step = resume["next_step"] if resume else 0
    training = build_training(cell, strategy, runtime, prepared, start_step=start_step)
    engine = training.engine
    if resume:
        engine.load_training_state(resume)
        checkpoint.set_rng_state(resume["rng"])

    preemption = checkpoint.Preemption(runtime.world_size, runtime.device_type)
    progress = ProgressWriter(cell_dir, cell.steps) if runtime.is_main else None
    try:
        loop = timed_loop(engine, training.loader, cell, runtime.device, sampler=sampler,
                          progress=progress, start_step=start_step, preemption=preemption,
                          track_grad_norm=bool(job.extra.get("parity")))
    finally:
        preemption.restore()
    _phase(sampler, "eval")

    local = {
        "step_times_s": loop.step_times_s,
        "data_wait_s": loop.data_wait_s,
        "losses": loop.losses,
        "grad_norms": loop.grad_norms,
        "peak_mem_mb": peak_memory_mb(runtime),
        "peak_mem_reserved_mb": peak_reserved_mb(runtime),
        "skipped_steps": engine.skipped_steps,
    }
    history = History.resume(resume).extend(gather(local, runtime), loop)
    if loop.preempted:
        save_preempted(job, engine, runtime, cell_dir, history, loop, sampler)
        return True
    state = engine.full_state_dict(runtime)
    if not runtime.is_main:
        return False

    if progress:
        progress.update(cell.steps, "eval", force=True)
    from bench.worker.evaluate import evaluate
    eval_start = time.monotonic()
    eval_model = build_seeded_model(cell)
    eval_model.load_state_dict(state)
    quality, samples = [], {}
    # A parity run compares steps, not trained models. Site Two (an obfuscated folder) holds
    # no clean images: its model is scored back at Site One (`python -m bench evaluate`).
    if not job.extra.get("parity") and not is_obfuscated(prepared):
        quality, samples = evaluate(eval_model, prepared, sigmas=cell.noise,
                                    seed=cell.workload_seed, noise_mean=cell.noise_mean,
                                    device=runtime.device)
    eval_s = time.monotonic() - eval_start
    if not job.extra.get("parity"):
        from bench.twosite.audit import MODEL_FILE, save_model
        save_model(Path(cell_dir) / MODEL_FILE, state, cell, job.fingerprint)
    rows = sampler.stop() if sampler else []
    telemetry_info = (rows, sampler.gpu_reason if sampler else None)
    write_results(job, strategy, runtime, cell_dir, history, quality, samples, telemetry_info,
                  window=loop.window, eval_s=eval_s,
                  flops_per_step=training.flops_per_step, data_info=prepared)
    (Path(cell_dir) / checkpoint.CHECKPOINT).unlink(missing_ok=True)
    return False


@dataclass
class History:
    """Per-rank step data over every segment of a cell (one segment unless it was resumed)."""
    per_rank: list[dict]
    timed: list[bool]  # per step: inside a timed window (not warm-up, not re-warm-up)
    train_time_s: float  # sum of the segments' timed windows
    segments: list[dict]

    @classmethod
    def resume(cls, payload: dict | None) -> "History":
        if not payload:
            return cls([], [], 0.0, [])
        h = payload["history"]
        return cls(h["per_rank"], h["timed"], h["train_time_s"], h["segments"])

    def extend(self, per_rank: list[dict], loop: "LoopResult") -> "History":
        keys = ("step_times_s", "data_wait_s", "losses", "grad_norms")
        if not self.per_rank:
            self.per_rank = [{k: [] for k in keys} for _ in per_rank]
        for old, new in zip(self.per_rank, per_rank):
            for k in keys:
                old[k] = list(old[k]) + list(new[k])
            old["peak_mem_mb"] = max(old.get("peak_mem_mb", 0.0), new["peak_mem_mb"])
            old["peak_mem_reserved_mb"] = new["peak_mem_reserved_mb"]
            old["skipped_steps"] = old.get("skipped_steps", 0) + new["skipped_steps"]
        self.timed += [loop.timed_from <= s for s in range(loop.start_step, loop.end_step)]
        if loop.window:
            self.train_time_s += loop.window[1] - loop.window[0]
        self.segments.append({"start_step": loop.start_step, "end_step": loop.end_step,
                              "timed_from": loop.timed_from})
        return self

    def to_dict(self) -> dict:
        return {"per_rank": self.per_rank, "timed": self.timed,
                "train_time_s": self.train_time_s, "segments": self.segments}


def save_preempted(job: Job, engine, runtime, cell_dir: Path, history: History,
                   loop: "LoopResult", sampler) -> None:
    """Checkpoint (when the strategy supports it) and a `preempted` record, from rank 0."""
    from bench.worker import checkpoint
    from bench.measure import envinfo
    if sampler:
        sampler.stop()
    if not runtime.is_main:
        return
    saved = engine.supports_checkpoint
    if saved:
        checkpoint.save(cell_dir, {"cell_id": job.cell.cell_id, "fingerprint": job.fingerprint,
                                   "next_step": loop.end_step, "rng": checkpoint.rng_state(),
                                   **engine.training_state(), "history": history.to_dict()})
    store.write_json(Path(cell_dir) / store.RECORD, {
        "schema_version": SCHEMA_VERSION, "cell_id": job.cell.cell_id,
        "cell": job.cell.to_dict(), "fingerprint": job.fingerprint, "status": "preempted",
        "timing": {"steps_done": loop.end_step, "train_time_s": history.train_time_s,
                   "time_to_train_s": time.time() - job.launch_time},
        "quality": [], "checkpoint": checkpoint.CHECKPOINT if saved else None,
        "error": {"message": f"stopped by SIGTERM after step {loop.end_step} of {job.cell.steps}"
                             + ("; a re-run resumes from the checkpoint" if saved else
                                f"; {job.cell.strategy} has no checkpoint support here, a "
                                "re-run starts over")},
        "env": envinfo.capture(),
    })


@dataclass
class LoopResult:
    step_times_s: list[float]
    data_wait_s: list[float]
    losses: list[float]
    grad_norms: list[float]
    window: tuple[float, float] | None  # time.monotonic() bounds of the timed steps
    start_step: int = 0
    end_step: int = 0  # steps [start_step, end_step) ran
    timed_from: int = 0  # first timed step; the ones before warm the caches up
    preempted: bool = False


def first_timed_step(cell: Cell, start_step: int) -> int:
    """Warm-up at the start; after a resume the caches are cold again, so the first `warmup`
    steps of the new segment are trained but not timed (as long as one timed step is left)."""
    if start_step == 0:
        return cell.warmup
    return max(cell.warmup, min(start_step + cell.warmup, cell.steps - 1))


def timed_loop(engine, loader, cell: Cell, device: str, *, sampler=None, progress=None,
               start_step: int = 0, preemption=None, track_grad_norm: bool = False) -> LoopResult:
    """Warm-up steps, then the timed window: the only code whose time is reported.

    Inside the window nothing synchronises with the device except what training itself
    does: losses stay on the device until the end, step times come from the StepTimer.
    """
    import torch

    from bench.measure.timing import StepTimer, synchronize

    device_type = device.split(":")[0]
    timer = StepTimer(device_type)
    losses, waits, grad_norms = [], [], []
    window_start = None
    timed_from = first_timed_step(cell, start_step)
    end_step, preempted = cell.steps, False
    _phase(sampler, "warmup")
    batch_iter = iter(loader)
    for step in range(start_step, cell.steps):
        if preemption is not None and preemption.should_stop(step):
            end_step, preempted = step, True
            break
        if step == timed_from:
            synchronize(device_type)
            _mark(sampler, "window_start")  # outside the window: it reads NVML
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
            progress.update(step + 1, "warmup" if step < timed_from else "timed")
    synchronize(device_type)
    _phase(sampler, "eval")  # before the end is read: no "timed" sample can come after it
    window = (window_start, time.monotonic()) if window_start is not None else None
    if window is not None:
        _mark(sampler, "window_end")
    loss_values = [float(v) for v in torch.stack(losses).float().cpu()] if losses else []
    return LoopResult(timer.step_times_s(), waits, loss_values, grad_norms, window,
                      start_step, end_step, timed_from, preempted)


def _phase(sampler, name: str) -> None:
    if sampler is not None:
        sampler.set_phase(name)


def _mark(sampler, name: str) -> None:
    if sampler is not None:
        sampler.mark(name)


def start_telemetry(job: Job, runtime):
    """Rank 0 samples the whole cell (every rank's process and every GPU the cell uses)."""
    if not runtime.is_main or job.cell.sample_hz <= 0:
        return None
    from bench.measure.telemetry import Sampler
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

    from bench.measure.flops import train_step_flops
    batch = min(cell.per_device_batch, 2)  # count on a small batch; FLOPs scale linearly
    example = torch.zeros(batch, 1, cell.image_size, cell.image_size, device=runtime.device)
    try:
        flops = train_step_flops(copy.deepcopy(model), example)
    except Exception as exc:  # noqa: BLE001 - counting is a nicety; it never stops a run
        import logging
        logging.getLogger(__name__).warning("FLOPs not counted, so no MFU: %s: %s",
                                            type(exc).__name__, exc)
        return None
    return int(flops * cell.effective_global_batch / batch)


def peak_memory_mb(runtime) -> float:
    import torch
    if runtime.device_type == "cuda":
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    # ru_maxrss is the peak resident set of this process, in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_reserved_mb(runtime) -> float | None:
    """What the caching allocator held at its peak: the memory other jobs could not use."""
    import torch
    if runtime.device_type != "cuda":
        return None
    return torch.cuda.max_memory_reserved(runtime.device) / 2**20


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


def write_results(job: Job, strategy, runtime, cell_dir: Path, history: History,
                  quality: list[dict], samples: dict, telemetry_info: tuple, *,
                  window: tuple[float, float] | None, eval_s: float, flops_per_step: int | None,
                  data_info) -> None:
    import pandas as pd

    from bench.measure import envinfo
    from bench.measure import telemetry
    from bench.measure.flops import mfu
    from bench.measure.timing import summarize_steps

    cell = job.cell
    per_rank = history.per_rank
    steps = np.arange(cell.steps)
    # The step that counts is the slowest rank's; the loss is the mean over equal shards.
    step_times = np.max([r["step_times_s"] for r in per_rank], axis=0)
    waits = np.max([r["data_wait_s"] for r in per_rank], axis=0)
    losses = np.mean([r["losses"] for r in per_rank], axis=0)
    warm = ~np.asarray(history.timed, dtype=bool)
    table = pd.DataFrame({"step": steps, "loss": losses, "step_time_s": step_times,
                          "data_wait_s": waits, "warmup": warm})
    for r, rank in enumerate(per_rank):
        table[f"step_time_rank{r}_s"] = rank["step_times_s"]
    if per_rank[0]["grad_norms"]:  # parity runs: every rank holds the same reduced gradient
        table["grad_norm"] = per_rank[0]["grad_norms"]
    store.write_table(Path(cell_dir) / store.STEPS, table)

    timed_images = cell.effective_global_batch * int((~warm).sum())
    train_time_s = history.train_time_s
    timed = step_times[~warm]
    timing = {
        "train_time_s": train_time_s,
        "time_to_train_s": time.time() - job.launch_time,
        "eval_time_s": eval_s,
        "timed_steps": int((~warm).sum()),
        "warmup_steps": int(warm.sum()),
        "throughput_img_s": timed_images / train_time_s if train_time_s > 0 else None,
        "data_wait_frac": float(waits[~warm].sum() / max(train_time_s, 1e-12)),
        "peak_mem_mb": max(r["peak_mem_mb"] for r in per_rank),
        "peak_mem_mb_per_rank": [r["peak_mem_mb"] for r in per_rank],
        "peak_mem_reserved_mb_per_rank": [r.get("peak_mem_reserved_mb") for r in per_rank],
        "clock": "cuda-events" if runtime.device_type == "cuda" else "host-monotonic",
        # Each rank's own median timed step: a straggler shows up here before it shows in
        # the slowest-rank step time that counts.
        "step_time_median_s_per_rank": [float(np.median(np.asarray(r["step_times_s"])[~warm]))
                                        if (~warm).any() else None for r in per_rank],
        **summarize_steps(timed),
    }
    telemetry_rows, gpu_reason = telemetry_info
    telemetry_summary = {}
    if telemetry_rows:
        store.write_table(Path(cell_dir) / store.TELEMETRY, telemetry.to_table(telemetry_rows))
    if telemetry_rows and window is not None:
        # This process sampled only the last segment of a resumed cell: its images alone.
        last = history.segments[-1]
        segment_steps = sum(history.timed[last["start_step"]:last["end_step"]])
        telemetry_summary = telemetry.summarize(
            telemetry_rows, timed_start_s=window[0], timed_end_s=window[1],
            images=cell.effective_global_batch * segment_steps, gpu_indices=gpu_indices(cell),
            gpu_reason=gpu_reason)
    env = envinfo.capture()
    device_name = env["gpus"][0] if env["gpus"] and cell.device_type == "cuda" else env["cpu"]
    if flops_per_step and timing["step_time_median_s"]:
        value, reason = mfu(flops_per_step, timing["step_time_median_s"], device_name,
                            cell.precision, cell.devices)
        telemetry_summary.update({
            "flops_per_step": flops_per_step,
            "tflops": flops_per_step / timing["step_time_median_s"] / 1e12,
            "mfu": value, "mfu_note": reason})
    elif runtime.is_main:
        telemetry_summary.update({"mfu": None, "mfu_note": "FLOPs could not be counted (the "
                                                           "reason is in cell.log)"})
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
        "resumed": len(history.segments) > 1,
        "segments": history.segments,
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
    if quality:
        from bench.twosite.audit import record_audit
        record["audit"] = record_audit(cell, quality, "training run")
    from bench.twosite.obfuscate import record_fields
    record.update(record_fields(cell, data_info, record["notes"], Path(cell_dir)))
    store.write_json(Path(cell_dir) / store.RECORD, record)


INPUT_BOUND_FRAC = 0.10  # a cell whose steps wait >10% of the window on data is input-bound


def strategy_options(cell: Cell) -> dict:
    options = {"channels_last": cell.channels_last, "compile": cell.compile,
               "cudnn_benchmark": cell.cudnn_benchmark, "workers": cell.workers,
               "pin_memory": cell.pin_memory}
    if cell.strategy == "deepspeed":
        options["zero_stage"] = cell.zero_stage or 0
    return options
