"""A sweep folder's state: every cell its resolved spec names, with the status of its record
(or `missing`), plus records the spec does not name. Reads files; renders nothing."""
from __future__ import annotations

from pathlib import Path

from bench.errors import BadInput
from bench.record import store
from bench.sweep.spec_files import SPEC_JSON, read_resolved

MISSING = "missing"


def sweep_status(out: Path) -> dict:
    out = Path(out)
    data = read_resolved(out / SPEC_JSON)
    if data is None and not any(store.cell_dirs(out)):
        raise BadInput(f"{out} holds no sweep: no {SPEC_JSON} and no cell records")
    expected = [(e["index"], e["cell_id"]) for e in data["cells"]] if data else []
    rows = [_row(index, cell_id, store.read_record(out / cell_id)) for index, cell_id in expected]
    named = {cell_id for _, cell_id in expected}
    extra = [_row(None, d.name, store.read_record(d)) for d in store.cell_dirs(out)
             if d.name not in named]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"name": data["name"] if data else out.name, "dir": str(out), "cells": rows,
            "extra": extra, "counts": counts,
            "complete": bool(rows) and all(r["status"] == "ok" for r in rows)}


def _row(index, cell_id: str, record: dict | None) -> dict:
    if record is None:
        return {"index": index, "cell_id": cell_id, "status": MISSING}
    env = record.get("env") or {}
    return {"index": index, "cell_id": cell_id, "status": record.get("status", "?"),
            "message": (record.get("error") or {}).get("message"),
            "time_to_train_s": (record.get("timing") or {}).get("time_to_train_s"),
            "throughput_img_s": (record.get("timing") or {}).get("throughput_img_s"),
            "slurm": env.get("slurm") or {}, "host": env.get("hostname")}
