"""Slowing one rank of a running cell from outside, as a bad node would, never through a switch
of bench's: its process (compute) or its loader's worker processes (data) are paused and
resumed with SIGSTOP/SIGCONT on a fixed schedule while the cell runs.

Rank processes are found by their command line (`-m bench.worker CELL_DIR`, torchrun's
children) and their RANK environment variable; a rank's loader workers are its children with
the same command line. The plan names cells by a part of their directory's name.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import psutil

RESCAN_S = 1.0  # how often rank processes are looked for again (cells start and end);
# rarely, as the scan itself takes CPU from the cell it watches


class Injector(threading.Thread):
    """plan: {part of a cell directory's name: ("compute" | "data", rank)}; each target is
    stopped for `stop_s` out of every `period_s` while it lives."""

    def __init__(self, plan: dict[str, tuple[str, int]], stop_s: float = 0.006,
                 period_s: float = 0.012):
        super().__init__(daemon=True)
        self.plan, self.stop_s, self.period_s = plan, stop_s, period_s
        self.done = threading.Event()
        self.hit: dict[str, set[int]] = {key: set() for key in plan}  # pids slowed, per cell

    def __enter__(self) -> "Injector":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()

    def run(self) -> None:
        targets: list[int] = []
        try:
            while not self.done.is_set():
                targets = self.targets()
                until = time.monotonic() + RESCAN_S
                while targets and time.monotonic() < until and not self.done.is_set():
                    signal_all(targets, signal.SIGSTOP)
                    time.sleep(self.stop_s)
                    signal_all(targets, signal.SIGCONT)
                    time.sleep(self.period_s - self.stop_s)
                if not targets:
                    time.sleep(0.02)
        finally:
            signal_all(targets, signal.SIGCONT)  # nothing is left stopped

    def targets(self) -> list[int]:
        found = []
        for proc in rank_processes():
            try:
                cell_dir = proc.cmdline()[-1]
                rank = int(proc.environ().get("RANK", -1))
                for key, (kind, slowed) in self.plan.items():
                    if key in os.path.basename(cell_dir) and rank == slowed:
                        pids = [proc.pid] if kind == "compute" else \
                            [c.pid for c in proc.children() if is_worker(c)]
                        self.hit[key].update(pids)
                        found += pids
            except (psutil.Error, ValueError, IndexError):
                continue
        return found


def is_worker(proc: psutil.Process) -> bool:
    """A rank's process or one of its loader workers (not torchrun, whose arguments hold the
    rank program's)."""
    try:
        argv = proc.cmdline()
        return "bench.worker" in argv and "torch.distributed.run" not in argv
    except psutil.Error:
        return False


def rank_processes() -> list[psutil.Process]:
    """bench.worker processes whose parent is not one: the ranks, not their loader workers."""
    out = []
    for proc in psutil.process_iter():
        try:
            if is_worker(proc) and not is_worker(proc.parent()):
                out.append(proc)
        except (psutil.Error, AttributeError):
            continue
    return out


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# name: (devices, (phase, rank) slowed or None, (stop, period) s, loader workers per rank);
# the rank and phase bench must name. A compute rank is stopped half the time in short slices
# (every step loses about half its speed); a loader worker most of the time (it makes batches
# far faster than a step uses them, so only a long pause leaves its rank waiting). Four ranks
# on two cores load their batches themselves: four more worker processes would only add
# contention the cases do not need.
CASES = {"undisturbed": (2, None, (0.0, 0.1), 1),
         "compute": (2, ("compute", 1), (0.006, 0.012), 1),
         "data": (2, ("data", 0), (0.09, 0.1), 1),
         "compute-x4": (4, ("compute", 2), (0.006, 0.012), 0),
         "undisturbed-x4": (4, None, (0.0, 0.1), 0)}
# A small DDP cell whose steps take tens of ms on 2 CPU cores, without validation pauses
# between its steps.
WORKLOAD = ("--model", "unet", "--device", "cpu", "--steps", "40", "--warmup", "5",
            "--batch", "8", "--width", "8", "--image-size", "32", "--eval-every", "0",
            "--sample-hz", "0")


def run_cases(names: list[str], out, run_cli) -> dict[str, dict]:
    """Cases of one cell size through one `bench run`, as its repeats (case i is repeat i),
    each slowed from outside as the case says; {case: record}. `run_cli` runs
    `python -m bench ARGS` (tests/conftest.py's)."""
    import contextlib
    import json
    from pathlib import Path

    ((devices, workers),) = {(CASES[name][0], CASES[name][3]) for name in names}
    with contextlib.ExitStack() as stack:
        injectors = {}
        for i, name in enumerate(names):
            _, slowed, (stop_s, period_s), _ = CASES[name]
            if slowed:
                injectors[name] = stack.enter_context(
                    Injector({f"-r{i}-": slowed}, stop_s, period_s))
        done = run_cli("run", "--strategy", "ddp", "--devices", devices, *WORKLOAD,
                       "--workers", workers,
                       "--repeats", len(names), "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, injector in injectors.items():
        assert all(injector.hit.values()), f"{name}: the injector found no process to slow"
    records = {}
    for path in Path(out).glob("*/record.json"):
        record = json.loads(path.read_text())
        records[names[record["cell"]["repeat"]]] = record
    return records
