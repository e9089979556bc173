"""The processes a launch starts: found, signalled and ended together, however the caller ends.

torchrun puts each worker in a session of its own, so neither the launcher's process group
nor a terminal's Ctrl-C reaches the ranks; only the tree of descendants, remembered while
their parents live, finds them all. The runner (bench.sweep) and the commands that launch
ranks of their own (commbench, selfbench) share this.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time


class ProcessTree:
    """Every process a launch started. Descendants are remembered while their parents live,
    so that orphans of a crashed launcher can still be found and reaped."""

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


def reap_group(pgid: int) -> None:
    """No rank, data-loader worker or launcher of a finished launch may outlive it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_to_end(argv: list[str], timeout_s: float | None = None,
               poll_s: float = 0.5) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)`, except that
    the launch runs in a session of its own (a terminal's Ctrl-C reaches the caller only) and
    that its whole tree is killed when the call ends, also by Ctrl-C or the timeout: no rank
    lives on, still computing, after the command that launched it has stopped."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    tree = ProcessTree(proc.pid)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            tree.refresh()
            try:
                stdout, stderr = proc.communicate(timeout=poll_s)  # retried: nothing is lost
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(argv, timeout_s) from None
    finally:
        tree.kill_all()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
