"""`bench selfbench` measures bench against bare loops; here only that it measures what it says
(the figures themselves are machine-dependent and reported by the command, not asserted)."""
import json

import pytest

from conftest import run_cli


def check_ratios(figures: dict, repeats: int) -> None:
    """Every ratio has one figure per repeat, its median between its extremes (the figures
    themselves are summarise's, checked on known inputs below)."""
    step_s = figures["step_s"]
    assert all(len(step_s[k]) == repeats and all(t > 0 for t in step_s[k])
               for k in ("bare_static", "bare_real", "bench_static", "bench_real"))
    for name in ("harness_static", "harness_real", "data", "attribution", "probe_slowdown",
                 "arrivals"):
        r = figures[name]
        assert len(r["per_repeat"]) == repeats and r["min"] <= r["median"] <= r["max"], name


def test_summarise_divides_the_loops_each_ratio_names():
    """Three repeats of made-up step times whose ratios are known: harness = bench ÷ bare in
    the same pass, data = bare on real ÷ bare on static batches, after a probe = the real
    pass's harness ÷ the probed pass's, sampling = unsampled ÷ sampled bench, probe cost =
    a probe step ÷ an unprobed bench step, arrivals = the harness with arrival marks ÷
    without (one device: the swapped pass marks, the real one does not); each the median
    of the repeats' ratios."""
    from bench.config.cell import Cell
    from bench.worker.selfbench import summarise
    from launchers.base import Runtime
    step_s = {"bench_static": [2.0, 3.0, 4.0], "bare_static": [1.0, 1.0, 2.0],
              "bench_real": [3.0, 3.0, 3.0], "bare_real": [1.5, 1.0, 2.0],
              "bench_probed": [4.0, 4.0, 4.0], "bare_probed": [2.0, 2.0, 1.0],
              "bench_sampled": [3.3, 3.0, 3.0],
              "bench_swapped": [3.3, 3.0, 6.0], "bare_swapped": [1.5, 1.0, 2.0]}
    measured = {"step_s": step_s, "sample_cpu_ms": [1.0, 3.0], "probe_step_s": [6.0, 9.0, 3.0]}
    runtime = Runtime(rank=0, world_size=1, local_rank=0, device="cpu", backend=None,
                      threads=2)
    out = summarise(Cell(steps=20), runtime, measured, sample_hz=10.0)
    expected = {"harness_static": [2.0, 3.0, 2.0], "harness_real": [2.0, 3.0, 1.5],
                "data": [1.5, 1.0, 1.0], "attribution": [1.0, 1.5, 0.375],
                "probe_slowdown": [2.0, 3.0, 1.0], "sampling": [1 / 1.1, 1.0, 1.0],
                "arrivals": [1.1, 1.0, 2.0]}
    for name, ratios in expected.items():
        assert out[name]["per_repeat"] == pytest.approx(ratios), name
        assert (out[name]["median"], out[name]["min"], out[name]["max"]) == pytest.approx(
            (sorted(ratios)[1], min(ratios), max(ratios))), name
    assert out["repeats"] == 3
    # 2 ms of CPU a sample, 10 samples a second, 2 threads: 1% of the process's CPU
    assert out["sampler_cpu_ms_per_sample"] == pytest.approx(2.0)
    assert out["sampler_cpu_share"] == pytest.approx(0.01)
    # with several ranks the real pass is the marked one (as in their cells)
    ranks = Runtime(rank=0, world_size=2, local_rank=0, device="cpu", backend="gloo", threads=1)
    ddp = summarise(Cell(steps=20, strategy="ddp", devices=2), ranks, measured, sample_hz=0.0)
    assert ddp["arrivals"]["per_repeat"] == pytest.approx([1 / 1.1, 1.0, 0.5])


