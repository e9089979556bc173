"""Comparisons, as pure functions of the results DataFrame (one row per record).

Cells are compared only within a group of identical workloads: same model and same workload
fingerprint. Repeats of one configuration are aggregated before any ratio is taken.
"""
from __future__ import annotations

import pandas as pd

CONFIG = ["cell.strategy", "cell.devices", "cell.precision", "cell.zero_stage"]
GROUP = ["cell.model", "fingerprint"]
BASELINE = ("single", 1, "fp32")


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "status" not in frame:
        return frame.iloc[0:0]
    return frame[frame["status"] == "ok"]


def primary_sigma(frame: pd.DataFrame) -> float | None:
    """The first evaluated noise level, whose quality the summary shows."""
    cols = [c for c in frame.columns if c.startswith("quality[") and c.endswith("].psnr")]
    if not cols:
        return None
    return min(float(c[len("quality["):-len("].psnr")]) for c in cols)


def config_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, workload, configuration): medians/means over its ok repeats."""
    rows = ok_rows(frame).copy()
    if rows.empty:
        return pd.DataFrame()
    sigma = primary_sigma(rows)
    for c in CONFIG:
        rows[c] = rows[c] if c in rows else None
    rows["cell.zero_stage"] = rows["cell.zero_stage"].fillna(-1).astype(int)
    metrics = {"timing.throughput_img_s": "median", "timing.train_time_s": "median",
               "timing.time_to_train_s": "median", "timing.step_time_median_s": "median",
               "timing.data_wait_frac": "mean", "telemetry.energy_per_img_j": "mean",
               "telemetry.gpu_busy_pct_mean": "mean", "telemetry.cpu_pct_mean": "mean",
               "telemetry.mfu": "mean"}
    if sigma is not None:
        for m in ("psnr", "ssim", "lpips", "noisy_psnr", "noisy_ssim", "noisy_lpips"):
            metrics[f"quality[{sigma}].{m}"] = "mean"
    present = {k: v for k, v in metrics.items() if k in rows}
    grouped = rows.groupby(GROUP + CONFIG, dropna=False, sort=False)
    out = grouped.agg(present)
    out["repeats"] = grouped.size()
    out = out.reset_index()
    out["cell.zero_stage"] = out["cell.zero_stage"].astype(object).where(
        out["cell.zero_stage"] >= 0, None)
    out.attrs["sigma"] = sigma
    return out


def add_speedups(summary: pd.DataFrame, baseline: tuple = BASELINE) -> pd.DataFrame:
    """Speedup of training time and of throughput against the baseline configuration of the
    same model and workload; scaling efficiency = speedup / devices."""
    if summary.empty:
        return summary
    out = summary.copy()
    for col in ("speedup_time", "speedup_throughput", "efficiency", "time_saving_pct"):
        out[col] = float("nan")
    strategy, devices, precision = baseline
    for _, idx in out.groupby(GROUP, sort=False).groups.items():
        group = out.loc[idx]
        base = group[(group["cell.strategy"] == strategy) & (group["cell.devices"] == devices)
                     & (group["cell.precision"] == precision)]
        if base.empty:
            continue
        base_time = base["timing.train_time_s"].iloc[0]
        base_tput = base["timing.throughput_img_s"].iloc[0]
        out.loc[idx, "speedup_time"] = base_time / group["timing.train_time_s"]
        out.loc[idx, "speedup_throughput"] = group["timing.throughput_img_s"] / base_tput
        out.loc[idx, "efficiency"] = out.loc[idx, "speedup_throughput"] / group["cell.devices"]
        out.loc[idx, "time_saving_pct"] = 100 * (1 - group["timing.train_time_s"] / base_time)
    return out
