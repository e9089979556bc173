"""What the regression gate's numbers cannot say by themselves: which environment fields differ
between the matched cells of BASELINE and NEW (a slowdown may be the machine's, not the code's),
and which workload fields keep a cell from being matched at all.

Both read the flattened records (`store.load`), as `bench.analysis.gate` pairs them by index.
"""
from __future__ import annotations

import json

import pandas as pd

from bench.analysis.frame import is_missing

# Cell fields that do not enter the workload fingerprint: bench.config.cell.EXECUTION_FIELDS
# (analysis may not import bench.config; a test keeps the two equal).
NOT_WORKLOAD = frozenset({"strategy", "devices", "precision", "zero_stage", "repeat",
                          "timeout_s", "sample_hz", "device_type", "eval_every", "target_psnr"})
# Beside the cell, the fingerprint hashes the data split's digest and the record schema.
WORKLOAD_EXTRA = ("data.digest", "data.train_images", "data.test_images", "schema_version")
# What identifies "the same run, other workload": a cell of the other side with these equal
# is the one whose workload is set beside this one's.
EXECUTION_KEYS = ("cell.strategy", "cell.devices", "cell.precision", "zero", "cell.device_type",
                  "cell.repeat")
# Environment fields that differ between any two runs and explain nothing: the command line,
# the commit under test, the Slurm job's ids and the GPU indices it was handed.
ENV_IGNORED = ("env.command", "env.git_commit", "env.cuda_visible_devices", "env.slurm.")


def _text(value) -> str:
    """A value as the output shows it (64, not 64.0; lists as JSON)."""
    if is_missing(value):
        return "unset"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if hasattr(value, "tolist"):  # a numpy array or scalar
        return _text(value.tolist())
    return str(value)


def env_changes(base_raw: pd.DataFrame, new_raw: pd.DataFrame, pairs) -> list[dict]:
    """The environment fields that differ between matched cells, once per field:
    {field, baseline, new, cells, of}, the values joined with ", " where a side holds several,
    `cells` the matched pairs in which the field differs and `of` those in which both sides
    recorded it (a field either side did not record is not compared)."""
    fields = sorted(c for c in set(base_raw.columns) & set(new_raw.columns)
                    if c.startswith("env.") and not c.startswith(ENV_IGNORED))
    out = []
    for col in fields:
        seen_b, seen_n, cells, of = set(), set(), 0, 0
        for i, j, *_ in pairs:
            vb, vn = base_raw.at[i, col], new_raw.at[j, col]
            if is_missing(vb) or is_missing(vn):
                continue
            of += 1
            if _text(vb) == _text(vn):
                continue
            seen_b.add(_text(vb))
            seen_n.add(_text(vn))
            cells += 1
        if cells:
            out.append({"field": col[len("env."):], "baseline": ", ".join(sorted(seen_b)),
                        "new": ", ".join(sorted(seen_n)), "cells": cells, "of": of})
    return out


def _workload_fields(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if (c.startswith("cell.") and "." not in c[5:]
                                         and c[5:] not in NOT_WORKLOAD) or c in WORKLOAD_EXTRA]


def workload_difference(base_raw: pd.DataFrame, new_raw: pd.DataFrame, i, j) -> list[str]:
    """The workload fields in which baseline row i and new row j differ, as
    "field baseline vs new" (cell fields by their own name)."""
    out = []
    for col in sorted(set(_workload_fields(base_raw)) | set(_workload_fields(new_raw))):
        vb = base_raw.at[i, col] if col in base_raw else None
        vn = new_raw.at[j, col] if col in new_raw else None
        if _text(vb) != _text(vn):
            out.append(f"{col.removeprefix('cell.')} {_text(vb)} vs {_text(vn)}")
    return out


def why_unmatched(base_raw: pd.DataFrame, new_raw: pd.DataFrame, base: pd.DataFrame,
                  new: pd.DataFrame, base_rows, new_rows, same_id=()) -> dict:
    """cell id → why it has no partner: for each baseline row in `base_rows`, the new row among
    `new_rows` that ran the same way (EXECUTION_KEYS) with the fewest workload differences,
    and those differences ("image_size 64 vs 96"). `same_id` pairs (i, j) of one cell id whose
    fingerprints differ are explained the same way. Rows with no such partner are left out."""
    candidates: dict = {}
    for j in new_rows:
        candidates.setdefault(tuple(new.at[j, k] for k in EXECUTION_KEYS), []).append(j)
    found = [(i, candidates.get(tuple(base.at[i, k] for k in EXECUTION_KEYS), []))
             for i in base_rows] + [(i, [j]) for i, j in same_id]
    out = {}
    for i, partners in found:
        best = min((workload_difference(base_raw, new_raw, i, j) for j in partners
                    if base.at[i, "fingerprint"] != new.at[j, "fingerprint"]),
                   key=len, default=None)
        if best is not None:
            out[base.at[i, "cell_id"]] = ", ".join(best) or \
                "fingerprint differs, no recorded workload field does"
    return out


def summary(reasons: dict, most: int = 3) -> str:
    """The commonest reasons of `why_unmatched`, most frequent first, as one clause."""
    if not reasons:
        return ""
    counts = pd.Series(list(reasons.values()), dtype=object).value_counts()
    parts = [f"{why} ({n} of {len(reasons)} cells)" if len(counts) > 1 else why
             for why, n in counts.head(most).items()]
    if len(counts) > most:
        parts.append(f"{len(counts) - most} other difference(s)")
    return "; ".join(parts)
