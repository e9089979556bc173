"""Parity: do the strategies compute the same training as one device in fp32?

Each strategy runs the first K steps of the identical workload in its own process; per-step
loss and gradient norm are compared with the single-device fp32 reference.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

from bench.config.cell import Cell

DEFAULT_RTOL = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 5e-2, "fp16": 5e-2}


def reference_of(cell: Cell) -> Cell:
    return cell.replace(strategy="single", devices=1, precision="fp32", zero_stage=None)


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def run_parity(cells: list[Cell], prepared: dict, fingerprints: dict, *,
               rtol: float | None = None, workdir: Path | None = None) -> dict:
    import pandas as pd

    from bench.errors import Interrupted
    from bench.record import store
    from bench.sweep.plan import DataKey
    from bench.sweep.runner import run_cell, termination_signal

    # Telemetry off: parity compares arithmetic, not speed. The reference differs only in
    # execution fields, so it shares its cell's workload fingerprint.
    fingerprint_of = {}
    for original in cells:
        for c in (original.replace(sample_hz=0.0), reference_of(original).replace(sample_hz=0.0)):
            fingerprint_of[c] = fingerprints[original]
    cells = [c.replace(sample_hz=0.0) for c in cells]
    references = {c: reference_of(c) for c in cells}
    to_run = list(dict.fromkeys([*references.values(), *cells]))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        records, tables = {}, {}
        for cell in to_run:
            fp = fingerprint_of[cell]
            data = prepared[DataKey.of(cell)].to_json()
            records[cell] = run_cell(cell, fp, data, Path(tmp), extra={"parity": True})
            if termination_signal() is not None:  # Ctrl-C or SIGTERM stopped that cell:
                raise Interrupted(termination_signal())  # its steps compare with nothing
            steps = Path(tmp) / cell.cell_id / store.STEPS
            tables[cell] = pd.read_parquet(steps) if steps.exists() else None
    checks = []
    for cell in cells:
        ref = references[cell]
        if cell == ref:
            continue
        checks.append(compare(cell, ref, records, tables,
                              rtol if rtol is not None else DEFAULT_RTOL[cell.precision]))
    return {"checks": checks, "passed": all(c["passed"] for c in checks)}


def compare(cell: Cell, ref: Cell, records: dict, tables: dict, rtol: float) -> dict:
    check = {"cell_id": cell.cell_id, "reference_id": ref.cell_id, "rtol": rtol, "steps": [],
             "passed": False, "reason": "", "notes": []}
    if cell.batchnorm_per_device:
        check["notes"].append("BatchNorm statistics are computed per rank (or per DataParallel "
                              "replica); use --norm group or none for step-exact parity")
    for c in (cell, ref):
        if records[c].get("status") != "ok" or tables[c] is None:
            message = (records[c].get("error") or {}).get("message", records[c].get("status"))
            check["reason"] = f"{c.cell_id} did not complete: {message}"
            return check
    worst, unread = 0.0, False
    for (_, row), (_, ref_row) in zip(tables[cell].iterrows(), tables[ref].iterrows()):
        loss_rel = relative(row["loss"], ref_row["loss"])
        grad_rel = math.nan
        if row["grad_norm"] is None or math.isnan(row["grad_norm"]):
            unread = True  # the strategy freed its gradients in step(): losses are compared
        else:
            grad_rel = relative(row["grad_norm"], ref_row["grad_norm"])
        worst = max(worst, loss_rel, 0.0 if math.isnan(grad_rel) else grad_rel)
        check["steps"].append({"step": int(row["step"]), "loss": row["loss"],
                               "ref_loss": ref_row["loss"], "loss_rel": loss_rel,
                               "grad_norm": row["grad_norm"],
                               "ref_grad_norm": ref_row["grad_norm"], "grad_rel": grad_rel})
    if unread:
        check["notes"].append(f"{cell.strategy} exposes no gradient norm at this setting; only "
                              "losses were compared")
    check["worst_rel"] = worst
    check["passed"] = worst <= rtol
    if not check["passed"]:
        check["reason"] = f"largest relative difference {worst:.2e} exceeds {rtol:g}"
    return check
