"""Regression gate: did NEW get slower or less accurate than BASELINE?

Cells are matched by cell id, else by configuration + workload fingerprint + repeat; a cell
whose workload changed (same id, another fingerprint) is listed, never compared. Repeats of a
configuration are compared as a whole, so the run-to-run noise is taken into account:

- throughput: ratio of geometric means NEW/BASELINE with a Welch t interval on the logs;
- quality (PSNR, SSIM, LPIPS at every σ both evaluated): mean difference, paired by matched
  repeat (the same seed) when at least two pairs exist, else Welch.

A measure *fails* when the point estimate is worse than its tolerance and the interval excludes
"no change" (or when there is no interval: a single repeat, whose noise is unknown). It is a
*soft* failure (a warning) when the worsening lies within `soft_fraction`–100% of the
tolerance, or exceeds the tolerance while the interval still includes no change. A cell that was
ok in BASELINE and is not ok in NEW fails.

Every measure states its minimum detectable effect (`mde`, in the change's unit, as a worsening):
the smallest true change its test calls significant at the gate's confidence with 80% power,
MDE = (t_crit + t_power) · se (`stats.min_detectable`). Where the MDE exceeds the tolerance the
gate cannot fail a change of that size, so a measure that did not fail is *inconclusive*, not
passed, with the repeats per side its noise would need (`repeats_needed`); the gate then exits
with EXIT_INCONCLUSIVE. A single repeat on either side has no noise estimate and so no MDE: it
is inconclusive too. A failure still fails: what was detected needs no more power.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.analysis.frame import (CONFIG_KEYS, GROUP_KEYS, HIGHER_IS_BETTER, QUALITY_METRICS,
                                  _sort_key, config_label, prepare)
from bench.analysis import gate_context
from bench.analysis.stragglers import slowdown_kind
from bench.analysis.stats import (CONFIDENCE, POWER, _finite, difference, min_detectable, ratio,
                                  repeats_needed)
from bench.errors import BadInput
from bench.record.load import load_folder

MATCH_KEYS = GROUP_KEYS + CONFIG_KEYS

FAIL, SOFT, OK, IMPROVED = "FAIL", "soft", "ok", "improved"
INCONCLUSIVE = "inconclusive"
# Exit statuses of `bench compare`: 0 passed (with or without warnings), 1 failed, 2 bad input
# (bench.errors), 3 is a preempted run's (bench.record.store), 4 too few repeats to tell.
EXIT_PASSED, EXIT_FAILED, EXIT_INCONCLUSIVE = 0, 1, 4


@dataclass(frozen=True)
class Tolerances:
    throughput_pct: float = 7.0   # largest allowed throughput drop, percent
    psnr: float = 0.1             # dB
    ssim: float = 0.002
    lpips: float = 0.005
    soft_fraction: float = 0.8    # warn from this share of a tolerance on

    def __post_init__(self):
        for name in ("throughput_pct", "psnr", "ssim", "lpips"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise BadInput(f"tolerance {name.replace('_pct', '')} {value} is invalid; "
                               "it must be a positive number")
        if self.throughput_pct >= 100:
            raise BadInput(f"throughput tolerance {self.throughput_pct}% is invalid; "
                           "it must be below 100%")
        if not 0 < self.soft_fraction <= 1:
            raise BadInput(f"soft fraction {self.soft_fraction} is invalid; "
                           "it must lie in (0, 1]")

    def of(self, measure: str) -> float:
        return self.throughput_pct if measure == "throughput" else float(getattr(self, measure))


@dataclass
class GateResult:
    rows: pd.DataFrame            # one row per (configuration, measure)
    matched: int                  # cell pairs compared
    baseline_only: list[str]      # ok cells of BASELINE with no partner in NEW
    new_only: list[str]           # ok cells of NEW with no partner in BASELINE
    workload_changed: list[str]   # same cell id, different fingerprint: not compared
    status_changes: list[dict]    # {cell_id, baseline, new, outcome}
    tolerances: Tolerances
    confidence: float
    unreadable: dict = field(default_factory=dict)
    power: float = POWER
    env_changes: list[dict] = field(default_factory=list)  # gate_context.env_changes
    unmatched_why: dict = field(default_factory=dict)      # cell id → workload difference

    @property
    def failed(self) -> bool:
        return bool((self.rows.get("outcome", pd.Series(dtype=object)) == FAIL).any()) or \
            any(s["outcome"] == FAIL for s in self.status_changes)

    @property
    def soft(self) -> bool:
        return bool((self.rows.get("outcome", pd.Series(dtype=object)) == SOFT).any())

    @property
    def inconclusive(self) -> bool:
        return bool((self.rows.get("outcome", pd.Series(dtype=object)) == INCONCLUSIVE).any())

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else \
            EXIT_INCONCLUSIVE if self.inconclusive else EXIT_PASSED


def _all_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Every record (any status) with the normalised keys of `frame.prepare`."""
    if frame.empty:
        return frame
    status = frame["status"] if "status" in frame else pd.Series("?", index=frame.index)
    keyed = prepare(frame.assign(status="ok"))
    keyed["status"] = status.to_numpy()
    return keyed


