"""A sweep's summary: summary.json (what Slurm's summary job and local runs write) and the
console summary after a run."""
from __future__ import annotations

import time
from pathlib import Path

SUMMARY = "summary.json"


def _named_records(out: Path, status: dict) -> list[dict]:
    from bench.record import store
    named = {row["cell_id"] for row in status["cells"]}
    return [r for r in store.records(out)[0] if r.get("cell_id") in named]


def write_summary(out: Path, status: dict) -> dict:
    """summary.json: the status of every cell and, over the ok ones, the per-configuration
    comparison (the same statistics as `bench report`: speedups and quality deltas against
    single-device fp32)."""
    import pandas as pd

    from bench import analysis
    from bench.record import store
    frame = pd.DataFrame([store.flatten(r) for r in _named_records(out, status)])
    table = analysis.summary_table(frame) if not frame.empty else frame
    # store.write_json turns numpy scalars into numbers and NaN into null.
    configurations = [] if table.empty else table.to_dict(orient="records")
    summary = {**status, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "configurations": configurations}
    store.write_json(Path(out) / SUMMARY, summary)
    return summary


def render_summary(out: Path, status: dict, notes: list[str]) -> None:
    from reports.console import render_summary as render
    render(_named_records(out, status), out, notes)