def test_probe_cost_is_shared_over_every_step_the_probe_trains():
    """The probe trains its timed steps and its shape-recording ones; its wall time divided
    by fewer (only the timed ones) would make a probe step look 1.5× dearer. The steps are
    counted here by the model's own forward hook, the wall time around the call."""
    import time

    import torch

    from bench.worker.selfbench import probe_step_s
    from launchers.base import Engine, Precision
    from models import build_model
    torch.manual_seed(0)
    model = build_model("unet", width=4, depth=2)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    engine = Engine(model, torch.optim.Adam(model.parameters()), Precision("fp32", "cpu"))
    x = torch.rand(2, 1, 32, 32)
    start = time.perf_counter()
    per_step = probe_step_s(engine, (x, x), "cpu")
    wall = time.perf_counter() - start
    assert len(forwards) == 6  # 4 timed (the first warms the profiler up) + 2 with shapes
    assert 0.9 * wall / len(forwards) <= per_step <= wall / len(forwards)


def test_selfbench_single_and_ddp_report_harness_and_data_apart():
    # On the CPU on every host (gloo ranks): a GPU host would otherwise run the ranks on its
    # GPUs, and refuse 2 of them where it has one.
    result = run_cli("selfbench", "--device", "cpu", "--steps", "8", "--repeats", "2", "--json",
                     "--image-size", "32", "--width", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    single, ddp = json.loads(result.stdout)
    assert (single["strategy"], single["devices"]) == ("single", 1)
    assert (ddp["strategy"], ddp["devices"]) == ("ddp", 2)
    for figures in (single, ddp):
        check_ratios(figures, 2)
        assert figures["image_size"] == 32 and figures["width"] == 4
    # Only the one-device run compares the 10 Hz sampler with sampling off; its samples were
    # taken and their CPU cost timed.
    assert len(single["sampling"]["per_repeat"]) == 2 and "sampling" not in ddp
    assert single["sampler_cpu_ms_per_sample"] > 0 and 0 < single["sampler_cpu_share"] < 1
    assert single["device"] == ddp["device"] == "cpu"
    # Both ran the attribution probe before a pass of bench's loop, and timed its steps:
    # with the profiler's start, stop and event parsing shared out, dearer than a bare step.
    for figures in (single, ddp):
        steps = figures["step_s"]
        assert all(t > 0 for t in steps["bench_probed"] + steps["bare_probed"])
        assert figures["probe_slowdown"]["median"] > 1


def test_selfbench_table_names_every_figure():
    result = run_cli("selfbench", "--device", "cpu", "--strategy", "single", "--steps", "7",
                     "--repeats", "1", "--image-size", "32", "--width", "4")
    assert result.returncode == 0, result.stderr
    # The probed pass profiles in this very process: kineto's own lines (a USDT
    # profiler_start / profiler_stop pair per session) stay out of the terminal.
    assert "profiler_st" not in result.stdout + result.stderr and "USDT" not in result.stderr
    text = " ".join(result.stdout.split())  # Rich wraps long lines
    for needle in ("harness, static", "harness, real", "data", "single ×1", "target: harness",
                   "after a probe", "probe cost", "arrival marks"):
        assert needle in text


@pytest.mark.parametrize("argv,needle", [
    (["--steps", "5"], "must exceed the 5 warm-up steps"),
    (["--strategy", "ddp", "--devices", "1"], "--devices 1 is invalid"),
    (["--repeats", "0"], "--repeats 0 is invalid"),
])
def test_selfbench_bad_options_exit_2(argv, needle):
    result = run_cli("selfbench", *argv)
    assert result.returncode == 2 and needle in result.stderr


def test_selfbench_on_cuda_is_refused_beyond_the_visible_gpus(capsys):
    """Checked before anything runs: without a GPU, --device cuda itself; with one, DDP ranks
    beyond the visible GPUs (each rank takes its own GPU)."""
    import torch

    from conftest import run_main
    result = run_main(capsys, "selfbench", "--device", "cuda", "--strategy", "ddp",
                      "--devices", "99")
    assert result.returncode == 2, result.stderr
    needle = ("--devices 99 asks for more GPUs than the" if torch.cuda.is_available()
              else "no CUDA GPU is visible")
    assert needle in result.stderr
