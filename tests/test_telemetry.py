"""Telemetry sampler (real psutil, real or absent NVML, a fake NVML for the GPU code path) and
the pure window / energy / summary functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import pandas as pd
import pytest

from bench.measure import telemetry
from bench.measure.telemetry import Sampler, energy_joules, gpu_col, summarize, to_table, window

BURN = """
import sys, time
print("go", flush=True)
t = time.monotonic()
while time.monotonic() - t < 1.5:
    pass
time.sleep(30)
"""


def _nvml_init_error() -> str | None:
    """None when NVML initialises here, else the 'NVML unavailable: ...' text."""
    try:
        import pynvml
    except ImportError as exc:
        return f"NVML unavailable: {exc}"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"NVML unavailable: {exc}"
    pynvml.nvmlShutdown()
    return None


NVML_ERROR = _nvml_init_error()


@pytest.fixture()
def burner():
    proc = subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "go"    # the busy loop has begun
    yield proc
    proc.kill()
    proc.wait()


def _tree_cpu_s(pid: int) -> float:
    """Ground truth from the kernel: user+system CPU seconds of pid and its descendants."""
    import psutil
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def test_real_psutil_sampling_phases_and_window(burner):
    s = Sampler(20.0, gpu_indices=[], root_pid=burner.pid)
    s.start()
    time.sleep(0.25)
    t_start = s.now_s()
    s.set_phase("timed")
    cpu0 = _tree_cpu_s(burner.pid)
    time.sleep(1.0)                                  # inside the child's 1.5 s busy loop
    cpu1 = _tree_cpu_s(burner.pid)
    s.set_phase("eval")
    t_end = s.now_s()
    time.sleep(0.25)
    rows = s.stop()
    assert s._thread is not None and not s._thread.is_alive()

    for phase in ("setup", "timed", "eval"):
        assert window(rows, phase), f"no samples tagged {phase}"
    timed = window(rows, "timed")
    # Bounds from what this run measured, not from a quiet machine: on a loaded 2-core host
    # the 20 Hz thread falls behind, and a sample that read its phase just before a switch
    # takes its clock up to one (measured) sampling step later.
    times = sorted(r["t_s"] for r in rows)
    step = max(b - a for a, b in zip(times, times[1:]))
    # The sampler reads the phase before its clock, so no "timed" sample precedes the switch.
    assert all(r["t_s"] >= t_start for r in timed)
    assert all(r["t_s"] <= t_end + step for r in timed)
    assert all(r["t_s"] < t_start for r in window(rows, "setup"))
    assert all(r["t_s"] >= t_end - step for r in window(rows, "eval"))

    # The child's CPU share depends on how busy this machine is; compare with what the kernel
    # says it actually got over the same window rather than with a fixed 100 %.
    truth_pct = 100.0 * (cpu1 - cpu0) / (t_end - t_start)
    busy = [r["proc_cpu_pct"] for r in timed]
    assert all(v is not None for v in busy)
    assert truth_pct > 5.0, "the busy child got no CPU; the test proves nothing"
    assert np.mean(busy) > 5.0
    assert abs(np.mean(busy) - truth_pct) <= 0.35 * truth_pct + 10.0, (busy, truth_pct)
    assert all(r["proc_count"] == 1 and r["proc_rss_mb"] > 1.0 for r in timed)
    assert all(r["sys_cpu_pct_mean"] is not None for r in timed)
    assert len(json.loads(timed[0]["sys_cpu_pct_per_core"])) == psutil_cores()
    assert all(r["sample_cpu_ms"] > 0 for r in rows)

    summ = summarize(rows, timed_start_s=t_start, timed_end_s=t_end, images=100, gpu_indices=[])
    assert summ["timed_start_s"] == t_start and summ["timed_end_s"] == t_end
    inside = [r for r in timed if r["t_s"] <= t_end]
    assert summ["samples_in_window"] == len(inside) >= max(1, int((t_end - t_start) / step) - 1)
    assert t_start <= summ["first_sample_s"] <= summ["last_sample_s"] <= t_end
    assert summ["covered_s"] == pytest.approx(summ["last_sample_s"] - summ["first_sample_s"])
    assert summ["window_coverage"] >= 1 - 2 * step / (t_end - t_start)
    assert summ["cpu_pct_mean"] == pytest.approx(np.mean([r["proc_cpu_pct"] for r in inside]))
    assert summ["energy_j"] is None and summ["gpu_reason"]


def psutil_cores() -> int:
    import psutil
    return len(psutil.cpu_times(percpu=True))


def test_process_tree_sums_all_descendants():
    # A sleeping parent with two spinning children: the tree's CPU is almost all children's.
    code = ("import subprocess, sys, time\n"
            "spin = [sys.executable, '-c', 'while True: pass']\n"
            "kids = [subprocess.Popen(spin) for _ in range(2)]\n"
            "print('go', flush=True)\n"
            "time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "go"
        # A rate so low the thread never fires: the test takes the sample itself, so the
        # sampled interval and the ground-truth interval coincide.
        s = Sampler(0.01, gpu_indices=[], root_pid=parent.pid)
        t0 = time.monotonic()
        s.start()                                   # primes cpu_percent for the whole tree
        cpu0 = _tree_cpu_s(parent.pid)
        time.sleep(0.6)
        cpu1 = _tree_cpu_s(parent.pid)
        row = s.sample()
        t1 = time.monotonic()
        rows = s.stop()
    finally:
        import psutil
        for kid in psutil.Process(parent.pid).children(recursive=True):
            kid.kill()
        parent.kill()
        parent.wait()
    assert rows == []
    assert row["proc_count"] == 3
    truth_pct = 100.0 * (cpu1 - cpu0) / (t1 - t0)
    assert truth_pct > 5.0, "the children got no CPU; the test proves nothing"
    assert row["proc_cpu_pct"] == pytest.approx(truth_pct, rel=0.25, abs=5.0)


def test_sampler_survives_a_missing_root_process():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    s = Sampler(20.0, gpu_indices=[], root_pid=dead.pid)
    s.start()
    time.sleep(0.2)
    rows = s.stop()
    assert rows and all(r["proc_cpu_pct"] is None and r["proc_rss_mb"] is None for r in rows)
    assert all(r["sys_mem_used_pct"] is not None for r in rows)
    assert "psutil-process-tree" in s.reasons


def test_without_nvml_gpu_fields_are_none_with_reason(monkeypatch):
    expected = NVML_ERROR
    if expected is None:
        # NVML works here (a GPU host): its initialisation fails as it does without a driver.
        import pynvml

        def no_driver():
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
        expected = _nvml_init_error()
    s = Sampler(20.0, gpu_indices=[0], root_pid=os.getpid())
    s.start()
    assert s.gpu_reason == expected and s.gpu_reason.startswith("NVML unavailable: ")
    time.sleep(0.2)
    rows = s.stop()
    assert rows
    for r in rows:
        assert all(r[gpu_col(f, 0)] is None for f in telemetry.GPU_FIELDS)
        assert r["proc_rss_mb"] > 0 and r["sys_cpu_pct_mean"] is not None
    for r in rows:
        r["phase"] = "timed"
    summ = summarize(rows, timed_start_s=0.0, timed_end_s=rows[-1]["t_s"], images=10,
                     gpu_indices=[0], gpu_reason=s.gpu_reason)
    assert summ["gpu_reason"] == expected
    assert summ["per_gpu"] == {}
    assert all(summ[k] is None for k in ("gpu_busy_pct_mean", "mem_used_peak_mb", "power_mean_w",
                                         "energy_j", "energy_per_img_j"))
    assert summ["rss_peak_mb"] > 0


@pytest.mark.skipif(NVML_ERROR is not None, reason=f"{NVML_ERROR}: needs an NVIDIA GPU and "
                    "its driver's NVML library (on a GPU host: apt-get install nvidia-driver, "
                    "or the cluster's driver module); scripts/gpu-check.sh runs it there")
def test_real_nvml_fields_are_numbers():
    s = Sampler(10.0, gpu_indices=[0], root_pid=os.getpid())
    s.start()
    assert s.gpu_reason is None
    time.sleep(0.5)
    rows = s.stop()
    assert len(rows) >= 2
    r = rows[-1]
    for f in ("gpu_busy_pct", "mem_ctrl_pct", "gpu_mem_used_mb", "gpu_mem_total_mb", "power_w",
              "sm_clock_mhz", "mem_clock_mhz", "temp_c"):
        assert isinstance(r[gpu_col(f, 0)], float), (f, r[gpu_col(f, 0)], s.reasons)
    assert 0 <= r[gpu_col("gpu_busy_pct", 0)] <= 100
    assert 0 < r[gpu_col("gpu_mem_used_mb", 0)] <= r[gpu_col("gpu_mem_total_mb", 0)]
    assert 10 < r[gpu_col("power_w", 0)] < 2000        # watts, not milliwatts
    assert isinstance(r[gpu_col("throttle_reasons", 0)], int)
    e = r[gpu_col("energy_mj", 0)]
    assert e is None or (isinstance(e, int) and e > 0)


def _fake_pynvml() -> types.ModuleType:
    """Just enough of pynvml to drive the GPU code path: energy unsupported, an old driver
    without the clock-event-reasons symbol."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    m.NVMLError = NVMLError
    m.NVMLError_NotSupported = type("NVMLError_NotSupported", (NVMLError,), {})
    m.NVMLError_FunctionNotFound = type("NVMLError_FunctionNotFound", (NVMLError,), {})
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.calls = {"energy": 0, "shutdown": 0}

    def energy(h):
        m.calls["energy"] += 1
        raise m.NVMLError_NotSupported("Not Supported")

    def events(h):
        raise m.NVMLError_FunctionNotFound("Function Not Found")

    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: m.calls.__setitem__("shutdown", m.calls["shutdown"] + 1)
    m.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=40)
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30)
    m.nvmlDeviceGetPowerUsage = lambda h: 250_500           # milliwatts
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetClockInfo = lambda h, kind: {1: 1980, 2: 2619}[kind]
    m.nvmlDeviceGetTemperature = lambda h, sensor: 55
    m.nvmlDeviceGetCurrentClocksEventReasons = events
    m.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 4
    return m


