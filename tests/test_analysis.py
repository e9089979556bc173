"""Comparison statistics on hand-made results tables with known answers."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import analysis
from bench.record import store
from bench.errors import BadInput

IMAGES = 80  # timed images of every hand-made cell: train time = IMAGES / throughput


def record(model="unet", strategy="single", devices=1, precision="fp32", repeat=0,
           throughput=100.0, psnr=30.0, ssim=0.80, lpips=0.20, fingerprint="fpA",
           sigmas=(0.1,), zero=None, scaling="strong", status="ok", gpu=False,
           device_type="cpu", cell_id=None, warmup=2) -> dict:
    """A record shaped like bench.record.builder.trained_record makes it (only the fields analysis
    reads). `psnr`/`ssim`/`lpips` are at the first σ; each further σ is 2 dB / 0.05 worse."""
    quality = []
    for k, sigma in enumerate(sigmas):
        quality.append({"sigma": sigma, "psnr": psnr - 2 * k, "ssim": ssim - 0.05 * k,
                        "lpips": lpips + 0.05 * k, "noisy_psnr": 20.0 - 3 * k,
                        "noisy_ssim": 0.2 - 0.05 * k, "noisy_lpips": 0.8 + 0.05 * k})
    train_time = IMAGES / throughput
    zero_tag = f"-z{zero}" if zero is not None else ""
    return {
        "schema_version": 1,
        "cell_id": cell_id or f"{model}-{strategy}{devices}-{precision}{zero_tag}-r{repeat}-"
                              f"{fingerprint[:4]}",
        "cell": {"model": model, "strategy": strategy, "devices": devices,
                 "precision": precision, "zero_stage": zero, "repeat": repeat,
                 "scaling": scaling, "noise": list(sigmas), "device_type": device_type,
                 "seed": 0, "warmup": warmup, "steps": warmup + 10, "global_batch": 8},
        "fingerprint": fingerprint,
        "status": status,
        "timing": {"train_time_s": train_time, "throughput_img_s": throughput,
                   "time_to_train_s": train_time + 5.0, "warmup_steps": warmup,
                   "timed_steps": 10, "step_time_median_s": train_time / 10,
                   "data_wait_frac": 0.01,
                   "clock": "cuda-events" if gpu else "host-monotonic"},
        "quality": quality if status == "ok" else [],
        "telemetry": {"cpu_pct_mean": 95.0 * devices, "timed_start_s": 100.0,
                      "gpu_busy_pct_mean": 90.0 if gpu else None,
                      "energy_per_img_j": 2.0 / devices if gpu else None,
                      "power_mean_w": 250.0 * devices if gpu else None,
                      "input_bound": False},
        "runtime": {"world_size": devices, "batchnorm_per_rank_stats": False},
        "env": {"hostname": "node1", "torch": "2.14.1", "gpus": ["H200"] * devices if gpu else [],
                "cpu": "AMD EPYC", "git_commit": "abc123"},
        "notes": [],
        "error": None if status == "ok" else {"message": "boom: rank 1 died"},
    }


def frame_of(records) -> pd.DataFrame:
    return pd.DataFrame([store.flatten(r) for r in records])


def row(table, **where):
    sel = table
    for col, value in where.items():
        sel = sel[sel[col] == value]
    assert len(sel) == 1, (where, sel)
    return sel.iloc[0]


# --- statistics against textbook values ---------------------------------------------------------

# Student's sleep data (Cushny & Peebles), R's `t.test(extra ~ group, data = sleep)`.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_welch_matches_r_on_the_sleep_data():
    d = analysis.welch_test(SLEEP_1, SLEEP_2)
    # R: t = -1.8608, df = 17.776, p-value = 0.07939, 95% CI of group1 - group2
    # [-3.3654832, 0.2054832]; our difference is group2 - group1.
    assert d["estimate"] == pytest.approx(1.58)
    assert d["df"] == pytest.approx(17.776, abs=1e-3)
    assert d["p_value"] == pytest.approx(0.07939, abs=1e-5)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((-0.2054832, 3.3654832), abs=1e-6)
    assert d["test"].startswith("Welch t")
    ref = stats.ttest_ind(SLEEP_2, SLEEP_1, equal_var=False)
    assert d["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)


def test_paired_matches_r_on_the_sleep_data():
    d = analysis.paired_test(SLEEP_1, SLEEP_2)
    # R: paired t = -4.0621, df = 9, p-value = 0.002833, CI [-2.4598858, -0.7001142]
    assert d["estimate"] == pytest.approx(1.58)
    assert d["p_value"] == pytest.approx(0.002833, abs=1e-6)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.7001142, 2.4598858), abs=1e-6)
    assert d["test"] == "paired t (n=10)"
    assert d["p_value"] == pytest.approx(stats.ttest_rel(SLEEP_2, SLEEP_1).pvalue, rel=1e-10)


def test_mean_ci_is_a_t_interval_and_needs_two_values():
    m = analysis.mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) · s / √n
    assert (m["mean"], m["ci_low"], m["ci_high"]) == pytest.approx((3, 3 - half, 3 + half))
    assert m["cv"] == pytest.approx(math.sqrt(2.5) / 3)
    one = analysis.mean_ci([7.0])
    assert one["mean"] == 7.0 and math.isnan(one["ci_low"]) and math.isnan(one["cv"])
    assert analysis.mean_ci([1, 2, 3], confidence=0.99)["ci_high"] > m["ci_high"] - 1


def test_difference_pairs_by_repeat_only_when_repeats_pair_up():
    paired = analysis.difference([1, 2, 3], [3.1, 1.1, 2.1], [0, 1, 2], [2, 0, 1])
    # repeat r pairs: (1, 1.1), (2, 2.1), (3, 3.1): every difference is +0.1
    assert paired["test"].startswith("paired") and paired["estimate"] == pytest.approx(0.1)
    welch = analysis.difference([1, 2, 3], [1.1, 2.1], [0, 1, 2], [0, 1])
    assert welch["test"].startswith("Welch")


def test_ratio_is_geometric_mean_ratio_with_log_welch_interval():
    a, b = [98.0, 100.0, 102.0], [150.0, 160.0, 155.0]
    r = analysis.ratio(a, b)
    expected = math.exp(np.mean(np.log(b)) - np.mean(np.log(a)))
    assert r["estimate"] == pytest.approx(expected)
    ci = stats.ttest_ind(np.log(b), np.log(a), equal_var=False).confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((math.exp(ci.low), math.exp(ci.high)))


@pytest.mark.parametrize("ci,margin,higher,expected", [
    ((-0.05, 0.08), 0.1, True, "equivalent"),
    ((-0.5, -0.2), 0.1, True, "worse"),
    ((-0.5, -0.2), 0.1, False, "better"),      # LPIPS: lower is better
    ((0.2, 0.5), 0.1, True, "better"),
    ((0.002, 0.009), 0.005, False, "worse"),   # LPIPS rose beyond its margin
    ((-0.3, 0.2), 0.1, True, analysis.INCONCLUSIVE),
    ((math.nan, math.nan), 0.1, True, analysis.INCONCLUSIVE),
    ((-0.04, -0.01), 0.1, True, "equivalent"),  # significant, but within the margin
])
def test_verdicts(ci, margin, higher, expected):
    assert analysis.verdict(*ci, margin, higher) == expected


# --- tables -------------------------------------------------------------------------------------

def sweep(fingerprint="fpA", model="unet", base=(98.0, 100.0, 102.0), scale=None,
          psnr=(30.0, 30.2, 30.4), **kw):
    """single fp32, dp ×2, ddp ×2 fp32 and bf16; three repeats each."""
    scale = scale or {("dp", "fp32"): 0.9, ("ddp", "fp32"): 1.8, ("ddp", "bf16"): 2.7}
    recs = []
    for r in range(3):
        recs.append(record(model, "single", 1, "fp32", r, base[r], psnr[r],
                           fingerprint=fingerprint, **kw))
        for (strategy, precision), factor in scale.items():
            shift = {"fp32": 0.01 * (r + 1), "bf16": -0.5}[precision]
            recs.append(record(model, strategy, 2, precision, r, base[r] * factor,
                               psnr[r] + shift, fingerprint=fingerprint, **kw))
    return recs


def test_speedup_efficiency_and_time_saving_have_known_values():
    table = analysis.speedups(frame_of(sweep()))
    base = row(table, **{"cell.strategy": "single"})
    assert base["is_baseline"] and base["speedup_throughput"] == pytest.approx(1.0)
    ddp = row(table, **{"cell.strategy": "ddp", "cell.precision": "fp32"})
    assert ddp["speedup_throughput"] == pytest.approx(1.8)
    assert ddp["speedup_time"] == pytest.approx(1.8)  # train time = images / throughput
    assert ddp["efficiency"] == pytest.approx(0.9)
    assert ddp["efficiency_kind"] == "strong"
    assert ddp["time_saving_pct"] == pytest.approx(100 * (1 - 1 / 1.8))
    # identical relative spread on both sides: the log-scale interval is symmetric around 1.8
    assert ddp["speedup_ci_low"] < 1.8 < ddp["speedup_ci_high"]
    assert ddp["speedup_ci_low"] * ddp["speedup_ci_high"] == pytest.approx(1.8 ** 2)
    assert ddp["speedup_p_value"] < 1e-4
    dp = row(table, **{"cell.strategy": "dp"})
    assert dp["speedup_throughput"] == pytest.approx(0.9) and dp["efficiency"] == \
        pytest.approx(0.45)
    assert base["throughput_median"] == 100.0 and base["n"] == 3
    assert base["throughput_cv"] == pytest.approx(0.02)


def test_throughput_statistics_across_repeats():
    table = analysis.config_stats(frame_of(sweep()))
    base = row(table, **{"cell.strategy": "single"})
    ci = analysis.mean_ci([98.0, 100.0, 102.0])
    assert (base["throughput_mean"], base["throughput_ci_low"], base["throughput_ci_high"]) == \
        pytest.approx((100.0, ci["ci_low"], ci["ci_high"]))
    assert base["repeats"] == [0, 1, 2]
    assert base["warmup_steps"] == "2" and base["clock"] == "host-monotonic"


def test_weak_scaling_is_labelled_weak():
    table = analysis.speedups(frame_of(sweep(scaling="weak")))
    assert set(table["efficiency_kind"]) == {"weak"}


def test_two_fingerprints_never_mix():
    # Same model, two workloads: B's baseline is 10× slower. A ddp cell of B compared against
    # A's baseline would read 0.18×; against its own it reads 1.8×.
    recs = sweep("fpA") + sweep("fpB", base=(9.8, 10.0, 10.2)) + \
        [record("unet", "ddp", 2, "fp32", 0, 50.0, fingerprint="fpC")]  # no baseline at all
    table = analysis.speedups(frame_of(recs))
    for fp in ("fpA", "fpB"):
        ddp = row(table, fingerprint=fp, **{"cell.strategy": "ddp", "cell.precision": "fp32"})
        assert ddp["speedup_throughput"] == pytest.approx(1.8)
        assert ddp["n"] == 3
    orphan = row(table, fingerprint="fpC")
    assert math.isnan(orphan["speedup_throughput"]) and not orphan["is_baseline"]
    q = analysis.quality_deltas(frame_of(recs))
    assert row(q, fingerprint="fpC", metric="psnr")["verdict"] == "no baseline"
    notes = analysis.compare_configs(frame_of(recs)).notes
    assert any("fpC" in n and "no single ×1 fp32 baseline" in n for n in notes)


def test_quality_deltas_paired_by_repeat_are_equivalent():
    # ddp fp32 = baseline + 0.01·(r+1) dB: paired differences 0.01, 0.02, 0.03 →
    # mean 0.02, interval 0.02 ± t(0.975,2)·0.01/√3 = [−0.0048, 0.0448] ⊂ ±0.1 → equivalent.
    # Unpaired, the 0.2 dB spread between repeats would leave it inconclusive.
    q = analysis.quality_deltas(frame_of(sweep()))
    ddp = row(q, metric="psnr", **{"cell.strategy": "ddp", "cell.precision": "fp32"})
    half = 4.3026527 * 0.01 / math.sqrt(3)
    assert ddp["delta"] == pytest.approx(0.02)
    assert (ddp["delta_ci_low"], ddp["delta_ci_high"]) == pytest.approx((0.02 - half,
                                                                        0.02 + half))
    assert ddp["test"] == "paired t (n=3)" and ddp["verdict"] == "equivalent"
    assert ddp["p_value"] == pytest.approx(
        stats.ttest_rel([30.01, 30.22, 30.43], [30.0, 30.2, 30.4]).pvalue)
    welch = analysis.welch_test([30.0, 30.2, 30.4], [30.01, 30.22, 30.43])
    assert analysis.verdict(welch["ci_low"], welch["ci_high"], 0.1) == analysis.INCONCLUSIVE
    base = row(q, metric="psnr", **{"cell.strategy": "single"})
    assert base["verdict"] == "baseline" and base["mean"] == pytest.approx(30.2)
    assert base["noisy_mean"] == pytest.approx(20.0)


def test_amp_gain_and_accuracy_loss():
    amp = analysis.amp_gain(frame_of(sweep()))
    assert len(amp) == 1
    a = amp.iloc[0]
    assert (a["a_precision"], a["b_precision"], a["b_config"]) == ("fp32", "bf16", "ddp")
    assert a["gain"] == pytest.approx(1.5)          # 2.7 / 1.8
    # bf16 PSNR = baseline − 0.5; ddp fp32 = baseline + 0.01(r+1): paired Δ = −0.51 − 0.01r
    assert a["psnr_delta"] == pytest.approx(-0.52)
    assert a["psnr_verdict"] == "worse" and a["psnr_test"] == "paired t (n=3)"
    assert a["ssim_verdict"] == "equivalent"  # SSIM was left unchanged


def test_ddp_vs_dp():
    pairs = analysis.ddp_vs_dp(frame_of(sweep()))
    assert len(pairs) == 1 and pairs.iloc[0]["gain"] == pytest.approx(2.0)
    assert (pairs.iloc[0]["a_config"], pairs.iloc[0]["b_config"]) == ("dp", "ddp")


def test_variation_larger_than_effect_is_noted():
    # baseline CV 10%, claimed dp effect 3%
    recs = [record("unet", "single", 1, "fp32", r, t) for r, t in enumerate((90, 100, 110))]
    recs += [record("unet", "dp", 2, "fp32", r, t * 1.03) for r, t in enumerate((110, 90, 100))]
    table = analysis.speedups(frame_of(recs))
    note = row(table, **{"cell.strategy": "dp"})["variation_note"]
    assert "run-to-run variation (CV 10.0%)" in note and "(+3.0%)" in note
    assert any("run-to-run" in n for n in analysis.compare_configs(frame_of(recs)).notes)


def test_cells_scored_without_lpips_weights_are_named_in_a_note():
    # A cell evaluated where no AlexNet weights were found records LPIPS as null.
    recs = [record("unet", "single", 1, "fp32", r) for r in range(2)]
    recs += [record("unet", "ddp", 2, "fp32", r) for r in range(2)]
    for r in recs[2:]:
        r["quality"][0].update(lpips=None, noisy_lpips=None)
    notes = analysis.compare_configs(frame_of(recs)).notes
    assert [n for n in notes if n.startswith("LPIPS is missing for 2 cell(s)")], notes
    assert not [n for n in analysis.compare_configs(frame_of(recs[:2])).notes if "LPIPS" in n]


def test_configurable_baseline_and_sigmas():
    recs = sweep(sigmas=(0.1, 0.2))
    table = analysis.summary_table(frame_of(recs), baseline="ddp:2:fp32")
    ddp = row(table, **{"cell.strategy": "ddp", "cell.precision": "fp32"})
    assert ddp["is_baseline"] and ddp["speedup_throughput"] == pytest.approx(1.0)
    bf16 = row(table, **{"cell.strategy": "ddp", "cell.precision": "bf16"})
    assert bf16["speedup_throughput"] == pytest.approx(1.5)
    # Efficiency is relative to the baseline's 2 devices at the cell's own precision: the bf16
    # ×2 cell is its own reference (1.5× faster than fp32 is the precision's gain, not
    # scaling); the 1-device cell is a 0.5x scale-down running at 1/1.8 of the speed.
    assert bf16["efficiency"] == pytest.approx(1.0) and bf16["efficiency_vs"] == "ddp ×2 bf16"
    assert ddp["efficiency"] == pytest.approx(1.0)
    single = row(table, **{"cell.strategy": "single"})
    assert single["devices_vs_baseline"] == 0.5
    assert single["efficiency"] == pytest.approx((1 / 1.8) / 0.5)
    assert table.attrs["sigma"] == 0.1
    q = analysis.quality_deltas(frame_of(recs))
    assert sorted(set(q["sigma"])) == [0.1, 0.2]
    assert row(q, sigma=0.2, metric="psnr", **{"cell.strategy": "single"})["mean"] == \
        pytest.approx(28.2)


def test_failed_cells_are_listed_not_compared():
    recs = sweep() + [record("unet", "fsdp", 2, "fp32", 0, status="failed")]
    comp = analysis.compare_configs(frame_of(recs))
    assert "fsdp" not in set(comp.summary["cell.strategy"])
    assert list(comp.failures["status"]) == ["failed"]
    assert "rank 1 died" in comp.failures.iloc[0]["message"]


def test_gpu_energy_and_busy_are_carried():
    table = analysis.speedups(frame_of(sweep(gpu=True, device_type="cuda")))
    ddp = row(table, **{"cell.strategy": "ddp", "cell.precision": "fp32"})
    assert ddp["energy_per_img_j"] == pytest.approx(1.0) and ddp["gpu_busy_pct"] == 90.0
    assert ddp["clock"] == "cuda-events"


def test_bad_baseline_and_margins_are_bad_input():
    with pytest.raises(BadInput, match="'ddp:two'"):
        analysis.parse_baseline("ddp:two")
    with pytest.raises(BadInput, match="-1"):
        analysis.Margins(psnr=-1)
    with pytest.raises(BadInput, match="confidence 1.5"):
        analysis.compare_configs(frame_of(sweep()), confidence=1.5)
    assert analysis.parse_baseline("deepspeed:2:bf16:2") == analysis.Baseline("deepspeed", 2,
                                                                              "bf16", 2)


def test_empty_frame_gives_empty_tables():
    comp = analysis.compare_configs(pd.DataFrame())
    assert comp.summary.empty and comp.quality.empty and comp.notes == []


def test_privacy_audit_means_over_repeats_and_keeps_site_one_averages():
    # The audit is the two-site plug-in's report section; its table reads the raw frame.
    from bench.twosite.audit import audit_level
    from bench.twosite.report import privacy_table
    recs = []
    for r, psnr in enumerate((27.0, 29.0)):
        rec = record(repeat=r, psnr=psnr)
        levels = [audit_level(q) for q in rec["quality"]]
        if r == 1:  # a Site One evaluation also measured the averaged releases
            levels[0]["averaged"] = {"realisations": 2, "psnr": 23.0}
        rec["audit"] = {"measured_at": "run", "target": "clean",
                        "clean_data_left_site_one": True, "levels": levels}
        recs.append(rec)
    recs.append(record(strategy="ddp", devices=2))  # a record without an audit adds no row
    table = privacy_table(frame_of(recs))
    (row_,) = table.to_dict("records")
    assert row_["protection_psnr"] == 20.0 and row_["recovered_psnr"] == pytest.approx(28.0)
    assert row_["gap_psnr"] == pytest.approx(8.0) and row_["n"] == 2
    assert row_["averaged_psnr"] == 23.0  # mean over the repeats that measured it
    assert privacy_table(frame_of([record()])).empty


def test_report_sections_are_computed_from_the_unprepared_frame():
    from bench.twosite.audit import audit_level
    from bench.twosite.report import PRIVACY
    audited = record()
    audited["audit"] = {"measured_at": "run", "target": "clean", "clean_data_left_site_one": True,
                        "levels": [audit_level(q) for q in audited["quality"]]}
    comp = analysis.compare_configs(frame_of([audited]), sections=[PRIVACY])
    assert list(comp.sections) == ["privacy"] and len(comp.sections["privacy"]) == 1
    assert analysis.compare_configs(frame_of([audited])).sections == {}  # none asked for


def test_input_bound_cells_are_named_with_their_wait():
    slow = record(strategy="ddp", devices=2, cell_id="slow-cell")
    slow["telemetry"]["input_bound"] = True
    slow["timing"]["data_wait_frac"] = 0.25
    comp = analysis.compare_configs(frame_of([record(), slow]))
    assert "slow-cell is input-bound: data-loader wait was 25% of its window" in comp.notes
    assert not any("input-bound" in n for n in analysis.compare_configs(
        frame_of([record()])).notes)


def test_every_noise_group_shows_its_own_quality():
    """A folder with σ 0.1 cells and σ 0.2 cells: each group's summary rows carry quality at
    that group's own σ (not only the folder's smallest, which left σ 0.2 blank)."""
    recs = []
    for sigma, fp, psnr in ((0.1, "fpA", 30.0), (0.2, "fpB", 27.0)):
        for strategy, devices in (("single", 1), ("ddp", 2)):
            recs.append(record(strategy=strategy, devices=devices, sigmas=(sigma,),
                               fingerprint=fp, psnr=psnr))
    table = analysis.summary_table(frame_of(recs))
    assert len(table) == 4 and table["psnr_mean"].notna().all()
    by_sigma = {float(s): set(g["psnr_mean"]) for s, g in table.groupby("sigma")}
    assert by_sigma == {0.1: {30.0}, 0.2: {27.0}}
    assert table.attrs["sigma"] is None  # two levels: no single σ for the whole table
    one = analysis.summary_table(frame_of(recs[:2]))
    assert one.attrs["sigma"] == 0.1 and set(one["sigma"]) == {0.1}
    from reports.export import export_report
    text = export_report(analysis.compare_configs(frame_of(recs)), "md")
    assert "30.00" in text and "27.00" in text and "each group's own σ" in text


def test_a_resumed_cell_shows_no_false_time_saving():
    """A resumed DDP cell timed 5 of its 10 steps at the baseline's throughput: its raw window
    is half as long, but it saved no time. Time figures use the nominal steps, and a note says
    which cell was scaled."""
    base = record(throughput=100.0)
    resumed = record(strategy="ddp", devices=2, throughput=100.0)
    resumed["timing"]["timed_steps"] = 5
    resumed["timing"]["train_time_s"] /= 2
    table = analysis.summary_table(frame_of([base, resumed]))
    ddp = row(table, config="ddp")
    assert ddp["speedup_throughput"] == pytest.approx(1.0)
    assert ddp["speedup_time"] == pytest.approx(1.0) and ddp["time_saving_pct"] == pytest.approx(0)
    assert ddp["train_time_median"] == pytest.approx(row(table, config="single")["train_time_median"])
    notes = analysis.notes(frame_of([base, resumed]))
    assert any(resumed["cell_id"] in n and "timed 5 of its 10 steps" in n for n in notes)


def test_a_cell_stopped_at_its_target_is_not_scaled_up_to_the_steps_it_never_ran():
    """A cell that stopped at its quality target after 7 of 12 steps (timing.steps_run) timed
    all the steps it ran: its training time is its own, not scaled as a resumed cell's is."""
    base = record(throughput=100.0)
    stopped = record(strategy="ddp", devices=2, throughput=100.0)
    stopped["timing"].update(steps_run=2 + 5, timed_steps=5)  # warm-up 2, then 5 timed
    stopped["timing"]["train_time_s"] /= 2
    table = analysis.summary_table(frame_of([base, stopped]))
    ddp = row(table, config="ddp")
    assert ddp["train_time_median"] == pytest.approx(
        row(table, config="single")["train_time_median"] / 2)
    assert not any(stopped["cell_id"] in n for n in analysis.notes(frame_of([base, stopped])))


