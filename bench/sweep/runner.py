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

from bench import plugins
from bench.config.cell import Cell, Job
from bench.errors import stop_name
from bench.measure import envinfo
from bench.record import builder, store
from bench.sweep.nodes import allocation_hosts, lost_nodes, lost_sentence
# termination_requested and termination_signal are also the CLI's way to ask whether the
# sweep was stopped (SIGTERM or Ctrl-C) and by what.
from bench.sweep.process import (ProcessTree, child_env, stop_signals, stopped_at_once,
                                 terminate, terminate_with_parent, termination_requested,
                                 termination_signal)

POLL_S = 0.25
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
    if force:
        (Path(cell_dir) / store.CHECKPOINT).unlink(missing_ok=True)
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
    `should_skip` says; stops after the current cell on SIGTERM or Ctrl-C (the cell
    checkpointed; a re-run resumes). (records, skipped count)"""
    from bench.sweep.plan import DataKey
    records, skipped = [], 0
    with stop_signals():  # between cells, too: a request stops the sweep before the next
        for cell in cells:
            if termination_requested():
                break
            done = should_skip(out / cell.cell_id, force, retry_failed)
            if done is not None:
                on_event(CellEvent("skip", cell, record=done))
                records.append(done)
                skipped += 1
                continue
            data = prepared[DataKey.of(cell)]
            records.append(run_cell(cell, fingerprints[cell], data.to_json(), out,
                                    on_event=on_event))
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
    # The rank processes load the plug-ins this command loaded (bench.plugins).
    job = Job(cell, fingerprint, prepared_json, launch, extra or {}, plugins=plugins.loaded())
    store.write_json(cell_dir / store.JOB, job.to_dict())
    strategy = get_strategy(cell.strategy)
    argv = strategy.argv(cell, ["-m", "bench.worker", str(cell_dir)], free_port())
    if wrap_argv is not None:
        argv = wrap_argv(argv)
    on_event(CellEvent("start", cell, steps=cell.steps))
    with open(cell_dir / store.LOG, "ab") as log:
        log_from = log.tell()  # an earlier attempt's lines (a resumed cell) are not this one's
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_env(),
                                preexec_fn=None if strategy.distributed
                                else terminate_with_parent)
    tree = ProcessTree(proc.pid)
    # SIGTERM and Ctrl-C stay handled until the record is written: a stop never loses it.
    with stop_signals(tree):
        if termination_requested():  # asked to stop while this cell was being launched
            tree.signal_all(signal.SIGTERM)
        try:
            timed_out = wait_with_progress(proc, tree, cell, cell_dir, on_event,
                                           deadline=launch + cell.timeout_s)
        finally:  # whatever ended the wait: the ranks are in sessions of their own
            tree.kill_all()
        record = final_record(cell, fingerprint, cell_dir, proc.returncode, timed_out, launch,
                              across_nodes=wrap_argv is not None, log_from=log_from)
    (cell_dir / store.PROGRESS).unlink(missing_ok=True)
    on_event(CellEvent("end", cell, record=record))
    return record


def final_record(cell: Cell, fingerprint: str, cell_dir: Path, returncode: int | None,
                 timed_out: bool, launch: float, across_nodes: bool = False,
                 log_from: int = 0) -> dict:
    """The record the cell's folder keeps: rank 0's own, told why it stopped, or the runner's
    when the ranks wrote none."""
    record = store.read_record(cell_dir)
    stopped_by = termination_signal()
    if record is None or record.get("cell_id") != cell.cell_id:
        if stopped_by is not None and not timed_out and not any(cell_dir.glob("error-rank*")):
            # Stopped before rank 0 wrote a record, no rank failing on its own: a second
            # Ctrl-C, or a stop before the ranks listened for one. A checkpoint there is still
            # this cell's.
            record = stopped_record(cell, fingerprint, cell_dir, launch)
        else:
            record = failure_record(cell, fingerprint, cell_dir, returncode, timed_out, launch,
                                    across_nodes, log_from)
    elif timed_out:
        # The SIGTERM of the timeout let the ranks checkpoint; the status says why it stopped.
        record = builder.mark_timed_out(record, cell.timeout_s)
    elif record.get("status") == "preempted" and stopped_by == "SIGINT":
        record = builder.mark_stopped_by(record, cell, stop_name("SIGINT"))  # ranks saw SIGTERM
    else:
        return record
    store.write_json(cell_dir / store.RECORD, record)
    return record


def stopped_record(cell: Cell, fingerprint: str, cell_dir: Path, launch: float) -> dict:
    """A `preempted` record for a cell stopped before its ranks could save: a re-run resumes
    from the checkpoint an earlier stop left, or starts over."""
    import json
    try:
        step = json.loads((cell_dir / store.PROGRESS).read_text())["step"]
    except (OSError, ValueError, KeyError):
        step = 0
    checkpoint = store.CHECKPOINT if (cell_dir / store.CHECKPOINT).exists() else None
    how = "a second Ctrl-C" if stopped_at_once() else stop_name(termination_signal())
    return builder.preempted_record(
        cell, fingerprint, launched_at=launch, steps_done=step, train_time_s=None,
        time_to_train_s=time.time() - launch, checkpoint=checkpoint, stopped_by=how,
        saved=False, env=envinfo.placement())


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
                               phase="stopping" if termination_requested() else info["phase"]))
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(POLL_S)
    return False


def failure_record(cell: Cell, fingerprint: str, cell_dir: Path, returncode: int | None,
                   timed_out: bool, launch: float, across_nodes: bool = False,
                   log_from: int = 0) -> dict:
    """The record of a cell that wrote none: its status and message read from the exit, the
    ranks' error files and torchrun's report in the log; across nodes, the nodes it lost
    (bench.sweep.nodes)."""
    errors = sorted(cell_dir.glob("error-rank*.txt"))
    first_error = errors[0].read_text() if errors else ""
    message = first_error.splitlines()[0] if first_error else ""
    try:
        raw = (cell_dir / store.LOG).read_bytes()
    except OSError:
        raw = b""
    log, this_launch = raw.decode(errors="replace"), raw[log_from:].decode(errors="replace")
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
    ranks_failed = [p.stem.removeprefix("error-rank") for p in errors] or (
        [dead[0]] if dead else [])
    lost = lost_nodes(this_launch, allocation_hosts(os.environ.get("SLURM_JOB_NODELIST"))) \
        if across_nodes else {}
    if lost:  # the lost node is the cause; its peers' errors are the consequence
        message = lost_sentence(lost) + (f"; {message}" if message else "")
    record = builder.failed_record(
        cell, fingerprint, status, launched_at=launch, time_to_train_s=time.time() - launch,
        message=message,
        exit_code=returncode, ranks_failed=ranks_failed, signal=dead[1] if dead else None,
        traceback=first_error[-LOG_TAIL_CHARS:], log_tail=log_tail,
        env=envinfo.placement())  # which node and Slurm task failed, for a retry
    record["error"]["nodes_lost"] = sorted(lost)
    return record


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
