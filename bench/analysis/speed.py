"""Speed: per-configuration throughput and training-time statistics over repeats, and
speedups and scaling efficiency against the baseline of the same workload group."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysis.frame import (BASELINE, CONFIG_KEYS, GROUP_KEYS, _as_baseline, _column,
                                  _groups, _mean_of, _select, _sorted_configs, config_label,
                                  prepare, scaling_reference)
from bench.analysis.stats import CONFIDENCE, _finite, _variation_note, mean_ci, ratio


def config_stats(frame: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per (workload group, configuration): throughput and training time over the
    repeats (median, mean with t interval, coefficient of variation) and telemetry means.
    Training time is at the nominal timed steps (`frame.nominal_train_time`)."""
    rows = prepare(frame)
    out = []
    for group, g in _groups(rows):
        for key in _sorted_configs(g):
            c = _select(g, key)
            tput = mean_ci(_column(c, "timing.throughput_img_s"), confidence)
            time_ = mean_ci(_column(c, "train_time_nominal_s"), confidence)
            warmups = sorted({int(w) for w in _finite(_column(c, "timing.warmup_steps"))})
            out.append({
                **group, **dict(zip(CONFIG_KEYS, key)),
                "config": config_label(key[0], key[3]),
                "scaling": str(c["cell.scaling"].iloc[0]),
                "n": len(c), "repeats": sorted(int(r) for r in c["cell.repeat"]),
                "cell_ids": list(c["cell_id"]),
                "throughput_median": tput["median"], "throughput_mean": tput["mean"],
                "throughput_ci_low": tput["ci_low"], "throughput_ci_high": tput["ci_high"],
                "throughput_std": tput["std"], "throughput_cv": tput["cv"],
                "train_time_median": time_["median"], "train_time_mean": time_["mean"],
                "train_time_ci_low": time_["ci_low"], "train_time_ci_high": time_["ci_high"],
                "train_time_std": time_["std"], "train_time_cv": time_["cv"],
                "time_to_train_median": mean_ci(_column(c, "timing.time_to_train_s"))["median"],
                "step_time_median": mean_ci(_column(c, "timing.step_time_median_s"))["median"],
                "data_wait_frac": _mean_of(c, "timing.data_wait_frac"),
                "energy_per_img_j": _mean_of(c, "telemetry.energy_per_img_j"),
                "gpu_busy_pct": _mean_of(c, "telemetry.gpu_busy_pct_mean"),
                "power_mean_w": _mean_of(c, "telemetry.power_mean_w"),
                "cpu_pct": _mean_of(c, "telemetry.cpu_pct_mean"),
                "mfu": _mean_of(c, "telemetry.mfu"),
                "warmup_steps": ", ".join(map(str, warmups)),
                "hardware": ", ".join(sorted(set(c["hardware"]))),
                "clock": ", ".join(sorted({str(v) for v in _column(c, "timing.clock", None)
                                           if isinstance(v, str)})),
            })
    return pd.DataFrame(out)


