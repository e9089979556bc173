"""Statistics over independent repeats: means with Student-t intervals, Welch and paired
t-tests, ratios of geometric means, and the parity verdict drawn from an interval.

Plain numbers in, plain dicts out, so the tables of `bench report` and the regression gate
share one implementation of every test.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

INCONCLUSIVE = "inconclusive (n too small)"
CONFIDENCE = 0.95
POWER = 0.8  # the power a minimum detectable effect is stated at


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
    """The two-sided critical value of a `confidence` interval."""
    return t_quantile_one_sided(0.5 + confidence / 2, df)


def t_quantile_one_sided(probability: float, df: float) -> float:
    """The Student-t quantile below which `probability` of the distribution lies."""
    # scipy.special's Student-t functions: the same numbers as scipy.stats.t, without the
    # ~0.5 s import of scipy.stats that every `bench report` would pay.
    from scipy.special import stdtrit
    return float(stdtrit(df, probability))


def _two_sided_p(t_stat: float, df: float) -> float:
    from scipy.special import stdtr
    return float(2 * stdtr(df, -abs(t_stat)))


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


# Every test's dict also carries `var_a`, `var_b`: the per-repeat variances its standard error
# is made of (se² = var_a/n_a + var_b/n_b; a paired test: the differences' variance and 0), so
# `min_detectable` and `repeats_needed` can restate its power at another n.
def _no_test(test: str, estimate: float, n_a: int, n_b: int) -> dict:
    return {"estimate": estimate, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
            "df": math.nan, "test": test, "n_a": n_a, "n_b": n_b,
            "var_a": math.nan, "var_b": math.nan}


def _degenerate(estimate: float, test: str, n_a: int, n_b: int, df: float) -> dict:
    # No spread at all (e.g. bit-identical results): the interval collapses onto the estimate.
    return {"estimate": estimate, "ci_low": estimate, "ci_high": estimate,
            "p_value": 1.0 if estimate == 0 else 0.0, "df": df, "test": test,
            "n_a": n_a, "n_b": n_b, "var_a": 0.0, "var_b": 0.0}


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
            "n_a": na, "n_b": nb, "var_a": float(xa.var(ddof=1)), "var_b": float(xb.var(ddof=1))}


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
            "n_a": n, "n_b": n, "var_a": sd ** 2, "var_b": 0.0}


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


def ratio(a, b, confidence: float = CONFIDENCE, repeats_a=None, repeats_b=None) -> dict:
    """Ratio b / a of geometric means, with a t interval computed on the logarithms: Welch by
    default (timing noise of independent runs does not pair up by seed), paired by repeat when
    `repeats_a`/`repeats_b` are given and pair up one-to-one, for a figure the seed moves on
    both sides alike (a time to target: the seed decides how fast a run learns). `estimate` is
    the ratio."""
    xa, xb = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    paired = _pairs(list(xa), repeats_a, list(xb), repeats_b) \
        if len(xa) and (xa > 0).all() and (xb > 0).all() else None
    if paired is not None:
        d = paired_test(np.log(paired[0]), np.log(paired[1]), confidence)
    else:
        xa, xb = _finite(xa), _finite(xb)
        d = welch_test(np.log(xa[xa > 0]), np.log(xb[xb > 0]), confidence)
    for key in ("estimate", "ci_low", "ci_high"):
        d[key] = math.exp(d[key]) if math.isfinite(d[key]) else math.nan
    # "none (...)" stays as is
    d["test"] = d["test"].replace("Welch t", "Welch t on log").replace("paired t", "paired t on log")
    return d


def min_detectable(var_a: float, var_b: float, n_a: int, n_b: int,
                   confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided t-test at `confidence`: the smallest true
    difference it calls significant with probability `power`, by the standard formula
    MDE = (t_{(1+confidence)/2, df} + t_{power, df}) · se (Bloom 1995, "Minimum detectable
    effects", Evaluation Review 19(5)), with Welch's se and Welch–Satterthwaite df from the
    per-repeat variances. A paired test is var_b = 0, n_b = n_a (df = n − 1). NaN where a side
    has fewer than two repeats (noise unknown); 0 where there is no noise at all."""
    if n_a < 2 or n_b < 2 or not (math.isfinite(var_a) and math.isfinite(var_b)):
        return math.nan
    va, vb = var_a / n_a, var_b / n_b
    se2 = va + vb
    if se2 == 0:
        return 0.0
    df = se2 ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    return (_t_quantile(confidence, df) + t_quantile_one_sided(power, df)) * math.sqrt(se2)


def repeats_needed(var_a: float, var_b: float, effect: float, confidence: float = CONFIDENCE,
                   power: float = POWER, most: int = 100_000) -> float:
    """The fewest repeats per side whose minimum detectable effect at these per-repeat
    variances is at most `effect`; NaN where the noise is unknown or `most` do not suffice."""
    def mde(n: int) -> float:
        return min_detectable(var_a, var_b, n, n, confidence, power)
    if not (effect > 0 and math.isfinite(mde(2))) or mde(most) > effect:
        return math.nan
    low, high = 2, most  # mde falls as n grows: the smallest n with mde(n) <= effect
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if mde(mid) <= effect else (mid + 1, high)
    return float(low)


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


def _variation_note(base_cv: float, cv: float, effect: float, what: str) -> str:
    """A warning when the run-to-run spread is as large as the effect claimed."""
    spread = np.nanmax([base_cv, cv]) if np.isfinite([base_cv, cv]).any() else math.nan
    if not math.isfinite(spread) or not math.isfinite(effect):
        return ""
    if spread >= abs(effect):
        return (f"run-to-run variation (CV {spread:.1%}) is at least as large as the "
                f"{what} effect ({effect:+.1%})")
    return ""

