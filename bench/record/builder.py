"""The shape of a cell's record: every record.json is made here, whatever ended the cell.

A record always opens with the cell's identity (schema version, id, the cell itself, its
workload fingerprint) and a status from `store.STATUSES`; what follows depends on how the
cell ended. Callers measure and describe; this module decides which fields a record holds,
so a reader (analysis, reports, a re-run deciding what to skip) sees one shape per status.
Plug-ins add their own fields to a trained record through `bench.plugins.record_extras`.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

from bench import plugins
from bench.config.cell import SCHEMA_VERSION, Cell


def utc_iso(epoch_s: float) -> str:
    """UTC, ISO 8601 with an explicit offset: comparable across the nodes of a campaign."""
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).isoformat()


def identity(cell: Cell, fingerprint: str, status: str, launched_at: float) -> dict[str, Any]:
    """The fields every record starts with: which cell, which workload, how it ended, and
    when it was launched and recorded (so drift of a machine over a campaign can be seen)."""
    # The record names the network family even at its default, which the id leaves implicit.
    return {"schema_version": SCHEMA_VERSION, "cell_id": cell.cell_id,
            "cell": {**cell.to_dict(), "arch": cell.arch},
            "fingerprint": fingerprint, "status": status, "started_at": utc_iso(launched_at),
            "finished_at": utc_iso(time.time())}


def trained_record(cell: Cell, fingerprint: str, *, launched_at: float,
                   diverged_at: int | None,
                   segments: list[dict], runtime: dict, loss: dict, timing: dict,
                   quality: list[dict], telemetry: dict, data: dict, notes: list[str],
                   env: dict, prepared: Any, cell_dir: Path,
                   breakdown: dict | None = None,
                   validation: dict | None = None,
                   stragglers: dict | None = None) -> dict[str, Any]:
    """A cell that ran all its steps (or stopped at its quality target): `ok`, or `diverged`
    when a loss was not finite. `validation`: the validator's state (bench.worker.validation),
    None without validation during training. `prepared` and `cell_dir` are context for the
    plug-ins' extra fields."""
    status = "diverged" if diverged_at is not None else "ok"
    record = {
        **identity(cell, fingerprint, status, launched_at),
        "diverged_at_step": diverged_at,
        "resumed": len(segments) > 1,
        "segments": segments,
        "runtime": runtime,
        "loss": loss,
        "timing": timing,
        "quality": quality,
        "telemetry": telemetry,
        "breakdown": breakdown,
        # who made the other ranks wait (bench.measure.stragglers); None with one rank
        "stragglers": stragglers,
        **validation_fields(cell, validation, timing),
        "data": data,
        "notes": notes,
        "env": env,
        "error": None if diverged_at is None else {"message": (
            f"the loss was not finite at step {diverged_at}: lower --lr, or train in fp32 or "
            "bf16, whose range fp16 lacks")},
    }
    record.update(plugins.record_extras(record, cell=cell, prepared=prepared,
                                        cell_dir=Path(cell_dir)))
    return record


SECONDS_BASIS = ("timed seconds of training up to the point, validation pauses excluded; "
                 "steps trained but not timed (warm-up, and those fed during a pause) counted "
                 "at the timed window's mean step time")


def validation_fields(cell: Cell, state: dict | None, timing: dict) -> dict[str, Any]:
    """`validation` (the quality curve, each point's training seconds on the timed clock) and
    `time_to_target` against the cell's own target; nothing without validation."""
    if not state:
        return {}
    from bench.record.curve import time_to_target
    timed_steps, train_s = timing.get("timed_steps") or 0, timing.get("train_time_s") or 0.0
    step_s = train_s / timed_steps if timed_steps else 0.0
    points = [{**p, "seconds": p["timed_s"] + (p["step"] - p["timed_steps"]) * step_s}
              for p in state["curve"]]
    validation = {**{k: v for k, v in state.items() if k not in ("curve", "stopped_at_step")},
                  "curve": points,
                  "seconds_basis": SECONDS_BASIS}
    target = cell.quality_target
    if target is None:
        reached = {"metric": state["metric"], "target": None, "source": "baseline",
                   "reached": None, "seconds": None, "samples": None, "steps": None,
                   "reason": "no target in the spec: the report reads the time to the "
                             "baseline's final validation quality"}
    else:
        reached = {**time_to_target(points, *target), "source": "spec"}
    reached["stopped_at_target"] = state.get("stopped_at_step") is not None
    return {"validation": validation, "time_to_target": reached}


