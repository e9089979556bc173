"""bench measuring itself: does the harness slow down what it measures?

Two interleaved comparisons in one process, same seeded model, batch and data each time:
1. bench's timed loop vs. a bare hand-written PyTorch loop (target ratio ≤ 1.03);
2. bench's loop with the telemetry sampler at 10 Hz vs. sampling off (target ratio ≥ 0.99).
Interleaving in a rotating order (A B C, B C A, C A B, ...) keeps slow drifts of the machine
and first-run effects from favouring one side.
"""
from __future__ import annotations

import os
import statistics
import time

from bench.config.cell import Cell

WARMUP = 5  # untimed steps before each measured loop


def _bench_loop_s(cell: Cell, strategy, runtime, prepared, sample_hz: float = 0.0,
                  sample_cpu_ms: list | None = None) -> float:
    """Seconds per timed step of bench's own loop (data loading included, like the bare loop);
    the CPU time of each telemetry sample taken goes into `sample_cpu_ms`."""
    from bench.worker.loop import timed_loop
    from bench.worker.setup import build_training, gpu_indices

    training = build_training(cell, strategy, runtime, prepared)
    sampler = None
    if sample_hz > 0:
        from bench.measure.telemetry import Sampler
        # The GPU the cell uses is sampled too: NVML reads are part of the cost measured.
        sampler = Sampler(sample_hz, gpu_indices=gpu_indices(cell), root_pid=os.getpid(), t0=0.0)
        sampler.start()
    try:
        loop = timed_loop(training.engine, training.loader, cell, runtime.device, sampler=sampler)
    finally:
        if sampler is not None:
            rows = sampler.stop()
            if sample_cpu_ms is not None:
                sample_cpu_ms.extend(r["sample_cpu_ms"] for r in rows)
    return (loop.window[1] - loop.window[0]) / (cell.steps - cell.warmup)


def _bare_loop_s(cell: Cell, runtime, prepared) -> float:
    """The loop a careful person writes by hand: no timers, no progress, no telemetry."""
    import torch
    import torch.nn.functional as F

    from bench.data import DenoiseDataset, GlobalBatchSampler
    from bench.worker.setup import build_seeded_model

    model = build_seeded_model(cell).to(runtime.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cell.lr)
    dataset = DenoiseDataset(prepared, "train", sigmas=cell.noise, seed=cell.workload_seed,
                             augment=True)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=GlobalBatchSampler(
        len(dataset), global_batch=cell.global_batch, world_size=1, rank=0, steps=cell.steps,
        seed=cell.workload_seed))
    start = None
    for step, (noisy, clean) in enumerate(loader):
        if step == cell.warmup:
            start = time.monotonic()
        optimizer.zero_grad(set_to_none=True)
        loss = F.l1_loss(model(noisy.to(runtime.device)), clean.to(runtime.device))
        loss.backward()
        optimizer.step()
    if runtime.device_type == "cuda":
        torch.cuda.synchronize()
    return (time.monotonic() - start) / (cell.steps - cell.warmup)


def overhead_ratio(model: str = "unet", steps: int = 40, repeats: int = 5,
                   sample_hz: float = 10.0, device_type: str | None = None) -> dict:
    """`device_type` comes resolved from the CLI (bench.sweep.hardware); None: a visible
    GPU, else the CPU."""
    import torch
    from launchers import get_strategy

    from bench.data import prepare

    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    cell = Cell(model=model, steps=steps, warmup=WARMUP, sample_hz=0.0,
                device_type=device_type)
    prepared = prepare(cell.data, image_size=cell.image_size, seed=cell.seed)
    strategy = get_strategy("single")
    runtime = strategy.init_runtime(cell)
    bare, plain, sampled, sample_cpu_ms = [], [], [], []
    runs = [lambda: bare.append(_bare_loop_s(cell, runtime, prepared)),
            lambda: plain.append(_bench_loop_s(cell, strategy, runtime, prepared)),
            lambda: sampled.append(_bench_loop_s(cell, strategy, runtime, prepared,
                                                 sample_hz=sample_hz,
                                                 sample_cpu_ms=sample_cpu_ms))]
    for r in range(repeats):
        for k in range(len(runs)):  # the order rotates, so no side always runs first
            runs[(r + k) % len(runs)]()
    med = statistics.median
    # Per-repeat ratios pair runs taken moments apart, so slow drifts of a shared machine
    # cancel; their spread says how much one figure can be trusted.
    harness = [p / b for p, b in zip(plain, bare)]
    sampling = [p / s for p, s in zip(plain, sampled)]
    cpu_ms = statistics.fmean(sample_cpu_ms) if sample_cpu_ms else None
    return {
        "model": model, "device": runtime.device, "threads": runtime.threads,
        "steps": steps, "warmup": cell.warmup, "repeats": repeats,
        "global_batch": cell.global_batch, "image_size": cell.image_size,
        "bare_loop_step_s": bare, "bench_loop_step_s": plain,
        "bench_sampled_step_s": sampled, "sample_hz": sample_hz,
        "harness_overhead_ratio": med(harness),
        "harness_ratio_per_repeat": harness,
        "harness_target": "<= 1.03",
        "sampling_throughput_ratio": med(sampling),
        "sampling_ratio_per_repeat": sampling,
        "sampling_target": ">= 0.99",
        # The sampler's own cost, measured directly (thread CPU time per sample), as a share
        # of the CPU the training process can use: not blurred by run-to-run noise.
        "sampler_cpu_ms_per_sample": cpu_ms,
        "sampler_cpu_share": (cpu_ms * sample_hz / 1000 / runtime.threads
                              if cpu_ms is not None else None),
        "step_time_cv": statistics.stdev(plain) / statistics.fmean(plain)
        if len(plain) > 1 else None,
    }
