"""Who made the other ranks wait: the lateness arithmetic on known spans, and real DDP cells on
gloo ranks, one of them slowed from outside (tests/injection.py), named with its phase."""
import math

import numpy as np
import pytest

from bench.measure import stragglers
from bench.measure.arrivals import StepMarks

STEPS = 20


def spans(compute, data=0.001, optimizer=0.002, comm=0.003, steps=STEPS, gap=0.0):
    """One rank's spans where every rank leaves each all-reduce together: its wait is the
    latest arrival (the step's max over ranks, given as `latest`) minus its own, plus the
    transfer itself; filled in by `cell`."""
    return {"data_s": np.full(steps, data), "compute_s": np.full(steps, compute),
            "optimizer_s": np.full(steps, optimizer), "gap_s": np.full(steps, gap),
            "comm": comm}


def cell(ranks: list[dict], jitter=0.0, seed=0):
    """Fill in each rank's wait and step time as a common departure makes them."""
    rng = np.random.default_rng(seed)
    for r in ranks:
        r["compute_s"] = r["compute_s"] + rng.uniform(0, jitter, STEPS)
    arrival = np.array([np.roll(r["optimizer_s"], 1) * (np.arange(STEPS) > 0) + r["gap_s"]
                        + r["data_s"] + r["compute_s"] for r in ranks])
    latest = arrival.max(axis=0)
    for r, a in zip(ranks, arrival):
        r["sync_wait_s"] = latest - a + r.pop("comm")
        r["step_times_s"] = r["compute_s"] + r["sync_wait_s"] + r["optimizer_s"]
    return [{k: list(v) for k, v in r.items()} for r in ranks]


def summary(ranks, hosts=None):
    hosts = hosts or [f"h{i}" for i in range(len(ranks))]
    return stragglers.summarize(ranks, hosts, np.arange(STEPS) >= 2, window_s=1.0)


def test_late_compute_names_the_rank_and_its_phase():
    out = summary(cell([spans(0.050), spans(0.080), spans(0.050)], jitter=0.002))
    assert out["slowest_rank"] == 1 and out["phase"] == "compute"
    assert out["host"] == "h1" and out["measured"] == "arrival"
    row = out["per_rank"][1]
    assert row["lateness_median_s"] == pytest.approx(0.030, abs=0.003)
    assert row["behind_median_s"] == pytest.approx(0.030, abs=0.003)
    assert row["last_share"] == 1.0
    # the two others wait ~30 ms for it in each of the 18 timed steps, of a 1 s window
    assert row["others_wait_share"] == pytest.approx(18 * 0.030, rel=0.15)


def test_late_data_names_the_data_phase():
    out = summary(cell([spans(0.050, data=0.040), spans(0.050)], jitter=0.002))
    assert (out["slowest_rank"], out["phase"]) == (0, "data")


def test_lateness_within_noise_names_nobody():
    out = summary(cell([spans(0.050), spans(0.050)], jitter=0.002))
    assert out["slowest_rank"] is None and out["phase"] is None
    # the numbers are there even when nobody is named
    assert all(r["lateness_median_s"] < out["threshold_s"] for r in out["per_rank"])


def test_a_rank_late_in_a_random_order_is_not_named():
    """Late by 10 ms in 12 of 18 timed steps and early in the others: its median lateness
    passes the size threshold, but its place in the order of arrivals is what chance gives
    (a host with more ranks than cores holds back one rank or another): nobody is named."""
    late = np.where(np.arange(STEPS) % 3 == 0, -0.001, 0.010)
    late[:2] = 0.0  # warm-up
    ranks = cell([spans(0.050), {**spans(0.050), "compute_s": 0.050 + late}])
    out = summary(ranks)
    row = out["per_rank"][1]
    assert row["behind_median_s"] >= out["threshold_s"]  # large enough, but
    assert row["arrival_position_z"] < stragglers.ORDER_Z and out["slowest_rank"] is None


def test_a_late_departure_is_communication():
    """A rank whose previous all-reduce ended later than the others' (its link) arrives late
    with no phase of its own to blame: the remainder is communication."""
    ranks = cell([spans(0.050), spans(0.050)])
    ranks[0]["sync_wait_s"] = [w + 0.020 for w in ranks[0]["sync_wait_s"]]
    out = summary(ranks)
    assert (out["slowest_rank"], out["phase"]) == (1, "communication")


def test_without_arrivals_only_data_waits_are_compared():
    ranks = cell([spans(0.050, data=0.030), spans(0.050)])
    for r in ranks:  # FSDP, DeepSpeed: no gradient-ready point
        r["sync_wait_s"] = [math.nan] * STEPS
    out = summary(ranks)
    assert out["measured"] == "data" and "not measured" in out["method"]
    assert (out["slowest_rank"], out["phase"]) == (0, "data")


