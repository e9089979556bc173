"""The seed-claim decomposition on hand-made factorial designs with planted effects."""
import contextlib
import io
import itertools
import json
import math
import time

import numpy as np
import pandas as pd
import pytest

from bench import analysis
from bench.analysis.factorial import CLAIMS, decompose, effects
from test_analysis import frame_of, record

SAMPLES = 1280  # samples per epoch of every cell: steps = SAMPLES / batch (equal epochs)
WARMUP = 2
BASE_TIME = 100.0
# planted multiplicative effects on the time to train the cell's epochs
DDP, AMP, BATCH64, LOADER, AMP_X_BATCH64 = 0.8, 0.6, 0.7, 0.95, 0.9
DP, BATCH32, DP_X_BATCH32 = 0.85, 0.8, 1.05


def planted(process, amp, batch, loaded) -> float:
    t = BASE_TIME * {"single": 1.0, "ddp": DDP, "dp": DP}[process]
    t *= (AMP if amp else 1.0) * {16: 1.0, 32: BATCH32, 64: BATCH64}[batch]
    t *= (LOADER if loaded else 1.0) * (AMP_X_BATCH64 if amp and batch == 64 else 1.0)
    return t * (DP_X_BATCH32 if process == "dp" and batch == 32 else 1.0)


def cell_record(process, amp, batch, loaded, repeat, time_s, steps=None, model="unet",
                status="ok") -> dict:
    """A record whose epoch time (timed rate projected over all steps) is `time_s`."""
    devices = 1 if process == "single" else 2
    precision = "bf16" if amp else "fp32"
    steps = steps or SAMPLES // batch
    rec = record(model, process, devices, precision, repeat, status=status, warmup=WARMUP,
                 fingerprint=f"fp-{batch}-{int(loaded)}",
                 cell_id=f"{model}-{process}-{precision}-b{batch}-w{int(loaded)}-r{repeat}")
    rec["cell"].update(global_batch=batch, steps=steps, workers=4 if loaded else 0,
                       pin_memory=loaded, arch="seed")
    timed = steps - WARMUP
    train = time_s * timed / steps
    rec["timing"].update(train_time_s=train, timed_steps=timed,
                         throughput_img_s=timed * batch / train)
    return rec


def design(repeats=3, noise=0.005, model="unet", skip=(), steps=None, seed=0) -> list[dict]:
    """The 16 DDP+AMP cells and the DP design's extra cells (dp at 16 and 32, single at 32)."""
    rng = np.random.default_rng(seed)
    cells = [(p, a, b, lo) for p, a, b, lo in
             itertools.product(("single", "ddp"), (False, True), (16, 64), (False, True))]
    cells += [("dp", False, 16, False), ("dp", False, 32, False), ("single", False, 32, False)]
    return [cell_record(*c, r, planted(*c) * math.exp(noise * rng.standard_normal()),
                        steps=steps, model=model)
            for r in range(repeats) for c in cells if c not in skip]


def pick(result, claim, kind, factor=None, model="unet"):
    rows = result.rows
    sel = rows[(rows["model"] == model) & (rows["claim"] == claim) & (rows["kind"] == kind)]
    if factor is not None:
        sel = sel[sel["factor"] == factor]
    assert len(sel) == 1, sel
    return sel.iloc[0]


@pytest.fixture(scope="module")
def result():
    return decompose(frame_of(design()))


def test_planted_effects_are_recovered(result):
    assert result.basis == "equal epochs" and not result.notes
    total = pick(result, "DDP+AMP", "total")
    product = DDP * AMP * BATCH64 * LOADER * AMP_X_BATCH64
    assert total["mean"] == pytest.approx(100 * (1 - product), abs=0.5)
    assert total["ci_low"] < total["mean"] < total["ci_high"] and total["n_repeats"] == 3
    assert total["seed_pct"] == 62.65
    # classical 2^k main effects: the planted amp×batch term adds half its log to both mains
    half = math.sqrt(AMP_X_BATCH64)
    for factor, ratio in (("process", DDP), ("precision", AMP * half),
                          ("batch", BATCH64 * half), ("loader", LOADER)):
        assert pick(result, "DDP+AMP", "main", factor)["mean"] == pytest.approx(ratio, rel=0.01)
    inter = pick(result, "DDP+AMP", "interaction")
    assert inter["factor"] == "precision×batch"
    assert inter["mean"] == pytest.approx(half, rel=0.01)
    for factor, ratio in (("process", DDP), ("precision", AMP), ("batch", BATCH64),
                          ("loader", LOADER)):
        alone = pick(result, "DDP+AMP", "alone", factor)["mean"]
        assert alone == pytest.approx(100 * (1 - ratio), abs=0.6)
    # Shapley: the interaction is split equally between its two factors
    L = -math.log(product)
    phi = {"process": -math.log(DDP), "loader": -math.log(LOADER),
           "precision": -math.log(AMP) - math.log(AMP_X_BATCH64) / 2,
           "batch": -math.log(BATCH64) - math.log(AMP_X_BATCH64) / 2}
    shares = result.rows[(result.rows["claim"] == "DDP+AMP") & (result.rows["kind"] == "share")]
    assert shares["mean"].sum() == pytest.approx(100)
    for factor, value in phi.items():
        assert pick(result, "DDP+AMP", "share", factor)["mean"] == \
            pytest.approx(100 * value / L, abs=1.5)


