"""Time to a quality target, speedup at equal quality and the convergence check, on planted
curves whose answers are known."""
import math

import numpy as np
import pytest
from scipy import stats

from bench import analysis
from bench.analysis import convergence
from bench.analysis.compare import EQUAL_QUALITY_COLUMNS
from bench.errors import BadInput
from bench.record.curve import METRICS, metric, reaches, time_to_target
from test_analysis import frame_of, record, row, sweep

STEPS, EVERY, BATCH = 96, 8, 8


def line(rate, step_time, start=20.0, batch=BATCH, steps=STEPS, name="psnr"):
    """A planted curve: `name` = start + rate · step, evaluated every EVERY steps; linear, so
    the interpolated time to any target inside it is exact."""
    return [{"step": s, "samples": s * batch, "timed_s": s * step_time,
             "seconds": s * step_time, name: start + rate * s} for s in range(0, steps + 1, EVERY)]


def with_curve(rec, points, target=None, name="psnr", global_batch=BATCH):
    rec["validation"] = {"metric": name, "metrics": [name], "every": EVERY, "curve": points}
    rec["cell"]["global_batch"] = global_batch
    if target is not None:
        rec["cell"][f"target_{name}"] = target
    return rec


def cell(strategy, devices, precision, repeat, points, **kw):
    return with_curve(record("unet", strategy, devices, precision, repeat), points, **kw)


# --- bench.record.curve -------------------------------------------------------------------------

CURVE = [{"step": 0, "samples": 0, "seconds": 0.0, "psnr": 10.0, "lpips": 0.6},
         {"step": 8, "samples": 64, "seconds": 1.0, "psnr": 20.0, "lpips": 0.4},
         {"step": 16, "samples": 128, "seconds": 2.5, "psnr": 30.0, "lpips": 0.2}]


def test_time_to_target_interpolates_seconds_samples_and_steps_between_points():
    t = time_to_target(CURVE, "psnr", 26.0)  # 60% of the way from 20 to 30 dB
    assert t["reached"] is True and t["reason"] is None
    assert (t["steps"], t["seconds"], t["samples"]) == pytest.approx((12.8, 1.9, 102.4),
                                                                     rel=1e-12)
    assert (t["metric"], t["target"]) == ("psnr", 26.0)


def test_a_target_hit_at_a_point_takes_that_points_figures():
    t = time_to_target(CURVE, "psnr", 20.0)
    assert (t["steps"], t["seconds"], t["samples"]) == (8.0, 1.0, 64.0)
    first = time_to_target(CURVE, "psnr", 5.0)  # reached by the initial weights
    assert first["reached"] and (first["steps"], first["seconds"], first["samples"]) == (0, 0, 0)


def test_lower_is_better_inverts_the_target_comparison():
    assert reaches(0.25, 0.3, "lpips") and not reaches(0.35, 0.3, "lpips")
    assert reaches(0.35, 0.3, "psnr") and not reaches(0.25, 0.3, "psnr")
    t = time_to_target(CURVE, "lpips", 0.3)  # halfway from 0.4 to 0.2
    assert (t["steps"], t["seconds"], t["samples"]) == pytest.approx((12.0, 1.75, 96.0),
                                                                     rel=1e-12)
    missed = time_to_target(CURVE, "lpips", 0.1)
    assert missed["reason"] == "not reached within 16 steps (best 0.2000)"  # best = lowest


def test_a_never_reaching_curve_says_how_far_it_got():
    t = time_to_target(CURVE, "psnr", 31.0)
    assert t["reached"] is False and t["seconds"] is None and t["steps"] is None
    assert t["reason"] == "not reached within 16 steps (best 30.00 dB)"


def test_non_finite_values_never_reach_and_are_not_interpolated_across():
    nan = [dict(CURVE[0]), {**CURVE[1], "psnr": math.nan}, dict(CURVE[2])]
    assert not reaches(math.nan, 0.0, "psnr") and not reaches(None, 0.0, "psnr")
    t = time_to_target(nan, "psnr", 15.0)  # the NaN point gives no line: the next point counts
    assert (t["steps"], t["seconds"]) == (16.0, 2.5)
    assert time_to_target(list(reversed(CURVE)), "psnr", 26.0)["steps"] == pytest.approx(12.8)


