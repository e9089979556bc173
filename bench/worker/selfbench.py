"""bench measuring itself: does the harness slow down what it measures?

bench's timed loop (engine, step timer, data waits) and a hand-written PyTorch step on its own
copy of the same seeded model alternate step by step on the same batches, so a drift of a
shared machine reaches both alike (separate loops, even interleaved, differed by ±10% here).
Two passes, in a rotating order per repeat: one fed a fixed random batch (what a user writes
to check a benchmark's figure: bench_static, bare_static) and one fed bench's own batches
(loader, augmentation, noise: bench_real, bare_real).

Each side's figure is its median step time after warm-up (the batch fetch outside the clock,
as in bench's records; a hiccup of a shared machine moves a mean, not a median). harness =
bench ÷ bare in the same pass (static and real); data = bare_real ÷ bare_static, the batches'
own effect on the computation: a user sees the harness's cost apart from the data's. Each
ratio is the median of per-repeat ratios with their range. On one device the passes run in
this process; DDP runs them in torchrun ranks (`python -m bench.worker.selfbench`), rank 0
reporting, as in a cell. One device also compares bench's loop with the telemetry sampler at
10 Hz against sampling off, in a third pass.

A further pass ("probed") runs the attribution probe (bench.worker.probe: profiled steps)
on bench's engine before its timed steps. In a cell the probe runs after the timed window,
so no timed step follows it; this pass is the harder case, and shows whether the profiler
leaves any cost behind on the steps it did not sample (attribution = bench ÷ bare in the
real pass ÷ the same in the probed pass: the bare steps alternate with bench's in both, so
the drift between passes cancels, as in the harness ratio), and what the probe itself takes
(seconds per step the probe trains, timed and shape-recording ones alike, against an
unprobed step).

A last pass ("swapped") takes the straggler marks (bench.measure.arrivals) where a cell of
this many ranks does not: none for DDP, whose cells mark every step's arrival through a
communication hook, and marks on one device, whose cells take none. arrivals = harness with
the marks ÷ harness without them, paired in the same way.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from bench.config.cell import Cell

WARMUP = 5  # untimed steps before each measured loop
HARNESS_TARGET = 1.02  # bench ÷ bare on the same batches
SAMPLING_TARGET = 0.99  # unsampled ÷ sampled throughput
ATTRIBUTION_TARGET = 0.99  # unprobed ÷ probed step time: the probe costs < 1% afterwards
ARRIVALS_TARGET = 1.01  # marked ÷ unmarked step time: straggler timestamps cost ≤ 1%
RATIOS = {"harness_static": ("bench_static", "bare_static"),
          "harness_real": ("bench_real", "bare_real"),
          "data": ("bare_real", "bare_static")}


def static_batches(cell: Cell, runtime) -> list:
    """One fixed random (noisy, clean) batch of the rank's shape, `cell.steps` times."""
    import torch
    g = torch.Generator().manual_seed(cell.workload_seed)
    shape = (cell.per_device_batch, 1, cell.image_size, cell.image_size)
    batch = (torch.rand(shape, generator=g).to(runtime.device),
             torch.rand(shape, generator=g).to(runtime.device))
    return [batch] * cell.steps


def real_batches(cell: Cell, runtime, prepared):
    from bench.worker.setup import training_loader
    return training_loader(cell, runtime, prepared)


def bench_loop_s(cell: Cell, strategy, runtime, prepared, batches, sample_hz: float = 0.0,
                 sample_cpu_ms: list | None = None, probe_s: list | None = None,
                 marks: bool | None = None) -> float:
    """Median seconds of bench's own timed steps (its step timer, the data wait outside it, as
    in every record); the CPU time of each telemetry sample taken goes into `sample_cpu_ms`.
    With `probe_s` a list, the attribution probe runs first and its seconds go there. Every
    step's arrival is marked (bench.measure.arrivals) where `marks`, by default as in a cell:
    with several ranks; unmarked, DDP keeps its own all-reduce hook."""
    from bench.measure.arrivals import StepMarks
    from bench.worker.loop import timed_loop
    from bench.worker.setup import build_training, gpu_indices

    engine = build_training(cell, strategy, runtime, prepared).engine
    if probe_s is not None:
        probe_s.append(probe_step_s(engine, static_batches(cell, runtime)[0],
                                    runtime.device_type))
    sampler = None
    if sample_hz > 0:
        from bench.measure.telemetry import Sampler
        # The GPU the cell uses is sampled too: NVML reads are part of the cost measured.
        sampler = Sampler(sample_hz, gpu_indices=gpu_indices(cell), root_pid=os.getpid(), t0=0.0)
        sampler.start()
    try:
        loop = timed_loop(engine, batches, cell, runtime.device, sampler=sampler,
                          marks=StepMarks(runtime.device_type)
                          if (runtime.world_size > 1 if marks is None else marks) else None)
    finally:
        if sampler is not None:
            rows = sampler.stop()
            if sample_cpu_ms is not None:
                sample_cpu_ms.extend(r["sample_cpu_ms"] for r in rows)
    return statistics.median(loop.step_times_s[cell.warmup:])


