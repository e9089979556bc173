"""Preemption: stop at a step boundary on SIGTERM, save exactly enough to resume bit-for-bit.

Slurm sends SIGTERM before a time limit or a preemption. Every rank must stop after the same
step, or one rank would wait forever in the next all-reduce; the ranks agree through a small
CPU all-reduce every CHECK_EVERY steps (never per step, so GPUs keep their pipelining).
"""
from __future__ import annotations

import io
import logging
import os
import signal
from pathlib import Path

from bench.record import store
from bench.record.store import CHECKPOINT  # the runner discards it too, so it lives in store
UNREADABLE = "checkpoint.unreadable.pt"
CHECK_EVERY = 10  # steps between the ranks' agreement on a pending SIGTERM


class Preemption:
    def __init__(self, world_size: int, device_type: str):
        self.requested = False
        self.world_size = world_size
        self.group = None
        if world_size > 1:
            import torch.distributed as dist
            # NCCL all-reduces would synchronise the GPU stream; a gloo side group does not.
            self.group = dist.new_group(backend="gloo") if device_type == "cuda" else None
        self._previous = signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum, frame) -> None:
        self.requested = True

    def should_stop(self, step: int) -> bool:
        """Called before each step; True means: save and stop before running `step`."""
        if self.world_size == 1:
            return self.requested
        if step % CHECK_EVERY:
            return False
        import torch
        import torch.distributed as dist
        flag = torch.tensor([1 if self.requested else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def rng_state() -> dict:
    """torch's generators. Noise and batch order never use a global RNG (they are seeded per
    image and per epoch), so these are all the randomness a step can consume."""
    import torch
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(cell_dir: Path, payload: dict) -> None:
    """Atomic: a checkpoint is either complete or absent."""
    import torch
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    store.atomic_write(Path(cell_dir) / CHECKPOINT, lambda f: f.write(buffer.getvalue()))


def load(cell_dir: Path, cell_id: str, fingerprint: str) -> dict | None:
    """The checkpoint of exactly this cell and workload, or None. weights_only=True: loading
    a results folder never executes code from it."""
    import torch
    path = Path(cell_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign or refused: never resume it
        # Kept aside for inspection; the cell starts over instead of failing on every re-run.
        os.replace(path, path.with_name(UNREADABLE))
        logging.getLogger(__name__).warning(
            "%s could not be loaded (%s: %s); the cell starts over", path,
            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    if not isinstance(payload, dict) or payload.get("cell_id") != cell_id \
            or payload.get("fingerprint") != fingerprint:
        return None
    return payload
