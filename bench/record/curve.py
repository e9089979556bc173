"""Quality metrics by name and direction, and the point at which a validation curve first
reaches a target.

Pure Python: the worker (which may stop a cell at its target) and analysis (which compares
cells at equal quality) read the one table of metric directions, so neither wires PSNR in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bench.errors import BadInput


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    higher_is_better: bool
    tolerance: float  # the parity margin: a difference smaller than this is of no consequence
    spec: str         # format spec for display

    def text(self, value: float) -> str:
        """`value` as a reader sees it: "30.12 dB", "0.2100"."""
        return f"{value:{self.spec}}" + (f" {self.unit}" if self.unit else "")


METRICS = {"psnr": Metric("psnr", "PSNR", "dB", True, 0.1, ".2f"),
           "ssim": Metric("ssim", "SSIM", "", True, 0.002, ".4f"),
           "lpips": Metric("lpips", "LPIPS", "", False, 0.005, ".4f")}


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise BadInput(f"quality metric '{name}' is unknown; choose one of "
                       f"{', '.join(METRICS)}")
    return METRICS[name]


_lookup = metric  # for the functions below, whose argument `metric` is the metric's name


def _finite(value) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def reaches(value: float, target: float, metric: str) -> bool:
    """Whether `value` is at least as good as `target` in the metric's direction; a
    non-finite value (a diverged evaluation) never reaches."""
    if not (_finite(value) and _finite(target)):
        return False
    return value >= target if _lookup(metric).higher_is_better else value <= target


def best(curve: list[dict], metric: str) -> float:
    """The curve's best finite value in the metric's direction; NaN when it has none."""
    values = [p.get(metric) for p in curve if _finite(p.get(metric))]
    if not values:
        return math.nan
    return max(values) if _lookup(metric).higher_is_better else min(values)


def time_to_target(curve: list[dict], metric: str, target: float) -> dict:
    """Seconds, samples and steps at which the curve first reaches `target`: linear
    interpolation in the metric's value between the first point that reaches it and the point
    before (the curve is only known at its points; a straight line between them is the least
    assumption). Reached at the first point: that point's figures. Not reached: figures None and
    a reason ("not reached within 60 steps (best 29.87 dB)")."""
    m = _lookup(metric)
    if not _finite(target):
        raise BadInput(f"{m.label} target {target} is invalid; give a finite number")
    out = {"metric": m.name, "target": float(target), "reached": False, "seconds": None,
           "samples": None, "steps": None, "reason": None}
    points = sorted((p for p in (curve if curve is not None else []) if isinstance(p, dict)),
                    key=lambda p: float(p.get("step") or 0))
    for i, point in enumerate(points):
        if not reaches(point.get(m.name), target, m.name):
            continue
        before = points[i - 1] if i else None
        # the point before did not reach (else it would be the first); a NaN one gives no line
        # to interpolate on, and the reaching point is then the first known to reach
        share, value = 1.0, float(point[m.name])
        if before is not None and _finite(before.get(m.name)):
            share = (target - float(before[m.name])) / (value - float(before[m.name]))
        for key, field in (("seconds", "seconds"), ("samples", "samples"), ("steps", "step")):
            end = point.get(field)
            start = before.get(field) if before is not None and share < 1 else end
            out[key] = float(start) + share * (float(end) - float(start)) \
                if _finite(start) and _finite(end) else None
        out["reached"] = True
        return out
    if not points:
        out["reason"] = "not reached: the curve has no points"
        return out
    top = best(points, m.name)
    out["reason"] = f"not reached within {int(points[-1].get('step', 0))} steps (" + \
        (f"best {m.text(top)})" if math.isfinite(top) else "no finite value)")
    return out
