"""Pure functions over telemetry rows (see bench.measure.telemetry for the sampler and its clock
protocol): the timed window, its energy, a summary for the cell record, and the parquet table.

Kept apart from the sampler: these read finished rows and never touch psutil, NVML or the
sampling thread, so they can be reasoned about (and tested) on plain lists of dicts.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from typing import Any

from bench.measure.nvml import GPU_FIELDS, GPU_INT_FIELDS, gpu_col

WINDOW_MARKS = ("window_start", "window_end")  # the caller's own samples at the boundaries
PAUSE_MARKS = ("pause_start", "pause_end")  # a validation pause inside the window: not timed

# The NVML energy counter is unsigned 64-bit mJ. A decrease is read as a wrap only when the
# wrapped delta is physically possible: no single GPU draws this many watts.
_MAX_PLAUSIBLE_W = 5000.0
_COUNTER_MODULUS = 2**64


def window(rows: Sequence[dict[str, Any]], phase: str = "timed") -> list[dict[str, Any]]:
    """The samples tagged with `phase`, in order."""
    return [r for r in rows if r.get("phase") == phase]


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _counter(v: Any) -> int | float | None:
    if isinstance(v, numbers.Integral):
        return int(v)
    return _num(v)


def energy_joules(t_s: Sequence[float], counter_mj: Sequence[float | None],
                  power_w: Sequence[float | None]) -> tuple[float | None, str]:
    """Energy over the span of the samples, and how it was obtained.

    Prefers the cumulative NVML counter (sum of deltas, mJ -> J); falls back to the trapezoidal
    integral of sampled power when the counter is missing or never ticks while power > 0.
    Returns (None, reason) when neither is usable.
    """
    if len(t_s) < 2:
        return None, f"fewer than 2 samples ({len(t_s)}) in the window"
    notes: list[str] = []
    pts = [(float(t), c) for t, c in zip(t_s, map(_counter, counter_mj)) if c is not None]
    powers = [_num(p) for p in power_w]
    if len(pts) >= 2:
        total_mj, deltas = 0.0, []
        for (ta, a), (tb, b) in zip(pts, pts[1:]):
            d = b - a
            if d < 0:
                wrapped = d + _COUNTER_MODULUS
                if wrapped / 1000.0 <= _MAX_PLAUSIBLE_W * max(tb - ta, 0.0):
                    d = wrapped
                else:
                    notes.append(f"counter reset at t={tb:.3f}s; that interval skipped")
                    continue
            deltas.append(d)
            total_mj += d
        ticking = any(d > 0 for d in deltas)
        if ticking or not any(p is not None and p > 0 for p in powers):
            return total_mj / 1000.0, "; ".join(["counter"] + notes)
        notes.append("counter did not tick while power > 0")
    elif any(c is not None for c in counter_mj):
        notes.append("fewer than 2 counter readings")
    seg = [(float(t), p) for t, p in zip(t_s, powers) if p is not None]
    if len(seg) < 2:
        why = "no energy counter and fewer than 2 power samples"
        return None, "; ".join([why] + notes)
    joules = sum((tb - ta) * (pa + pb) / 2.0 for (ta, pa), (tb, pb) in zip(seg, seg[1:]))
    return joules, "; ".join(["power-integral"] + notes)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _p90(xs: Sequence[float]) -> float | None:
    # Linear interpolation between order statistics (numpy's default percentile).
    if not xs:
        return None
    s = sorted(xs)
    k = 0.9 * (len(s) - 1)
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _vals(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [v for v in (_num(r.get(key)) for r in rows) if v is not None]


def _bracketed(rows: Sequence[dict[str, Any]], win: Sequence[dict[str, Any]],
               timed_start_s: float, timed_end_s: float) -> list[dict[str, Any]]:
    """The window's samples with the last start mark before it and the first end mark after
    it, where the caller took them."""
    starts = [r for r in rows if r.get("phase") == WINDOW_MARKS[0] and r["t_s"] <= timed_start_s]
    ends = [r for r in rows if r.get("phase") == WINDOW_MARKS[1] and r["t_s"] >= timed_end_s]
    head = [max(starts, key=lambda r: r["t_s"])] if starts else []
    tail = [min(ends, key=lambda r: r["t_s"])] if ends else []
    pauses = [r for r in rows if r.get("phase") in PAUSE_MARKS
              and timed_start_s <= r["t_s"] <= timed_end_s]
    return head + sorted([*win, *pauses], key=lambda r: r["t_s"]) + tail


def segments(bracket: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The bracketed window cut at its validation pauses: a pause's start mark ends a segment
    and its end mark begins the next, so no energy or coverage is counted across a pause."""
    out: list[list[dict[str, Any]]] = [[]]
    for r in bracket:
        if r.get("phase") == PAUSE_MARKS[1]:
            out.append([])
        out[-1].append(r)
    return [seg for seg in out if seg]


