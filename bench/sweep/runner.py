"""Local runner: every cell in its own process group, with a timeout, and a record no matter
how the cell ends. One cell failing never touches another cell's folder."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.measure import envinfo
from bench.record import store
from bench.config.cell import SCHEMA_VERSION, Cell, Job

try:
    import ctypes
    _LIBC = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
    _LIBC = None

POLL_S = 0.25
_termination = {"requested": False}  # set by SIGTERM to the runner (Slurm preemption)


def termination_requested() -> bool:
    """True once the runner got SIGTERM: the sweep must stop after the current cell."""
    return _termination["requested"]
KILL_GRACE_S = 10.0
LOG_TAIL_CHARS = 4000


@dataclass
class CellEvent:
    """What the runner tells its caller (the CLI renders it)."""
    kind: str  # "start", "progress", "skip", "end"
    cell: Cell
    step: int = 0
    steps: int = 0
    phase: str = ""
    record: dict | None = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def should_skip(cell_dir: Path, force: bool, retry_failed: bool) -> dict | None:
    """A re-run skips a cell whose record is `ok`; failed cells rerun unless told otherwise;
    a preempted cell always resumes (it did not fail). `force` also discards a checkpoint, so
    the cell starts over."""
    from bench.worker.checkpoint import CHECKPOINT
    if force:
        (Path(cell_dir) / CHECKPOINT).unlink(missing_ok=True)
        return None
    record = store.read_record(cell_dir)
    if record is None or record.get("status") == "preempted":
        return None
    if record.get("status") == "ok" or not retry_failed:
        return record
    return None


def run_cells(cells, out: Path, prepared: dict, fingerprints: dict, *, force: bool,
              retry_failed: bool, on_event=lambda e: None) -> tuple[list[dict], int]:
    """Each cell in order, in its own process group with its timeout, skipping what
    `should_skip` says; stops after the current cell on SIGTERM. (records, skipped count)"""
    from bench.sweep.plan import DataKey
    records, skipped = [], 0
    for cell in cells:
        done = should_skip(out / cell.cell_id, force, retry_failed)
        if done is not None:
            on_event(CellEvent("skip", cell, record=done))
            records.append(done)
            skipped += 1
            continue
        data = prepared[DataKey.of(cell)]
        records.append(run_cell(cell, fingerprints[cell], data.to_json(), out,
                                on_event=on_event))
        if termination_requested():
            break  # SIGTERM (preemption): the current cell checkpointed; a re-run resumes
    return records, skipped


def run_cell(cell: Cell, fingerprint: str, prepared_json: dict, results_dir: Path, *,
             on_event: Callable[[CellEvent], None] = lambda e: None,
             extra: dict | None = None,
             wrap_argv: Callable[[list[str]], list[str]] | None = None) -> dict:
    """`wrap_argv` prefixes the launch (a Slurm array task runs multi-rank cells via srun)."""
    from launchers import get_strategy

    cell_dir = Path(results_dir) / cell.cell_id
    cell_dir.mkdir(parents=True, exist_ok=True)
    for stale in (store.RECORD, store.PROGRESS, *[p.name for p in cell_dir.glob("error-rank*")]):
        (cell_dir / stale).unlink(missing_ok=True)
    launch = time.time()
    store.write_json(cell_dir / store.JOB,
                     Job(cell, fingerprint, prepared_json, launch, extra or {}).to_dict())
    argv = get_strategy(cell.strategy).argv(cell, ["-m", "bench.worker", str(cell_dir)],
                                            free_port())
    if wrap_argv is not None:
        argv = wrap_argv(argv)
    on_event(CellEvent("start", cell, steps=cell.steps))
    with open(cell_dir / store.LOG, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_env(),
                                preexec_fn=terminate_with_parent)
    tree = ProcessTree(proc.pid)
    try:
        with forward_sigterm(tree):
            timed_out = wait_with_progress(proc, tree, cell, cell_dir, on_event,
                                           deadline=launch + cell.timeout_s)
    finally:  # also on Ctrl-C: the ranks are in a session of their own and would live on
        tree.kill_all()
    record = store.read_record(cell_dir)
    if record is None or record.get("cell_id") != cell.cell_id:
        record = failure_record(cell, fingerprint, cell_dir, proc.returncode, timed_out, launch)
        store.write_json(cell_dir / store.RECORD, record)
    elif timed_out:
        # The SIGTERM of the timeout let the ranks checkpoint; the status says why it stopped.
        record["status"] = "timeout"
        record["error"] = {"message": f"cell exceeded its timeout of {cell.timeout_s:g} s; "
                                      + (record.get("error") or {}).get("message", "")}
        store.write_json(cell_dir / store.RECORD, record)
    (cell_dir / store.PROGRESS).unlink(missing_ok=True)
    on_event(CellEvent("end", cell, record=record))
    return record


def terminate_with_parent() -> None:
    """In the child before exec: if the runner dies (even by SIGKILL), the cell's root gets
    SIGTERM, so its ranks checkpoint and stop instead of living on as orphans that a re-run
    would race in the same folder (Linux prctl PR_SET_PDEATHSIG)."""
    if _LIBC is not None:  # no imports here: this runs between fork and exec
        _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def child_env() -> dict:
    env = dict(os.environ)
    # torchrun would otherwise set OMP_NUM_THREADS=1 and warn; each rank sets its own
    # intra-op thread count (cores / ranks) and records it.
    env.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    env.setdefault("PYTHONUNBUFFERED", "1")
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

    def __init__(self, tree: "ProcessTree"):
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


def wait_with_progress(proc, tree: ProcessTree, cell: Cell, cell_dir: Path, on_event,
                       deadline: float) -> bool:
    """Poll until the cell's process exits; True if it had to be killed for time."""
    import json
    progress_path = cell_dir / store.PROGRESS
    while proc.poll() is None:
        tree.refresh()
        if time.time() > deadline:
            terminate(proc, tree)
            return True
        try:
            info = json.loads(progress_path.read_text())
            on_event(CellEvent("progress", cell, step=info["step"], steps=info["steps"],
                               phase=info["phase"]))
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(POLL_S)
    return False


