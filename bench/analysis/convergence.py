"""Speed at equal quality: the seconds, samples and steps each configuration's validation
curve takes to reach one quality target, the speedup at equal quality against the baseline,
and whether a configuration converges worse than the baseline (MLPerf's reference-convergence
idea: over seeds, does it need more samples to reach the target?).

Everything is in terms of a named metric and its direction (`bench.record.curve.METRICS`):
PSNR, higher is better, by default; a workload scored by LPIPS reads the same tables with its
target comparison inverted.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysis.frame import (BASELINE, CONFIG_KEYS, GROUP_KEYS, Baseline, _as_baseline,
                                  _column, _groups, _select, _sorted_configs, config_label,
                                  prepare)
from bench.analysis.stats import CONFIDENCE, _finite, difference, ratio
from bench.errors import BadInput
from bench.record.curve import Metric, best, time_to_target
from bench.record.curve import metric as metric_of

DEFAULT_METRIC = "psnr"
ALPHA = 0.05
CURVE = "validation.curve"
CURVE_COLUMNS = GROUP_KEYS + CONFIG_KEYS + ["config", "cell.repeat", "cell_id", "step",
                                            "samples", "seconds", "value"]
COLUMNS = GROUP_KEYS + CONFIG_KEYS + [
    "config", "is_baseline", "metric", "target", "target_source", "target_text", "n",
    "reached_n", "seconds_to_target_mean", "samples_to_target_mean", "steps_to_target_mean",
    "speedup_equal_quality", "speedup_equal_quality_ci_low", "speedup_equal_quality_ci_high",
    "samples_vs_baseline_pct", "convergence_p_value", "convergence_test", "convergence_worse",
    "convergence_note"]


def _points(value, metric: str) -> list[dict] | None:
    """A record's validation curve when it holds `metric`; None otherwise (no validation, an
    older record, a curve of other metrics)."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        return None
    points = [p for p in value if isinstance(p, dict)]
    return sorted(points, key=lambda p: float(p.get("step") or 0)) \
        if any(metric in p for p in points) else None


DIVERGED = "validation.diverged"  # a column `prepare` keeps: the row's record diverged


