"""The training loop: warm-up steps, then the timed window, the only code whose time counts.

Inside the window nothing synchronises with the device except what training itself does:
losses stay on the device until the end, step times come from the StepTimer, progress is
written at most twice a second, and a pending SIGTERM is checked at step boundaries only.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.config.cell import Cell
from bench.record import store

PROGRESS_INTERVAL_S = 0.5


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
    last_batch: tuple | None = None  # (noisy, clean) of the last step: the probe's input
    skipped_steps: int = 0  # fp16 updates GradScaler skipped in the timed window
    warmup_skipped_steps: int = 0  # and in the warm-up before it (finding its scale)
    paused_s: float = 0.0  # validation pauses inside the window: not training time
    reached_target: bool = False  # stopped at the first validation point at the target
    untimed_steps: list = field(default_factory=list)  # window steps trained inside a pause
    peak_before_pauses: object = None  # DevicePeaks: the training's CUDA peaks before pauses
    spans: dict | None = None  # per step, StepMarks.spans (multi-rank cells): arrivals


def refill_steps(loader) -> int:
    """Batches the loader's workers hold ready after a pause: each prefetches
    `prefetch_factor` of them (none without workers)."""
    workers = getattr(loader, "num_workers", 0)
    return workers * (getattr(loader, "prefetch_factor", None) or 2) if workers else 0


def first_timed_step(cell: Cell, start_step: int) -> int:
    """Warm-up at the start; after a resume the caches are cold again, so the first `warmup`
    steps of the new segment are trained but not timed (as long as one timed step is left)."""
    if start_step == 0:
        return cell.warmup
    return max(cell.warmup, min(start_step + cell.warmup, cell.steps - 1))


def timed_loop(engine, loader, cell: Cell, device: str, *, sampler=None, progress=None,
               start_step: int = 0, preemption=None, track_grad_norm: bool = False,
               validator=None, marks=None) -> LoopResult:
    """Steps [start_step, cell.steps) unless a SIGTERM or a reached target stops them early;
    the steps from `first_timed_step` on form the timed window, less the validation pauses.
    `marks` (bench.measure.arrivals.StepMarks): every step's arrival marks."""
    import torch

    from bench.measure.timing import StepTimer, synchronize

    device_type = device.split(":")[0]
    timer = StepTimer(device_type)
    losses, waits, grad_norms = [], [], []
    window_start = None
    timed_from = first_timed_step(cell, start_step)
    end_step, preempted, reached = cell.steps, False, False
    set_phase(sampler, "warmup")
    skipped = SkipCount(engine)
    pause = Pauses(validator, sampler, device_type, refill=refill_steps(loader))
    if start_step == 0:
        pause.validate(0, None, timed_from)  # the initial weights: the curve's first point
    batch_iter = iter(loader)
    if marks is not None:
        engine.mark_arrivals(marks)
    for step in range(start_step, cell.steps):
        if preemption is not None and preemption.should_stop(step):
            end_step, preempted = step, True
            break
        if step == timed_from:
            synchronize(device_type)
            mark(sampler, "window_start")  # outside the window: it reads NVML
            window_start = time.monotonic()
            set_phase(sampler, "timed")
            skipped.window_starts()
        if marks is not None:
            marks.start()
        t_wait = time.perf_counter()
        noisy, clean = next(batch_iter)
        noisy = noisy.to(device, non_blocking=True)
        clean = clean.to(device, non_blocking=True)
        if cell.channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        waits.append(time.perf_counter() - t_wait)
        if marks is not None:
            marks.fetched()
        timer.start()
        loss = engine.train_step(noisy, clean)
        timer.stop()
        if marks is not None:
            marks.end()
        losses.append(loss)
        if track_grad_norm:  # parity checks only: reading the norm synchronises
            grad_norms.append(engine.grad_norm())
        if progress:
            progress.update(step + 1, "warmup" if step < timed_from else "timed")
        pause.step_done(step, window_start)
        if pause.validate(step + 1, window_start, timed_from):
            end_step, reached = step + 1, True
            break
    if pause.open is not None:  # the run ended inside a pause's refill steps
        pause.close(window_start)
    synchronize(device_type)
    if marks is not None:
        engine.mark_arrivals(None)  # the probe's steps after the loop are no timed steps
    set_phase(sampler, "eval")  # before the end is read: no "timed" sample can come after it
    window = (window_start, time.monotonic()) if window_start is not None else None
    if window is not None:
        mark(sampler, "window_end")
    loss_values = [float(v) for v in torch.stack(losses).float().cpu()] if losses else []
    last = (noisy, clean) if end_step > start_step else None
    return LoopResult(timer.step_times_s(), waits, loss_values, grad_norms, window,
                      start_step, end_step, timed_from, preempted, last,
                      skipped_steps=skipped.timed(), warmup_skipped_steps=skipped.warmup(),
                      paused_s=pause.in_window_s, reached_target=reached,
                      untimed_steps=pause.untimed, peak_before_pauses=pause.peaks,
                      spans=marks.spans() if marks is not None else None)