def match_cells(base: pd.DataFrame, new: pd.DataFrame):
    """Pairs (baseline index, new index, how) plus the unmatched and workload-changed ids."""
    pairs, changed = [], []
    used: set = set()
    by_id = {cid: i for i, cid in zip(base.index, base["cell_id"]) if cid}
    by_key: dict = {}
    for i, row in base.iterrows():
        by_key.setdefault(tuple(row[k] for k in MATCH_KEYS) + (row["cell.repeat"],), []).append(i)
    for j, row in new.iterrows():
        i = by_id.get(row["cell_id"])
        if i is not None and i not in used:
            if base.at[i, "fingerprint"] != row["fingerprint"]:
                changed.append(row["cell_id"])
                used.add(i)
                continue
            pairs.append((i, j, "cell id"))
            used.add(i)
            continue
        key = tuple(row[k] for k in MATCH_KEYS) + (row["cell.repeat"],)
        free = [i for i in by_key.get(key, []) if i not in used]
        if free:
            pairs.append((free[0], j, "configuration + fingerprint"))
            used.add(free[0])
    matched_new = {j for _, j, _ in pairs} | {j for j, r in new.iterrows()
                                             if r["cell_id"] in changed}
    base_only = [base.at[i, "cell_id"] for i in base.index
                 if i not in used and base.at[i, "status"] == "ok"]
    new_only = [new.at[j, "cell_id"] for j in new.index
                if j not in matched_new and new.at[j, "status"] == "ok"]
    return pairs, base_only, new_only, changed


def judge(worse: float, ci_worse: tuple[float, float], tolerance: float,
          soft_fraction: float) -> tuple[str, str]:
    """Outcome of one measure from its worsening (positive = worse, in the tolerance's unit)
    and the confidence interval of that worsening."""
    lo, hi = ci_worse
    has_ci = math.isfinite(lo) and math.isfinite(hi)
    if not math.isfinite(worse):
        return OK, "not measured on both sides"
    if worse > tolerance:
        if not has_ci:
            return FAIL, "beyond tolerance; one repeat, noise unknown"
        if lo > 0:
            return FAIL, "beyond tolerance and noise"
        return SOFT, "beyond tolerance, within noise"
    if worse >= soft_fraction * tolerance:
        return SOFT, f"{soft_fraction:.0%}–100% of tolerance"
    if worse < -tolerance and (not has_ci or hi < 0):
        return IMPROVED, "better beyond tolerance"
    return OK, ""