def probe_step_s(engine, batch, device_type: str) -> float:
    """The attribution probe's wall seconds (profiler start, stop and event parsing in) per
    step it trains: its timed steps and its shape-recording ones."""
    import time

    from bench.worker.probe import PROFILED_STEPS, run_probe
    start = time.perf_counter()
    run_probe(engine, batch, device_type)
    return (time.perf_counter() - start) / PROFILED_STEPS


def bare_stepper(cell: Cell, runtime):
    """The step a careful person writes by hand, on its own copy of the seeded model (DDP with
    its defaults when there are several ranks), timed by a clock; (step, timer)."""
    import torch
    import torch.nn.functional as F

    from bench.measure.timing import StepTimer
    from bench.worker.setup import build_seeded_model

    model = build_seeded_model(cell).to(runtime.device)
    if runtime.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(
            model, device_ids=[runtime.local_rank] if runtime.device_type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=cell.lr)
    timer = StepTimer(runtime.device_type)

    def step(noisy, clean) -> None:
        noisy, clean = noisy.to(runtime.device), clean.to(runtime.device)
        timer.start()
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(model(noisy), clean).backward()
        optimizer.step()
        timer.stop()
    return step, timer


def _bare_step_first(batches, step):
    """Each batch goes through the bare step, then on to bench's loop: the two alternate step
    by step, moments apart, so a drift of the machine reaches both alike. The bare step runs
    where bench fetches its batch, outside bench's step timer."""
    for noisy, clean in batches:
        step(noisy, clean)
        yield noisy, clean


def paired_run(cell: Cell, strategy, runtime, prepared, batches, **sampling) -> tuple:
    """(bench, bare) median step seconds of one pass in which bench's timed loop and the bare
    step alternate on the same batches."""
    step, timer = bare_stepper(cell, runtime)
    bench_s = bench_loop_s(cell, strategy, runtime, prepared, _bare_step_first(batches, step),
                           **sampling)
    return bench_s, statistics.median(timer.step_times_s()[cell.warmup:])


def interleaved(cell: Cell, strategy, runtime, prepared, repeats: int,
                sample_hz: float = 0.0) -> dict:
    """Median step seconds of bench's loop and of the bare step, on static and on real
    batches (and bench's loop sampled at `sample_hz` when > 0), one figure per repeat; the
    passes of a repeat run in a rotating order."""
    static = static_batches(cell, runtime)
    sample_cpu_ms: list[float] = []
    probe_s: list[float] = []
    passes = {"static": lambda: paired_run(cell, strategy, runtime, prepared, static),
              "real": lambda: paired_run(cell, strategy, runtime, prepared,
                                         real_batches(cell, runtime, prepared)),
              "probed": lambda: paired_run(cell, strategy, runtime, prepared,
                                           real_batches(cell, runtime, prepared),
                                           probe_s=probe_s),
              # the real pass with the arrival marks a cell of this many ranks does not take
              # (DDP: none; one device: marked)
              "swapped": lambda: paired_run(cell, strategy, runtime, prepared,
                                            real_batches(cell, runtime, prepared),
                                            marks=runtime.world_size == 1)}
    if sample_hz > 0:
        passes["sampled"] = lambda: paired_run(
            cell, strategy, runtime, prepared, real_batches(cell, runtime, prepared),
            sample_hz=sample_hz, sample_cpu_ms=sample_cpu_ms)
    names = list(passes)
    step_s = {f"{side}_{name}": [] for name in names for side in ("bench", "bare")}
    for r in range(repeats):
        for k in range(len(names)):  # the order rotates, so no pass always runs first
            name = names[(r + k) % len(names)]
            bench_s, bare_s = passes[name]()
            step_s[f"bench_{name}"].append(bench_s)
            step_s[f"bare_{name}"].append(bare_s)
    step_s.pop("bare_sampled", None)
    return {"step_s": step_s, "sample_cpu_ms": sample_cpu_ms, "probe_step_s": probe_s}


def harness_pair(step_s: dict, other: str = "probed") -> tuple[list[float], list[float]]:
    """(bench ÷ bare in the real pass, bench ÷ bare in the `other` pass), per repeat."""
    return ([a / b for a, b in zip(step_s["bench_real"], step_s["bare_real"])],
            [a / b for a, b in zip(step_s[f"bench_{other}"], step_s[f"bare_{other}"])])


def paired(a: list[float], b: list[float]) -> dict:
    """The median of per-repeat ratios a/b, with their range."""
    ratios = [x / y for x, y in zip(a, b)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "per_repeat": ratios}


def _cell(strategy: str, devices: int, model: str, steps: int, device_type: str,
          **workload) -> Cell:
    return Cell(model=model, strategy=strategy, devices=devices, steps=steps, warmup=WARMUP,
                sample_hz=0.0, device_type=device_type, **workload)


