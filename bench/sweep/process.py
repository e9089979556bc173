"""Process control for the runner: a cell's processes start together and end together.

A cell runs in a session of its own; torchrun starts each worker in yet another session,
so the runner tracks the whole tree (launchers.processes), forwards SIGTERM to it on SIGTERM
(Slurm preemption) or SIGINT (Ctrl-C), and kills whatever is left when the cell ends, however
it ends.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess

from bench.config.cell import RUNNER_HOST_ENV, RUNNER_PID_ENV
from bench.measure.cores import thread_budget
from launchers.processes import ProcessTree

try:
    import ctypes
    _LIBC = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
    _LIBC = None

KILL_GRACE_S = 10.0  # after SIGTERM, time for the ranks to checkpoint before SIGKILL
# Set by SIGTERM (Slurm preemption) or SIGINT (Ctrl-C) to the runner: the signal's name, and
# whether a second Ctrl-C killed the running cell before it could save.
_termination: dict = {"signal": None, "at_once": False}


def termination_requested() -> bool:
    """True once the runner got SIGTERM or SIGINT: the sweep must stop after the current cell."""
    return _termination["signal"] is not None


def termination_signal() -> str | None:
    """"SIGTERM" or "SIGINT": what asked the runner to stop; None when nothing did."""
    return _termination["signal"]


def stopped_at_once() -> bool:
    """True once a second Ctrl-C killed the running cell without waiting for it to save."""
    return _termination["at_once"]


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
    # intra-op thread count (cores / ranks) and records it. The task's cores: a Slurm
    # allocation or a cgroup quota caps what the affinity set allows.
    env.setdefault("OMP_NUM_THREADS", str(thread_budget()[0]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[RUNNER_PID_ENV], env[RUNNER_HOST_ENV] = str(os.getpid()), socket.gethostname()
    return env


class stop_signals:
    """While a sweep or one of its cells runs, SIGTERM (Slurm preemption) and SIGINT (Ctrl-C,
    which a terminal sends to the runner's process group: the cell's processes are in
    sessions of their own and never see it) ask it to stop: the running cell's processes get
    SIGTERM, so its ranks checkpoint at the next step boundary and rank 0 writes the
    `preempted` record; the runner then stops the sweep. A second Ctrl-C stops at once: the
    cell's processes are killed and the runner records what was saved before (run_cell).
    Without `tree` (between cells) a request only stops the sweep before its next cell."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, tree: ProcessTree | None = None):
        self.tree = tree
        self.previous: dict = {}

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            # A signal ignored at start (`nohup`, a shell's background job) stays ignored.
            self.previous = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS
                             if signal.getsignal(sig) is not signal.SIG_IGN}
        return self

    def _on_signal(self, signum, frame) -> None:
        again = _termination["signal"] is not None and signum == signal.SIGINT
        _termination["signal"] = _termination["signal"] or signal.Signals(signum).name
        if self.tree is None:
            return
        if again:
            _termination["at_once"] = True
            self.tree.kill_all()
        else:
            self.tree.signal_all(signal.SIGTERM)

    def __exit__(self, *exc) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


def terminate(proc: subprocess.Popen, tree: ProcessTree) -> None:
    """SIGTERM the whole cell (its ranks may checkpoint), then SIGKILL what is left."""
    tree.signal_all(signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    tree.kill_all()
    proc.wait()
