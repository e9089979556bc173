"""Quality: PSNR / SSIM / LPIPS per configuration and σ, their differences from the
baseline with parity verdicts, and the pairwise comparisons (AMP vs fp32, DDP vs DP)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysis.frame import (AMP_PRECISIONS, BASELINE, CONFIG_KEYS, GROUP_KEYS,
                                  HIGHER_IS_BETTER, QUALITY_METRICS, Margins, _as_baseline,
                                  _column, _groups, _select, _sorted_configs, config_label,
                                  prepare)
from bench.analysis.stats import (CONFIDENCE, _finite, _variation_note, difference, mean_ci,
                                  ratio, verdict)


def quality_long(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (ok record, evaluated σ, metric) with the noisy input's score beside it."""
    rows = prepare(frame)
    out = []
    pattern = [(c, c[len("quality["):].split("].", 1)) for c in rows.columns
               if c.startswith("quality[") and "]." in c]
    cols = {}
    for col, (sigma, metric) in pattern:
        if metric in QUALITY_METRICS:
            cols[(float(sigma), metric)] = col
    keep = GROUP_KEYS + CONFIG_KEYS + ["config", "_config_key", "cell.repeat", "cell_id",
                                       "cell.scaling"]
    for (sigma, metric), col in sorted(cols.items()):
        noisy_col = col.rsplit(".", 1)[0] + f".noisy_{metric}"
        part = rows[keep].copy()
        part["sigma"] = sigma
        part["metric"] = metric
        part["value"] = pd.to_numeric(rows[col], errors="coerce")
        part["noisy_value"] = pd.to_numeric(_column(rows, noisy_col), errors="coerce")
        out.append(part[part["value"].notna()])
    if not out:
        return pd.DataFrame(columns=keep + ["sigma", "metric", "value", "noisy_value"])
    return pd.concat(out, ignore_index=True)


# Weak scaling keeps the per-device batch: on other device counts than the baseline's, a cell
# trains another global batch with another learning rate, so its quality is shown (and its
# difference), but a parity verdict would compare different trainings.
WEAK_SCALING = "no verdict (weak scaling: other global batch)"


def resized_weak(cell_rows: pd.DataFrame, base_rows: pd.DataFrame) -> bool:
    """Weak-scaling cells on another device count than the baseline's."""
    weak = (cell_rows["cell.scaling"] == "weak").any() or \
        (base_rows["cell.scaling"] == "weak").any()
    return bool(weak) and set(cell_rows["cell.devices"]) != set(base_rows["cell.devices"])


def _quality_delta(a: pd.DataFrame, b: pd.DataFrame, metric: str, margins: Margins,
                   confidence: float) -> dict:
    d = difference(a["value"], b["value"], a["cell.repeat"], b["cell.repeat"], confidence)
    return {"delta": d["estimate"], "delta_ci_low": d["ci_low"], "delta_ci_high": d["ci_high"],
            "p_value": d["p_value"], "test": d["test"], "margin": margins.of(metric),
            "verdict": verdict(d["ci_low"], d["ci_high"], margins.of(metric),
                               HIGHER_IS_BETTER[metric])}