def test_weak_scaling_cells_get_no_parity_verdict():
    """Weak scaling on 2 devices trains a doubled global batch with a doubled LR: its quality
    difference from single fp32 is shown, but not judged, and the notes say why."""
    recs = [record(scaling="weak"), record(strategy="ddp", devices=2, scaling="weak", psnr=29.0),
            record(repeat=1, scaling="weak"),
            record(strategy="ddp", devices=2, scaling="weak", psnr=29.0, repeat=1)]
    q = analysis.quality_deltas(frame_of(recs))
    ddp = q[(q["cell.strategy"] == "ddp") & (q["metric"] == "psnr")].iloc[0]
    assert ddp["delta"] == pytest.approx(-1.0)
    assert ddp["verdict"] == "no verdict (weak scaling: other global batch)"
    strong = [dict(r, cell={**r["cell"], "scaling": "strong"}) for r in recs]
    judged = analysis.quality_deltas(frame_of(strong))
    assert judged[(judged["cell.strategy"] == "ddp")]["verdict"].iloc[0] == "worse"
    assert any("weak-scaling" in n for n in analysis.notes(frame_of(recs)))


def test_a_baseline_on_other_hardware_is_marked():
    """A mixed partition put the baseline on one GPU model and DDP on another: the row says
    so and a note names the hardware, because the speedup compares machines too."""
    base = record(gpu=True, device_type="cuda")
    other = record(strategy="ddp", devices=2, gpu=True, device_type="cuda", throughput=180.0)
    other["env"]["gpus"] = ["NVIDIA A100", "NVIDIA A100"]
    table = analysis.summary_table(frame_of([base, other]))
    assert bool(row(table, config="ddp")["hardware_differs"]) is True
    assert row(table, config="ddp")["hardware"] == "NVIDIA A100"
    assert not bool(row(table, config="single")["hardware_differs"])
    notes = analysis.notes(frame_of([base, other]))
    assert any("ran on NVIDIA A100, unlike its baseline" in n for n in notes)
    same = analysis.summary_table(frame_of([base, record(strategy="ddp", devices=2, gpu=True,
                                                         device_type="cuda")]))
    assert not same["hardware_differs"].any()


