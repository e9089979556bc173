"""After the loop: every rank's step data on rank 0, and the files a cell leaves behind.

Ranks exchange their timings once, after the timed window (never inside it). Rank 0 then
writes steps.parquet (one row per step: the slowest rank's time, the mean loss),
telemetry.parquet, samples.npz and record.json, whose shape is bench.record.builder's.
"""
from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config.cell import Cell, Job
from bench.measure import placement
from bench.record import builder, store
from bench.worker.loop import LoopResult
from bench.worker.setup import gpu_indices

INPUT_BOUND_FRAC = 0.10  # a cell idle >10% of its window between steps is input-bound
STEP_KEYS = ("step_times_s", "data_wait_s", "losses", "grad_norms")
SKIPPED_NAMED = 50  # undecodable files named in a record (all are counted)
SKIP_KEYS = ("skipped_steps", "warmup_skipped_steps")  # fp16 updates skipped: timed, warm-up


@dataclass
class History:
    """Per-rank step data over every segment of a cell (one segment unless it was resumed)."""
    per_rank: list[dict]
    timed: list[bool]  # per step: inside a timed window (not warm-up, not re-warm-up)
    train_time_s: float  # sum of the segments' timed windows, validation pauses taken out
    segments: list[dict]
    validation: dict | None = None  # bench.worker.validation's state: the curve, the pauses
    refill_steps: int = 0  # window steps trained inside validation pauses (Pauses.refill)

    @classmethod
    def resume(cls, payload: dict | None) -> "History":
        if not payload:
            return cls([], [], 0.0, [])
        h = payload["history"]
        return cls(h["per_rank"], h["timed"], h["train_time_s"], h["segments"],
                   h.get("validation"), h.get("refill_steps", 0))

    def extend(self, per_rank: list[dict], loop: LoopResult) -> "History":
        if not self.per_rank:
            self.per_rank = [{k: [] for k in STEP_KEYS} for _ in per_rank]
        for old, new in zip(self.per_rank, per_rank):
            for k in STEP_KEYS:
                old[k] = list(old[k]) + list(new[k])
            old["peak_mem_mb"] = max(old.get("peak_mem_mb", 0.0), new["peak_mem_mb"])
            old["peak_mem_reserved_mb"] = new["peak_mem_reserved_mb"]
            for k in SKIP_KEYS:
                old[k] = old.get(k, 0) + new[k]
            old["host"], old["node"], old["threads"] = new["host"], new["node"], new["threads"]
            if new.get("spans") is not None:  # arrivals (multi-rank cells)
                old["spans"] = {k: list(old.get("spans", {}).get(k, [])) + list(v)
                                for k, v in new["spans"].items()}
        untimed = set(loop.untimed_steps)  # trained inside a validation pause
        self.timed += [loop.timed_from <= s and s not in untimed
                       for s in range(loop.start_step, loop.end_step)]
        self.refill_steps += len(untimed)
        if loop.window:
            self.train_time_s += loop.window[1] - loop.window[0] - loop.paused_s
        self.segments.append({"start_step": loop.start_step, "end_step": loop.end_step,
                              "timed_from": loop.timed_from})
        return self

    def to_dict(self) -> dict:
        return {"per_rank": self.per_rank, "timed": self.timed,
                "train_time_s": self.train_time_s, "segments": self.segments,
                "validation": self.validation, "refill_steps": self.refill_steps}


@dataclass
class NodeTelemetry:
    """One node's samples, taken by its local rank 0 on that node's own clock."""
    host: str
    rows: list[dict]
    gpu_reason: str | None
    window: tuple[float, float] | None  # the node's timed window, on the same clock
    gpu_indices: list[int]
    paused_s: float = 0.0  # validation pauses inside the window (LoopResult.paused_s)

    @classmethod
    def of(cls, sampler, loop: LoopResult, cell: Cell) -> "NodeTelemetry":
        """Stops the sampler: what it holds is the node's whole record."""
        import socket
        rows = sampler.stop()
        return cls(socket.gethostname(), rows, sampler.gpu_reason, loop.window,
                   gpu_indices(cell), loop.paused_s)


