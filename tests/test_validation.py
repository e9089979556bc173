"""Validation during training (bench.worker.validation): the quality curve is taken outside
every timed figure, changes no training step, and a cell can stop at its quality target."""
import pandas as pd
import pytest

from bench.measure.telemetry_summary import PAUSE_MARKS
from bench.record import store
from conftest import run_main, run_spec

STEPS = 30
WORKLOAD = {"device": "cpu", "steps": STEPS, "warmup": 2, "global_batch": 8, "width": 4,
            "depth": 2, "image_size": 32, "sample_hz": 20}


def spec(name: str, configurations: list[dict], **workload) -> dict:
    return {"name": name, "workload": {**WORKLOAD, **workload},
            "matrix": {"models": ["unet"], "configurations": configurations}}


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """The same DDP ×2 cell validated after every step, and not at all. Two ranks: one that
    did not wait for rank 0's scoring would carry it into its next step, the slowest rank's
    step time, and the window."""
    ddp = [{"strategy": "ddp", "devices": 2}]
    (validated,) = run_spec(tmp_path_factory.mktemp("validated"),
                            spec("validated", ddp, eval_every=1))
    (plain,) = run_spec(tmp_path_factory.mktemp("plain"), spec("plain", ddp, eval_every=0))
    return validated, plain


def steps_of(record: dict) -> pd.DataFrame:
    return pd.read_parquet(f"{record['_dir']}/{store.STEPS}")


def test_validation_pauses_are_out_of_every_timed_figure(paired):
    validated, plain = paired
    assert "validation" not in plain and plain["timing"]["eval_pause_s"] == 0.0
    v, timing = validated["validation"], validated["timing"]
    assert [p["step"] for p in v["curve"]] == list(range(STEPS + 1)) and v["pauses"] == STEPS + 1
    assert v["split"] == "val" and v["images"] > 0 and v["metric"] == "psnr"
    # The pauses are long beside the steps here, so a leak would show plainly: the window
    # with them counted would run about twice as long as the one without validation.
    assert timing["eval_pause_s"] > 0.5 * timing["train_time_s"], timing
    assert timing["train_time_s"] < 1.5 * plain["timing"]["train_time_s"], \
        (timing["train_time_s"], plain["timing"]["train_time_s"])
    # Every rank waits out rank 0's scoring inside the pause, never in its next step (a leak
    # here made rank 1's median step 3× the plain one).
    for ours, theirs in zip(timing["step_time_median_s_per_rank"],
                            plain["timing"]["step_time_median_s_per_rank"]):
        assert ours < 2 * theirs, (timing["step_time_median_s_per_rank"],
                                     plain["timing"]["step_time_median_s_per_rank"])
    # The timed window's telemetry agrees: its span less the marked pauses is the train time.
    assert validated["telemetry"]["timed_s"] == pytest.approx(timing["train_time_s"], abs=0.02)
    tele = pd.read_parquet(f"{validated['_dir']}/{store.TELEMETRY}")
    starts = tele.loc[tele["phase"] == PAUSE_MARKS[0], "t_s"].to_numpy()
    ends = tele.loc[tele["phase"] == PAUSE_MARKS[1], "t_s"].to_numpy()
    assert len(starts) == len(ends) == STEPS + 1
    marked = float((ends - starts).sum())  # the marks bracket the scoring, give or take a read
    assert marked == pytest.approx(timing["eval_pause_s"], rel=0.2), \
        (marked, timing["eval_pause_s"])
    timed_t = tele.loc[tele["phase"] == "timed", "t_s"].to_numpy()
    assert len(timed_t) > 0 and not any(((timed_t > a) & (timed_t < b)).any()
                                        for a, b in zip(starts, ends))  # none in a pause
    # Validation reads the weights and changes no step: the same losses, bit for bit.
    assert steps_of(validated)["loss"].tolist() == steps_of(plain)["loss"].tolist()
    # Point seconds: the timed clock, the warm-up steps at the window's mean step time.
    step_s = timing["train_time_s"] / timing["timed_steps"]
    last = v["curve"][-1]
    assert last["seconds"] == pytest.approx(timing["train_time_s"] + 2 * step_s, abs=1e-3)
    assert last["samples"] == STEPS * 8
    assert all(a["seconds"] < b["seconds"] for a, b in zip(v["curve"][1:], v["curve"][2:]))


def test_a_cell_stops_at_its_target_on_every_rank(paired, tmp_path):
    """Validated every 2 steps, the cell stops at the first even step whose validation PSNR
    reaches the target: known in advance from the curve of the same trajectory."""
    curve = paired[0]["validation"]["curve"]
    target = (curve[5]["psnr"] + curve[6]["psnr"]) / 2
    expected = next(p["step"] for p in curve if p["step"] % 2 == 0 and p["psnr"] >= target)
    assert 2 <= expected < STEPS
    records = run_spec(tmp_path, spec("stop", [{"strategy": "single"},
                                               {"strategy": "ddp", "devices": 2}],
                                      eval_every=2, target_psnr=target, stop_at_target=True))
    assert len(records) == 2
    for record in records:
        assert record["status"] == "ok", record.get("error")
        assert record["timing"]["steps_run"] == expected
        assert len(steps_of(record)) == expected
        reached = record["time_to_target"]
        assert reached["reached"] and reached["stopped_at_target"] and reached["source"] == "spec"
        assert reached["target"] == pytest.approx(target)
        assert expected - 2 < reached["steps"] <= expected
        assert record["validation"]["curve"][-1]["step"] == expected


def test_steps_fed_by_batches_made_during_a_pause_are_not_timed(tmp_path):
    """With loader workers, training waits during a pause but the workers do not: the
    `workers × prefetch_factor` steps after it would take ready batches. They are trained
    inside the pause, untimed (1 worker × 2 here: steps 10, 11, 20, 21; the pause after the
    last step has none left to feed)."""
    (record,) = run_spec(tmp_path, spec("refill", [{"strategy": "single"}], eval_every=10,
                                        workers=1))
    timing = record["timing"]
    assert timing["pause_refill_steps"] == 4
    assert timing["timed_steps"] == STEPS - 2 - 4 and timing["warmup_steps"] == 2
    untimed = steps_of(record).query("warmup")["step"].tolist()
    assert untimed == [0, 1, 10, 11, 20, 21]
    points = {p["step"]: p for p in record["validation"]["curve"]}
    assert points[20]["timed_steps"] == 18 - 2 and points[30]["timed_steps"] == 28 - 4
    assert record["validation"]["pauses"] == 4  # steps 0, 10, 20, 30


@pytest.mark.parametrize("args,words", [
    (["--stop-at-target"], "needs a target to stop at"),
    (["--until-psnr", "30", "--eval-every", "0"], "turns it off"),
    (["--eval-every", "-1"], "--eval-every"),
    (["--target-psnr", "nan"], "--target-psnr"),
])
def test_impossible_validation_settings_are_refused(capsys, tmp_path, args, words):
    result = run_main(capsys, "run", "--device", "cpu", "--model", "unet", "--strategy",
                      "single", "--out", tmp_path / "out", *args)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_validation_scores_in_fp32_and_gives_a_tf32_cell_its_tf32_back():
    """Validation runs between a tf32 cell's steps: its scoring must be fp32, and the steps
    after it TF32 again (the final evaluation used to turn TF32 off for the process)."""
    import torch

    from bench.worker.evaluate import denoise

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
            return x

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        items = [(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))] * 3
        denoise(Probe(), items, range(3), "cpu", batch=2)
        assert seen == [False, False]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