def test_nvml_code_path_with_fake_library(monkeypatch):
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    s = Sampler(50.0, gpu_indices=[0, 1], root_pid=os.getpid())
    s.start()
    time.sleep(0.2)
    rows = s.stop()
    assert s.gpu_reason is None and len(rows) >= 3
    r = rows[-1]
    for i in (0, 1):
        assert r[gpu_col("gpu_busy_pct", i)] == 87.0 and r[gpu_col("mem_ctrl_pct", i)] == 40.0
        assert r[gpu_col("gpu_mem_used_mb", i)] == 3072.0
        assert r[gpu_col("gpu_mem_total_mb", i)] == 81920.0
        assert r[gpu_col("power_w", i)] == 250.5                  # mW -> W
        assert r[gpu_col("sm_clock_mhz", i)] == 1980.0 and r[gpu_col("temp_c", i)] == 55.0
        assert r[gpu_col("throttle_reasons", i)] == 4            # fell back to the old call
        assert r[gpu_col("energy_mj", i)] is None                # unsupported: never invented
    assert fake.calls["energy"] == 2          # once per GPU, then dropped (no per-sample cost)
    assert fake.calls["shutdown"] == 1
    assert any("energy_mj" in k for k in s.reasons)
    # No counter, so energy comes from the power integral.
    for r in rows:
        r["phase"] = "timed"
    summ = summarize(rows, timed_start_s=0.0, timed_end_s=rows[-1]["t_s"], images=10,
                     gpu_indices=[0, 1])
    span = rows[-1]["t_s"] - rows[0]["t_s"]
    assert summ["energy_method"] == "power-integral"
    assert summ["energy_j"] == pytest.approx(2 * 250.5 * span)
    assert summ["energy_per_img_j"] == pytest.approx(summ["energy_j"] / 10)


