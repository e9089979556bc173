"""End to end on one device: a real cell process, its record, step table and telemetry."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from bench.record import store
from conftest import TINY, run_cli


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "results"
    # Long enough a timed window (~40 steps) for the 20 Hz sampler to see it several times.
    result = run_cli("run", *TINY, "--steps", "40", "--sample-hz", "20", "--model", "unet",
                     "--strategy", "single", "--out", out, "--noise", "0.1", "0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    (cell_dir,) = [d for d in out.iterdir() if d.is_dir()]
    return result, cell_dir, json.loads((cell_dir / store.RECORD).read_text())


def test_record_has_the_promised_fields(single_run):
    _, _, record = single_run
    assert record["status"] == "ok" and record["schema_version"] == 1
    assert record["started_at"] < record["finished_at"]  # ISO 8601 UTC sorts as time
    assert record["cell"]["model"] == "unet" and record["cell"]["global_batch"] == 8
    assert len(record["fingerprint"]) == 16
    for key in ("train_time_s", "time_to_train_s", "step_time_median_s", "step_time_p90_s",
                "throughput_img_s", "data_wait_frac", "peak_mem_mb"):
        assert record["timing"][key] is not None, key
    for key in ("python", "torch", "cpu", "hostname", "git_commit", "nccl", "gpus"):
        assert key in record["env"], key


def test_throughput_is_global_samples_over_timed_wall_time(single_run):
    _, cell_dir, record = single_run
    timing = record["timing"]
    steps = pd.read_parquet(cell_dir / store.STEPS)
    assert len(steps) == 40 and int(steps["warmup"].sum()) == 2
    timed = steps[~steps["warmup"]]
    assert timing["timed_steps"] == 38
    assert timing["throughput_img_s"] == pytest.approx(8 * 38 / timing["train_time_s"])
    # The wall window holds the timed steps and their data waits, and little else.
    inside = timed["step_time_s"].sum() + timed["data_wait_s"].sum()
    assert inside <= timing["train_time_s"] * 1.0001
    assert inside >= 0.8 * timing["train_time_s"]
    assert timing["step_time_median_s"] == pytest.approx(np.median(timed["step_time_s"]))
    # Idle between steps: the window's share outside the steps' own time (here: data waits
    # and the loop's bookkeeping); the host-clock wait is part of it on a CPU.
    idle = 1 - timed["step_time_s"].sum() / timing["train_time_s"]
    assert timing["idle_between_steps_frac"] == pytest.approx(idle)
    assert timing["idle_between_steps_frac"] >= timing["data_wait_frac"] - 1e-9
    assert record["telemetry"]["input_bound_signal"] == "host wait for data"
    assert timing["time_to_train_s"] > timing["train_time_s"] + timing["eval_time_s"]


def test_quality_per_noise_level_with_noisy_input_beside(single_run):
    _, _, record = single_run
    levels = [q["sigma"] for q in record["quality"]]
    assert levels == [0.1, 0.2]
    for q in record["quality"]:
        for key in ("psnr", "ssim", "lpips", "noisy_psnr", "noisy_ssim", "noisy_lpips"):
            assert q[key] is not None and np.isfinite(q[key]), key
    # More noise, worse noisy input: the two levels really were different inputs.
    assert record["quality"][1]["noisy_psnr"] < record["quality"][0]["noisy_psnr"] - 3


def test_telemetry_covers_the_timed_window(single_run):
    _, cell_dir, record = single_run
    table = pd.read_parquet(cell_dir / store.TELEMETRY)
    # eval_pause and its marks: validation during training (tests/test_validation.py)
    assert {"setup", "warmup", "timed", "eval_pause", "eval", "window_start", "window_end",
            "pause_start", "pause_end"} >= set(table["phase"])
    tele = record["telemetry"]
    # The boundary marks bracket the window: energy and coverage span all of it.
    assert tele["window_marked"] and tele["window_coverage"] >= 1.0
    timed_rows = table[table["phase"] == "timed"]
    assert tele["samples_in_window"] == len(timed_rows) > 0
    # The summary's window is the steps table's timed phase, on one clock.
    assert tele["timed_s"] == pytest.approx(record["timing"]["train_time_s"])
    assert timed_rows["t_s"].min() >= tele["timed_start_s"]
    assert timed_rows["t_s"].max() <= tele["timed_end_s"]
    assert tele["gpu_busy_pct_mean"] is None and tele["gpu_reason"]
    assert tele["cpu_pct_mean"] > 0 and tele["rss_peak_mb"] > 50
    # FLOPs are counted on every cell; MFU needs a known peak, and says why when it has none.
    assert tele["flops_per_step"] > 0 and tele["tflops"] > 0
    # A CPU has no peak in the table (the cell runs on the CPU on every host): MFU is null,
    # and the note names the device it found no peak for.
    assert tele["mfu"] is None
    assert tele["mfu_note"].startswith("no peak TFLOP/s known for device ")
    assert record["env"]["cpu"].split()[0] in tele["mfu_note"]


def test_a_flag_run_writes_the_spec_that_reproduces_it(single_run):
    """Flags become a spec: the folder holds spec.yaml, spec.json and summary.json like a spec
    run's, and expanding its spec.yaml again gives exactly the cell that ran."""
    from bench.config.spec import load_spec
    from bench.sweep.plan import expand
    _, cell_dir, record = single_run
    out = cell_dir.parent
    assert {"spec.yaml", "spec.json", "summary.json"} <= {p.name for p in out.iterdir()}
    again = expand(load_spec(str(out / "spec.yaml")), "cpu", 0)
    assert [c.cell_id for c in again.cells] == [record["cell_id"]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["counts"] == {"ok": 1}


def test_summary_is_printed(single_run):
    result, _, _ = single_run
    assert "speedup summary" in result.stdout and "noisy input" in result.stdout
    # Into a pipe or a file there are no live bars: a line as the cell starts and as it ends.
    assert re.search(r"^cell 1/1 unet-single1-\S+: started \(\d+ steps\)$", result.stdout, re.M)
    assert re.search(r"^cell 1/1 unet-single1-\S+: ok after \d+ s$", result.stdout, re.M)


def test_rerun_skips_ok_cells(single_run, tmp_path):
    result, cell_dir, record = single_run
    out = cell_dir.parent
    again = run_cli("run", *TINY, "--steps", "40", "--sample-hz", "20", "--model", "unet",
                    "--strategy", "single", "--out", out, "--noise", "0.1", "0.2")
    assert again.returncode == 0
    assert "were skipped" in again.stdout
    assert json.loads((cell_dir / store.RECORD).read_text())["timing"] == record["timing"]
    launches = [l for l in (cell_dir / store.LOG).read_text().splitlines() if l.startswith("$ ")]
    assert len(launches) == 1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_default_workload_beats_the_noisy_input(tmp_path, device):
    """What `make run` promises: at the default settings each model clearly denoises, on the
    CPU on every host and on a GPU where there is one."""
    out = tmp_path / "results"
    result = run_cli("run", "--device", device, "--strategy", "single", "--out", out,
                     "--sample-hz", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    records = store.records(out)[0]
    assert sorted(r["cell"]["model"] for r in records) == ["unet", "unetpp"]
    for record in records:
        assert record["cell"]["device_type"] == device
        q = record["quality"][0]
        assert q["psnr"] > q["noisy_psnr"] + 1.0, (record["cell"]["model"], q)
        assert q["ssim"] > q["noisy_ssim"], (record["cell"]["model"], q)


def test_epochs_set_the_steps_from_the_training_set(tmp_path):
    out = tmp_path / "results"
    # 24 synthetic images: a pass is a few dozen steps, not the chest sample's hundreds.
    result = run_cli("run", *TINY, "--data", "synthetic:24", "--epochs", "1", "--batch", "8",
                     "--model", "unet", "--strategy", "single", "--sample-hz", "0", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = store.records(out)[0]
    # One pass over every training tile in its 8 dihedral views, in full global batches.
    expected = record["data"]["train_images"] * 8 // 8
    assert record["cell"]["steps"] == expected == len(pd.read_parquet(
        f"{record['_dir']}/{store.STEPS}"))
    assert f"--epochs 1: {expected} steps per cell" in " ".join(result.stdout.split())