def speedups(frame: pd.DataFrame, baseline=BASELINE,
             confidence: float = CONFIDENCE) -> pd.DataFrame:
    """`config_stats` plus, against the baseline of the same workload group: speedup of
    throughput and of training time (ratios of geometric means over repeats, Welch t interval
    on the logs), time saving % and a note when run-to-run variation rivals the effect.
    Scaling efficiency = throughput speedup over the baseline's strategy and devices *at the
    same precision* / (devices / baseline devices), with its interval (labelled strong or weak
    from cell.scaling; undefined where the devices do not change or no such configuration
    exists, `efficiency_note` says which). The saving of a weak-scaling cell, which trains
    more samples than its baseline, is per sample (1 − 1/throughput speedup):
    `saving_basis`."""
    base = _as_baseline(baseline)
    stats = config_stats(frame, confidence)
    if stats.empty:
        return stats
    rows = prepare(frame)
    extra = {c: [] for c in ("is_baseline", "speedup_throughput", "speedup_ci_low",
                             "speedup_ci_high", "speedup_p_value", "speedup_test",
                             "speedup_time", "efficiency", "efficiency_kind", "time_saving_pct",
                             "devices_vs_baseline", "variation_note", "hardware_differs",
                             "efficiency_ci_low", "efficiency_ci_high", "efficiency_vs",
                             "efficiency_note", "saving_basis", "interval_note")}
    base_rows, configs = {}, {}
    for group, g in _groups(rows):
        gkey = tuple(group[k] for k in GROUP_KEYS)
        configs[gkey] = (g, _sorted_configs(g))
        keys = [k for k in configs[gkey][1] if base.matches(*k)]
        base_rows[gkey] = (_select(g, keys[0]), keys[0]) if keys else None
    for _, s in stats.iterrows():
        gkey = tuple(s[k] for k in GROUP_KEYS)
        ckey = tuple(s[k] for k in CONFIG_KEYS)
        found = base_rows.get(gkey)
        this = _select(rows[np.logical_and.reduce(
            [(rows[k] == s[k]).to_numpy() for k in GROUP_KEYS])], ckey)
        extra["efficiency_kind"].append(s["scaling"])
        extra["saving_basis"].append("per sample" if s["scaling"] == "weak" else "training time")
        _efficiency(extra, s, ckey, base, *configs[gkey], confidence)
        if found is None:
            for col in ("speedup_throughput", "speedup_ci_low", "speedup_ci_high",
                        "speedup_p_value", "speedup_time", "time_saving_pct",
                        "devices_vs_baseline"):
                extra[col].append(math.nan)
            extra["is_baseline"].append(False)
            extra["speedup_test"].append("")
            extra["variation_note"].append("")
            extra["interval_note"].append("")
            extra["hardware_differs"].append(False)
            continue
        b, bkey = found
        # A mixed partition can put the baseline on one processor model and this on another:
        # the speedup would compare machines as well as configurations.
        extra["hardware_differs"].append(set(this["hardware"]) != set(b["hardware"]))
        r = ratio(_column(b, "timing.throughput_img_s"), _column(this, "timing.throughput_img_s"),
                  confidence)
        t = ratio(_column(this, "train_time_nominal_s"), _column(b, "train_time_nominal_s"),
                  confidence)
        is_base = ckey == bkey
        extra["is_baseline"].append(is_base)
        extra["speedup_throughput"].append(r["estimate"])
        extra["speedup_ci_low"].append(math.nan if is_base else r["ci_low"])
        extra["speedup_ci_high"].append(math.nan if is_base else r["ci_high"])
        extra["speedup_p_value"].append(math.nan if is_base else r["p_value"])
        extra["speedup_test"].append("" if is_base else r["test"])
        extra["speedup_time"].append(t["estimate"])
        # Scaling is relative to the baseline's devices (a 2-device baseline makes 4 devices
        # a 2x scale-up); with no change in devices there is no scaling to be efficient at.
        scale = int(s["cell.devices"]) / int(bkey[CONFIG_KEYS.index("cell.devices")])
        extra["devices_vs_baseline"].append(scale)
        # A weak-scaling cell trains `scale` times the samples: its training time says
        # nothing of the time a sample costs, its throughput does.
        faster = r["estimate"] if s["scaling"] == "weak" else t["estimate"]
        extra["time_saving_pct"].append(100 * (1 - 1 / faster)
                                        if faster and math.isfinite(faster) else math.nan)
        extra["interval_note"].append("" if is_base else _interval_note(r, confidence))
        base_cv = mean_ci(_column(b, "timing.throughput_img_s"))["cv"]
        extra["variation_note"].append(
            "" if is_base else _variation_note(base_cv, s["throughput_cv"],
                                               r["estimate"] - 1, "speedup"))
    out = stats.assign(**extra)
    out.attrs["baseline"] = base.label
    return out


def _interval_note(r: dict, confidence: float) -> str:
    """Said when the speedup's interval holds 1: it is wider than the effect, so the data do
    not tell faster from slower (more repeats would)."""
    low, high, estimate = r["ci_low"], r["ci_high"], r["estimate"]
    if not all(math.isfinite(v) for v in (low, high, estimate)) or not low <= 1.0 <= high:
        return ""
    return (f"the {confidence:.0%} interval of the speedup, {low:.2f}–{high:.2f}×, holds no "
            f"change: it is wider than the effect ({estimate - 1:+.1%}); more repeats would "
            "narrow it")


def _efficiency(extra: dict, s, ckey: tuple, base, g, configs: list[tuple],
                confidence: float) -> None:
    """Append this configuration's scaling efficiency (with its interval) against the
    baseline's strategy and devices at its own precision, and why it is blank if it is."""
    ref = scaling_reference(base, ckey, configs)
    label = base.at(ckey[2]).label
    value = low = high = math.nan
    note = ""
    if ref is None:
        note = f"no {label} cell in this workload group: efficiency needs one of its precision"
    elif ref == ckey:
        value = 1.0
    elif int(ckey[1]) == base.devices:
        note = "same devices as the reference: no scaling to be efficient at"
    else:
        scale = int(ckey[1]) / base.devices
        r = ratio(_column(_select(g, ref), "timing.throughput_img_s"),
                  _column(_select(g, ckey), "timing.throughput_img_s"), confidence)
        value, low, high = (r[k] / scale for k in ("estimate", "ci_low", "ci_high"))
    extra["efficiency"].append(value)
    extra["efficiency_ci_low"].append(low)
    extra["efficiency_ci_high"].append(high)
    extra["efficiency_vs"].append(label if ref is not None else "")
    extra["efficiency_note"].append(note)