def terminate(proc, tree: ProcessTree) -> None:
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


def failure_record(cell: Cell, fingerprint: str, cell_dir: Path, returncode: int | None,
                   timed_out: bool, launch: float) -> dict:
    errors = sorted(cell_dir.glob("error-rank*.txt"))
    first_error = errors[0].read_text() if errors else ""
    message = first_error.splitlines()[0] if first_error else ""
    try:
        log = (cell_dir / store.LOG).read_text(errors="replace")
    except OSError:
        log = ""
    log_tail = log[-LOG_TAIL_CHARS:]
    dead = dead_rank(log)
    if timed_out:
        status, message = "timeout", f"cell exceeded its timeout of {cell.timeout_s:g} s"
    elif not dead and ("timed out" in message.lower() or "timeout" in message.lower()):
        status = "timeout"  # a collective gave up: the process-group timeout fired
    else:
        status = "failed"
        if dead:
            # The killed rank is the cause; its peers' "connection reset" errors are the
            # consequence, and they are often written first.
            message = f"rank {dead[0]} was killed by signal {dead[1]}"
        if returncode is not None and returncode < 0:
            message = message or f"killed by signal {signal.Signals(-returncode).name}"
        message = message or f"rank processes exited with status {returncode}"
    return {
        "schema_version": SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "cell": cell.to_dict(),
        "fingerprint": fingerprint,
        "status": status,
        "timing": {"time_to_train_s": time.time() - launch},
        "quality": [],
        "error": {"message": message, "exit_code": returncode,
                  "ranks_failed": [p.stem.removeprefix("error-rank") for p in errors]
                  or ([dead[0]] if dead else []),
                  "signal": dead[1] if dead else None,
                  "traceback": first_error[-LOG_TAIL_CHARS:], "log_tail": log_tail},
        "env": envinfo.placement(),  # which node and Slurm task failed, for a retry
    }


def dead_rank(log: str) -> tuple[int, str] | None:
    """The rank a signal killed, from torchrun's failure report. A killed rank leaves no
    traceback of its own, and the report's "root cause" may name a peer that merely lost its
    connection, so every listed failure is read: the signal that is not torchrun's own
    SIGTERM to the survivors is the cause."""
    import re
    report = log.rfind("Failures:")
    if report < 0:
        return None
    entries = re.findall(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", log[report:], re.S)
    killed = []
    for rank, code in entries:
        if int(code) < 0:
            try:
                name = signal.Signals(-int(code)).name
            except ValueError:
                name = f"signal {-int(code)}"
            killed.append((int(rank), name))
    killed.sort(key=lambda k: k[1] == "SIGTERM")  # a non-SIGTERM death is the cause
    return killed[0] if killed else None