def local_results(loop: LoopResult, runtime, node: NodeTelemetry | None = None) -> dict:
    """This rank's share of the history: its step data, arrival spans and memory peaks, its
    host, and, from another node's local rank 0, that node's telemetry (sent once, after
    the window)."""
    import socket
    return {"host": socket.gethostname(), "node": placement.node_facts(), "spans": loop.spans,
            # a GPU rank keeps one host thread busy driving its device; a CPU rank, all its own
            "threads": runtime.threads if runtime.device_type == "cpu" else 1,
            "step_times_s": loop.step_times_s, "data_wait_s": loop.data_wait_s,
            "losses": loop.losses, "grad_norms": loop.grad_norms,
            "peak_mem_mb": peak_memory_mb(runtime, loop),
            "peak_mem_reserved_mb": peak_reserved_mb(runtime, loop),
            "skipped_steps": loop.skipped_steps,
            "warmup_skipped_steps": loop.warmup_skipped_steps, "local_rank": runtime.local_rank,
            "node_telemetry": node}


def gather(local: dict, runtime) -> list[dict]:
    """Every rank's timings on rank 0, once, after the timed window (never inside it)."""
    if runtime.world_size == 1:
        return [local]
    import torch.distributed as dist
    out: list = [None] * runtime.world_size
    dist.all_gather_object(out, local)
    return out


def peak_memory_mb(runtime, loop: LoopResult | None = None) -> float:
    """The training's peak: on CUDA the larger of the peak since the last validation pause and
    the peaks before each pause (loop.peak_before_pauses), never a pause's own."""
    import torch
    if runtime.device_type == "cuda":
        before = getattr(loop.peak_before_pauses, "allocated", 0) if loop else 0
        return max(torch.cuda.max_memory_allocated(runtime.device), before) / 2**20
    # ru_maxrss is the peak resident set of this process, in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_reserved_mb(runtime, loop: LoopResult | None = None) -> float | None:
    """What the caching allocator held at its peak: the memory other jobs could not use (the
    training's, as peak_memory_mb)."""
    import torch
    if runtime.device_type != "cuda":
        return None
    before = getattr(loop.peak_before_pauses, "reserved", 0) if loop else 0
    return max(torch.cuda.max_memory_reserved(runtime.device), before) / 2**20


def save_preempted(job: Job, engine, runtime, cell_dir: Path, history: History,
                   loop: LoopResult, sampler) -> None:
    """Checkpoint (when the strategy supports it) and a `preempted` record, from rank 0."""
    from bench.measure import envinfo
    from bench.worker import checkpoint
    if sampler:
        sampler.stop()
    if not runtime.is_main:
        return
    saved = engine.supports_checkpoint
    if saved:
        checkpoint.save(cell_dir, {"cell_id": job.cell.cell_id, "fingerprint": job.fingerprint,
                                   "next_step": loop.end_step, "rng": checkpoint.rng_state(),
                                   **engine.training_state(), "history": history.to_dict()})
    record = builder.preempted_record(
        job.cell, job.fingerprint, launched_at=job.launch_time, steps_done=loop.end_step,
        train_time_s=history.train_time_s,
        time_to_train_s=time.time() - job.launch_time,
        checkpoint=store.CHECKPOINT if saved else None, env=envinfo.capture())
    store.write_json(Path(cell_dir) / store.RECORD, record)


@dataclass
class Steps:
    """The cell's steps as they count: the slowest rank's time, the mean loss over ranks'
    equal shards, and which steps warmed up (not timed)."""
    times: np.ndarray
    waits: np.ndarray
    losses: np.ndarray
    warm: np.ndarray

    @classmethod
    def of(cls, history: History) -> "Steps":
        per_rank = history.per_rank
        return cls(np.max([r["step_times_s"] for r in per_rank], axis=0),
                   np.max([r["data_wait_s"] for r in per_rank], axis=0),
                   np.mean([r["losses"] for r in per_rank], axis=0),
                   ~np.asarray(history.timed, dtype=bool))


