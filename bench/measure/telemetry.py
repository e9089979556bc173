"""Background telemetry: host CPU/memory (psutil) and per-GPU NVML counters, sampled at a coarse
rate beside training, plus pure functions that turn the samples into a timed-window summary.

Clock protocol: every row carries `t_s` = time.monotonic() - t0. A caller that wants exact
phase boundaries reads `sampler.now_s()` *before* `set_phase("timed")` and *after*
`set_phase("eval")`; a sample reads phase and clock under the lock set_phase takes, so every
sample tagged "timed" has timed_start_s <= t_s <= timed_end_s. The caller also takes one sample
itself just before the window opens and just after it closes (`mark`), so the energy counter
brackets the window exactly instead of covering only the span between the thread's first and
last sample.

What the numbers mean:
- `gpu_busy_pct` is NVML utilization.gpu: the share of the sample period in which *any* kernel
  ran. It is not SM saturation (a single tiny kernel reads 100 %).
- `proc_cpu_pct` sums psutil cpu_percent over the whole process tree (100 = one core busy).
- `proc_rss_mb` sums RSS over the tree; pages shared between ranks count once per process.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

import psutil

log = logging.getLogger(__name__)

PHASES = ("setup", "warmup", "timed", "eval")
WINDOW_MARKS = ("window_start", "window_end")  # the caller's own samples at the boundaries
TREE_RESCAN_S = 2.0  # how often the cell's process tree is listed again

# NVML per-GPU fields; a row holds them as f"{field}_{gpu_index}" (see gpu_col).
GPU_FIELDS = (
    "gpu_busy_pct", "mem_ctrl_pct", "gpu_mem_used_mb", "gpu_mem_total_mb", "power_w",
    "energy_mj", "sm_clock_mhz", "mem_clock_mhz", "temp_c", "throttle_reasons",
)
# Integer-valued columns; to_table keeps them as nullable integers, not floats.
_INT_FIELDS = ("energy_mj", "throttle_reasons")

# The NVML energy counter is unsigned 64-bit mJ. A decrease is read as a wrap only when the
# wrapped delta is physically possible: no single GPU draws this many watts.
_MAX_PLAUSIBLE_W = 5000.0
_COUNTER_MODULUS = 2**64


def gpu_col(field: str, gpu_index: int) -> str:
    """Column name of a per-GPU field, e.g. gpu_col("power_w", 0) == "power_w_0"."""
    return f"{field}_{gpu_index}"


def _mb(n_bytes: float) -> float:
    return n_bytes / 2**20


class _NvmlGpu:
    """One GPU's NVML handle (opened once) and its readers. A reader that reports NotSupported
    is dropped for good so later samples do not pay for the failing call."""

    def __init__(self, nvml: Any, index: int, note: Callable[[str, str], None]) -> None:
        self.nvml, self.index, self.note = nvml, index, note
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self._reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) \
            or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        self.readers: list[tuple[tuple[str, ...], Callable[[], tuple[Any, ...]]]] = [
            (("gpu_busy_pct", "mem_ctrl_pct"), self._util),
            (("gpu_mem_used_mb", "gpu_mem_total_mb"), self._mem),
            (("power_w",), lambda: (nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0,)),
            (("energy_mj",), lambda: (int(nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)),)),
            (("sm_clock_mhz",), lambda: (self._clock(nvml.NVML_CLOCK_SM),)),
            (("mem_clock_mhz",), lambda: (self._clock(nvml.NVML_CLOCK_MEM),)),
            (("temp_c",), lambda: (float(nvml.nvmlDeviceGetTemperature(
                self.handle, nvml.NVML_TEMPERATURE_GPU)),)),
            (("throttle_reasons",), self._throttle),
        ]

    def _util(self) -> tuple[float, float]:
        u = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
        return float(u.gpu), float(u.memory)

    def _mem(self) -> tuple[float, float]:
        m = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
        return _mb(m.used), _mb(m.total)

    def _clock(self, kind: int) -> float:
        return float(self.nvml.nvmlDeviceGetClockInfo(self.handle, kind))

    def _throttle(self) -> tuple[int]:
        try:
            return (int(self._reasons_fn(self.handle)),)
        except self.nvml.NVMLError_FunctionNotFound:
            # Driver older than the event-reasons symbol: use the deprecated name.
            self._reasons_fn = self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons
            return (int(self._reasons_fn(self.handle)),)

    def read(self) -> dict[str, Any]:
        out: dict[str, Any] = {gpu_col(f, self.index): None for f in GPU_FIELDS}
        keep = []
        for fields, fn in self.readers:
            try:
                for f, v in zip(fields, fn()):
                    out[gpu_col(f, self.index)] = v
                keep.append((fields, fn))
            except self.nvml.NVMLError as exc:
                if not isinstance(exc, self.nvml.NVMLError_NotSupported):
                    keep.append((fields, fn))       # may be transient: try again next sample
                self.note(f"gpu{self.index}:{'/'.join(fields)}", f"NVML: {exc}")
        self.readers = keep
        return out


class Sampler:
    """Samples host and GPU telemetry in a daemon thread at `hz` until stop().

    `gpu_indices` are NVML indices (physical order; NVML ignores CUDA_VISIBLE_DEVICES).
    `root_pid` is the launcher's pid: CPU % and RSS are summed over it and all descendants.
    Never raises into training: a backend that fails is stated once in `reasons` (and, for
    NVML as a whole, in `gpu_reason`) and its fields are None.
    """

    def __init__(self, hz: float = 2.0, *, gpu_indices: Sequence[int] = (), root_pid: int,
                 t0: float | None = None) -> None:
        if not hz > 0:
            raise ValueError(f"sampler rate hz={hz!r} must be > 0")
        self.hz = float(hz)
        self.gpu_indices = list(gpu_indices)
        self.root_pid = int(root_pid)
        self.t0 = t0
        self.phase = "setup"            # read by the thread; a plain attribute write switches it
        self.gpu_reason: str | None = None
        self.reasons: dict[str, str] = {}   # backend/field -> first error seen, stated once
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # the thread and mark() never sample at the same time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._gpus: list[_NvmlGpu] = []
        self._procs: dict[int, psutil.Process] = {}
        self._tree_listed = -math.inf
        self._last_core_times: list[Any] | None = None

    # -- caller API -------------------------------------------------------------------------
    def now_s(self) -> float:
        """The sampler's clock (monotonic seconds since t0), for recording phase boundaries."""
        return time.monotonic() - (self.t0 if self.t0 is not None else 0.0)

    def set_phase(self, name: str) -> None:
        """Under the sampling lock: a sample is wholly before the switch or wholly after it,
        so a boundary read after set_phase returns bounds every sample of the old phase."""
        with self._lock:
            self.phase = name

    def mark(self, name: str) -> None:
        """One sample now, on the caller's thread, tagged `name` (a WINDOW_MARKS entry). Call it
        outside the timed window: an NVML read takes about a millisecond."""
        if self._thread is None:
            return
        try:
            row = self.sample()
        except Exception as exc:  # noqa: BLE001 - telemetry never stops training
            self._note("sampler", repr(exc))
            return
        row["phase"] = name
        self._rows.append(row)

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.t0 is None:
            self.t0 = time.monotonic()
        try:
            self._open_nvml()
        except Exception as exc:  # noqa: BLE001 - e.g. a broken driver; training goes on
            self.gpu_reason = f"NVML unavailable: {exc!r}"
            log.warning("telemetry: %s", self.gpu_reason)
        self._prime_psutil()
        self._thread = threading.Thread(target=self._run, name="bench-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> list[dict[str, Any]]:
        """Stops the thread, shuts NVML down, returns all rows taken so far."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:  # noqa: BLE001 - shutdown failure must not reach training
                self._note("nvml-shutdown", str(exc))
            self._nvml, self._gpus = None, []
        return list(self._rows)

    # -- backends ---------------------------------------------------------------------------
    def _note(self, key: str, reason: str) -> None:
        if key not in self.reasons:
            self.reasons[key] = reason
            log.warning("telemetry: %s: %s", key, reason)

    def _open_nvml(self) -> None:
        if not self.gpu_indices:
            self.gpu_reason = "no GPU indices requested"
            return
        try:
            import pynvml
        except ImportError as exc:
            self.gpu_reason = f"NVML unavailable: {exc}"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.gpu_reason = f"NVML unavailable: {exc}"
            return
        self._nvml = pynvml
        for i in self.gpu_indices:
            try:
                self._gpus.append(_NvmlGpu(pynvml, i, self._note))
            except pynvml.NVMLError as exc:
                self._note(f"gpu{i}", f"NVML handle for GPU {i} unavailable: {exc}")
        if not self._gpus:
            self.gpu_reason = "NVML unavailable: no handle could be opened for GPUs " + \
                              ", ".join(map(str, self.gpu_indices))
        if self.gpu_reason:
            log.warning("telemetry: %s", self.gpu_reason)

    def _prime_psutil(self) -> None:
        # cpu_percent(None) measures since the previous call; prime so the first sample is real.
        try:
            self._last_core_times = psutil.cpu_times(percpu=True)
            self._tree()
        except Exception as exc:  # noqa: BLE001
            self._note("psutil", str(exc))

    def _tree(self) -> list[tuple[psutil.Process, bool]]:
        """Root and all descendants as (process, has_cpu_baseline). Process objects are cached
        so cpu_percent measures since the previous sample; a process seen for the first time
        is primed here and contributes CPU from the next sample on. Listing descendants reads
        every process's /proc entry (most of a sample's cost), and a cell's ranks and workers
        start before its timed window, so the tree is listed again only every TREE_RESCAN_S."""
        now = time.monotonic()
        if self._procs and now - self._tree_listed < TREE_RESCAN_S:
            return [(p, True) for p in self._procs.values()]
        self._tree_listed = now
        root = self._procs.get(self.root_pid) or psutil.Process(self.root_pid)
        found = [root, *root.children(recursive=True)]
        live: dict[int, psutil.Process] = {}
        out = []
        for p in found:
            cached = self._procs.get(p.pid)
            if cached is not None and cached == p:      # same pid *and* create time
                live[p.pid] = cached
                out.append((cached, True))
                continue
            try:
                p.cpu_percent(None)
            except psutil.Error:
                continue
            live[p.pid] = p
            out.append((p, False))
        self._procs = live
        return out

    def _sys_cpu(self) -> list[float]:
        # Own per-core deltas: psutil.cpu_percent keeps module-global state that other callers
        # in this process would disturb.
        now = psutil.cpu_times(percpu=True)
        last, self._last_core_times = self._last_core_times, now
        if last is None or len(last) != len(now):
            return []
        pct = []
        for a, b in zip(last, now):
            idle = (b.idle - a.idle) + (getattr(b, "iowait", 0.0) - getattr(a, "iowait", 0.0))
            # guest time is already inside user time on Linux; do not count it twice.
            total = sum(b) - sum(a) - sum(getattr(b, f, 0.0) - getattr(a, f, 0.0)
                                          for f in ("guest", "guest_nice"))
            pct.append(100.0 * max(0.0, total - idle) / total if total > 0 else 0.0)
        return pct

    def _read_psutil(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: None for k in (
            "sys_cpu_pct_mean", "sys_cpu_pct_max", "sys_cpu_pct_per_core", "sys_mem_used_pct",
            "proc_cpu_pct", "proc_rss_mb", "proc_count")}
        try:
            cores = self._sys_cpu()
            if cores:
                out["sys_cpu_pct_mean"] = sum(cores) / len(cores)
                out["sys_cpu_pct_max"] = max(cores)
                out["sys_cpu_pct_per_core"] = json.dumps([round(c, 1) for c in cores])
            out["sys_mem_used_pct"] = float(psutil.virtual_memory().percent)
        except Exception as exc:  # noqa: BLE001
            self._note("psutil-system", str(exc))
        try:
            cpu, rss, n = 0.0, 0, 0
            for p, has_baseline in self._tree():
                try:
                    with p.oneshot():
                        if has_baseline:
                            cpu += p.cpu_percent(None)
                        rss += p.memory_info().rss
                    n += 1
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue            # a rank exiting between listing and reading
            out.update(proc_cpu_pct=cpu, proc_rss_mb=_mb(rss), proc_count=n)
        except Exception as exc:  # noqa: BLE001 - e.g. the root process is gone
            self._note("psutil-process-tree", f"process tree of pid {self.root_pid}: {exc}")
        return out

    # -- sampling ---------------------------------------------------------------------------
    def sample(self) -> dict[str, Any]:
        """Takes one sample now (the thread calls this; public so overhead can be measured)."""
        with self._lock:
            return self._sample()

    def _sample(self) -> dict[str, Any]:
        phase = self.phase              # phase before clock: see the module docstring
        cpu0 = time.thread_time()
        row: dict[str, Any] = {"t_s": self.now_s(), "wall_time_s": time.time(), "phase": phase}
        row.update(self._read_psutil())
        for i in self.gpu_indices:      # declared columns even when NVML is absent: None
            row.update({gpu_col(f, i): None for f in GPU_FIELDS})
        for gpu in self._gpus:
            try:
                row.update(gpu.read())
            except Exception as exc:  # noqa: BLE001
                self._note(f"gpu{gpu.index}", str(exc))
        row["sample_cpu_ms"] = (time.thread_time() - cpu0) * 1000.0
        return row

    def _run(self) -> None:
        period = 1.0 / self.hz
        next_t = time.monotonic() + period
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            try:
                self._rows.append(self.sample())
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything
                self._note("sampler", repr(exc))
            next_t += period
            if next_t < time.monotonic():   # fell behind (suspended, slow call): do not burst
                next_t = time.monotonic() + period


# -- pure functions ---------------------------------------------------------------------------

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


def _bracketed(rows, win, timed_start_s: float, timed_end_s: float) -> list[dict[str, Any]]:
    """The window's samples with the last start mark before it and the first end mark after
    it, where the caller took them."""
    starts = [r for r in rows if r.get("phase") == WINDOW_MARKS[0] and r["t_s"] <= timed_start_s]
    ends = [r for r in rows if r.get("phase") == WINDOW_MARKS[1] and r["t_s"] >= timed_end_s]
    head = [max(starts, key=lambda r: r["t_s"])] if starts else []
    tail = [min(ends, key=lambda r: r["t_s"])] if ends else []
    return head + sorted(win, key=lambda r: r["t_s"]) + tail


def summarize(rows: Sequence[dict[str, Any]], *, timed_start_s: float, timed_end_s: float,
              images: int, gpu_indices: Sequence[int],
              gpu_reason: str | None = None) -> dict[str, Any]:
    """Telemetry over the timed window only: samples tagged "timed" whose t_s lies inside
    [timed_start_s, timed_end_s].

    Means (GPU busy, power, CPU) use the timed samples; energy uses them bracketed by the
    caller's boundary marks (`Sampler.mark`), so it covers the whole window even when the
    thread sampled it only once. `window_coverage` (span of the energy samples / timed
    duration) says how much was covered: ~1 with marks, less without.
    """
    win = [r for r in window(rows, "timed") if timed_start_s <= r["t_s"] <= timed_end_s]
    bracket = _bracketed(rows, win, timed_start_s, timed_end_s)
    t = [float(r["t_s"]) for r in bracket]
    timed_s = timed_end_s - timed_start_s
    covered = (t[-1] - t[0]) if len(t) >= 2 else 0.0
    out: dict[str, Any] = {
        "timed_start_s": timed_start_s, "timed_end_s": timed_end_s, "timed_s": timed_s,
        "samples_in_window": len(win),
        "first_sample_s": t[0] if t else None, "last_sample_s": t[-1] if t else None,
        "window_marked": len(bracket) - len(win) == 2,
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
        e, how = energy_joules(t, [r.get(gpu_col("energy_mj", i)) for r in bracket],
                               [r.get(gpu_col("power_w", i)) for r in bracket])
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
        if base in _INT_FIELDS or col == "proc_count":
            # NVML counters and bitmasks are unsigned 64-bit: UInt64 holds them exactly
            df[col] = pd.array([None if _num(v) is None else int(v) for v in df[col]],
                               dtype="Int64" if col == "proc_count" else "UInt64")
        elif base in GPU_FIELDS:
            # float even when every value is None, so tables with and without GPUs concatenate
            df[col] = df[col].astype("float64")
    return df