# -- energy_joules ---------------------------------------------------------------------------

def test_energy_steady_counter():
    t = [0.0, 0.5, 1.0, 1.5]
    counter = [1_000_000, 1_100_000, 1_200_000, 1_300_000]        # 200 W
    e, how = energy_joules(t, counter, [200.0] * 4)
    assert (e, how) == (pytest.approx(300.0), "counter")


def test_energy_counter_wrap_and_reset():
    top = 2**64
    e, how = energy_joules([0.0, 1.0, 2.0, 3.0], [top - 1500, top - 500, 500, 1500], [1.0] * 4)
    assert e == pytest.approx(3.0) and how == "counter"           # 1000 mJ per second, wrapped
    # A large drop is a reset (a wrap would need ~10^16 J in a second): skipped and stated.
    e, how = energy_joules([0.0, 1.0, 2.0, 3.0], [5_000_000, 6_000_000, 1_000, 2_000], [None] * 4)
    assert e == pytest.approx(1001.0)
    assert how.startswith("counter") and "reset" in how


def test_energy_counter_not_ticking_falls_back_to_power():
    t = [0.0, 1.0, 2.0]
    e, how = energy_joules(t, [42, 42, 42], [100.0, 200.0, 300.0])
    assert e == pytest.approx(150.0 + 250.0)
    assert how.startswith("power-integral") and "did not tick" in how