def compare(base_frame: pd.DataFrame, new_frame: pd.DataFrame,
            tolerances: Tolerances = Tolerances(),
            confidence: float = CONFIDENCE) -> GateResult:
    """The gate over two results DataFrames (store.load of each folder)."""
    if not 0 < confidence < 1:
        raise BadInput(f"confidence {confidence} is invalid; it must lie strictly between 0 and 1")
    base, new = _all_rows(base_frame), _all_rows(new_frame)
    if base.empty or new.empty:
        pairs, base_only, new_only, changed = [], [], [], []
    else:
        pairs, base_only, new_only, changed = match_cells(base, new)
    status_changes = []
    ok_pairs = []
    for i, j, how in pairs:
        sb, sn = base.at[i, "status"], new.at[j, "status"]
        if sb == "ok" and sn == "ok":
            ok_pairs.append((i, j, how))
        elif sb == "ok":
            status_changes.append({"cell_id": new.at[j, "cell_id"], "baseline": sb,
                                   "new": sn, "outcome": FAIL})
        elif sn == "ok":
            status_changes.append({"cell_id": new.at[j, "cell_id"], "baseline": sb,
                                   "new": sn, "outcome": IMPROVED})
    why = _why_unmatched(base_frame, new_frame, base, new, pairs, base_only, changed)
    if not pairs and not changed:
        differ = f"; the workloads differ in {gate_context.summary(why)}" if why else ""
        raise BadInput("no cell of NEW matches a cell of BASELINE by cell id or by "
                       f"configuration + workload fingerprint, so nothing can be compared{differ}")
    rows = _measure_rows(base, new, ok_pairs, tolerances, confidence)
    return GateResult(rows=rows, matched=len(ok_pairs), baseline_only=base_only,
                      new_only=new_only, workload_changed=changed,
                      status_changes=status_changes, tolerances=tolerances,
                      confidence=confidence,
                      unreadable={"baseline": list(base_frame.attrs.get("unreadable", [])),
                                  "new": list(new_frame.attrs.get("unreadable", []))},
                      env_changes=gate_context.env_changes(base_frame, new_frame, pairs),
                      unmatched_why=why)


def _why_unmatched(base_frame, new_frame, base, new, pairs, base_only, changed) -> dict:
    """cell id → the workload fields that differ, for the baseline cells left unmatched and
    those whose fingerprint changed under the same id."""
    if base.empty or new.empty:
        return {}
    paired_new = {j for _, j, _ in pairs}
    changed_ids = set(changed)
    new_free = [j for j in new.index if j not in paired_new and new.at[j, "cell_id"] not in
                changed_ids]
    by_id = {cid: i for i, cid in zip(base.index, base["cell_id"])}
    same_id = [(by_id[new.at[j, "cell_id"]], j) for j in new.index
               if new.at[j, "cell_id"] in changed_ids and new.at[j, "cell_id"] in by_id]
    only = set(base_only)
    base_free = [i for i in base.index if base.at[i, "cell_id"] in only]
    return gate_context.why_unmatched(base_frame, new_frame, base, new, base_free, new_free,
                                      same_id)


def _power(test: dict, tolerance: float, confidence: float) -> tuple[float, float]:
    """(minimum detectable effect, repeats per side needed to detect `tolerance`, NaN where
    the test already can) of a test's result, in its own unit."""
    mde = min_detectable(test["var_a"], test["var_b"], test["n_a"], test["n_b"], confidence)
    needed = repeats_needed(test["var_a"], test["var_b"], tolerance, confidence) \
        if mde > tolerance else math.nan
    return mde, needed


def _powered(outcome: str, reason: str, mde: float, tolerance: float,
             needed: float) -> tuple[str, str]:
    """A measure that did not fail or improve, whose test could not detect its tolerance, is
    inconclusive rather than passed. So is one measured once on a side: its noise, and with it
    what the gate could detect, is unknown."""
    if outcome in (FAIL, IMPROVED):
        return outcome, reason
    if math.isnan(mde):
        return INCONCLUSIVE, ("one repeat on a side: its noise, so what this gate could "
                              "detect, is unknown; run at least 2 repeats per side (3 or more "
                              "to detect small changes)")
    if mde <= tolerance:
        return outcome, reason
    return INCONCLUSIVE, (f"too few repeats: {int(needed)} per side needed at this noise"
                          if math.isfinite(needed) else "too noisy for any number of repeats")


def _quality_columns(frame: pd.DataFrame) -> dict:
    cols = {}
    for c in frame.columns:
        if c.startswith("quality[") and "]." in c:
            sigma, metric = c[len("quality["):].split("].", 1)
            if metric in QUALITY_METRICS:
                cols[(float(sigma), metric)] = c
    return cols