def _with_curves(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The comparable rows with their curves, diverged repeats among them: a run that diverged
    did not converge (MLPerf counts it so), and leaving it out would keep the lucky seeds."""
    if "status" in frame and (frame["status"] == "diverged").any():
        frame = frame.assign(**{DIVERGED: frame["status"] == "diverged"})
        frame["status"] = frame["status"].replace("diverged", "ok")
    rows = prepare(frame)
    rows["_curve"] = [_points(v, metric) for v in _column(rows, CURVE, None)]
    rows["_diverged"] = _column(rows, DIVERGED, False).fillna(False).astype(bool)
    return rows


def _has_curve(rows: pd.DataFrame) -> np.ndarray:
    return np.array([p is not None for p in rows["_curve"]], dtype=bool)


def _baseline_key(g: pd.DataFrame, base: Baseline) -> tuple | None:
    """The group's baseline configuration, chosen as `speed.speedups` chooses it."""
    return next((k for k in _sorted_configs(g) if base.matches(*k)), None)


def targets(frame: pd.DataFrame, baseline=BASELINE, metric: str = DEFAULT_METRIC,
            target: float | None = None, tolerance: float | None = None) -> dict:
    """The quality target of each workload group (key: its GROUP_KEYS values): `target` where
    given, else the cells' own (`cell.target_<metric>`, from the spec), else the baseline's
    worst final validation value over its repeats less `tolerance` (the metric's parity margin
    by default), in the metric's direction. {"target" (None where there is none), "source":
    "given" | "spec" | "baseline", "text": where it came from, in words}."""
    m, base = metric_of(metric), _as_baseline(baseline)
    margin = _margin(m, tolerance)
    return {tuple(group[k] for k in GROUP_KEYS): _target(g, base, m, target, margin)
            for group, g in _groups(_with_curves(frame, m.name))}


def _margin(m: Metric, tolerance) -> float:
    margin = _finite([m.tolerance if tolerance is None else tolerance])
    if not len(margin) or margin[0] < 0:
        raise BadInput(f"{m.label} tolerance {tolerance} is invalid; it must be a non-negative "
                       "number")
    return float(margin[0])


def _target(g: pd.DataFrame, base: Baseline, m: Metric, given, margin: float) -> dict:
    if given is not None:
        if not len(_finite([given])):
            raise BadInput(f"{m.label} target {given} is invalid; give a finite number")
        return {"target": float(given), "source": "given",
                "text": f"{m.text(float(given))} (given)"}
    bkey = _baseline_key(g, base)
    b = _select(g, bkey) if bkey is not None else g.iloc[0:0]
    spec = _finite(_column(b, f"cell.target_{m.name}"))
    spec = spec if len(spec) else _finite(_column(g, f"cell.target_{m.name}"))
    if len(spec):  # the baseline's own where it names one, else what most cells name
        value = float(pd.Series(spec).mode().iloc[0])
        several = sorted(set(_finite(_column(g, f"cell.target_{m.name}"))))
        also = f"; cells name {', '.join(m.text(v) for v in several)}" if len(several) > 1 else ""
        return {"target": value, "source": "spec",
                "text": f"{m.text(value)} (the spec's target{also})"}
    b = b[~b["_diverged"].to_numpy()] if len(b) else b
    finals = [_final(p, m.name) for p in b["_curve"] if p is not None] if len(b) else []
    finals = [f for f in finals if math.isfinite(f)]
    if not finals:
        return {"target": None, "source": "baseline",
                "text": f"no target: no {base.label} cell of this workload group has a "
                        f"validation {m.label} curve"}
    # The worst repeat's final value, not the mean: seeds spread the finals by more than the
    # margin, and a target some baseline repeats never reach would measure no baseline time.
    worst = float(min(finals) if m.higher_is_better else max(finals))
    value, sign = (worst - margin, "−") if m.higher_is_better else (worst + margin, "+")
    unit = f" {m.unit}" if m.unit else ""
    which = f"lowest of {len(finals)} repeats' " if m.higher_is_better else \
        f"highest of {len(finals)} repeats' "
    return {"target": value, "source": "baseline",
            "text": f"{m.text(value)} ({base.label}'s {which if len(finals) > 1 else ''}final "
                    f"validation {m.label} {m.text(worst)} {sign} {margin:g}{unit})"}


def _final(points: list[dict], metric: str) -> float:
    value = points[-1].get(metric) if points else None
    x = _finite([value])
    return float(x[0]) if len(x) else math.nan


def curves(frame: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """The validation curves as a long table, one row per point of every ok record whose
    curve holds `metric` (`value`; NaN where a point lacks it); empty when no record has one."""
    m = metric_of(metric)
    rows = _with_curves(frame, m.name)
    out = []
    for _, r in rows[_has_curve(rows)].iterrows():
        ident = {k: r[k] for k in GROUP_KEYS + CONFIG_KEYS + ["config", "cell.repeat", "cell_id"]}
        for p in r["_curve"]:
            value = _finite([p.get(m.name)])
            out.append({**ident, "step": p.get("step"), "samples": p.get("samples"),
                        "seconds": p.get("seconds"),
                        "value": float(value[0]) if len(value) else math.nan})
    table = pd.DataFrame(out, columns=CURVE_COLUMNS)
    table.attrs["metric"] = m.name
    return table


def convergence_test(base_samples, samples, base_repeats=None, repeats=None) -> dict:
    """One-sided t-test of samples-to-target over repeats, H1: the configuration (`samples`)
    needs more samples than the baseline. Paired by repeat where the repeats pair up one to
    one (repeat r of both shares its seed: its init and batch order, which decide most of how
    fast a run learns), Welch otherwise. {"p_value" (NaN with fewer than two repeats on a
    side), "estimate" (difference of means), "test"}."""
    d = difference(base_samples, samples, base_repeats, repeats)
    p = d["p_value"]
    if math.isfinite(p):
        # t is symmetric: the upper tail is half the two-sided p on the estimate's side of 0
        p = p / 2 if d["estimate"] > 0 else 1 - p / 2
    return {"p_value": p, "estimate": d["estimate"],
            "test": d["test"].replace("Welch t", "one-sided Welch t")
                             .replace("paired t", "one-sided paired t")}


def _reach(c: pd.DataFrame, m: Metric, target: float | None) -> list[dict]:
    """Each repeat's time to target, with its last step and best value for the note."""
    out = []
    for points, diverged in zip(c["_curve"], c["_diverged"]):
        t = time_to_target(points, m.name, target) if target is not None and not diverged \
            else {"reached": False, "seconds": None, "samples": None, "steps": None}
        out.append({**t, "last_step": float(points[-1].get("step") or 0),
                    "best": best(points, m.name), "diverged": bool(diverged)})
    for t, repeat in zip(out, c["cell.repeat"]):
        t["repeat"] = int(repeat)
    return out


def _figures(reach: list[dict], key: str) -> np.ndarray | None:
    """The repeats' figures, only when every repeat reached the target. A repeat that did
    not is censored (its time is only known to exceed the run): averaging the others would
    keep the lucky seeds and drop the unlucky ones, so no mean or speedup is made of them."""
    x = _finite([t[key] for t in reach])
    return x if reach and len(x) == len(reach) else None


def equal_quality(frame: pd.DataFrame, baseline=BASELINE, metric: str = DEFAULT_METRIC,
                  confidence: float = CONFIDENCE, alpha: float = ALPHA,
                  target: float | None = None, tolerance: float | None = None) -> pd.DataFrame:
    """One row per (workload group, configuration) with validation curves: its target
    (`targets`), repeats (`n`) and how many reached it (`reached_n`), mean seconds, samples and
    steps to target (NaN unless every repeat reached it), the speedup at equal quality =
    baseline's seconds-to-target / this one's (ratio of geometric means over repeats, t
    interval on the logs, paired by seed where the repeats pair up), samples-to-target against the baseline's
    (%), and the convergence check (`convergence_test` at `alpha`). A configuration that never
    reaches the target keeps its row: `convergence_note` says so."""
    m, base = metric_of(metric), _as_baseline(baseline)
    margin = _margin(m, tolerance)
    rows = _with_curves(frame, m.name)
    out = []
    for group, g in _groups(rows):
        goal = _target(g, base, m, target, margin)
        bkey = _baseline_key(g, base)
        g = g[_has_curve(g)]
        reach = {key: _reach(_select(g, key), m, goal["target"]) for key in _sorted_configs(g)}
        for key, tt in reach.items():
            row = {**group, **dict(zip(CONFIG_KEYS, key)), "config": config_label(key[0], key[3]),
                   "is_baseline": key == bkey, "metric": m.name, "target": goal["target"],
                   "target_source": goal["source"], "target_text": goal["text"], "n": len(tt),
                   "reached_n": sum(bool(t["reached"]) for t in tt)}
            for name, field in (("seconds", "seconds"), ("samples", "samples"),
                                ("steps", "steps")):
                x = _figures(tt, field)
                row[f"{name}_to_target_mean"] = float(x.mean()) if x is not None else math.nan
            row.update(_against(key, tt, bkey, reach.get(bkey), m, goal, base, confidence, alpha))
            out.append(row)
    table = pd.DataFrame(out, columns=COLUMNS)
    table.attrs.update(metric=m.name, alpha=alpha, confidence=confidence)
    return table


def _against(key, tt, bkey, bt, m: Metric, goal: dict, base: Baseline, confidence: float,
             alpha: float) -> dict:
    """The speedup at equal quality and the convergence check of one configuration against
    its group's baseline, and the one note that says why either is blank or flagged."""
    out = {"speedup_equal_quality": math.nan, "speedup_equal_quality_ci_low": math.nan,
           "speedup_equal_quality_ci_high": math.nan, "samples_vs_baseline_pct": math.nan,
           "convergence_p_value": math.nan, "convergence_test": "", "convergence_worse": False,
           "convergence_note": ""}
    seconds, samples = _figures(tt, "seconds"), _figures(tt, "samples")
    base_seconds = _figures(bt, "seconds") if bt else None
    base_samples = _figures(bt, "samples") if bt else None
    if goal["target"] is None:
        out["convergence_note"] = goal["text"]
    elif seconds is None:
        out["convergence_note"] = _missed(tt, m)
    elif bt is None:
        out["convergence_note"] = f"no {base.label} validation curve: no speedup at equal quality"
    elif base_seconds is None:
        out["convergence_note"] = (f"{base.label} did not reach the target in every repeat: "
                                   "no speedup at equal quality")
    elif (seconds <= 0).any() or (base_seconds <= 0).any():
        out["convergence_note"] = ("the target is reached by the initial weights: there is no "
                                   "training time to compare")
    else:
        # baseline's time / this one's, paired by seed where the repeats pair up
        r = ratio(seconds, base_seconds, confidence, _repeats(tt), _repeats(bt))
        is_base = key == bkey
        out.update(speedup_equal_quality=r["estimate"],
                   speedup_equal_quality_ci_low=math.nan if is_base else r["ci_low"],
                   speedup_equal_quality_ci_high=math.nan if is_base else r["ci_high"])
        # Samples, not steps or seconds, are what the check compares: a larger global batch
        # (weak scaling) takes fewer steps to see the same samples.
        more = 100 * (samples.mean() / base_samples.mean() - 1) if base_samples.mean() > 0 \
            else math.nan
        out["samples_vs_baseline_pct"] = float(more)
        if not is_base:
            out.update(_check(key, samples, base_samples, more, m, goal["target"], alpha,
                              (_repeats(bt), _repeats(tt))))
    return out


def _repeats(reach: list[dict]) -> list[int]:
    return [t["repeat"] for t in reach]


def _check(key, samples, base_samples, more: float, m: Metric, target: float,
           alpha: float, repeats: tuple) -> dict:
    test = convergence_test(base_samples, samples, *repeats)
    p = test["p_value"]
    who = f"{config_label(key[0], key[3])} ×{int(key[1])} {key[2]}"
    needs = f"{who} needs {more:.1f}% more samples to reach {m.text(target)}"
    worse = bool(math.isfinite(p) and p < alpha)
    if worse:
        shown = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
        note = f"{needs} ({test['test'].split(' (')[0]}-test, {shown})"
    elif not math.isfinite(p) and round(more, 1) > 0:  # only where it would matter
        note = f"{needs} (untested: fewer than 2 repeats on a side)"
    else:
        note = ""
    return {"convergence_p_value": p, "convergence_test": test["test"],
            "convergence_worse": worse, "convergence_note": note}


def _missed(tt: list[dict], m: Metric) -> str:
    """'not reached within 60 steps in 2 of 3 repeats (best 29.80 dB)'."""
    diverged = sum(t["diverged"] for t in tt)
    if diverged:
        return f"diverged in {diverged} of {len(tt)} repeats: no time to target"
    missed = [t for t in tt if not t["reached"]]
    bests = _finite([t["best"] for t in missed])
    top = (bests.max() if m.higher_is_better else bests.min()) if len(bests) else math.nan
    steps = int(max(t["last_step"] for t in missed))
    return (f"not reached within {steps} steps in {len(missed)} of {len(tt)} repeats (" +
            (f"best {m.text(top)})" if math.isfinite(top) else "no finite value)"))