def test_energy_missing_counter_uses_trapezoid():
    t = [0.0, 0.5, 2.0]
    e, how = energy_joules(t, [None, None, None], [100.0, 300.0, 100.0])
    assert e == pytest.approx(0.5 * 200.0 + 1.5 * 200.0)
    assert how == "power-integral"


def test_energy_nothing_usable_is_none_with_reason():
    e, how = energy_joules([0.0, 1.0], [None, None], [None, None])
    assert e is None and "no energy counter" in how
    e, how = energy_joules([0.0], [5], [100.0])
    assert e is None and "fewer than 2 samples" in how


# -- window / summarize / to_table -------------------------------------------------------------

def _synthetic_rows() -> list[dict]:
    rows = []
    for k in range(14):
        t = float(k)
        phase = "warmup" if k < 2 else ("timed" if k < 12 else "eval")
        extreme = phase != "timed"                     # outside values that must not leak in
        busy = 1000.0 if extreme else 10.0 * (k - 1)   # timed: 10, 20, ..., 100
        rows.append({
            "t_s": t, "wall_time_s": 1e9 + t, "phase": phase,
            "proc_cpu_pct": 999.0 if extreme else 150.0, "sys_cpu_pct_mean": 50.0,
            "proc_rss_mb": 99999.0 if extreme else 1000.0 + k,
            "sys_cpu_pct_per_core": [50.0, 50.0],
            gpu_col("gpu_busy_pct", 0): busy, gpu_col("gpu_busy_pct", 1): 50.0,
            gpu_col("gpu_mem_used_mb", 0): 99999.0 if extreme else 500.0 + k,
            gpu_col("gpu_mem_used_mb", 1): 700.0,
            gpu_col("power_w", 0): 300.0, gpu_col("power_w", 1): 100.0,
            gpu_col("energy_mj", 0): 10**9 + 300_000 * k,            # 300 W counter
            gpu_col("energy_mj", 1): None,                            # no counter on GPU 1
            gpu_col("throttle_reasons", 0): 0, gpu_col("throttle_reasons", 1): None,
        })
    return rows


