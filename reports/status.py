"""`bench status`: a sweep's cells as a Rich table, and the counts."""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from reports.console import console

MISSING = "missing"  # bench.sweep.status's word for a cell with no record


def _slurm_job(row: dict) -> str:
    slurm = row.get("slurm") or {}
    job = slurm.get("slurm_job_id", "")
    if slurm.get("slurm_array_job_id"):
        job = f"{slurm['slurm_array_job_id']}_{slurm.get('slurm_array_task_id', '')} ({job})"
    return job


def render_status(status: dict, folder: Path) -> None:
    colours = {"ok": "green", MISSING: "yellow"}
    table = Table(title=f"sweep {status['name']} — {folder}")
    for column in ("#", "cell", "status", "time s", "slurm job", "note"):
        table.add_column(column, justify="right" if column in ("#", "time s") else "left")
    for row in status["cells"] + status["extra"]:
        colour = colours.get(row["status"], "red")
        seconds = row.get("time_to_train_s")
        table.add_row("" if row["index"] is None else str(row["index"]), row["cell_id"],
                      f"[{colour}]{row['status']}[/{colour}]",
                      "" if seconds is None else f"{seconds:.1f}", _slurm_job(row),
                      escape((row.get("message") or "")[:80]) + (" (not in the spec)"
                                                                 if row["index"] is None else ""))
    out = console()
    out.print(table)
    counts = status["counts"]
    failed = sum(n for s, n in counts.items() if s not in ("ok", MISSING))
    out.print(f"{len(status['cells'])} cells: {counts.get('ok', 0)} ok, {failed} failed, "
              f"{counts.get(MISSING, 0)} missing")
