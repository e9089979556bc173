"""The results DataFrame made comparable: ok rows with normalised keys, workload groups,
configuration order, and the baseline and parity margins a comparison is made against.

Every comparison reads its rows through `prepare`, so grouping and labelling are decided here
once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.stats import _finite
from bench.errors import BadInput
from bench.record.curve import METRICS

BASELINE = ("single", 1, "fp32")


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "status" not in frame:
        return frame.iloc[0:0]
    return frame[frame["status"] == "ok"]


# A comparison group: one model, noise level, workload and device type (a CPU and a GPU run
# of one workload share a fingerprint but are not repeats of each other).
GROUP_KEYS = ["cell.model", "noise", "fingerprint", "cell.device_type"]
CONFIG_KEYS = ["cell.strategy", "cell.devices", "cell.precision", "zero"]
# What identifies one cell's rows beside its artefacts (steps, telemetry) in a loaded table.
CELL_KEYS = GROUP_KEYS + CONFIG_KEYS + ["config", "cell.repeat", "cell_id"]
# Read from the one table of metric directions (bench.record.curve.METRICS).
QUALITY_METRICS = tuple(METRICS)
HIGHER_IS_BETTER = {name: m.higher_is_better for name, m in METRICS.items()}
AMP_PRECISIONS = ("bf16", "fp16")

_STRATEGY_ORDER = {"single": 0, "dp": 1, "ddp": 2, "deepspeed": 3, "fsdp": 4}
_PRECISION_ORDER = {"fp32": 0, "tf32": 1, "bf16": 2, "fp16": 3}


@dataclass(frozen=True)
class Margins:
    """Parity margins: differences smaller than these are of no practical consequence."""
    psnr: float = METRICS["psnr"].tolerance   # dB
    ssim: float = METRICS["ssim"].tolerance
    lpips: float = METRICS["lpips"].tolerance

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

    def at(self, precision: str) -> Baseline:
        """The same strategy and devices at another precision: what a cell of that precision
        scales from (`scaling_reference`)."""
        return Baseline(self.strategy, self.devices, precision, self.zero)

    def matches(self, strategy: str, devices: int, precision: str, zero: int) -> bool:
        return (strategy == self.strategy and int(devices) == self.devices
                and precision == self.precision
                and (self.zero is None or int(zero) == self.zero))


def scaling_reference(baseline: Baseline, key: tuple, configs: list[tuple]) -> tuple | None:
    """The configuration `key`'s scaling efficiency is measured against: the baseline's
    strategy and devices at `key`'s own precision. Against an fp32 baseline a bf16 cell's
    "efficiency" would mix the precision's gain into the scaling; None where the workload
    group has no such configuration."""
    return next((k for k in configs if baseline.at(key[2]).matches(*k)), None)


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


# What the comparisons read; everything else (env, data, options, a plug-in's columns such as
# audit.*) stays in the frame, where plug-in report sections read it.
_KEEP = {"cell.model", "fingerprint", "cell.strategy", "cell.devices", "cell.precision",
         "cell.zero_stage", "cell.device_type", "cell.scaling", "cell.repeat", "cell.noise",
         "cell_id", "status", "notes", "_dir", "runtime.batchnorm_per_rank_stats",
         "telemetry.energy_per_img_j", "telemetry.gpu_busy_pct_mean", "telemetry.power_mean_w",
         "telemetry.cpu_pct_mean", "telemetry.mfu", "telemetry.input_bound",
         "telemetry.input_bound_signal", "telemetry.input_bound_frac",
         "telemetry.timed_start_s", "cell.steps", "cell.warmup", "env.gpus", "env.cpu",
         "runtime.placement.oversubscribed", "runtime.placement.note"}
# validation.* holds the curve (a list column); cell.target_<metric> a spec's quality target.
_KEEP_PREFIXES = ("timing.", "quality[", "breakdown.", "validation.", "time_to_target.",
                  "stragglers.",
                  "cell.target_")


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
    rows["train_time_nominal_s"] = nominal_train_time(rows)
    rows["hardware"] = [hardware_of(t, g, c) for t, g, c in zip(
        rows["cell.device_type"], _column(rows, "env.gpus", None), _column(rows, "env.cpu", None))]
    return rows


def is_missing(value) -> bool:
    """None or NaN in a flattened record's cell; a list (even an empty one) or another
    container is a value."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def hardware_of(device_type: str, gpus, cpu) -> str:
    """The processor model a cell ran on: its first GPU's on CUDA, else the CPU's."""
    if device_type == "cuda" and isinstance(gpus, (list, tuple, np.ndarray)) and len(gpus):
        return str(gpus[0])
    return str(cpu) if isinstance(cpu, str) and cpu else "?"


