"""Time to quality in the reports: the speedup at equal quality beside the fixed-step one in the
console summary, the HTML section with the validation curves, the exports; nothing of it for
records without curves."""
import contextlib
import copy
import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from bench import analysis
from bench.analysis import CONFIG_KEYS, GROUP_KEYS
from reports import convergence
from reports.console import render_report
from reports.export import export_report
from test_analysis import frame_of, sweep
from test_report import cli, write_cell

TARGET_TEXT = "30.12 dB (single fp32's final validation PSNR 30.22 dB − 0.1 dB)"
# (seconds, samples, reached of 3, speedup, interval) per (strategy, precision)
PLAN = {("single", "fp32"): (40.0, 640, 3, 1.0, (math.nan, math.nan)),
        ("dp", "fp32"): (math.nan, math.nan, 2, math.nan, (math.nan, math.nan)),
        ("ddp", "fp32"): (24.7, 640, 3, 1.62, (1.47, 1.79)),
        ("ddp", "bf16"): (18.8, 896, 3, 2.13, (1.91, 2.37))}
DP_NOTE = "not reached within 12 steps in 1 of 3 repeats (best 29.87 dB)"


def planted(comp):
    """`comp` with a convergence table and curves in the contract's columns, as
    bench.analysis.convergence makes them: dp reaches the target in 2 of 3 repeats only."""
    conv = comp.summary[GROUP_KEYS + CONFIG_KEYS + ["config", "is_baseline"]].copy()
    plan = [PLAN[k] for k in zip(conv["cell.strategy"], conv["cell.precision"])]
    conv["metric"], conv["target"], conv["target_source"] = "psnr", 30.12, "baseline"
    conv["target_text"], conv["n"] = TARGET_TEXT, 3
    conv["reached_n"] = [p[2] for p in plan]
    conv["seconds_to_target_mean"] = [p[0] for p in plan]
    conv["samples_to_target_mean"] = [p[1] for p in plan]
    conv["steps_to_target_mean"] = conv["samples_to_target_mean"] / 8
    conv["speedup_equal_quality"] = [p[3] for p in plan]
    conv["speedup_equal_quality_ci_low"] = [p[4][0] for p in plan]
    conv["speedup_equal_quality_ci_high"] = [p[4][1] for p in plan]
    conv["samples_vs_baseline_pct"] = 100 * (conv["samples_to_target_mean"] / 640 - 1)
    conv["convergence_p_value"], conv["convergence_worse"] = math.nan, False
    conv["convergence_note"] = [DP_NOTE if s == "dp" else "" for s in conv["cell.strategy"]]
    conv.attrs["metric"] = "psnr"
    points = [{**{k: r[k] for k in GROUP_KEYS + CONFIG_KEYS}, "config": r["config"],
               "cell.repeat": rep, "cell_id": f"{r['config']}-{r['cell.precision']}-{rep}",
               "step": step, "samples": 8 * step, "seconds": step * (1 + 0.05 * rep),
               "value": 20 + 10.5 * (1 - math.exp(-step / 4))}
              for _, r in conv.iterrows() for rep in range(3) for step in range(0, 13, 2)]
    out = copy.copy(comp)
    out.convergence, out.curves = conv, pd.DataFrame(points)
    return out


@pytest.fixture(scope="module")
def plain():
    return analysis.compare_configs(frame_of(sweep()))


@pytest.fixture(scope="module")
def comp(plain):
    return planted(plain)


def console_text(comp, brief=False) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        render_report(comp, brief=brief)
    return out.getvalue()


def test_console_shows_the_equal_quality_speedup_target_and_not_reached(comp):
    for brief in (True, False):  # the end of `bench run` and `bench report` alike
        text = console_text(comp, brief)
        assert f"target for equal quality: validation PSNR ≥ {TARGET_TEXT}" in text
        assert "[1.91–2.37]" in text and "2.13×" in text and "896 samples" in text
        assert "[1.47–1.79]" in text
        assert "not reached" in text and "(2/3)" in text  # dp: 2 of 3 repeats, no blank
        assert f"note: dp ×2 fp32: {DP_NOTE}" in text
        # the seed's claim, measured at equal quality: 1 − 1/2.13 = 53% less time
        assert ("unet: the seed's DDP+AMP claim at equal quality (30.12 dB): ddp ×2 bf16 "
                "takes 53% less time than single ×1 fp32, 2.13× [1.91–2.37] (at equal steps: "
                "63% less time)") in " ".join(text.split())


