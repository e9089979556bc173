"""`bench selfbench` measures bench against bare loops; here only that it measures what it says
(the figures themselves are machine-dependent and reported by the command, not asserted)."""
import json
import statistics

import pytest

from conftest import run_cli


def check_ratios(figures: dict, repeats: int) -> None:
    """Every ratio is the median of the per-repeat ratios of the loops it names."""
    step_s = figures["step_s"]
    assert all(len(step_s[k]) == repeats and all(t > 0 for t in step_s[k])
               for k in ("bare_static", "bare_real", "bench_static", "bench_real"))
    for name, (a, b) in {"harness_static": ("bench_static", "bare_static"),
                         "harness_real": ("bench_real", "bare_real"),
                         "data": ("bare_real", "bare_static")}.items():
        ratios = [x / y for x, y in zip(step_s[a], step_s[b])]
        assert figures[name]["per_repeat"] == pytest.approx(ratios)
        assert figures[name]["median"] == pytest.approx(statistics.median(ratios))
        assert figures[name]["min"] == pytest.approx(min(ratios))


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
    # Both ran the attribution probe before a pass of bench's loop: its after-effect is the
    # paired ratio of adjacent passes, and its own profiled steps were timed.
    for figures in (single, ddp):
        steps = figures["step_s"]
        ratios = [(a / b) / (c / d) for a, b, c, d in zip(
            steps["bench_real"], steps["bare_real"], steps["bench_probed"], steps["bare_probed"])]
        assert figures["attribution"]["per_repeat"] == pytest.approx(ratios)
        assert figures["probe_slowdown"]["median"] > 0


def test_selfbench_table_names_every_figure():
    result = run_cli("selfbench", "--device", "cpu", "--strategy", "single", "--steps", "7",
                     "--repeats", "1", "--image-size", "32", "--width", "4")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # Rich wraps long lines
    for needle in ("harness, static", "harness, real", "data", "single ×1", "target: harness",
                   "after a probe", "probe cost"):
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