def marked_pauses_s(rows: Sequence[dict[str, Any]], timed_start_s: float,
                    timed_end_s: float) -> float:
    """Seconds of the window spent in validation pauses, from their marks."""
    marks = sorted((r for r in rows if r.get("phase") in PAUSE_MARKS
                    and timed_start_s <= r["t_s"] <= timed_end_s), key=lambda r: r["t_s"])
    starts = [r["t_s"] for r in marks if r["phase"] == PAUSE_MARKS[0]]
    ends = [r["t_s"] for r in marks if r["phase"] == PAUSE_MARKS[1]]
    return float(sum(b - a for a, b in zip(starts, ends)))


def summarize(rows: Sequence[dict[str, Any]], *, timed_start_s: float, timed_end_s: float,
              images: int, gpu_indices: Sequence[int],
              gpu_reason: str | None = None, paused_s: float | None = None) -> dict[str, Any]:
    """Telemetry over the timed window only: samples tagged "timed" whose t_s lies inside
    [timed_start_s, timed_end_s].

    Means (GPU busy, power, CPU) use the timed samples; energy uses them bracketed by the
    caller's boundary marks (`Sampler.mark`), so it covers the whole window even when the
    thread sampled it only once. `window_coverage` (span of the energy samples / timed
    duration) says how much was covered: ~1 with marks, less without.
    """
    win = [r for r in window(rows, "timed") if timed_start_s <= r["t_s"] <= timed_end_s]
    bracket = _bracketed(rows, win, timed_start_s, timed_end_s)
    parts = segments(bracket)
    t = [float(r["t_s"]) for r in bracket]
    if paused_s is None:  # the loop's own figure where it gave one, else the marks'
        paused_s = marked_pauses_s(rows, timed_start_s, timed_end_s)
    timed_s = timed_end_s - timed_start_s - paused_s
    covered = sum(seg[-1]["t_s"] - seg[0]["t_s"] for seg in parts if len(seg) >= 2)
    out: dict[str, Any] = {
        "timed_start_s": timed_start_s, "timed_end_s": timed_end_s, "timed_s": timed_s,
        "samples_in_window": len(win),
        "first_sample_s": t[0] if t else None, "last_sample_s": t[-1] if t else None,
        "window_marked": sum(r.get("phase") in WINDOW_MARKS for r in bracket) == 2,
        "covered_s": covered,
        "window_coverage": covered / timed_s if timed_s > 0 else None,
        "cpu_pct_mean": _mean(_vals(win, "proc_cpu_pct")),
        "sys_cpu_pct_mean": _mean(_vals(win, "sys_cpu_pct_mean")),
        "rss_peak_mb": max(_vals(win, "proc_rss_mb"), default=None),
    }
    per_gpu: dict[str, dict[str, Any]] = {}
    for i in gpu_indices:
        busy = _vals(win, gpu_col("gpu_busy_pct", i))
        power = _vals(win, gpu_col("power_w", i))
        e, how = _segmented_energy(parts, i)
        per_gpu[str(i)] = {
            "gpu_busy_pct_mean": _mean(busy), "gpu_busy_pct_p90": _p90(busy),
            "mem_used_peak_mb": max(_vals(win, gpu_col("gpu_mem_used_mb", i)), default=None),
            "power_mean_w": _mean(power), "energy_j": e, "energy_method": how,
        }
    has_gpu = any(g["gpu_busy_pct_mean"] is not None or g["power_mean_w"] is not None
                  or g["energy_j"] is not None for g in per_gpu.values())
    if not has_gpu:
        why = gpu_reason or ("no GPU indices" if not gpu_indices
                             else "no GPU samples in the timed window")
        out.update(per_gpu={}, gpu_reason=why, gpu_busy_pct_mean=None, mem_used_peak_mb=None,
                   power_mean_w=None, energy_j=None, energy_method=why, energy_per_img_j=None)
        return out
    energies = [g["energy_j"] for g in per_gpu.values()]
    methods = sorted({g["energy_method"] for g in per_gpu.values()})
    energy = sum(energies) if all(e is not None for e in energies) else None
    busy_means = [g["gpu_busy_pct_mean"] for g in per_gpu.values()
                  if g["gpu_busy_pct_mean"] is not None]
    peaks = [g["mem_used_peak_mb"] for g in per_gpu.values() if g["mem_used_peak_mb"] is not None]
    powers = [g["power_mean_w"] for g in per_gpu.values()]
    out.update(
        per_gpu=per_gpu, gpu_reason=gpu_reason,
        gpu_busy_pct_mean=_mean(busy_means),
        mem_used_peak_mb=max(peaks, default=None),
        # Sum of per-GPU means: total board power of the devices used.
        power_mean_w=sum(powers) if all(p is not None for p in powers) else None,
        energy_j=energy,
        energy_method=methods[0] if len(methods) == 1 else "mixed: " + " | ".join(methods),
        energy_per_img_j=energy / images if energy is not None and images > 0 else None,
    )
    return out


