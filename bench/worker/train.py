"""One cell's training, as run by every rank process (`python -m bench.worker CELL_DIR`).

Order of work: seeded model → strategy wrap → warm-up steps → timed steps → gather per-rank
results → (rank 0) evaluation with a fresh fp32 model → plug-ins' after-training hooks →
record. Only the steps between the two window boundaries are timed. A SIGTERM stops the
loop at a step boundary instead: checkpoint, `preempted` record, and a re-run resumes.
"""
from __future__ import annotations

import time
from pathlib import Path

from bench import plugins
from bench.config.cell import Job
from bench.measure import attribution
from bench.worker import checkpoint
from bench.worker.loop import LoopResult, ProgressWriter, set_phase, timed_loop
from bench.worker.results import (History, NodeTelemetry, gather, local_results, save_preempted,
                                  write_results)
from bench.worker.setup import Training, build_seeded_model, build_training, start_telemetry


def train_cell(job: Job, strategy, runtime, cell_dir: Path) -> bool:
    """Train, gather, evaluate and record one cell; True when it stopped for SIGTERM."""
    from bench.data import PreparedData

    cell, cell_dir = job.cell, Path(cell_dir)
    sampler = start_telemetry(job, runtime)
    prepared = PreparedData.from_json(job.prepared_data)
    resume = checkpoint.load(cell_dir, cell.cell_id, job.fingerprint)
    start_step = resume["next_step"] if resume else 0
    training = build_training(cell, strategy, runtime, prepared, start_step=start_step)
    if resume:
        training.engine.load_training_state(resume)
        checkpoint.set_rng_state(resume["rng"])

    progress = ProgressWriter(cell_dir, cell.steps) if runtime.is_main else None
    history = History.resume(resume)  # the earlier segments of a resumed cell
    loop, validation = run_loop(job, training, runtime, sampler, progress, start_step,
                                prepared, history)
    set_phase(sampler, "eval")
    # Another node's sampler ends with the window; its samples travel to rank 0 with the
    # step data. Rank 0 keeps sampling through evaluation.
    node = NodeTelemetry.of(sampler, loop, cell) \
        if sampler is not None and not runtime.is_main else None
    gathered = gather(local_results(loop, runtime, node), runtime)
    history.extend(gathered, loop)
    history.validation = validation
    if loop.preempted:
        save_preempted(job, training.engine, runtime, cell_dir, history, loop, sampler)
        return True
    state = training.engine.full_state_dict(runtime)  # every rank takes part in the gather
    # The attribution probe trains on after the weights above were taken: they stay the
    # window's, and so does every timed figure.
    probes = gather(attribution_probe(job, training, loop, runtime), runtime)
    if runtime.is_main:
        # One entry per other node: its local rank 0's telemetry, None if it sent none.
        others = [g["node_telemetry"] for g in gathered[1:] if g["local_rank"] == 0]
        finish(job, strategy, runtime, cell_dir, state, prepared, training, history, loop,
               sampler, progress, others, attribution.combine_ranks(probes))
    return False


def run_loop(job: Job, training: Training, runtime, sampler, progress, start_step: int,
             prepared, previous: History) -> tuple[LoopResult, dict | None]:
    """The timed loop, listening for SIGTERM only while it runs, with validation during
    training where the cell has it; returns the loop and the validation state (rank 0's curve,
    a resumed cell's earlier points first)."""
    from bench.measure.arrivals import StepMarks
    from bench.worker.validation import Validator

    preemption = checkpoint.Preemption(runtime.world_size, runtime.device_type)
    validator = Validator.of(job.cell, prepared, runtime, training.engine,
                             previous={**(previous.validation or {}),
                                       "train_time_s": previous.train_time_s,
                                       "timed_steps": sum(previous.timed)},
                             group=preemption.group, parity=is_parity(job))
    try:
        loop = timed_loop(training.engine, training.loader, job.cell, runtime.device,
                          sampler=sampler, progress=progress, start_step=start_step,
                          preemption=preemption, track_grad_norm=is_parity(job),
                          validator=validator,
                          marks=StepMarks(runtime.device_type) if runtime.world_size > 1
                          else None)
    finally:
        preemption.restore()
    if validator is None or not runtime.is_main:
        return loop, None
    return loop, {**validator.state(),
                  "stopped_at_step": loop.end_step if loop.reached_target else None}


def attribution_probe(job: Job, training: Training, loop: LoopResult, runtime) -> dict | None:
    """This rank's profiled probe steps (bench.worker.probe); none for a parity run, which
    compares steps, not where their time goes."""
    if is_parity(job) or loop.last_batch is None:
        return None
    from bench.worker.probe import run_probe, thread_scaling
    probe = run_probe(training.engine, loop.last_batch, runtime.device_type)
    if probe is not None:
        probe["thread_scaling"] = thread_scaling(training.engine, loop.last_batch, runtime)
    return probe


def finish(job: Job, strategy, runtime, cell_dir: Path, state: dict, prepared,
           training: Training, history: History, loop: LoopResult, sampler,
           progress: ProgressWriter | None, other_nodes: list, probe: dict | None) -> None:
    """Rank 0 after the last step: evaluate, let plug-ins keep the trained weights, record,
    and drop the checkpoint the finished cell no longer needs."""
    if progress:
        progress.update(job.cell.steps, "eval", force=True)
    quality, samples, eval_s = evaluate_trained(job, state, prepared, runtime.device)
    if not is_parity(job):  # a parity run compares steps, not trained models
        plugins.after_training(job, state, cell_dir)
    own = NodeTelemetry.of(sampler, loop, job.cell) if sampler else None
    write_results(job, strategy, runtime, cell_dir, history, quality, samples,
                  [own, *other_nodes], eval_s=eval_s, flops_per_step=training.flops_per_step,
                  data_info=prepared, probe=probe, sharding=training.engine.sharding)
    (cell_dir / checkpoint.CHECKPOINT).unlink(missing_ok=True)


def evaluate_trained(job: Job, state: dict, prepared,
                     device: str) -> tuple[list[dict], dict, float]:
    """(quality, sample images, seconds) of the trained weights in a fresh fp32 model. A
    parity run compares steps, not models; data without clean test images (a plug-in's) is
    scored elsewhere: both leave quality empty."""
    from bench.worker.evaluate import evaluate

    cell = job.cell
    start = time.monotonic()
    model = build_seeded_model(cell)
    model.load_state_dict(state)
    quality, samples = [], {}
    if not is_parity(job) and prepared.has_clean:
        quality, samples = evaluate(model, prepared, sigmas=cell.noise, seed=cell.workload_seed,
                                    noise_mean=cell.noise_mean, device=device)
    return quality, samples, time.monotonic() - start


def is_parity(job: Job) -> bool:
    return bool(job.extra.get("parity"))
