"""Process control for the runner: a cell's processes start together and end together.

A cell runs in a session of its own; torchrun starts each worker in yet another session,
so the runner tracks the whole tree, forwards SIGTERM to it (Slurm preemption), and kills
whatever is left when the cell ends, however it ends.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess

from bench.config.cell import RUNNER_HOST_ENV, RUNNER_PID_ENV
from bench.measure.cores import usable_cores

try:
    import ctypes
    _LIBC = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
    _LIBC = None

KILL_GRACE_S = 10.0  # after SIGTERM, time for the ranks to checkpoint before SIGKILL
_termination = {"requested": False}  # set by SIGTERM to the runner (Slurm preemption)


def termination_requested() -> bool:
    """True once the runner got SIGTERM: the sweep must stop after the current cell."""
    return _termination["requested"]


def terminate_with_parent() -> None:
    """In the child before exec: if the runner dies (even by SIGKILL), the cell's root gets
    SIGTERM, so its ranks checkpoint and stop instead of living on as orphans that a re-run
    would race in the same folder (Linux prctl PR_SET_PDEATHSIG).

    Only for a cell whose root is the rank itself. The kernel sends the signal again for each
    thread of the dying runner the child is reparented to, and torchrun's agent turns a second
    SIGTERM into an abrupt shutdown that could kill its ranks before rank 0 wrote its record
    (1 run in 6 of test_killed_runner_takes_its_cell_down). Ranks under torchrun watch the
    runner themselves instead (bench.worker.checkpoint.watch_runner)."""
    if _LIBC is not None:  # no imports here: this runs between fork and exec
        _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def child_env() -> dict:
    env = dict(os.environ)
    # torchrun would otherwise set OMP_NUM_THREADS=1 and warn; each rank sets its own
    # intra-op thread count (cores / ranks) and records it. Usable cores: a cgroup quota
    # caps what the affinity set allows.
    env.setdefault("OMP_NUM_THREADS", str(usable_cores()))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[RUNNER_PID_ENV], env[RUNNER_HOST_ENV] = str(os.getpid()), socket.gethostname()
    return env


class ProcessTree:
    """Every process a cell started. torchrun puts each worker in a session of its own, so
    killing the cell's process group would miss them; descendants are remembered while their
    parents live, so that orphans of a crashed launcher can still be found and reaped."""

    def __init__(self, root_pid: int):
        import psutil
        self.root = psutil.Process(root_pid)
        self.known: dict[int, object] = {}

    def refresh(self) -> None:
        import psutil
        try:
            for child in self.root.children(recursive=True):
                self.known.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def signal_all(self, sig: int) -> None:
        import psutil
        self.refresh()
        for process in [self.root, *self.known.values()]:
            try:
                process.send_signal(sig)  # psutil checks the pid was not reused
            except psutil.NoSuchProcess:
                pass

    def kill_all(self) -> None:
        self.signal_all(signal.SIGKILL)
        reap_group(self.root.pid)


class forward_sigterm:
    """While a cell runs, SIGTERM to the runner goes to every process of the cell, so its
    ranks checkpoint at the next step boundary; the runner then stops the sweep."""

    def __init__(self, tree: ProcessTree):
        self.tree = tree
        self.previous = None

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._forward)
        return self

    def _forward(self, signum, frame) -> None:
        _termination["requested"] = True
        self.tree.signal_all(signal.SIGTERM)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def terminate(proc: subprocess.Popen, tree: ProcessTree) -> None:
    """SIGTERM the whole cell (its ranks may checkpoint), then SIGKILL what is left."""
    tree.signal_all(signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    tree.kill_all()
    proc.wait()


def reap_group(pgid: int) -> None:
    """No rank, data-loader worker or launcher of a finished cell may outlive it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