def test_metric_table_and_bad_names():
    assert [m.name for m in METRICS.values()] == list(analysis.QUALITY_METRICS)
    assert analysis.HIGHER_IS_BETTER == {"psnr": True, "ssim": True, "lpips": False}
    assert analysis.Margins().of("psnr") == metric("psnr").tolerance == 0.1
    with pytest.raises(BadInput, match="'mse' is unknown"):
        metric("mse")
    with pytest.raises(BadInput, match="target nan is invalid"):
        time_to_target(CURVE, "psnr", math.nan)


# --- targets ------------------------------------------------------------------------------------

def finals_frame(finals=(30.0, 30.2, 30.4), name="psnr", target=None):
    """Baseline repeats whose curves end at `finals`, and a ddp ×2 cell."""
    recs = [cell("single", 1, "fp32", r, line((f - 20.0) / STEPS, 0.1, name=name), name=name,
                 target=target) for r, f in enumerate(finals)]
    recs.append(cell("ddp", 2, "fp32", 0, line(0.1, 0.05, name=name), name=name))
    return frame_of(recs)


def only(targets: dict) -> dict:
    assert len(targets) == 1
    return next(iter(targets.values()))


def test_default_target_is_the_baselines_worst_final_value_less_the_tolerance():
    """The lowest repeat's final value, so that every baseline repeat reaches the target (the
    mean less 0.1 dB would lie above the 30.0 dB repeat's whole curve)."""
    t = only(analysis.targets(finals_frame()))
    assert t["target"] == pytest.approx(29.9) and t["source"] == "baseline"
    assert t["text"] == ("29.90 dB (single ×1 fp32's lowest of 3 repeats' final validation "
                         "PSNR 30.00 dB − 0.1 dB)")
    wider = only(analysis.targets(finals_frame(), tolerance=0.5))
    assert wider["target"] == pytest.approx(29.5) and "− 0.5 dB" in wider["text"]
    table = analysis.equal_quality(finals_frame())
    base = table[table["is_baseline"]].iloc[0]
    assert base["reached_n"] == base["n"] == 3


def test_default_lpips_target_lies_above_the_baselines_worst_final_value():
    t = only(analysis.targets(finals_frame((0.2, 0.22, 0.24), "lpips"), metric="lpips"))
    assert t["target"] == pytest.approx(0.245) and "+ 0.005" in t["text"]
    assert "highest of 3 repeats'" in t["text"]


def test_the_spec_target_wins_and_a_given_one_wins_over_both():
    spec = only(analysis.targets(finals_frame(target=27.5)))
    assert (spec["target"], spec["source"]) == (27.5, "spec") and "spec" in spec["text"]
    given = only(analysis.targets(finals_frame(target=27.5), target=25.0))
    assert (given["target"], given["source"], given["text"]) == (25.0, "given",
                                                                 "25.00 dB (given)")


def test_no_baseline_curve_means_no_target_and_says_so():
    t = only(analysis.targets(frame_of([cell("ddp", 2, "fp32", 0, line(0.1, 0.05))])))
    assert t["target"] is None and "no single ×1 fp32 cell" in t["text"]


# --- equal quality ------------------------------------------------------------------------------

RATES = (0.100, 0.101, 0.099)          # dB per step, per repeat (seed)
BASE_STEP = (0.100, 0.102, 0.098)      # seconds per step, per repeat
DDP_STEP = (0.051, 0.050, 0.049)
TARGET = 26.0                           # reached near step 60, between two evaluations