def test_without_curves_nothing_of_it_shows(plain, comp):
    empty = copy.copy(plain)
    empty.convergence, empty.curves = pd.DataFrame(), pd.DataFrame()
    for c in (plain, empty):  # a Comparison from before curves existed, or one without any
        text = console_text(c)
        assert "equal quality" not in text and "not reached" not in text
        assert convergence.html_section(c) == ""
        assert "Time to quality" not in export_report(c, "md")
        assert "convergence" not in json.loads(export_report(c, "json"))
    assert console_text(empty) == console_text(plain)
    assert "equal quality" in console_text(comp)  # the same checks see it where it is


def test_html_section_has_the_table_the_figure_and_the_target(comp):
    page = convergence.html_section(comp)
    assert page.startswith("<h2>Time to quality</h2>")
    assert "single fp32&#x27;s final validation PSNR 30.22 dB" in page  # the target's source
    assert page.count("<img") == 1 and 'src="data:image/png;base64,' in page
    assert "2.13×" in page and "[1.91–2.37]" in page and "not reached (2/3)" in page
    assert "2 of 3" in page and DP_NOTE in page
    assert "the seed&#x27;s DDP+AMP claim at equal quality (30.12 dB)" in page


def test_markdown_and_json_carry_the_time_to_quality_table(comp):
    md = export_report(comp, "md")
    assert "## Time to quality" in md
    assert ("| ddp ×2 bf16 | 3 | 2.70× [2.58–2.83] | 2.13× [1.91–2.37] | 18.8 | 896 | "
            "+40% | 3 of 3 |") in md
    assert "| dp ×2 fp32 | 3 | 0.90× [0.86–0.94] | not reached (2/3) |" in md
    doc = json.loads(export_report(comp, "json"))
    bf16 = [r for r in doc["convergence"] if r["cell.precision"] == "bf16"][0]
    assert bf16["speedup_equal_quality"] == pytest.approx(2.13)


# --- end to end: records with validation curves through `bench report` -------------------------

STEPS, EVERY, BATCH = 40, 4, 8
# how many steps each configuration's curve takes to rise (per sample: AMP converges slower)
RISE = {("single", "fp32"): 8.0, ("dp", "fp32"): None, ("ddp", "fp32"): 8.0,
        ("ddp", "bf16"): 9.0}


def with_curve(rec: dict) -> dict:
    """`rec` with a validation curve as the worker records it: PSNR rising towards 32 dB
    (dp levels off at 31 dB, below the target: it never reaches it)."""
    cell = rec["cell"]
    rise = RISE[(cell["strategy"], cell["precision"])]
    step_s = BATCH / rec["timing"]["throughput_img_s"]
    curve = []
    for step in range(0, STEPS + 1, EVERY):
        psnr = 20 + 11 * (1 - math.exp(-step / 6)) if rise is None else \
            20 + 12 * (1 - math.exp(-step / (rise * (1 + 0.02 * cell["repeat"]))))
        curve.append({"step": step, "samples": step * BATCH, "timed_s": step * step_s,
                      "seconds": step * step_s, "psnr": psnr})
    return {**rec, "validation": {"metric": "psnr", "split": "val", "images": 8,
                                  "sigmas": [0.1], "every": EVERY, "metrics": ["psnr"],
                                  "curve": curve, "eval_pause_s": 0.5, "pauses": len(curve),
                                  "seconds_basis": "timed seconds of training"}}


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    for rec in sweep("fp-curves", gpu=True, device_type="cuda"):
        write_cell(root, with_curve(rec), gpu=True)
    page = tmp_path_factory.mktemp("html") / "report.html"
    code, out, err = cli("report", root, "--html", page)
    assert code == 0, err
    code, csv, err = cli("report", root, "--format", "csv")
    assert code == 0, err
    return out, page.read_text(), pd.read_csv(io.StringIO(csv))


def test_bench_report_shows_time_to_quality_end_to_end(reported):
    text, page, table = reported
    for col in ("speedup_equal_quality", "speedup_equal_quality_ci_low",
                "speedup_equal_quality_ci_high", "samples_to_target_mean",
                "seconds_to_target_mean", "reached_n", "target", "convergence_note"):
        assert col in table.columns, col
    bf16 = table[table["cell.precision"] == "bf16"].iloc[0]
    dp = table[table["cell.strategy"] == "dp"].iloc[0]
    assert 1 < bf16["speedup_equal_quality"] < bf16["speedup_throughput"]  # AMP needs samples
    assert dp["reached_n"] == 0 and np.isnan(dp["speedup_equal_quality"])
    ratio = f"{bf16['speedup_equal_quality']:.2f}×"
    assert "target for equal quality: validation PSNR ≥" in text and ratio in text
    assert "not reached" in text and "(0/3)" in text
    section = page[page.index("<h2>Time to quality</h2>"):]
    assert "<img" in section.split("<h2>", 2)[1] and ratio in section
    assert f"{bf16['target']:.2f} dB (single ×1 fp32&#x27;s lowest of 3 repeats&#x27; final" in section
