"""Per-GPU NVML readings for the telemetry sampler: the field names a sample row carries and a
handle wrapper that reads them.

Kept apart from the sampler thread so that what a GPU column means (its name, unit, integer or
float) is stated in one place, which the summary and the parquet table read as well.
"""

from __future__ import annotations

from typing import Any, Callable

# NVML per-GPU fields; a row holds them as f"{field}_{gpu_index}" (see gpu_col).
GPU_FIELDS = (
    "gpu_busy_pct", "mem_ctrl_pct", "gpu_mem_used_mb", "gpu_mem_total_mb", "power_w",
    "energy_mj", "sm_clock_mhz", "mem_clock_mhz", "temp_c", "throttle_reasons",
)
# Integer-valued fields; to_table keeps them as nullable integers, not floats.
GPU_INT_FIELDS = ("energy_mj", "throttle_reasons")


def gpu_col(field: str, gpu_index: int) -> str:
    """Column name of a per-GPU field, e.g. gpu_col("power_w", 0) == "power_w_0"."""
    return f"{field}_{gpu_index}"


def to_mb(n_bytes: float) -> float:
    """Bytes as MiB, the unit of every *_mb column (GPU memory and process RSS alike)."""
    return n_bytes / 2**20


class NvmlGpu:
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
        return to_mb(m.used), to_mb(m.total)

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
        """Every GPU field of this device; one that could not be read is None."""
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