def test_a_whole_late_node_is_recorded_per_host():
    out = summary(cell([spans(0.05), spans(0.05), spans(0.08), spans(0.08)], jitter=0.002),
                  hosts=["n1", "n1", "n2", "n2"])
    late = {h["host"]: h["all_late"] for h in out["per_host"]}
    assert late == {"n1": False, "n2": True}


def test_step_marks_spans_on_the_host_clock():
    import time
    marks = StepMarks("cpu")
    for _ in range(2):
        marks.start()
        time.sleep(0.002)
        marks.fetched()
        time.sleep(0.004)
        marks.ready()
        time.sleep(0.001)
        marks.synced()
        marks.end()
    out = marks.spans()
    assert out["data_s"][1] >= 0.002 and out["compute_s"][1] >= 0.004
    assert out["sync_wait_s"][1] >= 0.001
    assert math.isnan(out["gap_s"][0]) and out["gap_s"][1] >= 0
    unmarked = StepMarks("cpu")  # no gradient-ready point: its spans are missing, not 0
    unmarked.start(), unmarked.fetched(), unmarked.synced(), unmarked.end()
    assert math.isnan(unmarked.spans()["sync_wait_s"][0])


# --- real DDP cells on gloo ranks, one rank slowed from outside (tests/injection.py) ---------

@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    """Three repeats of one DDP ×2 cell in one `bench run`: nothing slowed, rank 1's process
    paused half the time, rank 0's loader worker paused most of the time."""
    from conftest import run_cli
    from injection import run_cases
    out = tmp_path_factory.mktemp("stragglers") / "results"
    return out, run_cases(["undisturbed", "compute", "data"], out, run_cli)


@pytest.mark.parametrize("case, named", [("undisturbed", (None, None)),
                                         ("compute", (1, "compute")), ("data", (0, "data"))])
def test_the_slowed_rank_and_its_phase_are_named(injected, case, named):
    record = injected[1][case]
    assert record["status"] == "ok"
    s = record["stragglers"]
    assert (s["slowest_rank"], s["phase"]) == named, s["per_rank"]
    assert s["measured"] == "arrival" and len(s["per_rank"]) == 2
    if named[0] is not None:
        row = s["per_rank"][named[0]]
        assert row["lateness_median_s"] >= s["threshold_s"]
        assert 0 < row["others_wait_share"] < 1 and s["host"] == row["host"]


def test_steps_parquet_holds_each_ranks_lateness(injected):
    import pandas as pd
    from bench.record import store
    record = injected[1]["compute"]
    steps = pd.read_parquet(f"{injected[0]}/{record['cell_id']}/{store.STEPS}")
    timed = steps[~steps["warmup"].to_numpy(bool)]
    assert np.median(timed["lateness_rank1_s"]) == pytest.approx(
        record["stragglers"]["per_rank"][1]["lateness_median_s"])
    # the slowed rank computes longer and so waits less at the all-reduce than the other
    assert np.median(timed["compute_rank1_s"]) > 1.2 * np.median(timed["compute_rank0_s"])
    assert np.median(timed["sync_wait_rank1_s"]) < np.median(timed["sync_wait_rank0_s"])
    assert {"data_rank1_s", "optimizer_rank1_s"} <= set(steps.columns)


def test_report_names_the_straggler_and_draws_its_strip(injected, tmp_path):
    from test_report import cli
    out, _ = injected
    page = tmp_path / "report.html"
    code, text, err = cli("report", out, "--html", page)
    assert code == 0, err
    flat = " ".join(text.split())
    assert "rank 1 on" in flat and "in its forward/backward computation" in flat
    assert "rank 0 on" in flat and "from data loading" in flat
    html = page.read_text()
    section = html[html.index("Who made the others wait"):]
    assert section.count("data:image/png;base64,") >= 1 and "late median ms" in section


def _as_pair(baseline: dict, new: dict, throughput_factor: float) -> dict:
    """`new`'s measurements under `baseline`'s identity, at a changed throughput: the same cell
    measured again (what the gate compares)."""
    import copy
    out = copy.deepcopy(new)
    for key in ("cell_id", "fingerprint", "cell"):
        out[key] = copy.deepcopy(baseline[key])
    out["timing"]["throughput_img_s"] = baseline["timing"]["throughput_img_s"] * throughput_factor
    return out


@pytest.mark.parametrize("slowed, kind", [("compute", "straggler regression"),
                                          ("undisturbed", "uniform")])
def test_the_gate_tells_a_straggler_from_a_uniform_slowdown(injected, tmp_path, slowed, kind):
    from bench.record import store
    from test_report import cli
    base = injected[1]["undisturbed"]
    for side, rec in (("base", base), ("new", _as_pair(base, injected[1][slowed], 0.6))):
        store.write_json(tmp_path / side / rec["cell_id"] / store.RECORD, rec)
    code, text, err = cli("compare", tmp_path / "base", tmp_path / "new")
    assert kind in " ".join(text.split()), text
