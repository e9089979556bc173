"""Honest step timing and the statistics of step-time distributions.

On CUDA each step is bracketed by CUDA events that are resolved only after the run, so
timing adds no synchronisation inside the loop; the timed window itself is bounded by a
synchronize and a host clock. On CPU work is synchronous, so a monotonic host clock is exact.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np


class StepTimer:
    def __init__(self, device_type: str):
        self.cuda = device_type == "cuda"
        self._pending: list[tuple] = []  # CUDA event pairs, resolved in `step_times_s`
        self._host: list[float] = []
        self._t0 = 0.0

    def start(self) -> None:
        if self.cuda:
            self._pending.append((recorded_event(), None))
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self._pending[-1] = (self._pending[-1][0], recorded_event())
        else:
            self._host.append(time.perf_counter() - self._t0)

    def step_times_s(self) -> list[float]:
        if not self.cuda:
            return list(self._host)
        import torch
        torch.cuda.synchronize()
        return [start.elapsed_time(end) / 1000.0 for start, end in self._pending]


def recorded_event() -> "torch.cuda.Event":  # noqa: F821
    """A timing event queued on the current stream now: it marks where the device is in the
    step, which the host clock cannot see without a synchronize."""
    import torch
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def synchronize(device_type: str) -> None:
    """Wait for queued device work, so that a host timestamp taken next is meaningful."""
    if device_type == "cuda":
        import torch
        torch.cuda.synchronize()


def trimmed_mean(values: Sequence[float], proportion: float = 0.1) -> float:
    """Mean after dropping `proportion` of the values at each end (DeepSpeed's 10%)."""
    data = np.sort(np.asarray(values, dtype=float))
    cut = int(len(data) * proportion)
    kept = data[cut:len(data) - cut] if len(data) > 2 * cut else data
    return float(kept.mean())


def summarize_steps(step_times_s: Sequence[float]) -> dict:
    if len(step_times_s) == 0:
        return {"step_time_median_s": None, "step_time_p10_s": None,
                "step_time_p90_s": None, "step_time_trimmed_mean_s": None}
    data = np.asarray(step_times_s, dtype=float)
    return {
        "step_time_median_s": float(np.median(data)),
        "step_time_p10_s": float(np.percentile(data, 10)),
        "step_time_p90_s": float(np.percentile(data, 90)),
        "step_time_trimmed_mean_s": trimmed_mean(data),
    }
