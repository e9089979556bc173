"""Where each configuration's time goes, and what it loses against ideal scaling.

Every record's `breakdown` splits its timed window into data, forward, backward, exposed
communication, optimizer and other (bench.measure.attribution). Per configuration this table
holds the mean fractions over its repeats, and a decomposition of its time per sample against
the ideal — the time per sample of the baseline's strategy and devices at the configuration's
own precision (a bf16 cell scales from a bf16 reference: against fp32 the precision's gain
would pass for scaling) × their devices ÷ devices — into the same parts:
excess_k = f_k × t − f_k,base × t_ideal. The excesses add up to t − t_ideal, so the largest
one is the largest loss against ideal scaling, and a sentence names it.
"""
from __future__ import annotations

import math

import pandas as pd

from bench.analysis.frame import (BASELINE, CONFIG_KEYS, GROUP_KEYS, _as_baseline, _groups,
                                  _mean_of, _select, _sorted_configs, prepare,
                                  scaling_reference)

FRACTIONS = ("data", "forward", "backward", "comm_exposed", "optimizer", "other")
PARTS = {"compute": ("forward", "backward", "optimizer"), "comm_exposed": ("comm_exposed",),
         "data": ("data",), "other": ("other",)}
PART_NAMES = {"compute": "slower compute per sample", "comm_exposed": "exposed communication",
              "data": "waiting for data", "other": "time between the phases and steps"}


def breakdown_table(frame: pd.DataFrame, baseline=BASELINE) -> pd.DataFrame:
    """One row per (workload group, configuration) whose records hold a breakdown."""
    base_key = _as_baseline(baseline)
    rows = prepare(frame)
    if rows.empty or "breakdown.forward" not in rows:
        return pd.DataFrame()
    rows = rows[pd.to_numeric(rows["breakdown.forward"], errors="coerce").notna()]
    out = []
    for group, g in _groups(rows):
        configs = {key: config_means(_select(g, key)) for key in _sorted_configs(g)}
        for key, means in configs.items():
            ref = scaling_reference(base_key, key, list(configs))
            base = configs[ref] if ref is not None else None
            row = {**group, **dict(zip(CONFIG_KEYS, key)), **means,
                   "config": _select(g, key)["config"].iloc[0]}
            row.update(losses(means, base, int(key[1]), base_key.devices))
            row["is_baseline"] = base_key.matches(*key)
            row["is_reference"] = ref == key
            row["reference"] = base_key.at(key[2]).label
            row["has_reference"] = ref is not None
            row["sentence"] = sentence(row)
            out.append(row)
    return pd.DataFrame(out)


def config_means(rows: pd.DataFrame) -> dict:
    means = {k: _mean_of(rows, f"breakdown.{k}") for k in FRACTIONS}
    means.update(
        n=len(rows),
        comm_message_bytes_per_step=_mean_of(rows, "breakdown.comm_message_bytes_per_step"),
        comm_overlap=_mean_of(rows, "breakdown.comm_overlap"),
        throughput_img_s=_mean_of(rows, "timing.throughput_img_s"))
    return means


def losses(means: dict, base: dict | None, devices: int, base_devices: int) -> dict:
    """Seconds per sample each part takes beyond the ideal, and the largest of them."""
    out = {f"excess_{p}_s": math.nan for p in PARTS}
    out.update(ideal_s_per_img=math.nan, s_per_img=math.nan, largest_loss=None)
    if base is None or not (means["throughput_img_s"] > 0 and base["throughput_img_s"] > 0):
        return out
    t = 1.0 / means["throughput_img_s"]
    ideal = (1.0 / base["throughput_img_s"]) * base_devices / devices
    out.update(s_per_img=t, ideal_s_per_img=ideal)
    for part, keys in PARTS.items():
        out[f"excess_{part}_s"] = sum(means[k] * t - base[k] * ideal for k in keys)
    worst = max(PARTS, key=lambda p: out[f"excess_{p}_s"])
    if out[f"excess_{worst}_s"] > 0:
        out["largest_loss"] = worst
    return out


def sentence(row: dict) -> str:
    label = f"{row['config']} ×{int(row['cell.devices'])} {row['cell.precision']}"
    comm = ""
    if row["comm_message_bytes_per_step"] and row["comm_message_bytes_per_step"] > 0:
        hidden = row["comm_overlap"]
        comm = (f"; each rank communicates {row['comm_message_bytes_per_step'] / 2**20:.2f} "
                f"MiB per step, exposed for {row['comm_exposed']:.0%} of the window"
                + (f" ({hidden:.0%} of the communication time hidden behind computation)"
                   if isinstance(hidden, float) and math.isfinite(hidden) else ""))
    if row.get("is_baseline") or row.get("is_reference"):
        compute = sum(row[k] for k in PARTS["compute"])
        role = "baseline" if row.get("is_baseline") else "reference"
        return (f"{label} ({role}): computing for {compute:.0%} of the window, waiting for "
                f"data {row['data']:.0%}, other {row['other']:.0%}{comm}.")
    if not math.isfinite(row["ideal_s_per_img"]):
        if row.get("has_reference") is False:
            return (f"{label}: no {row['reference']} cell in its group to scale from (a "
                    f"reference of another precision would count the precision as scaling)"
                    f"{comm}.")
        return f"{label}: no baseline in its group to compare with{comm}."
    gap = row["s_per_img"] / row["ideal_s_per_img"] - 1.0
    if row["largest_loss"] is None or gap <= 0:
        return f"{label}: at or better than ideal scaling of {row['reference']}{comm}."
    part = row["largest_loss"]
    share = row[f"excess_{part}_s"] / (row["s_per_img"] - row["ideal_s_per_img"])
    window = sum(row[k] for k in PARTS[part])
    return (f"{label}: {gap:.0%} slower per sample than ideal scaling of {row['reference']}; "
            f"the largest loss is "
            f"{PART_NAMES[part]} ({share:.0%} of the gap; {window:.0%} of the window){comm}.")