def planted():
    """single fp32 (baseline); ddp ×2 fp32: half the seconds per step, the same curve per
    step; ddp ×2 bf16: 20% more samples to the target; dp ×2: never reaches it; fsdp ×2: one
    repeat of three does not."""
    recs = []
    for r, (k, b, d) in enumerate(zip(RATES, BASE_STEP, DDP_STEP)):
        recs += [cell("single", 1, "fp32", r, line(k, b), target=TARGET),
                 cell("ddp", 2, "fp32", r, line(k, d), target=TARGET),
                 cell("ddp", 2, "bf16", r, line(k / 1.2, 0.03), target=TARGET),
                 cell("dp", 2, "fp32", r, line(k / 2, 0.08), target=TARGET),
                 cell("fsdp", 2, "fp32", r, line(k if r < 2 else 0.05, 0.06), target=TARGET)]
    return frame_of(recs)


def seconds_to(rate, step_time):
    return (TARGET - 20.0) / rate * step_time


def test_speedup_at_equal_quality_recovers_the_planted_ratio_with_its_interval():
    table = analysis.equal_quality(planted())
    ddp = row(table, **{"cell.strategy": "ddp", "cell.precision": "fp32"})
    base = [seconds_to(k, s) for k, s in zip(RATES, BASE_STEP)]
    mine = [seconds_to(k, s) for k, s in zip(RATES, DDP_STEP)]
    expected = math.exp(np.mean(np.log(base)) - np.mean(np.log(mine)))
    assert ddp["speedup_equal_quality"] == pytest.approx(expected, rel=1e-9)
    assert ddp["speedup_equal_quality"] == pytest.approx(2.0, abs=0.02)
    assert ddp["speedup_equal_quality_ci_low"] < 2.0 < ddp["speedup_equal_quality_ci_high"]
    assert ddp["seconds_to_target_mean"] == pytest.approx(np.mean(mine), rel=1e-9)
    assert ddp["steps_to_target_mean"] == pytest.approx(np.mean([6 / k for k in RATES]))
    assert ddp["samples_to_target_mean"] == pytest.approx(BATCH * np.mean([6 / k for k in RATES]))
    assert (ddp["n"], ddp["reached_n"], ddp["target"], ddp["target_source"]) == \
        (3, 3, TARGET, "spec")
    assert not ddp["convergence_worse"] and ddp["convergence_p_value"] == pytest.approx(0.5)
    assert ddp["convergence_note"] == ""
    single = row(table, **{"cell.strategy": "single"})
    assert single["is_baseline"] and single["speedup_equal_quality"] == pytest.approx(1.0)
    assert math.isnan(single["speedup_equal_quality_ci_low"])
    assert table.attrs == {"metric": "psnr", "alpha": 0.05, "confidence": 0.95}


def test_a_configuration_needing_more_samples_is_flagged_with_the_figure():
    bf16 = row(analysis.equal_quality(planted()), **{"cell.precision": "bf16"})
    assert bf16["samples_vs_baseline_pct"] == pytest.approx(20.0)
    assert bf16["convergence_worse"] and bf16["convergence_p_value"] < 0.05
    # Repeat r of both shares its seed: the test pairs them (the seed's own learning rate,
    # RATES, drops out), a paired one-sided t on samples-to-target.
    base = [BATCH * 6 / k for k in RATES]
    p = stats.ttest_rel([s * 1.2 for s in base], base, alternative="greater").pvalue
    assert bf16["convergence_p_value"] == pytest.approx(p, rel=1e-9)
    assert bf16["convergence_test"] == "one-sided paired t (n=3)"
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
    assert bf16["convergence_note"] == ("ddp ×2 bf16 needs 20.0% more samples to reach 26.00 dB "
                                        f"(one-sided paired t-test, {shown})")
    # faster in seconds all the same: the flag is about samples, the speedup about time
    assert bf16["speedup_equal_quality"] > 1


