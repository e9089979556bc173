"""Comparisons, as pure functions of the results DataFrame (one row per record).

Cells are compared only within a group of identical workloads: same model and same workload
fingerprint. Repeats of one configuration are aggregated before any ratio is taken.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BadInput

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


# A comparison group: one model, noise level, workload and device type (a CPU and a GPU run
# of one workload share a fingerprint but are not repeats of each other).
GROUP_KEYS = ["cell.model", "noise", "fingerprint", "cell.device_type"]
CONFIG_KEYS = ["cell.strategy", "cell.devices", "cell.precision", "zero"]
QUALITY_METRICS = ("psnr", "ssim", "lpips")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False}
AMP_PRECISIONS = ("bf16", "fp16")
INCONCLUSIVE = "inconclusive (n too small)"
CONFIDENCE = 0.95

_STRATEGY_ORDER = {"single": 0, "dp": 1, "ddp": 2, "deepspeed": 3, "fsdp": 4}
_PRECISION_ORDER = {"fp32": 0, "tf32": 1, "bf16": 2, "fp16": 3}


@dataclass(frozen=True)
class Margins:
    """Parity margins: differences smaller than these are of no practical consequence."""
    psnr: float = 0.1      # dB
    ssim: float = 0.002
    lpips: float = 0.005

    def __post_init__(self):
        for name in ("psnr", "ssim", "lpips"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise BadInput(f"{name} parity margin {value} is invalid; it must be a "
                               "non-negative number")

    def of(self, metric: str) -> float:
        return float(getattr(self, metric))


@dataclass(frozen=True)
class Baseline:
    """The configuration every other one of its workload group is compared against."""
    strategy: str = "single"
    devices: int = 1
    precision: str = "fp32"
    zero: int | None = None  # DeepSpeed ZeRO stage; None matches any

    @property
    def label(self) -> str:
        zero = f" z{self.zero}" if self.zero is not None else ""
        return f"{self.strategy}{zero} ×{self.devices} {self.precision}"

    def matches(self, strategy: str, devices: int, precision: str, zero: int) -> bool:
        return (strategy == self.strategy and int(devices) == self.devices
                and precision == self.precision
                and (self.zero is None or int(zero) == self.zero))


def parse_baseline(text: str) -> Baseline:
    """`STRATEGY[:DEVICES[:PRECISION[:ZERO]]]`, e.g. `single`, `ddp:2:fp32`,
    `deepspeed:2:bf16:2`."""
    parts = [p.strip() for p in str(text).split(":")]
    if not parts[0] or len(parts) > 4:
        raise BadInput(f"baseline '{text}' is invalid; write "
                       "STRATEGY[:DEVICES[:PRECISION[:ZERO]]], e.g. single:1:fp32")
    try:
        devices = int(parts[1]) if len(parts) > 1 and parts[1] else 1
        zero = int(parts[3]) if len(parts) > 3 and parts[3] else None
    except ValueError:
        raise BadInput(f"baseline '{text}' is invalid; DEVICES and ZERO must be integers, "
                       "e.g. ddp:2:fp32") from None
    if devices < 1:
        raise BadInput(f"baseline '{text}' is invalid; DEVICES must be at least 1")
    precision = parts[2] if len(parts) > 2 and parts[2] else "fp32"
    return Baseline(parts[0], devices, precision, zero)


def _as_baseline(baseline) -> Baseline:
    if isinstance(baseline, Baseline):
        return baseline
    if isinstance(baseline, str):
        return parse_baseline(baseline)
    return Baseline(*baseline)


# --- statistics -------------------------------------------------------------------------------

def _finite(values) -> np.ndarray:
    """The finite numbers among `values` (None, NaN and non-numbers dropped)."""
    try:
        x = np.asarray(values if isinstance(values, (np.ndarray, pd.Series)) else list(values),
                       dtype=float)
    except (TypeError, ValueError):
        x = np.asarray(pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce"),
                       dtype=float)
    return x[np.isfinite(x)]


def _t_quantile(confidence: float, df: float) -> float:
    from scipy import stats
    return float(stats.t.ppf(0.5 + confidence / 2, df))


def _two_sided_p(t_stat: float, df: float) -> float:
    from scipy import stats
    return float(2 * stats.t.sf(abs(t_stat), df))


def mean_ci(values, confidence: float = CONFIDENCE) -> dict:
    """Mean with a Student-t confidence interval over independent repeats; the interval is NaN
    with fewer than two values. `cv` is the sample standard deviation over the mean."""
    x = _finite(values)
    n = len(x)
    out = {"n": n, "mean": float(x.mean()) if n else math.nan,
           "median": float(np.median(x)) if n else math.nan,
           "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "cv": math.nan}
    if n >= 2:
        sd = float(x.std(ddof=1))
        half = _t_quantile(confidence, n - 1) * sd / math.sqrt(n)
        out.update(std=sd, ci_low=out["mean"] - half, ci_high=out["mean"] + half,
                   cv=sd / abs(out["mean"]) if out["mean"] else math.nan)
    return out


def _no_test(test: str, estimate: float, n_a: int, n_b: int) -> dict:
    return {"estimate": estimate, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
            "df": math.nan, "test": test, "n_a": n_a, "n_b": n_b}


def _degenerate(estimate: float, test: str, n_a: int, n_b: int, df: float) -> dict:
    # No spread at all (e.g. bit-identical results): the interval collapses onto the estimate.
    return {"estimate": estimate, "ci_low": estimate, "ci_high": estimate,
            "p_value": 1.0 if estimate == 0 else 0.0, "df": df, "test": test,
            "n_a": n_a, "n_b": n_b}


def welch_test(a, b, confidence: float = CONFIDENCE) -> dict:
    """Difference of means b − a, its Welch (unequal-variance) t interval and two-sided p-value
    (Welch–Satterthwaite degrees of freedom)."""
    xa, xb = _finite(a), _finite(b)
    na, nb = len(xa), len(xb)
    test = f"Welch t (n={na} vs {nb})"
    estimate = float(xb.mean() - xa.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return _no_test(f"none (n={na} vs {nb})", estimate, na, nb)
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se2 = va + vb
    if se2 == 0:
        return _degenerate(estimate, test, na, nb, float(na + nb - 2))
    df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    se = math.sqrt(se2)
    half = _t_quantile(confidence, df) * se
    return {"estimate": estimate, "ci_low": estimate - half, "ci_high": estimate + half,
            "p_value": _two_sided_p(estimate / se, df), "df": float(df), "test": test,
            "n_a": na, "n_b": nb}


def paired_test(a, b, confidence: float = CONFIDENCE) -> dict:
    """Mean of the paired differences b_i − a_i, its t interval and two-sided p-value."""
    xa = np.asarray(list(a), dtype=float)
    xb = np.asarray(list(b), dtype=float)
    keep = np.isfinite(xa) & np.isfinite(xb)
    d = xb[keep] - xa[keep]
    n = len(d)
    test = f"paired t (n={n})"
    estimate = float(d.mean()) if n else math.nan
    if n < 2:
        return _no_test(f"none (n={n})", estimate, n, n)
    sd = float(d.std(ddof=1))
    if sd == 0:
        return _degenerate(estimate, test, n, n, float(n - 1))
    se = sd / math.sqrt(n)
    half = _t_quantile(confidence, n - 1) * se
    return {"estimate": estimate, "ci_low": estimate - half, "ci_high": estimate + half,
            "p_value": _two_sided_p(estimate / se, n - 1), "df": float(n - 1), "test": test,
            "n_a": n, "n_b": n}


def _pairs(values_a, repeats_a, values_b, repeats_b):
    """Values ordered so that position i of both holds repeat r_i, when every repeat of one
    side has exactly one partner on the other; None otherwise."""
    if repeats_a is None or repeats_b is None:
        return None
    ra, rb = [int(r) for r in repeats_a], [int(r) for r in repeats_b]
    if len(set(ra)) != len(ra) or len(set(rb)) != len(rb) or set(ra) != set(rb):
        return None
    a_by, b_by = dict(zip(ra, values_a)), dict(zip(rb, values_b))
    order = sorted(ra)
    return [a_by[r] for r in order], [b_by[r] for r in order]


def difference(a, b, repeats_a=None, repeats_b=None, confidence: float = CONFIDENCE) -> dict:
    """b − a: paired by repeat when the repeats pair up one-to-one (repeat r of every
    configuration used the same seed), else Welch."""
    a, b = list(a), list(b)
    paired = _pairs(a, repeats_a, b, repeats_b)
    if paired is not None:
        return paired_test(*paired, confidence=confidence)
    return welch_test(a, b, confidence)


def ratio(a, b, confidence: float = CONFIDENCE) -> dict:
    """Ratio b / a of geometric means, with a Welch t interval computed on the logarithms
    (timing noise of independent runs does not pair up by seed). `estimate` is the ratio."""
    xa, xb = _finite(a), _finite(b)
    la, lb = np.log(xa[xa > 0]), np.log(xb[xb > 0])
    d = welch_test(la, lb, confidence)
    for key in ("estimate", "ci_low", "ci_high"):
        d[key] = math.exp(d[key]) if math.isfinite(d[key]) else math.nan
    d["test"] = d["test"].replace("Welch t", "Welch t on log")  # "none (...)" stays as is
    return d


def verdict(ci_low: float, ci_high: float, margin: float, higher_is_better: bool = True) -> str:
    """Parity verdict of a difference (other − baseline) from its confidence interval:
    equivalent when the whole interval lies within ±margin; worse / better when it lies wholly
    on one side of zero (and is not within the margin); otherwise inconclusive."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return INCONCLUSIVE
    if -margin <= ci_low and ci_high <= margin:
        return "equivalent"
    if ci_high < 0:
        return "worse" if higher_is_better else "better"
    if ci_low > 0:
        return "better" if higher_is_better else "worse"
    return INCONCLUSIVE


