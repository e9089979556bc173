"""Background telemetry: host CPU/memory (psutil) and per-GPU NVML counters, sampled at a coarse
rate beside training. The pure functions that turn the samples into a timed-window summary
live in bench.measure.telemetry_summary and are re-exported here.

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
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil

# The NVML reader and the pure summary functions live apart; re-exported so callers keep
# importing everything telemetry from here.
from bench.measure.nvml import GPU_FIELDS, NvmlGpu, gpu_col, to_mb
from bench.measure.telemetry_summary import (  # noqa: F401  (re-exported)
    WINDOW_MARKS, combine_nodes, energy_joules, summarize, to_table, window)

log = logging.getLogger(__name__)

PHASES = ("setup", "warmup", "timed", "eval_pause", "eval")  # eval_pause: validation
TREE_RESCAN_S = 2.0  # how often the cell's process tree is listed again


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
        self._gpus: list[NvmlGpu] = []
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
                self._gpus.append(NvmlGpu(pynvml, i, self._note))
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
            out.update(proc_cpu_pct=cpu, proc_rss_mb=to_mb(rss), proc_count=n)
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