def _segmented_energy(parts: list[list[dict[str, Any]]], gpu: int) -> tuple[float | None, str]:
    """GPU `gpu`'s energy over the window's segments (one unless validation paused it)."""
    found = [energy_joules([float(r["t_s"]) for r in seg],
                           [r.get(gpu_col("energy_mj", gpu)) for r in seg],
                           [r.get(gpu_col("power_w", gpu)) for r in seg]) for seg in parts or [[]]]
    if len(found) == 1:
        return found[0]
    missing = [how for e, how in found if e is None]
    if missing:
        return None, f"{missing[0]} (between validation pauses)"
    methods = " | ".join(sorted({how for _, how in found}))
    return sum(e for e, _ in found), f"{methods}; {len(found)} segments between pauses"


def to_table(rows: Sequence[dict[str, Any]]) -> "pandas.DataFrame":  # noqa: F821
    """Rows as a flat DataFrame for telemetry.parquet: one row per sample, scalar columns only
    (lists/dicts become JSON strings), counters and bitmasks as nullable integers, missing GPU
    readings as NaN."""
    import pandas as pd

    flat = [{k: (json.dumps(v) if isinstance(v, (list, dict, tuple)) else v)
             for k, v in r.items()} for r in rows]
    df = pd.DataFrame(flat, columns=None if flat else ["t_s", "wall_time_s", "phase"])
    for col in df.columns:
        base = col.rsplit("_", 1)[0]
        if base in GPU_INT_FIELDS or col == "proc_count":
            # NVML counters and bitmasks are unsigned 64-bit: UInt64 holds them exactly
            df[col] = pd.array([None if _num(v) is None else int(v) for v in df[col]],
                               dtype="Int64" if col == "proc_count" else "UInt64")
        elif base in GPU_FIELDS:
            # float even when every value is None, so tables with and without GPUs concatenate
            df[col] = df[col].astype("float64")
    return df


# Figures that add up over nodes (each node's sampler sees only its own processes and GPUs).
_NODE_SUMS = ("energy_j", "power_mean_w", "cpu_pct_mean", "rss_peak_mb")


def combine_nodes(summaries: Sequence[dict[str, Any] | None], hosts: Sequence[str],
                  images: int) -> dict[str, Any]:
    """One cell's telemetry from every node's sampler (local rank 0 of each node samples its
    own process tree and GPUs). Energy, power, CPU % and RSS are summed over the nodes and
    energy per image divides the sum by the cell's images; GPU busy % is the mean over every
    GPU. A figure some node lacks is null with a note, never a partial sum shown as the
    whole. One node: its summary, unchanged."""
    if len(summaries) == 1 and summaries[0] is not None:
        return dict(summaries[0])
    present = [s for s in summaries if s is not None]
    missing = [h for h, s in zip(hosts, summaries) if s is None]
    out: dict[str, Any] = dict(present[0]) if present else {}
    out["per_node"] = [{"host": h, **({k: s.get(k) for k in (*_NODE_SUMS, "gpu_busy_pct_mean",
                                                              "samples_in_window")}
                                      if s is not None else {"missing": True})}
                       for h, s in zip(hosts, summaries)]
    notes = []
    for key in _NODE_SUMS:
        values = [s.get(key) for s in present]
        complete = not missing and all(v is not None for v in values)
        out[key] = sum(values) if complete else None
        if not complete and any(v is not None for v in values):
            lacking = missing + [h for h, s in zip(hosts, summaries)
                                 if s is not None and s.get(key) is None]
            notes.append(f"{key} is null: no figure from {', '.join(lacking)}")
    per_gpu = [g for s in present for g in (s.get("per_gpu") or {}).values()]
    busy = [g["gpu_busy_pct_mean"] for g in per_gpu if g.get("gpu_busy_pct_mean") is not None]
    out["gpu_busy_pct_mean"] = _mean(busy) if not missing else None
    out["energy_per_img_j"] = out["energy_j"] / images \
        if out.get("energy_j") is not None and images > 0 else None
    out["nodes"] = len(hosts)
    if notes:
        out["node_note"] = "; ".join(notes)
    return out
