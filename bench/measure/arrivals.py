"""When a rank arrives at its step's synchronisation, and how long it then waits for the others.

Five marks a step, each a host clock read (perf_counter) on a CPU and a CUDA event on a GPU,
where the host runs ahead of the device and only the stream's own position in the step says
where the device is: `start` before the batch is fetched, `fetched` once it is on the device,
`ready` when the last gradient bucket is handed to the all-reduce (a DDP communication hook:
the rank's backward has produced every gradient), `synced` when backward returns (the
all-reduce is done) and `end` after the optimizer step. The marks cost a clock read each;
nothing synchronises. Strategies without a gradient-ready point (FSDP, DeepSpeed) leave
`ready` unmarked: of their spans only the data wait can be compared between ranks.

Every span is measured on the rank's own clock, within one step: no comparison between two
processes' clocks is ever made, so clock offsets between nodes do not enter
(bench.measure.stragglers compares the spans across ranks).
"""
from __future__ import annotations

import math
import time

from bench.measure.timing import recorded_event

# per step: data wait, compute to gradients ready, wait at the all-reduce, optimizer step, and
# the host's time between the previous step's end and this one's start
SPANS = ("data_s", "compute_s", "sync_wait_s", "optimizer_s", "gap_s")


class StepMarks:
    def __init__(self, device_type: str):
        self.cuda = device_type == "cuda"
        self.steps: list[list] = []  # per step: one value (or event) per mark, None: unmarked
        self.current: list | None = None

    def _now(self):
        return recorded_event() if self.cuda else time.perf_counter()

    def start(self) -> None:
        self.current = [self._now(), None, None, None, None]
        self.steps.append(self.current)

    def fetched(self) -> None:
        self.current[1] = self._now()

    def ready(self) -> None:
        """Called for the last gradient bucket (a second call would overwrite the first)."""
        if self.current is not None:
            self.current[2] = self._now()

    def synced(self) -> None:
        if self.current is not None:
            self.current[3] = self._now()

    def end(self) -> None:
        self.current[4] = self._now()
        self.current = None

    def spans(self) -> dict[str, list[float]]:
        """Per step, each span in seconds (NaN where a mark is missing)."""
        if self.cuda:
            import torch
            torch.cuda.synchronize()
        out = {name: [] for name in SPANS}
        previous_end = None
        for marks in self.steps:
            start, fetched, ready, synced, end = marks
            out["data_s"].append(self._between(start, fetched))
            out["compute_s"].append(self._between(fetched, ready))
            out["sync_wait_s"].append(self._between(ready, synced))
            out["optimizer_s"].append(self._between(synced, end))
            out["gap_s"].append(self._between(previous_end, start))
            previous_end = end
        return out

    def _between(self, a, b) -> float:
        if a is None or b is None:
            return math.nan
        if self.cuda:
            return a.elapsed_time(b) / 1000.0
        return b - a