def test_a_never_reaching_configuration_is_shown_never_dropped():
    table = analysis.equal_quality(planted())
    assert len(table) == 5
    dp = row(table, **{"cell.strategy": "dp"})
    assert (dp["n"], dp["reached_n"]) == (3, 0)
    assert math.isnan(dp["speedup_equal_quality"]) and math.isnan(dp["seconds_to_target_mean"])
    best = 20.0 + max(RATES) / 2 * STEPS
    assert dp["convergence_note"] == \
        f"not reached within 96 steps in 3 of 3 repeats (best {best:.2f} dB)"


def test_one_repeat_missing_the_target_leaves_no_mean_of_the_lucky_ones():
    fsdp = row(analysis.equal_quality(planted()), **{"cell.strategy": "fsdp"})
    assert (fsdp["n"], fsdp["reached_n"]) == (3, 2)
    assert math.isnan(fsdp["speedup_equal_quality"]) and math.isnan(fsdp["samples_to_target_mean"])
    assert fsdp["convergence_note"] == \
        "not reached within 96 steps in 1 of 3 repeats (best 24.80 dB)"


def test_weak_scaling_compares_samples_not_steps():
    # ×2 devices at twice the global batch reach the target in half the steps with the same
    # samples: it needs no more samples, and its time is its own
    recs = []
    for r, k in enumerate(RATES):
        recs.append(cell("single", 1, "fp32", r, line(k, 0.1), target=TARGET))
        weak = cell("ddp", 2, "fp32", r, line(2 * k, 0.1, batch=2 * BATCH), target=TARGET,
                    global_batch=2 * BATCH)
        weak["cell"]["scaling"] = "weak"
        recs.append(weak)
    ddp = row(analysis.equal_quality(frame_of(recs)), **{"cell.strategy": "ddp"})
    assert ddp["samples_vs_baseline_pct"] == pytest.approx(0.0, abs=1e-9)
    assert not ddp["convergence_worse"]
    assert ddp["speedup_equal_quality"] == pytest.approx(2.0)


def test_one_repeat_a_side_is_not_tested_and_says_so_only_when_it_matters():
    recs = [cell("single", 1, "fp32", 0, line(0.1, 0.1), target=TARGET),
            cell("ddp", 2, "bf16", 0, line(0.08, 0.05), target=TARGET),
            cell("ddp", 2, "fp32", 0, line(0.1, 0.05), target=TARGET)]
    table = analysis.equal_quality(frame_of(recs))
    bf16 = row(table, **{"cell.precision": "bf16"})
    assert not bf16["convergence_worse"] and math.isnan(bf16["convergence_p_value"])
    assert bf16["convergence_note"] == ("ddp ×2 bf16 needs 25.0% more samples to reach 26.00 dB "
                                        "(untested: fewer than 2 repeats on a side)")
    assert row(table, **{"cell.precision": "fp32", "cell.strategy": "ddp"})[
        "convergence_note"] == ""


def test_equal_quality_in_lpips_terms():
    recs = [cell("single", 1, "fp32", r, line(-0.004, 0.1, start=0.6, name="lpips"),
                 name="lpips") for r in range(2)]
    recs += [cell("ddp", 2, "fp32", r, line(-0.004, 0.05, start=0.6, name="lpips"),
                  name="lpips") for r in range(2)]
    table = analysis.equal_quality(frame_of(recs), metric="lpips")
    assert table.attrs["metric"] == "lpips"
    ddp = row(table, **{"cell.strategy": "ddp"})
    assert ddp["target"] == pytest.approx(0.6 - 0.004 * STEPS + 0.005)
    assert ddp["reached_n"] == 2 and ddp["speedup_equal_quality"] == pytest.approx(2.0)
    # PSNR is not in these curves: no row, rather than a row of points without values
    assert analysis.equal_quality(frame_of(recs)).empty


# --- the convergence test's error rates ---------------------------------------------------------

DRAWS = 2000


def flagged_share(shift: float, seed: int = 24) -> float:
    """Share of DRAWS simulated 3-vs-3 comparisons of samples-to-target flagged at ALPHA."""
    rng = np.random.default_rng(seed)
    flags = [analysis.convergence_test(rng.normal(1000, 50, 3),
                                       rng.normal(1000 + shift, 50, 3))["p_value"]
             < analysis.ALPHA for _ in range(DRAWS)]
    return float(np.mean(flags))