def test_a_validation_pause_is_no_part_of_the_windows_energy_or_time():
    """Validation paused the window from 5.2 to 7.8 s (its marks; samples tagged eval_pause
    between them) and drew 1000 W meanwhile: the window's energy is the 300 W of the time it
    trained, in two segments, and its time is the window less the pause."""
    rows = [r for r in _synthetic_rows() if not 5.2 < r["t_s"] < 7.8]
    energy = {1.4: 0.0}  # counter (J) at each time: 300 W, 1000 W during the pause
    for t in (2, 3, 4, 5, 5.2, 7.8, 8, 9, 10, 11, 11.6):
        prev = max(k for k in energy if k < t)
        energy[t] = energy[prev] + (t - prev) * (1000.0 if prev == 5.2 else 300.0)
    for r in rows:
        if r["t_s"] in energy:
            r[gpu_col("energy_mj", 0)] = int(10**9 + 1000 * energy[r["t_s"]])
    for t, phase in ((1.4, "window_start"), (5.2, "pause_start"), (6.5, "eval_pause"),
                     (7.8, "pause_end"), (11.6, "window_end")):
        mark = dict(rows[0], t_s=t, phase=phase)
        mark[gpu_col("energy_mj", 0)] = int(10**9 + 1000 * energy.get(t, energy[5.2] + 1300))
        mark[gpu_col("gpu_busy_pct", 0)] = 5000.0
        rows.append(mark)
    s = summarize(rows, timed_start_s=1.5, timed_end_s=11.5, images=500, gpu_indices=[0])
    g0 = s["per_gpu"]["0"]
    assert g0["energy_j"] == pytest.approx(300.0 * (10.2 - 2.6))
    assert "2 segments" in g0["energy_method"]
    assert s["timed_s"] == pytest.approx(10.0 - 2.6)
    assert s["covered_s"] == pytest.approx(10.2 - 2.6)
    assert g0["gpu_busy_pct_mean"] < 5000.0  # neither a mark nor a pause sample enters
    given = summarize(rows, timed_start_s=1.5, timed_end_s=11.5, images=500, gpu_indices=[0],
                      paused_s=2.5)  # the loop's own figure, where it gives one
    assert given["timed_s"] == pytest.approx(7.5)


def test_window_selects_phase():
    rows = _synthetic_rows()
    assert [r["t_s"] for r in window(rows)] == [float(k) for k in range(2, 12)]
    assert [r["t_s"] for r in window(rows, "eval")] == [12.0, 13.0]


def test_summarize_known_values():
    rows = _synthetic_rows()
    s = summarize(rows, timed_start_s=1.5, timed_end_s=11.5, images=500, gpu_indices=[0, 1])
    assert s["samples_in_window"] == 10
    assert (s["first_sample_s"], s["last_sample_s"], s["covered_s"]) == (2.0, 11.0, 9.0)
    assert s["window_coverage"] == pytest.approx(0.9)
    g0, g1 = s["per_gpu"]["0"], s["per_gpu"]["1"]
    busy = [10.0 * i for i in range(1, 11)]
    assert g0["gpu_busy_pct_mean"] == pytest.approx(55.0)
    assert g0["gpu_busy_pct_p90"] == pytest.approx(np.percentile(busy, 90)) == pytest.approx(91.0)
    assert g0["mem_used_peak_mb"] == 511.0 and g1["mem_used_peak_mb"] == 700.0
    assert g0["power_mean_w"] == 300.0
    assert (g0["energy_j"], g0["energy_method"]) == (pytest.approx(2700.0), "counter")
    assert (g1["energy_j"], g1["energy_method"]) == (pytest.approx(900.0), "power-integral")
    assert s["energy_j"] == pytest.approx(3600.0)
    assert s["energy_per_img_j"] == pytest.approx(3600.0 / 500)
    assert s["energy_method"] == "mixed: counter | power-integral"
    assert s["power_mean_w"] == pytest.approx(400.0)
    assert s["mem_used_peak_mb"] == 700.0
    assert s["cpu_pct_mean"] == 150.0 and s["sys_cpu_pct_mean"] == 50.0
    assert s["rss_peak_mb"] == 1011.0
    # A narrower window keeps only the samples inside it.
    s2 = summarize(rows, timed_start_s=4.0, timed_end_s=6.0, images=1, gpu_indices=[0])
    assert s2["samples_in_window"] == 3 and s2["per_gpu"]["0"]["gpu_busy_pct_mean"] == 40.0