def test_lowest_repeats_keeps_one_repeat_per_configuration():
    """What the telemetry timelines show (and so all a report reads of telemetry.parquet)."""
    recs = [record(repeat=r) for r in (2, 0, 1)] + [record(strategy="ddp", devices=2, repeat=r)
                                                    for r in (3, 1)]
    rows = analysis.lowest_repeats(analysis.prepare(frame_of(recs)))
    assert sorted(zip(rows["config"], rows["cell.repeat"])) == [("ddp", 1), ("single", 0)]


# --- efficiency at equal precision, savings of equal work --------------------------------------

def _with_breakdown(rec, data=0.05, comm=0.0):
    rec["breakdown"] = {"data": data, "forward": 0.3, "backward": 0.5, "comm_exposed": comm,
                        "optimizer": 0.1, "other": 0.05 - comm, "comm_message_bytes_per_step": 0,
                        "comm_overlap": None}
    return rec


def test_efficiency_compares_a_precision_with_its_own_single_device_cell():
    from bench.analysis.breakdown import breakdown_table
    # bf16 alone is 1.5× fp32 on one device; two bf16 ranks give 1.53× fp32 = 1.02× bf16.
    recs = []
    for r, base in enumerate((99.0, 100.0, 101.0)):
        recs += [_with_breakdown(record("unet", "single", 1, "fp32", r, base)),
                 _with_breakdown(record("unet", "single", 1, "bf16", r, 1.5 * base)),
                 _with_breakdown(record("unet", "ddp", 2, "bf16", r, 1.53 * base), comm=0.02)]
    table = analysis.speedups(frame_of(recs))
    ddp = row(table, **{"cell.strategy": "ddp"})
    # The speedup stays against the baseline (single fp32); the efficiency is scaling alone.
    assert ddp["speedup_throughput"] == pytest.approx(1.53, rel=1e-3)
    assert ddp["efficiency"] == pytest.approx(1.02 / 2, rel=1e-3)  # not 1.53 / 2 = 77%
    assert ddp["efficiency_vs"] == "single ×1 bf16"
    assert ddp["efficiency_ci_low"] < ddp["efficiency"] < ddp["efficiency_ci_high"]
    assert row(table, **{"cell.strategy": "single", "cell.precision": "bf16"})["efficiency"] \
        == pytest.approx(1.0)
    # The breakdown's ideal is single bf16 halved: the cell is far from it, not "better".
    bd = breakdown_table(frame_of(recs))
    sentence = row(bd, **{"cell.strategy": "ddp"})["sentence"]
    assert "slower per sample than ideal scaling of single ×1 bf16" in sentence
    # Without a single-device bf16 cell there is nothing to scale from: blank, and said.
    alone = [r for r in recs if not (r["cell"]["strategy"] == "single"
                                     and r["cell"]["precision"] == "bf16")]
    ddp = row(analysis.speedups(frame_of(alone)), **{"cell.strategy": "ddp"})
    assert math.isnan(ddp["efficiency"]) and "no single ×1 bf16 cell" in ddp["efficiency_note"]
    sentence = row(breakdown_table(frame_of(alone)), **{"cell.strategy": "ddp"})["sentence"]
    assert "no single ×1 bf16 cell" in sentence