class Pauses:
    """Validation between steps, timed as a pause: its seconds inside the timed window are
    taken out of the window's time, its telemetry samples are labelled `eval_pause` (marks
    at both ends), so no timed figure holds any of it. Loader workers fill their queues while
    training waits, so with workers the `refill` steps after a pause would find their batches
    ready: they are trained inside the pause, untimed, as the re-warm-up after a resume is.
    On CUDA the memory peak of a pause is no part of the training's."""

    def __init__(self, validator, sampler, device_type: str, refill: int = 0):
        self.validator, self.sampler, self.device_type = validator, sampler, device_type
        self.refill = refill
        self.in_window_s = 0.0
        self.untimed: list[int] = []  # steps in the window trained inside a pause
        self.open: list | None = None  # [start time, refill steps left] of the pause under way
        self.peaks = DevicePeaks(device_type)

    def validate(self, steps_done: int, window_start: float | None, timed_from: int) -> bool:
        """Validate after `steps_done` steps if a point is due; True when training stops: the
        target is reached, the cell stops at it, and at least one step was timed."""
        from bench.measure.timing import synchronize

        if self.validator is None or not self.validator.due(steps_done):
            return False
        synchronize(self.device_type)  # queued steps are training time, not the pause's
        start = time.monotonic()
        if self.open is None:  # a new pause (else one still in its refill steps goes on)
            self.open = [start, 0]
            set_phase(self.sampler, "eval_pause")
            mark(self.sampler, "pause_start")
            self.peaks.pause_starts()
        timed_steps = max(0, steps_done - timed_from) - len(self.untimed)
        # the window's seconds up to this pause's start
        timed_s = self.open[0] - window_start - self.in_window_s \
            if window_start is not None else 0.0
        reached = self.validator.run(steps_done, timed_s, timed_steps)
        synchronize(self.device_type)
        self.validator.paused(time.monotonic() - start)
        stop = reached and self.validator.cell.stop_at_target and timed_steps > 0
        if window_start is None or stop or not self.refill:
            self.close(window_start)
        else:  # the next `refill` steps stay inside the pause
            self.open[1] = self.refill
        return stop

    def step_done(self, step: int, window_start: float | None) -> None:
        """After each step: one of a pause's refill steps, untimed; the last closes it."""
        if self.open is None:
            return
        self.untimed.append(step)
        self.open[1] -= 1
        if self.open[1] == 0:
            self.close(window_start)

    def close(self, window_start: float | None) -> None:
        """End the open pause: its seconds leave the window, training's labels come back."""
        from bench.measure.timing import synchronize
        synchronize(self.device_type)
        mark(self.sampler, "pause_end")
        set_phase(self.sampler, "timed" if window_start is not None else "warmup")
        if window_start is not None:
            self.in_window_s += time.monotonic() - self.open[0]
        self.open = None
        self.peaks.pause_ends()


class DevicePeaks:
    """The CUDA memory peaks of the training alone: read before each pause, reset after it,
    so validation's full-model copy and its activations never enter the record's peak."""

    def __init__(self, device_type: str):
        self.cuda = device_type == "cuda"
        self.allocated = self.reserved = 0

    def pause_starts(self) -> None:
        if self.cuda:
            import torch
            self.allocated = max(self.allocated, torch.cuda.max_memory_allocated())
            self.reserved = max(self.reserved, torch.cuda.max_memory_reserved())

    def pause_ends(self) -> None:
        if self.cuda:
            import torch
            torch.cuda.reset_peak_memory_stats()


class SkipCount:
    """The engine's skipped updates (Engine.skipped_steps: a running count, no device sync
    to read) split at the window's start: GradScaler skips most while it finds its scale,
    in the warm-up, and those are no part of the timed steps."""

    def __init__(self, engine):
        self.engine = engine
        self.at_start = engine.skipped_steps
        self.at_window: int | None = None

    def window_starts(self) -> None:
        self.at_window = self.engine.skipped_steps

    def warmup(self) -> int:
        end = self.engine.skipped_steps if self.at_window is None else self.at_window
        return end - self.at_start

    def timed(self) -> int:
        return 0 if self.at_window is None else self.engine.skipped_steps - self.at_window


def set_phase(sampler, name: str) -> None:
    """Label the telemetry samples from now on (no sampler: telemetry is off)."""
    if sampler is not None:
        sampler.set_phase(name)


def mark(sampler, name: str) -> None:
    if sampler is not None:
        sampler.mark(name)