def write_results(job: Job, strategy, runtime, cell_dir: Path, history: History,
                  quality: list[dict], samples: dict, nodes: list[NodeTelemetry | None], *,
                  eval_s: float, flops_per_step: int | None, data_info,
                  probe: dict | None = None, sharding: dict | None = None) -> None:
    """Rank 0, after evaluation: steps.parquet, telemetry, samples and the `ok`/`diverged`
    record. `nodes`: each node's telemetry, rank 0's first (None where none was taken)."""
    from bench.measure import envinfo

    cell, cell_dir = job.cell, Path(cell_dir)
    steps = Steps.of(history)
    from bench.measure.stragglers import of_ranks
    stragglers, lateness = of_ranks(history.per_rank, ~steps.warm, history.train_time_s)
    write_steps(cell_dir, cell, history, steps, lateness)
    timing = timing_section(job, runtime, history, steps, eval_s)
    env = envinfo.capture()
    telemetry = telemetry_section(cell, cell_dir, history, nodes)
    telemetry.update(mfu_section(cell, timing, env, flops_per_step))
    telemetry.update(input_bound(timing, runtime.device_type))
    if samples:
        np.savez_compressed(cell_dir / "samples.npz", **samples)
    losses = steps.losses
    record = builder.trained_record(
        cell, job.fingerprint, launched_at=job.launch_time,
        diverged_at=first_nonfinite(list(losses)),
        segments=history.segments,
        runtime=runtime_section(cell, strategy, runtime, history, sharding),
        loss={"first": float(losses[0]), "last": float(losses[-1]),
              "last10_mean": float(np.mean(losses[-10:]))},
        timing=timing, quality=quality, telemetry=telemetry, data=data_section(cell, data_info),
        notes=strategy.notes(cell), env=env, prepared=data_info, cell_dir=cell_dir,
        breakdown=breakdown_section(probe, history, steps, runtime.device_type),
        validation=history.validation, stragglers=stragglers)
    store.write_json(cell_dir / store.RECORD, record)


def breakdown_section(probe: dict | None, history: History, steps: Steps,
                      device_type: str) -> dict | None:
    """The probe's phase shares laid over the timed window (bench.measure.attribution)."""
    from bench.measure import attribution
    from bench.worker.probe import method
    timed = ~steps.warm
    if probe is None or history.train_time_s <= 0 or not timed.any():
        return None
    out = attribution.window_breakdown(
        probe, window_s=history.train_time_s, steps_s=float(steps.times[timed].sum()),
        data_wait_s=float(steps.waits[timed].sum()), method=method(device_type))
    # How far the profiled steps were from the timed ones (profiler overhead, a drift).
    out["probe_vs_timed_step"] = probe["probe_step_s"] / float(np.median(steps.times[timed]))
    return out


def write_steps(cell_dir: Path, cell: Cell, history: History, steps: Steps,
                lateness: list | None = None) -> None:
    """steps.parquet; with several ranks each rank's step time, and with arrivals marked its
    data wait, compute to gradients ready, wait at the all-reduce, optimizer step and lateness
    (bench.measure.stragglers) per step."""
    import pandas as pd

    # Steps run: all of them, or fewer where the cell stopped at its quality target.
    table = pd.DataFrame({"step": np.arange(len(steps.times)), "loss": steps.losses,
                          "step_time_s": steps.times, "data_wait_s": steps.waits,
                          "warmup": steps.warm})
    for r, rank in enumerate(history.per_rank):
        table[f"step_time_rank{r}_s"] = rank["step_times_s"]
        if lateness is not None:
            for span in ("data", "compute", "sync_wait", "optimizer"):
                table[f"{span}_rank{r}_s"] = rank["spans"][f"{span}_s"]
            table[f"lateness_rank{r}_s"] = lateness[r]
    if history.per_rank[0]["grad_norms"]:  # parity runs: every rank holds the same gradient
        table["grad_norm"] = history.per_rank[0]["grad_norms"]
    store.write_table(cell_dir / store.STEPS, table)