def test_dp_claim_uses_its_four_cells(result):
    total = pick(result, "DP", "total")
    assert total["mean"] == pytest.approx(100 * (1 - DP * BATCH32 * DP_X_BATCH32), abs=0.5)
    assert total["seed_pct"] == 36.34
    dp = result.rows[result.rows["claim"] == "DP"]
    assert set(dp["factor"]) == {"all", "process", "batch", "process×batch"}
    assert dp[dp["kind"] == "share"]["mean"].sum() == pytest.approx(100)
    assert pick(result, "DP", "main", "process")["change"] == "single → dp"
    assert pick(result, "DP", "alone", "batch")["mean"] == pytest.approx(20, abs=0.6)


def test_shapley_and_total_exact_by_hand():
    """Two factors a, b with an interaction: ln T = c + α[a] + β[b] + γ[a][b]. By hand
    φ_a = −α − γ/2, φ_b = −β − γ/2; the 2^k interaction effect is γ/2."""
    c, a, b, g = math.log(100), math.log(0.8), math.log(0.7), math.log(0.9)
    y = np.array([[c], [c + a], [c + b], [c + a + b + g]])
    e = effects(y)
    assert e["phi"][:, 0] == pytest.approx([-a - g / 2, -b - g / 2], rel=1e-12)
    assert e["phi"].sum() == pytest.approx(e["L"][0]) and e["L"][0] == pytest.approx(-a - b - g)
    assert e["effect"][0b11][0] == pytest.approx(g / 2)
    assert e["effect"][0b01][0] == pytest.approx(a + g / 2)
    # noise-free 2^4 design: total saving is exactly 1 − the product, shares exactly Shapley
    exact = decompose(frame_of(design(repeats=2, noise=0.0)))
    product = DDP * AMP * BATCH64 * LOADER * AMP_X_BATCH64
    assert pick(exact, "DDP+AMP", "total")["mean"] == pytest.approx(100 * (1 - product))
    share = pick(exact, "DDP+AMP", "share", "precision")["mean"]
    assert share == pytest.approx(100 * (-math.log(AMP) - math.log(AMP_X_BATCH64) / 2)
                                  / -math.log(product))


def test_sentences_are_honest_about_intervals(result):
    ddp = next(s for s in result.sentences if "DDP+AMP" in s)
    assert ddp.startswith("Of U-Net's ") and "(cpu; seed: 62.65%)" in ddp
    assert "DDP itself accounts for" in ddp and "DDP alone saves 20." in ddp
    dp = next(s for s in result.sentences if " DP " in s)
    assert "DataParallel itself accounts for" in dp and "(cpu; seed: 36.34%)" in dp
    # loader effect buried in noise: its share interval spans zero
    noisy = decompose(frame_of(design(noise=0.2, seed=3)))
    assert any("not distinguishable from zero" in s for s in noisy.sentences)


def test_unequal_epochs_are_not_decomposed():
    result = decompose(frame_of(design(steps=40)))  # equal steps: 4× the samples at batch 64
    assert result.rows.empty
    assert len(result.notes) == 2 and all("not at equal epochs" in n for n in result.notes)


