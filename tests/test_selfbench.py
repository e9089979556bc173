"""`bench selfbench` measures bench against a bare loop; here only that it measures (the
figures themselves are machine-dependent and reported by the command, not asserted)."""
import json

from conftest import run_cli


def test_selfbench_reports_paired_ratios_and_the_sampler_cost():
    result = run_cli("selfbench", "--steps", "9", "--repeats", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    text, summary = result.stdout.rsplit("}", 1)
    figures = json.loads(text + "}")
    assert len(figures["harness_ratio_per_repeat"]) == 2
    assert len(figures["sampling_ratio_per_repeat"]) == 2
    # Every timed step took time, and the 10 Hz sampler took samples whose CPU cost it timed.
    assert all(t > 0 for t in figures["bare_loop_step_s"] + figures["bench_sampled_step_s"])
    # The ratios are the paired ones: each repeat's bench time over the bare loop's (and over
    # the sampled bench loop's) from the same repeat, and the headline is their median.
    import statistics
    bench, bare = figures["bench_loop_step_s"], figures["bare_loop_step_s"]
    sampled = figures["bench_sampled_step_s"]
    assert figures["harness_ratio_per_repeat"] == [b / r for b, r in zip(bench, bare)]
    assert figures["sampling_ratio_per_repeat"] == [b / s for b, s in zip(bench, sampled)]
    assert figures["harness_overhead_ratio"] == statistics.median(
        figures["harness_ratio_per_repeat"])
    assert figures["sampler_cpu_ms_per_sample"] > 0 and 0 < figures["sampler_cpu_share"] < 1
    summary = " ".join(summary.split())  # Rich wraps long lines
    assert "harness/bare" in summary and "ms CPU per sample" in summary


def test_selfbench_needs_timed_steps():
    result = run_cli("selfbench", "--steps", "5")
    assert result.returncode == 2 and "must exceed the 5 warm-up steps" in result.stderr