def timing_section(job: Job, runtime, history: History, steps: Steps, eval_s: float) -> dict:
    from bench.measure.timing import summarize_steps

    cell, per_rank, timed = job.cell, history.per_rank, ~steps.warm
    train_time_s = history.train_time_s
    timed_images = cell.effective_global_batch * int(timed.sum())
    return {
        "train_time_s": train_time_s,
        "time_to_train_s": time.time() - job.launch_time,
        "eval_time_s": eval_s,
        # Validation during training (bench.worker.validation): paused between steps, its
        # seconds taken out of train_time_s; in the timed window or before it.
        "eval_pause_s": (history.validation or {}).get("eval_pause_s", 0.0),
        # steps after a pause whose batches the loader's workers made during it: untimed
        "pause_refill_steps": history.refill_steps,
        "steps_run": len(steps.times),
        "timed_steps": int(timed.sum()),
        "warmup_steps": int(steps.warm.sum()) - history.refill_steps,
        "throughput_img_s": timed_images / train_time_s if train_time_s > 0 else None,
        "data_wait_frac": float(steps.waits[timed].sum() / max(train_time_s, 1e-12)),
        # The window's share outside the steps' own time. On CUDA the step times are device
        # times (events), so this is the device idle between one step's end and the next one's
        # start: what an input-bound GPU shows. The host's wait above overlaps queued GPU work.
        "idle_between_steps_frac": max(0.0, 1.0 - float(steps.times[timed].sum())
                                       / train_time_s) if train_time_s > 0 else None,
        "peak_mem_mb": max(r["peak_mem_mb"] for r in per_rank),
        "peak_mem_mb_per_rank": [r["peak_mem_mb"] for r in per_rank],
        "peak_mem_reserved_mb_per_rank": [r.get("peak_mem_reserved_mb") for r in per_rank],
        "clock": "cuda-events" if runtime.device_type == "cuda" else "host-monotonic",
        # Each rank's own median timed step: a straggler shows up here before it shows in
        # the slowest-rank step time that counts.
        "step_time_median_s_per_rank": [float(np.median(np.asarray(r["step_times_s"])[timed]))
                                        if timed.any() else None for r in per_rank],
        **summarize_steps(steps.times[timed]),
    }


def input_bound(timing: dict, device_type: str) -> dict:
    """Whether the steps waited on their input, and by which signal. On CUDA the host's wait
    for the next batch overlaps GPU work still queued, so a GPU-saturated cell can wait long
    on the host without the GPU ever idling: there the device's idle time between steps
    decides. On a CPU the work is synchronous and the host wait is exact."""
    if device_type == "cuda":
        share, signal = timing.get("idle_between_steps_frac"), "device idle between steps"
    else:
        share, signal = timing.get("data_wait_frac"), "host wait for data"
    return {"input_bound": share is not None and share > INPUT_BOUND_FRAC,
            "input_bound_signal": signal, "input_bound_frac": share}


def telemetry_section(cell: Cell, cell_dir: Path, history: History,
                      nodes: list[NodeTelemetry | None]) -> dict:
    """telemetry.parquet (every node's samples, a `node` column naming the host), and the
    summary of the timed window: each node's own, added up over the nodes. `nodes` holds one
    entry per node, rank 0's first; None where a node sent nothing."""
    from bench.measure import telemetry

    rows = [{**r, "node": n.host} for n in nodes if n is not None for r in n.rows]
    if rows:
        store.write_table(cell_dir / store.TELEMETRY, telemetry.to_table(rows))
    if nodes[0] is None or not nodes[0].rows or nodes[0].window is None:
        return {}
    # This process sampled only the last segment of a resumed cell: its images alone.
    last = history.segments[-1]
    images = cell.effective_global_batch * sum(history.timed[last["start_step"]:last["end_step"]])
    summaries = [telemetry.summarize(n.rows, timed_start_s=n.window[0],
                                     timed_end_s=n.window[1], images=images,
                                     paused_s=n.paused_s,
                                     gpu_indices=n.gpu_indices, gpu_reason=n.gpu_reason)
                 if n is not None and n.rows and n.window is not None else None
                 for n in nodes]
    hosts = [n.host if n is not None else f"node {i}" for i, n in enumerate(nodes)]
    return telemetry.combine_nodes(summaries, hosts, images)


