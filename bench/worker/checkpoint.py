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
import threading
from pathlib import Path

from bench.config.cell import RUNNER_HOST_ENV, RUNNER_PID_ENV
from bench.record import store
from bench.record.store import CHECKPOINT  # the runner discards it too, so it lives in store
UNREADABLE = "checkpoint.unreadable.pt"
CHECK_EVERY = 10  # steps between the ranks' agreement on a pending SIGTERM


_runner_gone = threading.Event()  # set by watch_runner; read by Preemption.should_stop


def watch_runner(poll_s: float = 0.5) -> None:
    """If the runner that launched this cell dies (even by SIGKILL), the training loop stops at
    its next step boundary as for a Slurm preemption: checkpoint, and rank 0 writes the
    `preempted` record. Only ranks on the runner's host can see it; the others stop with them
    (the stop flag is all-reduced). A request, not a signal: once the loop is over, a rank
    finishes what it is writing. (A cell whose root is the rank itself also has the
    parent-death signal, bench.sweep.process.terminate_with_parent.)"""
    import socket
    import time

    import psutil

    pid, host = os.environ.get(RUNNER_PID_ENV), os.environ.get(RUNNER_HOST_ENV)
    if not pid or host != socket.gethostname():
        return
    try:
        runner = psutil.Process(int(pid))
    except (psutil.Error, ValueError):
        return

    def alive() -> bool:
        try:  # is_running also catches a reused pid (it compares creation times)
            return runner.is_running() and runner.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def watch() -> None:
        while alive():
            time.sleep(poll_s)
        _runner_gone.set()

    threading.Thread(target=watch, name="bench-runner-watch", daemon=True).start()


def runner_gone() -> bool:
    return _runner_gone.is_set()


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
        stop = self.requested or runner_gone()
        if self.world_size == 1:
            return stop
        if step % CHECK_EVERY:
            return False
        import torch
        import torch.distributed as dist
        flag = torch.tensor([1 if stop else 0])
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