def test_weak_scaling_saving_is_per_sample():
    # Two weak-scaling ranks train twice the samples at 1.89× the throughput: each sample
    # costs 1 − 1/1.89 = 47% less, though the whole run takes longer.
    recs = []
    for r, base in enumerate((99.0, 100.0, 101.0)):
        single = record("unet", "single", 1, "fp32", r, base, scaling="weak")
        ddp = record("unet", "ddp", 2, "fp32", r, 1.89 * base, scaling="weak")
        ddp["timing"]["train_time_s"] = 2 * IMAGES / ddp["timing"]["throughput_img_s"]
        recs += [single, ddp]
    ddp = row(analysis.speedups(frame_of(recs)), **{"cell.strategy": "ddp"})
    assert ddp["speedup_throughput"] == pytest.approx(1.89, rel=1e-3)
    assert ddp["time_saving_pct"] == pytest.approx(100 * (1 - 1 / 1.89), rel=1e-3)
    assert ddp["saving_basis"] == "per sample"
    strong = row(analysis.speedups(frame_of(sweep())), **{"cell.strategy": "ddp",
                                                          "cell.precision": "fp32"})
    assert strong["saving_basis"] == "training time"


def test_an_interval_wider_than_the_effect_is_said():
    # Two repeats 30% apart around a 5% gain: the interval holds 1.
    recs = [record("unet", "single", 1, "fp32", 0, 100.0),
            record("unet", "single", 1, "fp32", 1, 130.0),
            record("unet", "ddp", 2, "fp32", 0, 105.0),
            record("unet", "ddp", 2, "fp32", 1, 136.5)]
    ddp = row(analysis.speedups(frame_of(recs)), **{"cell.strategy": "ddp"})
    assert ddp["speedup_ci_low"] < 1 < ddp["speedup_ci_high"]
    assert "wider than the effect (+5.0%)" in ddp["interval_note"]
    # A clear effect (repeats tight around 1.8×) gets no such note.
    clear = row(analysis.speedups(frame_of(sweep())), **{"cell.strategy": "ddp",
                                                         "cell.precision": "fp32"})
    assert clear["interval_note"] == ""