def flagged_paired_share(shift: float, seed: int = 25, paired: bool = True) -> float:
    """The same where each repeat's seed moves both sides alike (sd 200 samples, four times
    the noise of a run), as a shared init and batch order do; the test told the repeats
    (paired) or not (Welch)."""
    rng = np.random.default_rng(seed)
    repeats = ([0, 1, 2], [0, 1, 2]) if paired else ()
    flags = []
    for _ in range(DRAWS):
        by_seed = rng.normal(1000, 200, 3)
        test = analysis.convergence_test(by_seed + rng.normal(0, 50, 3),
                                         by_seed + shift + rng.normal(0, 50, 3), *repeats)
        flags.append(test["p_value"] < analysis.ALPHA)
    return float(np.mean(flags))


def test_false_positive_rate_on_identical_configurations_is_at_most_alpha():
    # Monte Carlo allowance: 3 standard errors of a share of DRAWS at ALPHA
    allowance = 3 * math.sqrt(analysis.ALPHA * (1 - analysis.ALPHA) / DRAWS)
    assert flagged_share(0.0) <= analysis.ALPHA + allowance
    assert flagged_paired_share(0.0) <= analysis.ALPHA + allowance


def test_pairing_by_seed_sees_through_the_seeds_spread():
    """A 15% worse configuration hidden under a seed spread four times the run noise: the
    paired test finds it in most draws, Welch (unpaired) in few."""
    paired, welch = flagged_paired_share(150.0), flagged_paired_share(150.0, paired=False)
    assert paired > 0.5 and welch < paired / 2, (paired, welch)


def test_a_large_true_difference_is_flagged_and_a_faster_one_never():
    assert flagged_share(250.0) > 0.9     # 5 standard deviations more samples
    assert flagged_share(-250.0) == 0.0   # one-sided: needing fewer samples is never "worse"


def test_convergence_test_is_scipys_one_sided_welch():
    a, b = [100.0, 104.0, 98.0], [110.0, 107.0, 115.0, 109.0]
    p = stats.ttest_ind(b, a, equal_var=False, alternative="greater").pvalue
    got = analysis.convergence_test(a, b)
    assert got["p_value"] == pytest.approx(p, rel=1e-9)
    assert got["test"] == "one-sided Welch t (n=3 vs 4)"
    assert analysis.convergence_test(b, a)["p_value"] == pytest.approx(1 - p, rel=1e-9)
    assert math.isnan(analysis.convergence_test([1.0], a)["p_value"])


# --- in the comparison --------------------------------------------------------------------------

