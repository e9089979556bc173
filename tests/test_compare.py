"""`bench compare BASELINE NEW`: the regression gate over two results folders."""
import json
import math
import shutil
from pathlib import Path

import pytest

import bench.analysis.gate as compare
from bench.analysis import stats
from bench.record import store
from conftest import run_cli
from test_analysis import record, sweep
from test_report import cli


def write_records(root: Path, records) -> Path:
    for rec in records:
        store.write_json(Path(root) / rec["cell_id"] / store.RECORD, rec)
    return Path(root)


def edit_records(root: Path, change, where=lambda rec: True) -> None:
    """Rewrite every record.json under root that `where` selects with `change(rec)`."""
    for path in sorted(Path(root).glob(f"*/{store.RECORD}")):
        rec = json.loads(path.read_text())
        if where(rec):
            change(rec)
            store.write_json(path, rec)


def slower(factor):
    def change(rec):
        rec["timing"]["throughput_img_s"] *= factor
        rec["timing"]["train_time_s"] /= factor
    return change


@pytest.fixture
def baseline(tmp_path):
    return write_records(tmp_path / "baseline", sweep("fp-unet"))


def copy_of(baseline: Path, name="new") -> Path:
    target = baseline.parent / name
    shutil.copytree(baseline, target)
    return target