def mfu_section(cell: Cell, timing: dict, env: dict, flops_per_step: int | None) -> dict:
    """Model FLOPs utilisation on the cell's devices, or why there is none. `tflops` and `mfu`
    divide the timed steps' FLOPs by the timed window, which holds the data waits too: a median
    step would overstate them exactly when a cell is input-bound. The median step's figures
    are kept beside them (`*_median_step`)."""
    from bench.measure.flops import mfu

    timed_steps, window_s = timing["timed_steps"], timing["train_time_s"]
    if not (flops_per_step and timed_steps and window_s and timing["step_time_median_s"]):
        return {"mfu": None, "mfu_note": "FLOPs could not be counted (the reason is in "
                                         "cell.log)"}
    device_name = env["gpus"][0] if env["gpus"] and cell.device_type == "cuda" else env["cpu"]
    window_step_s = window_s / timed_steps  # the window's time per step, waits included
    value, reason = mfu(flops_per_step, window_step_s, device_name, cell.precision,
                        cell.devices)
    median_value, _ = mfu(flops_per_step, timing["step_time_median_s"], device_name,
                          cell.precision, cell.devices)
    return {"flops_per_step": flops_per_step,
            "tflops": flops_per_step / window_step_s / 1e12,
            "mfu": value, "mfu_note": reason,
            "tflops_median_step": flops_per_step / timing["step_time_median_s"] / 1e12,
            "mfu_median_step": median_value}


def runtime_section(cell: Cell, strategy, runtime, history: History,
                    sharding: dict | None = None) -> dict:
    return {
        "world_size": runtime.world_size, "per_device_batch": cell.per_device_batch,
        "global_batch": cell.effective_global_batch, "lr": cell.effective_lr,
        "lr_rule": "linear (lr × devices)" if cell.scaling == "weak" else "none (strong)",
        "backend": runtime.backend, "device": runtime.device,
        "threads_per_rank": runtime.threads, "threads_source": runtime.threads_source,
        # which machine each node was, and whether its ranks had the cores (measure.placement)
        "placement": placement.summarize(history.per_rank),
        "strategy": strategy.description, "strategy_options": strategy_options(cell),
        # How a sharding strategy split the parameters (FSDP's units, ZeRO-3's persistence).
        "sharding": sharding,
        # Every rank steps on the same all-reduced gradients: a skipped fp16 step is skipped on
        # all of them, so the count is rank 0's. The warm-up's apart (GradScaler's search).
        "skipped_steps": history.per_rank[0]["skipped_steps"],
        "warmup_skipped_steps": history.per_rank[0].get("warmup_skipped_steps", 0),
        "batchnorm_per_rank_stats": cell.batchnorm_per_device,
    }


def data_section(cell: Cell, prepared) -> dict:
    return {"source": cell.data, "description": prepared.description,
            "skipped_images": prepared.skipped, "digest": prepared.digest,
            # named, at most SKIPPED_NAMED of them: the rest is in the data cache's sidecar
            "skipped_files": prepared.skipped_files()[:SKIPPED_NAMED],
            "train_images": len(prepared.split("train")),
            "test_images": len(prepared.split("test"))}


def strategy_options(cell: Cell) -> dict:
    options = {"channels_last": cell.channels_last, "compile": cell.compile,
               "cudnn_benchmark": cell.cudnn_benchmark, "workers": cell.workers,
               "pin_memory": cell.pin_memory}
    if cell.strategy == "deepspeed":
        options["zero_stage"] = cell.zero_stage or 0
    return options


def first_nonfinite(losses: list[float]) -> int | None:
    for step, value in enumerate(losses):
        if not math.isfinite(value):
            return step
    return None