def summarise(cell: Cell, runtime, measured: dict, sample_hz: float) -> dict:
    step_s = measured["step_s"]
    real, swapped = harness_pair(step_s, "swapped")
    marked, unmarked = (real, swapped) if runtime.world_size > 1 else (swapped, real)
    out = {"strategy": cell.strategy, "devices": cell.devices, "model": cell.model,
           "device": runtime.device, "threads": runtime.threads, "steps": cell.steps,
           "warmup": cell.warmup, "repeats": len(step_s["bare_static"]),
           "global_batch": cell.global_batch, "image_size": cell.image_size,
           "width": cell.width, "step_s": step_s,
           **{name: paired(step_s[a], step_s[b]) for name, (a, b) in RATIOS.items()},
           "harness_target": HARNESS_TARGET,
           # bench's harness ratio in the unprobed pass ÷ in the probed one: each pass's bare
           # steps, alternated with bench's, take the machine's drift between the passes out
           "attribution": paired(*harness_pair(step_s)),
           "attribution_target": ATTRIBUTION_TARGET,
           # bench's harness ratio with arrival marks ÷ without them (the real pass and the
           # swapped one): what the straggler timestamps cost a timed step
           "arrivals": paired(marked, unmarked),
           "arrivals_target": ARRIVALS_TARGET,
           # a profiled probe step (wall, profiler start/stop shared out over every step
           # the probe trains) ÷ an unprobed step
           "probe_slowdown": paired(measured["probe_step_s"], step_s["bench_real"])}
    if "bench_sampled" in step_s:
        cpu = measured["sample_cpu_ms"]
        cpu_ms = statistics.fmean(cpu) if cpu else None
        out.update({
            "sample_hz": sample_hz,
            # sampled ÷ unsampled throughput = unsampled ÷ sampled step time
            "sampling": paired(step_s["bench_real"], step_s["bench_sampled"]),
            "sampling_target": SAMPLING_TARGET,
            # The sampler's own cost, measured directly (thread CPU time per sample), as a
            # share of the CPU the training process can use: not blurred by run-to-run noise.
            "sampler_cpu_ms_per_sample": cpu_ms,
            "sampler_cpu_share": (cpu_ms * sample_hz / 1000 / runtime.threads
                                  if cpu_ms is not None else None)})
    return out


def selfbench(strategy: str = "single", devices: int = 1, model: str = "unet",
              steps: int = 40, repeats: int = 10, sample_hz: float = 10.0,
              device_type: str = "cpu", port: int = 0, **workload) -> dict:
    """The figures of one strategy: in this process for one device, else in torchrun ranks
    that meet on `port` (a free one the caller picked)."""
    if strategy != "single":
        return _in_ranks(strategy, devices, model, steps, repeats, device_type, port, workload)
    from launchers import get_strategy

    from bench.data import prepare

    cell = _cell("single", 1, model, steps, device_type, **workload)
    prepared = prepare(cell.data, image_size=cell.image_size, seed=cell.seed)
    strat = get_strategy("single")
    runtime = strat.init_runtime(cell)
    return summarise(cell, runtime, interleaved(cell, strat, runtime, prepared, repeats,
                                                sample_hz), sample_hz)


def _in_ranks(strategy: str, devices: int, model: str, steps: int, repeats: int,
              device_type: str, port: int, workload: dict) -> dict:
    """torchrun `devices` ranks of this module; rank 0 writes the figures to a file."""
    import tempfile

    from launchers import get_strategy
    from launchers.processes import run_to_end

    from bench.data import prepare

    cell = _cell(strategy, devices, model, steps, device_type, **workload)
    # prepared once here, as the runner does for a cell's ranks
    prepared = prepare(cell.data, image_size=cell.image_size, seed=cell.seed)
    with tempfile.TemporaryDirectory(prefix="bench-selfbench-") as tmp:
        out = Path(tmp) / "figures.json"
        spec = {"cell": cell.to_dict(), "repeats": repeats, "out": str(out),
                "prepared": prepared.to_json()}
        argv = get_strategy(strategy).argv(cell, ["-m", "bench.worker.selfbench",
                                                  json.dumps(spec)], port)
        # Ranks in a session of their own, ended with this call however it ends (Ctrl-C)
        done = run_to_end(argv)
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"selfbench ranks of {strategy} ×{devices} failed "
                               f"(exit {done.returncode}): {tail[0]}")
        return json.loads(out.read_text())


def rank_main(spec: dict) -> None:
    """One torchrun rank: the interleaved loops in lockstep with the other ranks."""
    from launchers import get_strategy

    from bench.data import PreparedData

    cell = Cell.from_dict(spec["cell"])
    strategy = get_strategy(cell.strategy)
    runtime = strategy.init_runtime(cell)
    try:
        prepared = PreparedData.from_json(spec["prepared"])
        measured = interleaved(cell, strategy, runtime, prepared, spec["repeats"])
        if runtime.is_main:
            Path(spec["out"]).write_text(json.dumps(summarise(cell, runtime, measured, 0.0)))
    finally:
        strategy.shutdown()


if __name__ == "__main__":
    rank_main(json.loads(sys.argv[1]))