def test_folder_against_itself_passes_in_a_real_process(baseline):
    out = run_cli("compare", baseline, baseline, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "gate: passed (12 matched cells)" in out.stdout
    assert "FAIL" not in out.stdout


def test_twenty_percent_slower_fails(baseline):
    new = copy_of(baseline)
    edit_records(new, slower(0.8))
    code, out, err = cli("compare", baseline, new)
    assert code == 1, err
    assert "FAILED" in out and "-20.0%" in out
    assert "beyond tolerance and noise" in out


def test_one_slow_configuration_is_named(baseline):
    new = copy_of(baseline)
    edit_records(new, slower(0.8), where=lambda r: r["cell"]["strategy"] == "dp")
    result = compare.compare_folders(baseline, new)
    failed = result.rows[result.rows["outcome"] == compare.FAIL]
    assert list(failed["config"]) == ["dp"] and list(failed["measure"]) == ["throughput"]
    assert failed.iloc[0]["change"] == pytest.approx(-20.0)
    assert result.exit_code == 1


def test_drop_near_the_threshold_is_a_soft_failure(baseline):
    new = copy_of(baseline)
    edit_records(new, slower(0.94))  # 6% drop: within 80–100% of the 7% tolerance
    code, out, _ = cli("compare", baseline, new)
    assert code == 0
    assert "passed with warnings" in out and "soft" in out
    code, out, _ = cli("compare", baseline, new, "--tolerance-throughput", "5")
    assert code == 1 and "FAILED" in out


def test_drop_within_run_to_run_noise_is_inconclusive_not_passed(tmp_path):
    # ±20% noise at 3 repeats cannot detect a 7% drop: neither failed nor passed
    base = write_records(tmp_path / "b", [record(repeat=r, throughput=t)
                                          for r, t in enumerate((80.0, 100.0, 120.0))])
    new = write_records(tmp_path / "n", [record(repeat=r, throughput=t)
                                         for r, t in enumerate((70.0, 90.0, 110.0))])
    result = compare.compare_folders(base, new)
    row = result.rows[result.rows["measure"] == "throughput"].iloc[0]
    assert row["change"] < -7 and row["ci_low"] < 0 < row["ci_high"]
    assert row["outcome"] == compare.INCONCLUSIVE and row["mde"] > 7
    assert f"{int(row['repeats_needed'])} per side needed" in row["reason"]
    assert result.exit_code == compare.EXIT_INCONCLUSIVE


def test_single_repeat_drop_fails_on_the_point_estimate(tmp_path):
    base = write_records(tmp_path / "b", [record(throughput=100.0)])
    new = write_records(tmp_path / "n", [record(throughput=80.0)])
    result = compare.compare_folders(base, new)
    row = result.rows[result.rows["measure"] == "throughput"].iloc[0]
    assert row["outcome"] == compare.FAIL and "noise unknown" in row["reason"]


def test_single_repeat_within_tolerance_is_inconclusive_not_passed(tmp_path):
    # One repeat a side: no noise estimate, so no power to state; a 3% drop is not a pass.
    base = write_records(tmp_path / "b", [record(throughput=100.0)])
    new = write_records(tmp_path / "n", [record(throughput=97.0)])
    result = compare.compare_folders(base, new)
    row = result.rows[result.rows["measure"] == "throughput"].iloc[0]
    assert row["outcome"] == compare.INCONCLUSIVE and "one repeat" in row["reason"]
    assert result.exit_code == compare.EXIT_INCONCLUSIVE


def test_quality_loss_fails_and_tolerance_option_relaxes_it(baseline):
    new = copy_of(baseline)

    def worse_psnr(rec):
        for q in rec["quality"]:
            q["psnr"] -= 0.3
    edit_records(new, worse_psnr, where=lambda r: r["cell"]["precision"] == "bf16")
    result = compare.compare_folders(baseline, new)
    failed = result.rows[result.rows["outcome"] == compare.FAIL]
    assert list(zip(failed["config"], failed["cell.precision"], failed["measure"])) == \
        [("ddp", "bf16", "psnr")]
    assert failed.iloc[0]["change"] == pytest.approx(-0.3)
    assert failed.iloc[0]["test"] == "paired t (n=3)"
    code, _, _ = cli("compare", baseline, new, "--tolerance-psnr", "0.5")
    assert code == 0


def test_lpips_rise_is_a_loss(baseline):
    new = copy_of(baseline)

    def worse_lpips(rec):
        for q in rec["quality"]:
            q["lpips"] += 0.02
    edit_records(new, worse_lpips)
    result = compare.compare_folders(baseline, new)
    lp = result.rows[result.rows["measure"] == "lpips"]
    assert set(lp["outcome"]) == {compare.FAIL}
    assert result.rows[result.rows["measure"] == "ssim"]["outcome"].eq(compare.OK).all()


def test_cell_that_stopped_working_fails(baseline):
    new = copy_of(baseline)

    def fail(rec):
        rec["status"] = "failed"
        rec["error"] = {"message": "CUDA error"}
    edit_records(new, fail, where=lambda r: r["cell"]["strategy"] == "dp"
                 and r["cell"]["repeat"] == 0)
    code, out, _ = cli("compare", baseline, new)
    assert code == 1 and "ok → failed" in out


def test_matching_falls_back_to_configuration_and_fingerprint(baseline, tmp_path):
    # NEW re-ran the same workload with another timeout: other cell ids, same fingerprint.
    new = write_records(tmp_path / "renamed", [
        {**rec, "cell_id": rec["cell_id"] + "-t2"} for rec in sweep("fp-unet")])
    result = compare.compare_folders(baseline, new)
    assert result.matched == 12 and result.exit_code == 0
    assert set(result.rows["matched_by"]) == {"configuration + fingerprint"}
    assert result.baseline_only == [] and result.new_only == []


def test_changed_workload_is_listed_never_compared(baseline, tmp_path):
    recs = sweep("fp-unet")
    changed = [{**rec, "fingerprint": "fp-other"} if rec["cell"]["strategy"] == "dp" else rec
               for rec in recs]
    for rec in changed:  # the changed workload is also 50% slower: it must not fail the gate
        if rec["cell"]["strategy"] == "dp":
            rec["timing"] = {**rec["timing"],
                             "throughput_img_s": rec["timing"]["throughput_img_s"] / 2}
    new = write_records(tmp_path / "changed", changed)
    result = compare.compare_folders(baseline, new)
    assert sorted(result.workload_changed) == sorted(r["cell_id"] for r in recs
                                                     if r["cell"]["strategy"] == "dp")
    assert "dp" not in set(result.rows["config"]) and result.exit_code == 0
    code, out, _ = cli("compare", baseline, new)
    assert "workload fingerprint changed" in out and code == 0


def test_unrelated_folders_are_bad_input(baseline, tmp_path):
    other = write_records(tmp_path / "other", sweep("fp-unetpp", model="unetpp"))
    code, _, err = cli("compare", baseline, other)
    assert code == 2 and "no cell of NEW matches" in err


@pytest.mark.parametrize("args,needle", [
    (["--tolerance-throughput", "-1"], "-1"),
    (["--tolerance-psnr", "0"], "psnr 0"),
    (["--soft-fraction", "2"], "--soft-fraction 2"),
])
def test_bad_tolerances_are_bad_input(baseline, args, needle):
    code, _, err = cli("compare", baseline, baseline, *args)
    assert code == 2 and needle in err


def test_missing_folder_is_bad_input(baseline, tmp_path):
    code, _, err = cli("compare", baseline, tmp_path / "absent")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and str(tmp_path / "absent") in lines[0]
    code, _, err = cli("compare", tmp_path / "absent", baseline)
    assert code == 2 and "baseline" in err


@pytest.mark.parametrize("worse,ci,expected", [
    (10.0, (5.0, 15.0), compare.FAIL),
    (10.0, (-2.0, 22.0), compare.SOFT),          # beyond tolerance, within noise
    (10.0, (math.nan, math.nan), compare.FAIL),  # single repeat
    (6.0, (1.0, 11.0), compare.SOFT),            # 86% of the 7% tolerance
    (5.0, (1.0, 9.0), compare.OK),               # 71%
    (-10.0, (-15.0, -5.0), compare.IMPROVED),
    (0.0, (0.0, 0.0), compare.OK),
])
def test_judge(worse, ci, expected):
    assert compare.judge(worse, ci, 7.0, 0.8)[0] == expected


# --- power, environment and workload differences ------------------------------------------------

def repeats_of(root: Path, throughputs, **kw) -> Path:
    return write_records(root, [record(repeat=r, throughput=t, **kw)
                                for r, t in enumerate(throughputs)])


def test_two_noisy_repeats_cannot_pass_a_forty_percent_slowdown(tmp_path):
    # The case: 2 repeats, ~25% run-to-run noise, NEW 40% slower. The interval holds
    # "no change", so today's gate said "passed with warnings", exit 0.
    base = repeats_of(tmp_path / "b", (90.0, 120.0))
    new = repeats_of(tmp_path / "n", (54.0, 72.0))
    result = compare.compare_folders(base, new)
    row = result.rows[result.rows["measure"] == "throughput"].iloc[0]
    assert row["ci_low"] < 0 < row["ci_high"]
    assert row["outcome"] == compare.INCONCLUSIVE
    # MDE = (t_0.975,df + t_0.8,df)·se on the logs; equal spreads: df = 2, se = |ln(120/90)|/√2
    se = math.log(120 / 90) / math.sqrt(2)
    mde_log = (stats.t_quantile_one_sided(0.975, 2)
               + stats.t_quantile_one_sided(0.8, 2)) * se
    assert row["mde"] == pytest.approx(100 * (1 - math.exp(-mde_log)))
    assert row["mde"] > 7 and row["repeats_needed"] > 2
    assert result.exit_code == compare.EXIT_INCONCLUSIVE == 4
    code, out, _ = cli("compare", base, new)
    assert code == 4
    assert "passed" not in out
    assert "INCONCLUSIVE" in out
    assert f"{int(row['repeats_needed'])} repeats per side" in out


def test_five_quiet_repeats_fail_a_forty_percent_slowdown_and_state_their_power(tmp_path):
    quiet = (100.0, 101.0, 99.0, 100.5, 99.5)  # about 1% noise
    base = repeats_of(tmp_path / "b", quiet)
    new = repeats_of(tmp_path / "n", [0.6 * t for t in quiet])
    result = compare.compare_folders(base, new)
    row = result.rows[result.rows["measure"] == "throughput"].iloc[0]
    assert row["outcome"] == compare.FAIL and result.exit_code == 1
    assert 0 < row["mde"] < 7 and math.isnan(row["repeats_needed"])
    code, out, _ = cli("compare", base, new)
    assert code == 1 and "FAILED" in out
    assert "MDE" in out and f"{row['mde']:.1f}%" in out


def test_enough_repeats_at_low_noise_pass(baseline):
    # the sweep's 2% spread at 3 repeats detects a 7% drop: a pass is a pass
    result = compare.compare_folders(baseline, copy_of(baseline))
    thr = result.rows[result.rows["measure"] == "throughput"]
    assert (thr["mde"] < 7).all() and result.exit_code == 0


def test_min_detectable_and_repeats_needed_agree():
    var = 0.04  # per-repeat variance of the log throughput on each side
    n = int(stats.repeats_needed(var, var, 0.05, 0.95))
    assert stats.min_detectable(var, var, n, n, 0.95) <= 0.05
    assert stats.min_detectable(var, var, n - 1, n - 1, 0.95) > 0.05
    # paired: variance of the differences, df = n − 1
    paired = stats.min_detectable(0.01, 0.0, 4, 4, 0.95)
    assert paired == pytest.approx((stats.t_quantile_one_sided(0.975, 3)
                                    + stats.t_quantile_one_sided(0.8, 3)) * 0.05)


def test_environment_differences_are_listed(baseline):
    new = copy_of(baseline)

    def set_threads(value):
        def change(rec):
            rec["env"]["torch_threads"] = value
            rec["env"]["command"] = ["bench", "run", str(value)]  # always differs: not listed
        return change
    edit_records(baseline, set_threads(2))
    edit_records(new, set_threads(1))
    edit_records(new, slower(0.6))
    result = compare.compare_folders(baseline, new)
    assert result.env_changes == [{"field": "torch_threads", "baseline": "2", "new": "1",
                                   "cells": 12, "of": 12}]
    code, out, _ = cli("compare", baseline, new)
    assert code == 1
    assert "torch_threads: 2 → 1 (12 of 12 matched cells)" in out and "command" not in out


def test_unmatched_workload_names_the_field_that_differs(baseline, tmp_path):
    def resized(rec, size, fingerprint):
        rec = json.loads(json.dumps(rec))
        rec["cell"]["image_size"] = size
        rec["fingerprint"] = fingerprint
        rec["cell_id"] = rec["cell_id"] + f"-{size}"
        return rec
    edit_records(baseline, lambda rec: rec["cell"].update(image_size=64))
    recs = sweep("fp-unet")
    other = write_records(tmp_path / "other", [resized(r, 96, "fp-96") for r in recs])
    code, _, err = cli("compare", baseline, other)
    assert code == 2 and "no cell of NEW matches" in err and "image_size 64 vs 96" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    # only the dp cells were resized: the others are compared, the dp ones named
    part = write_records(tmp_path / "part", [resized(r, 96, "fp-96")
                                             if r["cell"]["strategy"] == "dp" else r
                                             for r in recs])
    result = compare.compare_folders(baseline, part)
    dp = sorted(r["cell_id"] for r in recs if r["cell"]["strategy"] == "dp")
    assert sorted(result.unmatched_why) == dp
    assert set(result.unmatched_why.values()) == {"image_size 64 vs 96"}
    code, out, _ = cli("compare", baseline, part)
    assert "image_size 64 vs 96" in out


def test_workload_fields_leave_out_exactly_the_execution_fields():
    from bench.analysis.gate_context import NOT_WORKLOAD
    from bench.config.cell import EXECUTION_FIELDS
    assert NOT_WORKLOAD == EXECUTION_FIELDS