# --- tidy rows --------------------------------------------------------------------------------

def noise_label(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(f"{float(v):g}" for v in value)
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def config_label(strategy: str, zero: int = -1) -> str:
    return f"{strategy} z{int(zero)}" if zero is not None and int(zero) >= 0 else str(strategy)


def _column(rows: pd.DataFrame, name: str, default=math.nan) -> pd.Series:
    return rows[name] if name in rows else pd.Series(default, index=rows.index, dtype=object)


# What the comparisons read; everything else (env, data, options) stays in the frame.
_KEEP = {"cell.model", "fingerprint", "cell.strategy", "cell.devices", "cell.precision",
         "cell.zero_stage", "cell.device_type", "cell.scaling", "cell.repeat", "cell.noise",
         "cell_id", "status", "notes", "_dir", "runtime.batchnorm_per_rank_stats",
         "telemetry.energy_per_img_j", "telemetry.gpu_busy_pct_mean", "telemetry.power_mean_w",
         "telemetry.cpu_pct_mean", "telemetry.mfu", "telemetry.input_bound",
         "telemetry.timed_start_s"}
_KEEP_PREFIXES = ("timing.", "quality[", "audit.")


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """The ok rows with normalised key columns: `noise` (label of the σ list), `zero`
    (ZeRO stage, −1 when none), `config` (display label), filled defaults."""
    rows = ok_rows(frame)
    rows = rows[[c for c in rows.columns if c in _KEEP or c.startswith(_KEEP_PREFIXES)]]
    # Plain object columns: the many small selections below are far cheaper than on Arrow
    # strings, and values compare as ordinary Python objects.
    rows = rows.astype(object) if not rows.empty else rows.copy()
    defaults = {"cell.model": "?", "fingerprint": "?", "cell.strategy": "?", "cell.devices": 1,
                "cell.precision": "fp32", "cell.device_type": "", "cell.scaling": "strong",
                "cell.repeat": 0, "cell_id": ""}
    for col, default in defaults.items():
        rows[col] = rows[col].where(rows[col].notna(), default) if col in rows else default
    rows["cell.devices"] = rows["cell.devices"].astype(int)
    rows["cell.repeat"] = rows["cell.repeat"].astype(int)
    zero = _column(rows, "cell.zero_stage")
    rows["zero"] = pd.to_numeric(zero, errors="coerce").fillna(-1).astype(int)
    rows["noise"] = _column(rows, "cell.noise", None).map(noise_label)
    rows["config"] = [config_label(s, z) for s, z in zip(rows["cell.strategy"], rows["zero"])]
    rows["_config_key"] = [_key_text(k) for k in
                           rows[CONFIG_KEYS].itertuples(index=False, name=None)]
    return rows


def _key_text(key: tuple) -> str:
    strategy, devices, precision, zero = key
    return f"{strategy}|{int(devices)}|{precision}|{int(zero)}"


def _sort_key(strategy, devices, precision, zero):
    return (_STRATEGY_ORDER.get(strategy, 9), int(devices), _PRECISION_ORDER.get(precision, 9),
            int(zero))


def _sorted_configs(rows: pd.DataFrame) -> list[tuple]:
    keys = {tuple(k) for k in rows[CONFIG_KEYS].itertuples(index=False, name=None)}
    return sorted(keys, key=lambda k: _sort_key(*k))


def _select(rows: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """The rows of one configuration (rows must come from `prepare`)."""
    return rows[rows["_config_key"].to_numpy() == _key_text(key)]


def _groups(rows: pd.DataFrame):
    for key, group in rows.groupby(GROUP_KEYS, sort=True, dropna=False):
        yield dict(zip(GROUP_KEYS, key)), group


def _values(rows: pd.DataFrame, col: str) -> list:
    return list(pd.to_numeric(_column(rows, col), errors="coerce"))


def _mean_of(rows: pd.DataFrame, col: str) -> float:
    x = _finite(_column(rows, col))
    return float(x.mean()) if len(x) else math.nan


def config_stats(frame: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per (workload group, configuration): throughput and training time over the
    repeats (median, mean with t interval, coefficient of variation) and telemetry means."""
    rows = prepare(frame)
    out = []
    for group, g in _groups(rows):
        for key in _sorted_configs(g):
            c = _select(g, key)
            tput = mean_ci(_column(c, "timing.throughput_img_s"), confidence)
            time_ = mean_ci(_column(c, "timing.train_time_s"), confidence)
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
                "clock": ", ".join(sorted({str(v) for v in _column(c, "timing.clock", None)
                                           if isinstance(v, str)})),
            })
    return pd.DataFrame(out)


def _variation_note(base_cv: float, cv: float, effect: float, what: str) -> str:
    """A warning when the run-to-run spread is as large as the effect claimed."""
    spread = np.nanmax([base_cv, cv]) if np.isfinite([base_cv, cv]).any() else math.nan
    if not math.isfinite(spread) or not math.isfinite(effect):
        return ""
    if spread >= abs(effect):
        return (f"run-to-run variation (CV {spread:.1%}) is at least as large as the "
                f"{what} effect ({effect:+.1%})")
    return ""


def speedups(frame: pd.DataFrame, baseline=BASELINE,
             confidence: float = CONFIDENCE) -> pd.DataFrame:
    """`config_stats` plus, against the baseline of the same workload group: speedup of
    throughput and of training time (ratios of geometric means over repeats, Welch t interval
    on the logs), scaling efficiency = throughput speedup / (devices / baseline devices)
    (labelled strong or weak from cell.scaling; undefined where the devices do not change),
    time saving %, and a note when run-to-run variation rivals the effect."""
    base = _as_baseline(baseline)
    stats = config_stats(frame, confidence)
    if stats.empty:
        return stats
    rows = prepare(frame)
    extra = {c: [] for c in ("is_baseline", "speedup_throughput", "speedup_ci_low",
                             "speedup_ci_high", "speedup_p_value", "speedup_test",
                             "speedup_time", "efficiency", "efficiency_kind", "time_saving_pct",
                             "devices_vs_baseline", "variation_note")}
    base_rows = {}
    for group, g in _groups(rows):
        gkey = tuple(group[k] for k in GROUP_KEYS)
        keys = [k for k in _sorted_configs(g) if base.matches(*k)]
        base_rows[gkey] = (_select(g, keys[0]), keys[0]) if keys else None
    for _, s in stats.iterrows():
        gkey = tuple(s[k] for k in GROUP_KEYS)
        ckey = tuple(s[k] for k in CONFIG_KEYS)
        found = base_rows.get(gkey)
        this = _select(rows[np.logical_and.reduce(
            [(rows[k] == s[k]).to_numpy() for k in GROUP_KEYS])], ckey)
        extra["efficiency_kind"].append(s["scaling"])
        if found is None:
            for col in ("speedup_throughput", "speedup_ci_low", "speedup_ci_high",
                        "speedup_p_value", "speedup_time", "efficiency", "time_saving_pct",
                        "devices_vs_baseline"):
                extra[col].append(math.nan)
            extra["is_baseline"].append(False)
            extra["speedup_test"].append("")
            extra["variation_note"].append("")
            continue
        b, bkey = found
        r = ratio(_column(b, "timing.throughput_img_s"), _column(this, "timing.throughput_img_s"),
                  confidence)
        t = ratio(_column(this, "timing.train_time_s"), _column(b, "timing.train_time_s"),
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
        extra["efficiency"].append(1.0 if is_base else
                                   r["estimate"] / scale if scale != 1 else math.nan)
        extra["time_saving_pct"].append(100 * (1 - 1 / t["estimate"])
                                        if t["estimate"] and math.isfinite(t["estimate"])
                                        else math.nan)
        base_cv = mean_ci(_column(b, "timing.throughput_img_s"))["cv"]
        extra["variation_note"].append(
            "" if is_base else _variation_note(base_cv, s["throughput_cv"],
                                               r["estimate"] - 1, "speedup"))
    out = stats.assign(**extra)
    out.attrs["baseline"] = base.label
    return out


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
    keep = GROUP_KEYS + CONFIG_KEYS + ["config", "_config_key", "cell.repeat", "cell_id"]
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


def summary_table(frame: pd.DataFrame, baseline=BASELINE, margins: Margins = Margins(),
                  confidence: float = CONFIDENCE, sigma: float | None = None,
                  quality: pd.DataFrame | None = None) -> pd.DataFrame:
    """The speedup summary: one row per (workload group, configuration) with speed statistics
    and, at one σ (default: the smallest evaluated), each quality metric's mean, delta from the
    baseline, interval, p-value, test and verdict as `<metric>_<field>` columns."""
    table = speedups(frame, baseline, confidence)
    if table.empty:
        return table
    q = quality if quality is not None else quality_deltas(frame, baseline, margins, confidence)
    if sigma is None:
        sigma = primary_sigma(frame)
    table["sigma"] = sigma
    if not q.empty and sigma is not None:
        q = q[np.isclose(q["sigma"].astype(float), float(sigma))]
        for metric in QUALITY_METRICS:
            part = q[q["metric"] == metric]
            fields = ["mean", "ci_low", "ci_high", "noisy_mean", "delta", "delta_ci_low",
                      "delta_ci_high", "p_value", "test", "verdict"]
            part = part[GROUP_KEYS + CONFIG_KEYS + fields].rename(
                columns={f: f"{metric}_{f}" for f in fields})
            table = table.merge(part, on=GROUP_KEYS + CONFIG_KEYS, how="left")
    table.attrs["baseline"] = _as_baseline(baseline).label
    table.attrs["sigma"] = sigma
    return table


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """Records whose status is not ok, with the error message when there is one."""
    if frame.empty or "status" not in frame:
        return pd.DataFrame(columns=["cell_id", "status", "message"])
    bad = frame[frame["status"] != "ok"]
    out = []
    for _, r in bad.iterrows():
        error = r.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        if not message and "error.message" in bad:
            message = r.get("error.message")
        out.append({"cell_id": r.get("cell_id", ""), "status": r.get("status"),
                    "message": message or ""})
    return pd.DataFrame(out, columns=["cell_id", "status", "message"])


def notes(frame: pd.DataFrame, baseline=BASELINE,
          summary: pd.DataFrame | None = None) -> list[str]:
    """What a reader must know before trusting the tables."""
    base = _as_baseline(baseline)
    rows = prepare(frame)
    out: list[str] = []
    if summary is None:
        summary = speedups(frame, base)
    if summary.empty:
        return out
    for _, g in summary.groupby(GROUP_KEYS, sort=True, dropna=False):
        if not g["is_baseline"].any():
            s = g.iloc[0]
            out.append(f"{s['cell.model']} σ={s['noise']} workload {s['fingerprint']}: no "
                       f"{base.label} baseline; speedups and deltas are not computed")
    if (summary["n"] < 2).any():
        out.append("some configurations ran once: intervals, p-values and parity verdicts need "
                   "at least 2 repeats (--repeats)")
    for _, s in summary.iterrows():
        if s.get("variation_note"):
            out.append(f"{s['cell.model']} {s['config']} ×{s['cell.devices']} "
                       f"{s['cell.precision']}: {s['variation_note']}")
    if "telemetry.input_bound" in rows:
        for _, r in rows[rows["telemetry.input_bound"] == True].iterrows():  # noqa: E712
            out.append(f"{r['cell_id']} is input-bound: data-loader wait was "
                       f"{float(r.get('timing.data_wait_frac', math.nan)):.0%} of its window")
    if "runtime.batchnorm_per_rank_stats" in rows and \
            (rows["runtime.batchnorm_per_rank_stats"] == True).any():  # noqa: E712
        out.append("BatchNorm with several ranks normalises per-rank batches: those cells are "
                   "not numerically identical to single-device training")
    if "notes" in rows:
        for n in sorted({n for v in rows["notes"] if isinstance(v, list) for n in v}):
            out.append(n)
    return out


AUDIT_PARTS = ("protection", "recovered", "gap")


def privacy_audit(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model, configuration, target and σ: what the obfuscation protects (noisy vs clean),
    what the model recovers (output vs clean) and the gap, means over repeats; plus the mean
    of the released realisations where a Site One `bench evaluate` measured it."""
    rows = prepare(frame)
    if "audit.levels" not in rows:
        return pd.DataFrame()
    out = []
    for _, r in rows.iterrows():
        levels = r["audit.levels"]
        if not isinstance(levels, (list, tuple)):
            continue
        for level in levels:
            entry = {"cell.model": r["cell.model"], "config": r["config"],
                     "cell.devices": r["cell.devices"], "cell.precision": r["cell.precision"],
                     "target": r.get("audit.target"), "measured_at": r.get("audit.measured_at"),
                     "clean_data_left_site_one": r.get("audit.clean_data_left_site_one"),
                     "sigma": float(level["sigma"])}
            for part in AUDIT_PARTS:
                for metric in QUALITY_METRICS:
                    entry[f"{part}_{metric}"] = (level.get(part) or {}).get(metric)
            averaged = level.get("averaged") or {}
            entry["averaged_realisations"] = averaged.get("realisations")
            entry["averaged_psnr"] = averaged.get("psnr")
            out.append(entry)
    if not out:
        return pd.DataFrame()
    long = pd.DataFrame(out)
    keys = ["cell.model", "config", "cell.devices", "cell.precision", "target", "measured_at",
            "clean_data_left_site_one", "sigma"]
    values = [c for c in long.columns if c not in keys]
    long[values] = long[values].apply(pd.to_numeric, errors="coerce")
    table = long.groupby(keys, sort=False, dropna=False)[values].mean().reset_index()
    table["n"] = long.groupby(keys, sort=False, dropna=False).size().to_numpy()
    return table.sort_values(["cell.model", "sigma", "cell.devices", "config", "cell.precision"],
                             kind="stable").reset_index(drop=True)


@dataclass
class Comparison:
    """Everything a report shows, computed once."""
    summary: pd.DataFrame
    quality: pd.DataFrame
    amp: pd.DataFrame
    ddp_dp: pd.DataFrame
    failures: pd.DataFrame
    notes: list[str]
    unreadable: list[str]
    baseline: Baseline
    margins: Margins
    confidence: float
    sigma: float | None
    records: int = 0
    privacy: pd.DataFrame = field(default_factory=pd.DataFrame)
    warmup_steps: list[int] = field(default_factory=list)
    clocks: list[str] = field(default_factory=list)


def compare_configs(frame: pd.DataFrame, baseline=BASELINE, margins: Margins = Margins(),
                    confidence: float = CONFIDENCE) -> Comparison:
    """All comparison tables of one results DataFrame."""
    if not 0 < confidence < 1:
        raise BadInput(f"confidence {confidence} is invalid; it must lie strictly between 0 and 1")
    base = _as_baseline(baseline)
    quality = quality_deltas(frame, base, margins, confidence)
    summary = summary_table(frame, base, margins, confidence, quality=quality)
    rows = prepare(frame)
    return Comparison(
        summary=summary,
        quality=quality,
        amp=amp_gain(frame, margins, confidence),
        ddp_dp=ddp_vs_dp(frame, margins, confidence),
        failures=failures(frame),
        notes=notes(frame, base, summary if not summary.empty else None),
        unreadable=list(frame.attrs.get("unreadable", [])),
        baseline=base, margins=margins, confidence=confidence,
        sigma=summary.attrs.get("sigma") if not summary.empty else None,
        records=len(frame),
        privacy=privacy_audit(frame),
        warmup_steps=sorted({int(w) for w in _finite(_column(rows, "timing.warmup_steps"))}),
        clocks=sorted({str(c) for c in _column(rows, "timing.clock", None) if isinstance(c, str)}),
    )


# --- artefacts beside the records (step times, telemetry, sample images, environment) --------

def _cell_dirs(frame: pd.DataFrame) -> pd.DataFrame:
    rows = prepare(frame)
    return rows[rows["_dir"].notna()] if "_dir" in rows else rows.iloc[0:0]


def step_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Timed (non-warm-up) steps of every ok cell from its steps.parquet, one row per step."""
    out = []
    for _, r in _cell_dirs(frame).iterrows():
        path = Path(r["_dir"]) / "steps.parquet"
        try:
            steps = pd.read_parquet(path)
        except (OSError, ValueError):
            continue
        if "warmup" in steps:
            steps = steps[~steps["warmup"].astype(bool)]
        part = pd.DataFrame({"step": steps.get("step", pd.Series(range(len(steps)))),
                             "step_time_s": steps["step_time_s"],
                             "data_wait_s": steps.get("data_wait_s", math.nan)})
        for k in GROUP_KEYS + CONFIG_KEYS + ["config", "cell.repeat", "cell_id"]:
            part[k] = r[k]
        out.append(part)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def telemetry_timelines(frame: pd.DataFrame) -> pd.DataFrame:
    """Every ok cell's telemetry samples with time relative to its timed window's start
    (`t_rel_s`), GPU kernel-busy % averaged and board power summed over the cell's GPUs."""
    out = []
    for _, r in _cell_dirs(frame).iterrows():
        path = Path(r["_dir"]) / "telemetry.parquet"
        try:
            t = pd.read_parquet(path)
        except (OSError, ValueError):
            continue
        if t.empty or "t_s" not in t:
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
        for k in GROUP_KEYS + CONFIG_KEYS + ["config", "cell.repeat", "cell_id"]:
            part[k] = r[k]
        out.append(part)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def sample_images(frame: pd.DataFrame, baseline=BASELINE) -> list[dict]:
    """Per model, the test images one cell saved (samples.npz: sigma, noisy, output, clean):
    the baseline configuration's lowest repeat when present, else the model's first ok cell."""
    base = _as_baseline(baseline)
    rows = _cell_dirs(frame)
    out = []
    for model in sorted(set(rows["cell.model"])) if not rows.empty else []:
        m = rows[rows["cell.model"] == model]
        is_base = np.array([base.matches(*k) for k in
                            m[CONFIG_KEYS].itertuples(index=False, name=None)], dtype=bool)
        ordered = pd.concat([m[is_base].sort_values("cell.repeat"),
                             m[~is_base].sort_values("cell.repeat")])
        for _, r in ordered.iterrows():
            try:
                with np.load(Path(r["_dir"]) / "samples.npz") as z:
                    arrays = {k: np.asarray(z[k]) for k in ("sigma", "noisy", "output", "clean")}
            except (OSError, ValueError, KeyError):
                continue
            out.append({"model": model, "cell_id": r["cell_id"], "config": r["config"],
                        "devices": int(r["cell.devices"]), "precision": r["cell.precision"],
                        "sigma": float(arrays["sigma"]), "noisy": arrays["noisy"],
                        "output": arrays["output"], "clean": arrays["clean"]})
            break
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