def _measure_rows(base, new, ok_pairs, tol: Tolerances, confidence: float) -> pd.DataFrame:
    by_config: dict = {}
    for i, j, how in ok_pairs:
        key = tuple(new.at[j, k] for k in MATCH_KEYS)
        by_config.setdefault(key, []).append((i, j, how))
    qbase, qnew = _quality_columns(base), _quality_columns(new)
    out = []
    for key in sorted(by_config, key=lambda k: (k[0], k[2], _sort_key(*k[4:]))):
        pairs = by_config[key]
        b = base.loc[[i for i, _, _ in pairs]]
        n = new.loc[[j for _, j, _ in pairs]]
        ident = dict(zip(MATCH_KEYS, key))
        ident["config"] = config_label(ident["cell.strategy"], ident["zero"])
        ident["matched_by"] = ", ".join(sorted({how for _, _, how in pairs}))
        # throughput: percent change of the geometric mean, Welch on the logs
        r = ratio(b.get("timing.throughput_img_s", []),
                  n.get("timing.throughput_img_s", []), confidence)
        change = 100 * (r["estimate"] - 1)
        ci = (100 * (r["ci_low"] - 1), 100 * (r["ci_high"] - 1))
        outcome, reason = judge(-change, (-ci[1], -ci[0]), tol.throughput_pct,
                                tol.soft_fraction)
        # the test is on the logs: a drop of d% is a log-ratio of −ln(1 − d/100)
        mde_log, needed = _power(r, -math.log1p(-tol.throughput_pct / 100), confidence)
        mde = 100 * -math.expm1(-mde_log)
        outcome, reason = _powered(outcome, reason, mde, tol.throughput_pct, needed)
        out.append({**ident, "measure": "throughput", "unit": "%", "sigma": math.nan,
                    "n_baseline": r["n_a"], "n_new": r["n_b"],
                    "baseline": _finite(b.get("timing.throughput_img_s", [])).mean()
                    if r["n_a"] else math.nan,
                    "new": _finite(n.get("timing.throughput_img_s", [])).mean()
                    if r["n_b"] else math.nan,
                    "change": change, "ci_low": ci[0], "ci_high": ci[1],
                    "p_value": r["p_value"], "test": r["test"],
                    "tolerance": -tol.throughput_pct, "mde": mde, "repeats_needed": needed,
                    "outcome": outcome, "reason": reason,
                    # one rank late (a straggler regression) or every rank slower (uniform)
                    "slowdown": slowdown_kind(b, n, r["estimate"])})
        # quality: mean difference per σ and metric, paired by matched repeat
        pair_ids = list(range(len(pairs)))
        order = {m: i for i, m in enumerate(QUALITY_METRICS)}
        for (sigma, metric) in sorted(set(qbase) & set(qnew), key=lambda k: (k[0], order[k[1]])):
            va = pd.to_numeric(b[qbase[(sigma, metric)]], errors="coerce").to_numpy()
            vb = pd.to_numeric(n[qnew[(sigma, metric)]], errors="coerce").to_numpy()
            if not (np.isfinite(va).any() and np.isfinite(vb).any()):
                continue
            d = difference(va, vb, pair_ids, pair_ids, confidence)
            sign = 1 if HIGHER_IS_BETTER[metric] else -1
            worse = -sign * d["estimate"]
            lo, hi = sorted((-sign * d["ci_low"], -sign * d["ci_high"]))
            outcome, reason = judge(worse, (lo, hi), tol.of(metric), tol.soft_fraction)
            mde, needed = _power(d, tol.of(metric), confidence)
            outcome, reason = _powered(outcome, reason, mde, tol.of(metric), needed)
            out.append({**ident, "measure": metric, "unit": "", "sigma": sigma,
                        "n_baseline": int(np.isfinite(va).sum()),
                        "n_new": int(np.isfinite(vb).sum()),
                        "baseline": float(np.nanmean(va)), "new": float(np.nanmean(vb)),
                        "change": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                        "p_value": d["p_value"], "test": d["test"],
                        "tolerance": -sign * tol.of(metric), "mde": mde,
                        "repeats_needed": needed, "outcome": outcome, "reason": reason})
    return pd.DataFrame(out)


def compare_folders(baseline_dir, new_dir, tolerances: Tolerances = Tolerances(),
                    confidence: float = CONFIDENCE) -> GateResult:
    return compare(load_folder(baseline_dir, "baseline"), load_folder(new_dir, "new"),
                   tolerances, confidence)