def preempted_record(cell: Cell, fingerprint: str, *, launched_at: float, steps_done: int,
                     train_time_s: float | None,
                     time_to_train_s: float, checkpoint: str | None,
                     env: dict, stopped_by: str = "SIGTERM",
                     saved: bool = True) -> dict[str, Any]:
    """A cell stopped at a step boundary by SIGTERM (or Ctrl-C, which the runner passes on as
    SIGTERM). `checkpoint` names the file a re-run resumes from, or is None when there is none
    (the strategy cannot checkpoint, or nothing was saved: the re-run starts over). `saved` is
    False when the runner writes the record of ranks stopped before they could save."""
    return {
        **identity(cell, fingerprint, "preempted", launched_at),
        "timing": {"steps_done": steps_done, "train_time_s": train_time_s,
                   "time_to_train_s": time_to_train_s},
        "quality": [],
        "checkpoint": checkpoint,
        "error": {"message": stop_message(cell, steps_done, checkpoint, stopped_by, saved)},
        "env": env,
    }


def stop_message(cell: Cell, steps_done: int, checkpoint: str | None, stopped_by: str,
                 saved: bool = True) -> str:
    if saved:
        then = ("; a re-run resumes from the checkpoint" if checkpoint else
                f"; {cell.strategy} has no checkpoint support here, a re-run starts over")
        return f"stopped by {stopped_by} after step {steps_done} of {cell.steps}{then}"
    then = ("; a re-run resumes from the checkpoint saved before" if checkpoint else
            "; nothing was saved, a re-run starts over")
    return (f"stopped by {stopped_by} near step {steps_done} of {cell.steps}, before the "
            f"ranks saved{then}")


def mark_stopped_by(record: dict, cell: Cell, stopped_by: str) -> dict:
    """A `preempted` record its ranks wrote (they were sent SIGTERM), naming what asked for
    the stop instead."""
    steps_done = (record.get("timing") or {}).get("steps_done", 0)
    record["error"] = {"message": stop_message(cell, steps_done, record.get("checkpoint"),
                                               stopped_by)}
    return record


def failed_record(cell: Cell, fingerprint: str, status: str, *, launched_at: float,
                  time_to_train_s: float,
                  message: str, exit_code: int | None, ranks_failed: list,
                  signal: str | None, traceback: str, log_tail: str,
                  env: dict) -> dict[str, Any]:
    """A cell whose ranks left no record of their own (`failed` or `timeout`): the runner
    writes what the processes' exit, error files and log say."""
    return {
        **identity(cell, fingerprint, status, launched_at),
        "timing": {"time_to_train_s": time_to_train_s},
        "quality": [],
        "error": {"message": message, "exit_code": exit_code, "ranks_failed": ranks_failed,
                  "signal": signal, "traceback": traceback, "log_tail": log_tail},
        "env": env,
    }


def mark_timed_out(record: dict, timeout_s: float) -> dict:
    """A cell that wrote its own record but was stopped for time (its SIGTERM let the ranks
    checkpoint): the status says why it stopped, the message keeps what the ranks said."""
    previous = (record.get("error") or {}).get("message", "")
    record["status"] = "timeout"
    record["finished_at"] = utc_iso(time.time())
    record["error"] = {"message": f"cell exceeded its timeout of {timeout_s:g} s; {previous}"}
    return record