def test_compare_configs_carries_equal_quality_beside_the_fixed_step_speedup():
    comp = analysis.compare_configs(planted())
    ddp = row(comp.summary, **{"cell.strategy": "ddp", "cell.precision": "fp32"})
    eq = row(comp.convergence, **{"cell.strategy": "ddp", "cell.precision": "fp32"})
    for col in EQUAL_QUALITY_COLUMNS:
        assert ddp[col] == eq[col]
    assert "speedup_throughput" in comp.summary
    assert "not reached" in row(comp.summary, **{"cell.strategy": "dp"})["convergence_note"]
    assert len(comp.curves) == 15 * (STEPS // EVERY + 1)
    assert list(comp.curves.columns) == convergence.CURVE_COLUMNS
    first = comp.curves.iloc[0]
    assert (first["step"], first["value"]) == (0, 20.0)


def test_records_without_curves_still_compare():
    comp = analysis.compare_configs(frame_of(sweep()))
    assert comp.convergence.empty and comp.curves.empty
    assert comp.summary["speedup_equal_quality"].isna().all()
    assert (comp.summary["convergence_note"] == "").all()
    assert set(EQUAL_QUALITY_COLUMNS) <= set(comp.summary.columns)
    assert analysis.compare_configs(frame_of([])).convergence.empty


def test_configurations_without_a_curve_get_blanks_beside_those_with_one():
    recs = sweep()
    for rec in recs:
        if rec["cell"]["strategy"] in ("single", "ddp") and rec["cell"]["precision"] == "fp32":
            with_curve(rec, line(0.1, 0.05 if rec["cell"]["strategy"] == "ddp" else 0.1))
    summary = analysis.compare_configs(frame_of(recs)).summary
    ddp = row(summary, **{"cell.strategy": "ddp", "cell.precision": "fp32"})
    assert ddp["speedup_equal_quality"] == pytest.approx(2.0)
    assert ddp["target"] == pytest.approx(20.0 + 0.1 * STEPS - 0.1)
    dp = row(summary, **{"cell.strategy": "dp"})
    assert math.isnan(dp["speedup_equal_quality"]) and dp["convergence_note"] == ""


def test_bad_targets_and_tolerances_are_bad_input():
    with pytest.raises(BadInput, match="PSNR target nan is invalid"):
        analysis.equal_quality(finals_frame(), target=math.nan)
    with pytest.raises(BadInput, match="PSNR tolerance -0.1 is invalid"):
        analysis.targets(finals_frame(), tolerance=-0.1)
    with pytest.raises(BadInput, match="'mse' is unknown"):
        analysis.equal_quality(finals_frame(), metric="mse")


def test_the_equal_quality_speedup_pairs_repeats_by_seed():
    """Seeds 0-2 learn at very different rates (10, 20, 40 s to target on the baseline); the
    configuration takes 0.5× of each, ± 2%. Paired by seed the interval hugs 2×; unpaired
    (repeats that do not pair up) the seeds' spread swamps it."""
    base, mine = [10.0, 20.0, 40.0], [5.1, 9.8, 20.2]
    paired = stats_ratio(mine, base, [0, 1, 2], [0, 1, 2])
    welch = stats_ratio(mine, base, [0, 1, 2], [3, 4, 5])
    assert paired["test"] == "paired t on log (n=3)" and welch["test"].startswith("Welch t on log")
    assert paired["estimate"] == pytest.approx(welch["estimate"])
    assert 1.8 < paired["ci_low"] < 2.0 < paired["ci_high"] < 2.2
    assert welch["ci_low"] < 0.5 and welch["ci_high"] > 8


def stats_ratio(a, b, ra, rb):
    from bench.analysis.stats import ratio
    return ratio(a, b, repeats_a=ra, repeats_b=rb)


def test_a_diverged_repeat_counts_as_one_that_never_reached_the_target():
    """A record that diverged is left out of every other table (status is not ok), but here
    leaving it out would keep the lucky seeds: ddp ×2 bf16's repeat 2 diverged after reaching
    the target, and the configuration has no time to target, not 2 of 2."""
    recs = []
    for r, (k, b) in enumerate(zip(RATES, BASE_STEP)):
        recs += [cell("single", 1, "fp32", r, line(k, b), target=TARGET),
                 cell("ddp", 2, "bf16", r, line(k, b / 2), target=TARGET)]
    recs[-1]["status"] = "diverged"
    bf16 = row(analysis.equal_quality(frame_of(recs)), **{"cell.precision": "bf16"})
    assert (bf16["n"], bf16["reached_n"]) == (3, 2)
    assert math.isnan(bf16["speedup_equal_quality"])
    assert bf16["convergence_note"] == "diverged in 1 of 3 repeats: no time to target"
    # A diverged baseline repeat sets no default target: the worst of the others does.
    base = [cell("single", 1, "fp32", r, line(k, b)) for r, (k, b) in
            enumerate(zip(RATES, BASE_STEP))]
    finals = [20.0 + k * STEPS for k in RATES]
    worst = int(np.argmin(finals))
    base[worst]["status"] = "diverged"
    t = only(analysis.targets(frame_of(base)))
    others = [f for i, f in enumerate(finals) if i != worst]
    assert t["target"] == pytest.approx(min(others) - 0.1)