def test_dropped_epoch_tails_are_normalised_per_sample():
    """bench's epochs drop each epoch's incomplete batch: 2 epochs of 624 samples train 1248,
    1216 or 1152 samples at batch 16, 32 or 64. Each cell's time for its own steps is the
    planted per-sample rate × its samples, so comparing raw times would credit batch 64 with
    the 8% fewer samples it trained; the per-sample response recovers the planted effects."""
    rng = np.random.default_rng(1)
    recs = []
    for r in range(3):
        for c in [(p, a, b, lo) for p, a, b, lo in itertools.product(
                ("single", "ddp"), (False, True), (16, 64), (False, True))]:
            steps = 2 * (624 // c[2])
            time_s = planted(*c) * steps * c[2] / SAMPLES
            recs.append(cell_record(*c, r, time_s * math.exp(0.002 * rng.standard_normal()),
                                    steps=steps))
    out = decompose(frame_of(recs))
    assert not out.notes
    product = DDP * AMP * BATCH64 * LOADER * AMP_X_BATCH64
    assert pick(out, "DDP+AMP", "total")["mean"] == pytest.approx(100 * (1 - product), abs=0.3)
    assert pick(out, "DDP+AMP", "main", "batch")["mean"] == \
        pytest.approx(BATCH64 * math.sqrt(AMP_X_BATCH64), rel=0.005)


def test_incomplete_design_skips_the_claim_with_a_note():
    missing = ("ddp", True, 16, True)
    result = decompose(frame_of(design(skip=[missing])))
    assert result.notes == ["U-Net (cpu) DDP+AMP: not decomposed, the design is incomplete: no ok "
                            "record of ddp ×2 AMP, batch 16, workers + pinned."]
    # its corners are there: the saving is still given, undivided
    ddp = result.rows[result.rows["claim"] == "DDP+AMP"]
    assert list(ddp["kind"]) == ["total"]


def test_the_seeds_own_three_runs_give_its_savings_undivided():
    """seed-confounded: single, DP and DDP+AMP corners only, as the seed ran them."""
    corners = [("single", False, 16, False), ("dp", False, 32, False), ("ddp", True, 64, True)]
    recs = [cell_record(*c, r, planted(*c)) for r in range(2) for c in corners]
    result = decompose(frame_of(recs))
    total = pick(result, "DDP+AMP", "total")
    assert total["mean"] == pytest.approx(
        100 * (1 - DDP * AMP * BATCH64 * LOADER * AMP_X_BATCH64), abs=0.01)
    assert pick(result, "DP", "total")["mean"] == pytest.approx(
        100 * (1 - DP * BATCH32 * DP_X_BATCH32), abs=0.01)
    assert set(result.rows["kind"]) == {"total"} and len(result.notes) == 2
    assert any("run as the seed ran it saves" in s and "seed: 62.65%" in s
               for s in result.sentences)
    from reports import factorial as rendering
    html = rendering.html_section(result, 0.95)
    assert "62.65%" in html and "<img" not in html  # a table, no share chart to draw


def test_a_failed_repeat_is_left_out():
    recs = design()
    recs[5]["status"] = "failed"  # one cell of repeat 0
    result = decompose(frame_of(recs))
    assert pick(result, "DDP+AMP", "total")["n_repeats"] == 2
    assert pick(result, "DP", "total")["n_repeats"] == 3  # the cell is not one of DP's
    assert any("repeat(s) 0 left out" in n for n in result.notes)


def test_ordinary_frames_give_an_empty_result_fast():
    assert decompose(pd.DataFrame()).rows.empty
    recs = []
    for i in range(250):  # 1000 records of ordinary sweeps at batch 16, no factorial
        for strategy, devices, precision in (("single", 1, "fp32"), ("dp", 2, "fp32"),
                                             ("ddp", 2, "fp32"), ("ddp", 2, "bf16")):
            rec = record("unet", strategy, devices, precision, i % 5, fingerprint=f"f{i}")
            rec["cell"].update(global_batch=16, workers=0, pin_memory=False)
            recs.append(rec)
    frame = frame_of(recs)
    start = time.perf_counter()
    result = decompose(frame)
    assert time.perf_counter() - start < 0.5
    assert result.empty and result.rows.empty and not result.sentences
    assert analysis.compare_configs(frame_of(recs[:8])).factorial.empty


def test_claims_cover_the_seed_corners():
    ddp, dp = CLAIMS
    assert ddp.cell(0) == dp.cell(0) == ("single", "fp32", 16, "0 workers")
    assert ddp.cell(15) == ("ddp", "AMP", 64, "workers + pinned") and len(ddp.switched) == 4
    assert dp.cell(3) == ("dp", "fp32", 32, "0 workers") and len(dp.switched) == 2


@pytest.fixture(scope="module")
def comp():
    return analysis.compare_configs(frame_of(design()))


def test_console_shows_the_section_with_the_seed_figure(comp):
    from reports import console as rc
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc.render_report(comp)
    text = " ".join(out.getvalue().split())
    assert "seed claim decomposition — U-Net (cpu): DDP+AMP" in text
    total = pick(comp.factorial, "DDP+AMP", "total")["mean"]
    assert f"{total:.1f}" in text and "(seed: 62.65%)" in text and "(seed: 36.34%)" in text
    assert "precision×batch" in text and "DDP itself accounts for" in text
    brief = io.StringIO()
    with contextlib.redirect_stdout(brief):
        rc.render_report(comp, brief=True)
    assert "seed claim decomposition" not in brief.getvalue()


def test_html_and_exports_show_the_section(comp):
    from reports import console as rc
    from reports.html import render_html
    page = render_html(frame_of(design()), comp, "results")
    section = page[page.index("<h2>Seed claim decomposition</h2>"):]
    assert "62.65%" in section and "36.34%" in section
    assert '<img alt="factor shares of the saving, U-Net (cpu): DDP+AMP"' in section
    assert section.count("data:image/png;base64,") >= 2  # one chart per claim
    doc = json.loads(rc.export_report(comp, "json"))
    assert doc["factorial"]["basis"] == "equal epochs" and len(doc["factorial"]["sentences"]) == 2
    assert {r["kind"] for r in doc["factorial"]["rows"]} == {"total", "share", "alone", "main",
                                                            "interaction"}
    md = rc.export_report(comp, "md")
    assert "## Seed claim decomposition" in md and "(seed: 62.65%)" in md