def test_boundary_marks_make_energy_cover_the_whole_window():
    rows = _synthetic_rows()
    for t, phase in ((1.4, "window_start"), (11.6, "window_end"), (0.5, "window_start")):
        mark = dict(rows[0], t_s=t, phase=phase)
        mark[gpu_col("energy_mj", 0)] = int(10**9 + 300_000 * t)
        mark[gpu_col("gpu_busy_pct", 0)] = 5000.0  # a mark never enters the means
        rows.append(mark)
    s = summarize(rows, timed_start_s=1.5, timed_end_s=11.5, images=500, gpu_indices=[0])
    g0 = s["per_gpu"]["0"]
    # 300 W from the last start mark (1.4 s) to the first end mark (11.6 s), not 2..11 s.
    assert g0["energy_j"] == pytest.approx(300.0 * 10.2)
    assert s["window_marked"] and s["covered_s"] == pytest.approx(10.2)
    assert s["window_coverage"] == pytest.approx(1.02)
    assert g0["gpu_busy_pct_mean"] == pytest.approx(55.0) and s["samples_in_window"] == 10
    unmarked = summarize(_synthetic_rows(), timed_start_s=1.5, timed_end_s=11.5, images=500,
                         gpu_indices=[0])
    assert not unmarked["window_marked"]


def test_summarize_no_samples_in_window():
    s = summarize(_synthetic_rows(), timed_start_s=100.0, timed_end_s=101.0, images=5,
                  gpu_indices=[0])
    assert s["samples_in_window"] == 0 and s["first_sample_s"] is None
    assert s["energy_j"] is None and s["cpu_pct_mean"] is None
    assert s["gpu_reason"] == "no GPU samples in the timed window"


def test_to_table_is_flat_and_round_trips_parquet(tmp_path):
    rows = _synthetic_rows()
    rows[0][gpu_col("energy_mj", 0)] = 2**64 - 1            # unsigned 64-bit must survive
    df = to_table(rows)
    assert len(df) == 14
    assert isinstance(df["sys_cpu_pct_per_core"].iloc[0], str)
    assert json.loads(df["sys_cpu_pct_per_core"].iloc[0]) == [50.0, 50.0]
    assert str(df[gpu_col("energy_mj", 0)].dtype) == "UInt64"
    assert df[gpu_col("throttle_reasons", 1)].isna().all()
    path = tmp_path / "telemetry.parquet"
    df.to_parquet(path)
    back = pd.read_parquet(path)
    assert list(back.columns) == list(df.columns)
    assert int(back[gpu_col("energy_mj", 0)].iloc[0]) == 2**64 - 1
    assert back[gpu_col("gpu_busy_pct", 0)].iloc[5] == 40.0


def _node(energy, power=100.0, cpu=50.0, rss=1000.0, busy=(80.0,)):
    return {"energy_j": energy, "power_mean_w": power, "cpu_pct_mean": cpu, "rss_peak_mb": rss,
            "gpu_busy_pct_mean": sum(busy) / len(busy), "samples_in_window": 10,
            "per_gpu": {str(i): {"gpu_busy_pct_mean": b} for i, b in enumerate(busy)},
            "energy_method": "nvml-energy-counter"}


def test_two_nodes_add_up_and_a_missing_node_leaves_nulls():
    """A 2-node cell: each node's local rank 0 sampled its own GPUs. Energy per image is the
    sum over nodes divided by the cell's images (one node's energy alone gave half)."""
    from bench.measure.telemetry import combine_nodes
    both = combine_nodes([_node(300.0, busy=(80.0, 90.0)), _node(500.0, busy=(60.0, 70.0))],
                         ["n1", "n2"], images=100)
    assert both["energy_j"] == 800.0 and both["energy_per_img_j"] == 8.0
    assert both["power_mean_w"] == 200.0 and both["cpu_pct_mean"] == 100.0
    assert both["rss_peak_mb"] == 2000.0 and both["nodes"] == 2
    assert both["gpu_busy_pct_mean"] == 75.0  # mean over the 4 GPUs
    assert [n["host"] for n in both["per_node"]] == ["n1", "n2"] and "node_note" not in both
    lost = combine_nodes([_node(300.0), None], ["n1", "n2"], images=100)
    assert lost["energy_j"] is None and lost["energy_per_img_j"] is None
    assert lost["power_mean_w"] is None and lost["gpu_busy_pct_mean"] is None
    assert "n2" in lost["node_note"] and lost["per_node"][1] == {"host": "n2", "missing": True}
    one = _node(300.0)
    assert combine_nodes([one], ["n1"], images=100) == one  # one node: unchanged
