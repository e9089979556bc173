"""Validation during training: the quality curve a time to target is read from.

Every `cell.validation_every` steps (and after the last one; the initial weights give the
first point) every rank hands its share of the weights to rank 0 (the strategy's
`full_state_dict`, the gather the final evaluation uses), and rank 0 scores a fresh fp32 copy
on a fixed subset of the validation split: never the test split the final figures come from.
The loop times the whole pause and takes it out of the timed window; this module only says
what each point holds.
"""
from __future__ import annotations

from bench.config.cell import Cell

SPLIT = "val"
MAX_IMAGES = 64  # the fixed subset: the split's first images, at every noise level
METRICS = ("psnr", "ssim")  # LPIPS's AlexNet would make a pause cost more than a step
HEADLINE = "psnr"  # the metric a target and a time to target are read in


class Validator:
    """Rank-local state of one cell's validation; every rank calls `run` at the same steps."""

    def __init__(self, cell: Cell, prepared, runtime, engine, *, previous: dict | None = None,
                 group=None):
        self.cell, self.runtime, self.engine, self.group = cell, runtime, engine, group
        self.every = cell.validation_every
        previous = previous or {}
        # A resumed cell's earlier segments: their timed seconds and steps come first.
        self.timed_s_before = float(previous.get("train_time_s", 0.0))
        self.timed_steps_before = int(previous.get("timed_steps", 0))
        self.curve: list[dict] = list(previous.get("curve", []))
        self.pause_s = float(previous.get("eval_pause_s", 0.0))
        self.pauses = int(previous.get("pauses", 0))
        self.model = self.datasets = None
        if runtime.is_main:
            self.model, self.datasets = _scorer(cell, prepared, runtime.device)
        self.images = min(MAX_IMAGES, len(prepared.split(SPLIT)))

    @classmethod
    def of(cls, cell: Cell, prepared, runtime, engine, previous: dict | None, group,
           parity: bool) -> "Validator | None":
        """None where there is nothing to validate: switched off, a parity run (it compares
        steps), data without clean images (a plug-in's own target), an empty split."""
        if cell.validation_every == 0 or parity or not prepared.has_clean \
                or len(prepared.split(SPLIT)) == 0:
            return None
        return cls(cell, prepared, runtime, engine, previous=previous, group=group)

    def due(self, steps_done: int) -> bool:
        return steps_done == 0 or steps_done % self.every == 0 or steps_done == self.cell.steps

    def run(self, steps_done: int, timed_s: float, timed_steps: int) -> bool:
        """Score the weights after `steps_done` steps (collective). `timed_s`, `timed_steps`:
        this segment's timed seconds (pauses excluded) and timed steps so far. True when the
        cell's target is reached and the cell stops there (on every rank)."""
        state = self.engine.full_state_dict(self.runtime)  # every rank takes part
        reached = False
        if self.runtime.is_main:
            point = {"step": steps_done, "samples": steps_done * self.cell.effective_global_batch,
                     "timed_s": self.timed_s_before + timed_s,
                     "timed_steps": self.timed_steps_before + timed_steps,
                     **self._score(state)}
            self.curve.append(point)
            target = self.cell.quality_target
            if target is not None:
                from bench.record.curve import reaches
                reached = reaches(point[target[0]], target[1], target[0])
        if self.cell.stop_at_target:
            reached = self._agree(reached)
        return reached and self.cell.stop_at_target

    def paused(self, seconds: float) -> None:
        self.pause_s += seconds
        self.pauses += 1

    def state(self) -> dict:
        """What a checkpoint keeps and the record is built from."""
        return {"metric": HEADLINE, "metrics": list(METRICS), "split": SPLIT,
                "images": self.images, "sigmas": list(self.cell.noise), "every": self.every,
                "curve": self.curve, "eval_pause_s": self.pause_s, "pauses": self.pauses}

    def _score(self, state: dict) -> dict:
        """Means over the subset and the noise levels of each metric."""
        from bench.measure import metrics
        from bench.worker.evaluate import denoise

        self.model.load_state_dict(state)
        sums = dict.fromkeys(METRICS, 0.0)
        for dataset in self.datasets:
            _, out, clean = denoise(self.model, dataset, range(self.images),
                                    self.runtime.device)
            for name in METRICS:
                sums[name] += float(getattr(metrics, name)(out, clean).mean())
        return {name: total / len(self.datasets) for name, total in sums.items()}

    def _agree(self, reached: bool) -> bool:
        """Rank 0's verdict on every rank, so all of them stop after the same step."""
        if self.runtime.world_size == 1:
            return reached
        import torch.distributed as dist
        flag = [reached]
        dist.broadcast_object_list(flag, src=0, group=self.group)
        return bool(flag[0])


def _scorer(cell: Cell, prepared, device: str):
    """Rank 0's fp32 model and the validation subset per noise level, built once. The model is
    built with the global RNG forked: its seeded init must not move the training's RNG."""
    import torch

    from bench.data import DenoiseDataset
    from bench.worker.evaluate import as_fp32_eval
    from bench.worker.setup import build_seeded_model

    with torch.random.fork_rng(devices=[]):
        model = as_fp32_eval(build_seeded_model(cell), device)
    datasets = [DenoiseDataset(prepared, SPLIT, sigmas=[sigma], seed=cell.workload_seed,
                               noise_mean=cell.noise_mean, augment=False)
                for sigma in cell.noise]
    return model, datasets