def lowest_repeats(rows: pd.DataFrame) -> pd.DataFrame:
    """Each configuration's rows of its lowest repeat (what a timeline figure shows)."""
    if rows.empty:
        return rows
    lowest = rows.groupby(GROUP_KEYS + CONFIG_KEYS, dropna=False)["cell.repeat"].transform("min")
    return rows[rows["cell.repeat"] == lowest]


def nominal_train_time(rows: pd.DataFrame) -> pd.Series:
    """Training time at the cell's nominal timed steps (steps − warm-up). A resumed cell
    re-warms its caches untimed after the resume, so it times fewer steps: its raw window would
    show a time saving that is not there. Its measured rate is scaled to the nominal count;
    every other cell keeps its raw time."""
    raw = pd.to_numeric(_column(rows, "timing.train_time_s"), errors="coerce")
    timed = pd.to_numeric(_column(rows, "timing.timed_steps"), errors="coerce")
    nominal = _nominal_timed_steps(rows)
    factor = (nominal / timed).where((timed > 0) & (nominal > 0), 1.0)
    return (raw * factor).astype(float)


def _nominal_timed_steps(rows: pd.DataFrame) -> pd.Series:
    """Steps run less warm-up: a cell that stopped at its quality target ran fewer than
    cell.steps (`timing.steps_run`), and that is no resume to correct for."""
    steps = pd.to_numeric(_column(rows, "cell.steps"), errors="coerce")
    run = pd.to_numeric(_column(rows, "timing.steps_run"), errors="coerce")
    return run.where(run.notna(), steps) - pd.to_numeric(_column(rows, "cell.warmup"),
                                                         errors="coerce")


def short_timed(rows: pd.DataFrame) -> pd.DataFrame:
    """Cells that timed fewer steps than their nominal count (resumed): (cell_id, timed,
    nominal) rows, for the report's note."""
    timed = pd.to_numeric(_column(rows, "timing.timed_steps"), errors="coerce")
    nominal = _nominal_timed_steps(rows)
    short = timed < nominal
    return pd.DataFrame({"cell_id": rows["cell_id"][short], "timed": timed[short],
                         "nominal": nominal[short]})


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


def _mean_of(rows: pd.DataFrame, col: str) -> float:
    x = _finite(_column(rows, col))
    return float(x.mean()) if len(x) else math.nan


def sample_cells(frame: pd.DataFrame, baseline=BASELINE) -> pd.DataFrame:
    """The ok cells with a folder, in the order their saved test images are preferred: per
    model (sorted), the baseline configuration's repeats from the lowest, then the others'."""
    base = _as_baseline(baseline)
    rows = prepare(frame)
    rows = rows[rows["_dir"].notna()] if "_dir" in rows else rows.iloc[0:0]
    out = []
    for model in sorted(set(rows["cell.model"])) if not rows.empty else []:
        m = rows[rows["cell.model"] == model]
        is_base = np.array([base.matches(*k) for k in
                            m[CONFIG_KEYS].itertuples(index=False, name=None)], dtype=bool)
        out += [m[is_base].sort_values("cell.repeat"), m[~is_base].sort_values("cell.repeat")]
    return pd.concat(out) if out else rows
