"""Slowing one rank of a running cell from outside, as a bad node would, never through a switch
of bench's: its process (compute) or its loader's worker processes (data) are paused and
resumed with SIGSTOP/SIGCONT on a fixed schedule while the cell runs.

Rank processes are found by their command line (`-m bench.worker CELL_DIR`, torchrun's
children) and their RANK environment variable; a rank's loader workers are its children with
the same command line. Looking for processes takes CPU from the cells it watches, so an
injector looks only while its own cell runs: from the moment the runner creates the cell's
folder until its record is written.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil

RESCAN_S = 1.0  # how often the processes of a cell being slowed are looked for again
SEARCH_S = 0.1  # how often they are looked for while none is found yet
WATCH_S = 0.05  # how often the results folder is looked at for the cell's folder


class Injector(threading.Thread):
    """Slows rank `rank`'s process ("compute") or its loader workers ("data") in the cell of
    `out` whose folder name holds `key`: stopped `stop_s` out of every `period_s`."""

    def __init__(self, out: Path, key: str, kind: str, rank: int, stop_s: float = 0.006,
                 period_s: float = 0.012):
        super().__init__(daemon=True)
        self.out, self.key, self.kind, self.rank = Path(out), key, kind, rank
        self.stop_s, self.period_s = stop_s, period_s
        self.done = threading.Event()
        self.hit: set[int] = set()  # pids slowed

    def __enter__(self) -> "Injector":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()

    def run(self) -> None:
        cell_dir = None
        while cell_dir is None and not self.done.wait(WATCH_S):
            cell_dir = next((d for d in self.out.glob(f"*{self.key}*") if d.is_dir()), None)
        targets: list[int] = []
        try:
            while cell_dir is not None and not (cell_dir / "record.json").exists() \
                    and not self.done.is_set():
                targets = self.targets(cell_dir.name)
                until = time.monotonic() + RESCAN_S
                while targets and time.monotonic() < until and not self.done.is_set():
                    signal_all(targets, signal.SIGSTOP)
                    time.sleep(self.stop_s)
                    signal_all(targets, signal.SIGCONT)
                    time.sleep(self.period_s - self.stop_s)
                if not targets:
                    self.done.wait(SEARCH_S)
        finally:
            signal_all(targets, signal.SIGCONT)  # nothing is left stopped

    def targets(self, cell_name: str) -> list[int]:
        for proc in rank_processes():
            try:
                if os.path.basename(proc.cmdline()[-1]) != cell_name or \
                        int(proc.environ().get("RANK", -1)) != self.rank:
                    continue
                pids = [proc.pid] if self.kind == "compute" else \
                    [c.pid for c in proc.children() if is_worker(c)]
                self.hit.update(pids)
                return pids
            except (psutil.Error, ValueError, IndexError):
                continue
        return []


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
                    Injector(out, f"-r{i}-", *slowed, stop_s, period_s))
        done = run_cli("run", "--strategy", "ddp", "--devices", devices, *WORKLOAD,
                       "--workers", workers,
                       "--repeats", len(names), "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, injector in injectors.items():
        assert injector.hit, f"{name}: the injector found no process to slow"
    records = {}
    for path in Path(out).glob("*/record.json"):
        record = json.loads(path.read_text())
        records[names[record["cell"]["repeat"]]] = record
    return records
