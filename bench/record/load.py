"""Reading results back for a report: a results folder as a table, and the artefacts each cell
wrote beside its record (steps.parquet, telemetry.parquet, samples.npz) plus its environment.

The reading lives here, with the store that wrote the files, so that bench.analysis stays pure
DataFrame → DataFrame statistics. The loaders take rows the caller has already chosen and
keyed (e.g. `bench.analysis.prepare`), and copy the named `keys` columns onto what they read.
A missing or unreadable artefact is skipped, never raised: a report shows what there is.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BadInput
from bench.record import store

SAMPLES = "samples.npz"
SAMPLE_ARRAYS = ("sigma", "noisy", "output", "clean")


def load_folder(path, role: str) -> pd.DataFrame:
    """The results of one folder; a missing folder or one without records is bad input."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{role} results folder {path} does not exist or is not a folder")
    frame = store.load(path)
    if frame.empty and not frame.attrs.get("unreadable"):
        raise BadInput(f"{role} results folder {path} holds no cell records")
    return frame


def _with_dir(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["_dir"].notna()] if "_dir" in rows else rows.iloc[0:0]


def _read_parquet(cell_dir, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    """The table, or None when it is missing or unreadable. With `columns`, only those that
    the file has are read (pyarrow directly: a campaign's report reads thousands of these)."""
    import pyarrow.parquet as pq
    try:
        if columns is None:
            return pd.read_parquet(Path(cell_dir) / name)
        path = Path(cell_dir) / name
        present = set(pq.read_schema(path).names)
        return pq.read_table(path, columns=[c for c in columns if c in present]).to_pandas()
    except (OSError, ValueError):
        return None


STEP_COLUMNS = ["step", "step_time_s", "data_wait_s", "warmup"]


def step_times(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Timed (non-warm-up) steps of every row's cell from its steps.parquet, one row per step."""
    parts, owners = [], []
    for position, (_, r) in enumerate(_with_dir(rows).iterrows()):
        steps = _read_parquet(r["_dir"], store.STEPS, STEP_COLUMNS)
        if steps is None or "step_time_s" not in steps:
            continue
        if "warmup" in steps:
            steps = steps[~steps["warmup"].astype(bool)]
        parts.append(pd.DataFrame({
            "step": steps["step"] if "step" in steps else np.arange(len(steps)),
            "step_time_s": steps["step_time_s"],
            "data_wait_s": steps["data_wait_s"] if "data_wait_s" in steps else math.nan}))
        owners.append(np.full(len(steps), position))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    # Each step row takes its cell's key columns, copied once for all rows, not per cell.
    keyed = _with_dir(rows)[keys].iloc[np.concatenate(owners)].reset_index(drop=True)
    return pd.concat([out, keyed], axis=1)


def telemetry_timelines(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Every row's telemetry samples with time relative to its timed window's start
    (`t_rel_s`), GPU kernel-busy % averaged and board power summed over the cell's GPUs."""
    out = []
    for _, r in _with_dir(rows).iterrows():
        t = _read_parquet(r["_dir"], store.TELEMETRY)
        if t is None or t.empty or "t_s" not in t:
            continue
        start = r.get("telemetry.timed_start_s")
        start = float(start) if start is not None and pd.notna(start) else float(t["t_s"].min())
        part = pd.DataFrame({"t_rel_s": t["t_s"] - start,
                             "phase": t.get("phase", pd.Series("", index=t.index))})
        for col in ("proc_cpu_pct", "sys_cpu_pct_mean", "proc_rss_mb"):
            part[col] = pd.to_numeric(t[col], errors="coerce") if col in t else math.nan
        busy = [c for c in t.columns if c.startswith("gpu_busy_pct_")]
        power = [c for c in t.columns if c.startswith("power_w_")]
        part["gpu_busy_pct"] = t[busy].astype(float).mean(axis=1, skipna=True) if busy \
            else math.nan
        part["power_w"] = t[power].astype(float).sum(axis=1, min_count=1) if power \
            else math.nan
        for k in keys:
            part[k] = r[k]
        out.append(part)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def sample_images(rows: pd.DataFrame) -> list[dict]:
    """Per model, the test images (samples.npz: sigma, noisy, output, clean) of the first of
    its rows whose file reads; `rows` come in order of preference (analysis.sample_cells)."""
    out, done = [], set()
    for _, r in _with_dir(rows).iterrows():
        model = r["cell.model"]
        if model in done:
            continue
        try:
            with np.load(Path(r["_dir"]) / SAMPLES) as z:
                arrays = {k: np.asarray(z[k]) for k in SAMPLE_ARRAYS}
        except (OSError, ValueError, KeyError):
            continue
        done.add(model)
        out.append({"model": model, "cell_id": r["cell_id"], "config": r["config"],
                    "devices": int(r["cell.devices"]), "precision": r["cell.precision"],
                    "sigma": float(arrays["sigma"]), "noisy": arrays["noisy"],
                    "output": arrays["output"], "clean": arrays["clean"]})
    return out


def environments(frame: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """The environment of every record (`env.*` columns): the entries every record shares, and
    one row per record (cell_id first) of the entries that differ between records."""
    if frame.empty:
        return {}, pd.DataFrame()
    cols = [c for c in frame.columns if c.startswith("env.")]
    text = pd.DataFrame({c[len("env."):]: frame[c].map(_env_text) for c in cols},
                        index=frame.index)
    common = {c: text[c].iloc[0] for c in text.columns if text[c].nunique(dropna=False) == 1}
    varying = text[[c for c in text.columns if c not in common]]
    varying.insert(0, "cell_id", list(frame.get("cell_id", pd.Series("", index=frame.index))))
    return common, varying.reset_index(drop=True)


def _env_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(map(str, value)) if len(value) else "—"
    return str(value)
