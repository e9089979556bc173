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
        # Every rank's own record of the last point's step (only rank 0 holds the curve): a
        # resume at a step already scored, e.g. stopped during step 0's, scores it once.
        self.last_step = self.curve[-1]["step"] if self.curve else -1
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
        if steps_done <= self.last_step:
            return False
        return steps_done == 0 or steps_done % self.every == 0 or steps_done == self.cell.steps

    def run(self, steps_done: int, timed_s: float, timed_steps: int) -> bool:
        """Score the weights after `steps_done` steps (collective). `timed_s`, `timed_steps`:
        this segment's timed seconds (pauses excluded) and timed steps so far. True when the
        cell's target is reached (on every rank: the caller decides whether to stop)."""
        state = self.engine.full_state_dict(self.runtime)  # every rank takes part
        self.last_step = steps_done
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
        # Always a collective at the end: without it the other ranks would run on into the
        # next step and wait there for rank 0's scoring, inside their timed step.
        return self._agree(reached)

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

        # On the training device only while it scores: between pauses the copy would sit in
        # the training's memory (a full one, beside FSDP's or ZeRO-3's shards).
        model = self.model.to(self.runtime.device)
        model.load_state_dict(state)
        sums = dict.fromkeys(METRICS, 0.0)
        for dataset in self.datasets:
            _, out, clean = denoise(model, dataset, range(self.images), self.runtime.device)
            for name in METRICS:
                sums[name] += float(getattr(metrics, name)(out, clean).mean())
        self.model = model.to("cpu")
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
    """Rank 0's fp32 model (on the CPU between pauses) and the validation split at each noise
    level, built once; with the RNGs forked: its seeded init must not move the training's."""
    import torch

    from bench.data import DenoiseDataset
    from bench.worker.evaluate import as_fp32_eval
    from bench.worker.setup import build_seeded_model

    # manual_seed reseeds the CUDA generators too: fork the device's as well.
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        model = as_fp32_eval(build_seeded_model(cell), "cpu")
    datasets = [DenoiseDataset(prepared, SPLIT, sigmas=[sigma], seed=cell.workload_seed,
                               noise_mean=cell.noise_mean, augment=False)
                for sigma in cell.noise]
    return model, datasets