def quality_deltas(frame: pd.DataFrame, baseline=BASELINE, margins: Margins = Margins(),
                   confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per (workload group, configuration, σ, metric): the mean over repeats with its
    t interval, and the difference from the group's baseline (paired by repeat when the repeats
    pair up, else Welch) with interval, p-value, the test used and the parity verdict."""
    base = _as_baseline(baseline)
    q = quality_long(frame)
    out = []
    if q.empty:
        return pd.DataFrame()
    for keys, g in q.groupby(GROUP_KEYS + ["sigma", "metric"], sort=True, dropna=False):
        group = dict(zip(GROUP_KEYS + ["sigma", "metric"], keys))
        metric = group["metric"]
        configs = _sorted_configs(g)
        bkeys = [k for k in configs if base.matches(*k)]
        b = _select(g, bkeys[0]) if bkeys else None
        for key in configs:
            c = _select(g, key)
            m = mean_ci(c["value"], confidence)
            row = {**group, **dict(zip(CONFIG_KEYS, key)), "config": config_label(key[0], key[3]),
                   "n": m["n"], "repeats": sorted(int(r) for r in c["cell.repeat"]),
                   "mean": m["mean"], "ci_low": m["ci_low"], "ci_high": m["ci_high"],
                   "std": m["std"], "noisy_mean": _finite(c["noisy_value"]).mean()
                   if _finite(c["noisy_value"]).size else math.nan,
                   "is_baseline": bool(bkeys) and key == bkeys[0]}
            if b is None or row["is_baseline"]:
                row.update(delta=math.nan, delta_ci_low=math.nan, delta_ci_high=math.nan,
                           p_value=math.nan, test="", margin=margins.of(metric),
                           verdict="baseline" if row["is_baseline"] else "no baseline")
            else:
                row.update(_quality_delta(b, c, metric, margins, confidence))
                if resized_weak(c, b):
                    row["verdict"] = WEAK_SCALING
            out.append(row)
    result = pd.DataFrame(out)
    order = result["metric"].map({m: i for i, m in enumerate(QUALITY_METRICS)})
    result = result.assign(_order=order).sort_values(
        GROUP_KEYS + ["sigma", "_order"], kind="stable").drop(columns="_order")
    result = result.reset_index(drop=True)
    result.attrs["baseline"] = base.label
    return result


def _pairwise(frame: pd.DataFrame, pick, margins: Margins, confidence: float) -> pd.DataFrame:
    """Rows comparing configuration B with configuration A of the same workload group, for
    every (A, B) that `pick(group_rows)` yields: throughput ratio B/A and quality deltas B − A
    at each σ."""
    rows = prepare(frame)
    q = quality_long(frame)
    out = []
    for group, g in _groups(rows):
        for akey, bkey in pick(g):
            a, b = _select(g, akey), _select(g, bkey)
            r = ratio(_column(a, "timing.throughput_img_s"), _column(b, "timing.throughput_img_s"),
                      confidence)
            base_row = {**group,
                        "a_config": config_label(akey[0], akey[3]), "a_devices": akey[1],
                        "a_precision": akey[2],
                        "b_config": config_label(bkey[0], bkey[3]), "b_devices": bkey[1],
                        "b_precision": bkey[2],
                        "n_a": len(a), "n_b": len(b),
                        "a_throughput": _finite(_column(a, "timing.throughput_img_s")).mean(),
                        "b_throughput": _finite(_column(b, "timing.throughput_img_s")).mean(),
                        "gain": r["estimate"], "gain_ci_low": r["ci_low"],
                        "gain_ci_high": r["ci_high"], "gain_p_value": r["p_value"],
                        "gain_test": r["test"],
                        "time_saving_pct": 100 * (1 - 1 / r["estimate"])
                        if r["estimate"] else math.nan,
                        "variation_note": _variation_note(
                            mean_ci(_column(a, "timing.throughput_img_s"))["cv"],
                            mean_ci(_column(b, "timing.throughput_img_s"))["cv"],
                            r["estimate"] - 1, "gain")}
            gq = q[np.logical_and.reduce([(q[k] == group[k]).to_numpy() for k in GROUP_KEYS])] \
                if not q.empty else q
            sigmas = sorted(set(gq["sigma"])) if not gq.empty else [math.nan]
            for sigma in sigmas:
                row = dict(base_row, sigma=sigma)
                for metric in QUALITY_METRICS:
                    sel = gq[(gq["sigma"] == sigma) & (gq["metric"] == metric)] \
                        if not gq.empty else gq
                    qa, qb = (_select(sel, akey), _select(sel, bkey)) if not sel.empty \
                        else (sel, sel)
                    if qa.empty or qb.empty:
                        continue
                    d = _quality_delta(qa, qb, metric, margins, confidence)
                    row.update({f"{metric}_{k}": v for k, v in d.items() if k != "margin"})
                out.append(row)
    return pd.DataFrame(out)


def amp_gain(frame: pd.DataFrame, margins: Margins = Margins(),
             confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Mixed precision against fp32 for the same strategy, devices and ZeRO stage: throughput
    gain (ratio of geometric means, Welch t interval on the logs) and the accuracy change."""
    def pick(g):
        configs = _sorted_configs(g)
        for key in configs:
            if key[2] in AMP_PRECISIONS:
                ref = (key[0], key[1], "fp32", key[3])
                if ref in configs:
                    yield ref, key
    return _pairwise(frame, pick, margins, confidence)


def ddp_vs_dp(frame: pd.DataFrame, margins: Margins = Margins(),
              confidence: float = CONFIDENCE) -> pd.DataFrame:
    """DistributedDataParallel against DataParallel on the same devices and precision."""
    def pick(g):
        configs = _sorted_configs(g)
        for key in configs:
            if key[0] == "ddp" and ("dp", key[1], key[2], key[3]) in configs:
                yield ("dp", key[1], key[2], key[3]), key
    return _pairwise(frame, pick, margins, confidence)

