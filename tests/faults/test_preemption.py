"""SIGTERM (Slurm's warning before a time limit or preemption): checkpoint at the next step
boundary, status `preempted`, and a re-run resumes to exactly the uninterrupted result."""
import json
import signal

import pandas as pd
import pytest

from bench.record import store
from conftest import TINY, run_cli
from faultlib import finish, start_cli, wait_for_step

# Long enough (~5 s at ~16 ms a step here) that SIGTERM always lands mid-run: progress is
# reported at most twice a second, so a short cell could finish before the signal arrives.
STEPS = 300
RUN = [*TINY, "--steps", str(STEPS), "--warmup", "2", "--model", "unet", "--sample-hz", "0"]


@pytest.mark.parametrize("strategy", ["single", "ddp"])
def test_preempted_cell_resumes_to_identical_weights(tmp_path, strategy):
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    proc = start_cli("run", *RUN, "--strategy", strategy, "--out", interrupted)
    cell_dir = wait_for_step(interrupted, 12)
    proc.send_signal(signal.SIGTERM)  # to the runner, as Slurm signals the batch step
    code, output = finish(proc)
    assert code == 3, output
    record = json.loads((cell_dir / store.RECORD).read_text())
    assert record["status"] == "preempted", record
    stopped = record["timing"]["steps_done"]
    assert 12 <= stopped < STEPS
    assert (cell_dir / "checkpoint.pt").exists()
    assert record["env"]["hostname"] and "slurm" in record["env"]

    resumed = run_cli("run", *RUN, "--strategy", strategy, "--out", interrupted)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    whole = run_cli("run", *RUN, "--strategy", strategy, "--out", reference)
    assert whole.returncode == 0, whole.stdout + whole.stderr

    (a,) = store.records(interrupted)[0]
    (b,) = store.records(reference)[0]
    assert a["status"] == "ok" and a["resumed"] is True and b["resumed"] is False
    assert [s["start_step"] for s in a["segments"]] == [0, stopped]
    # Identical trajectory and final weights: every step's loss and the evaluated quality.
    steps_a = pd.read_parquet(f"{a['_dir']}/{store.STEPS}")
    steps_b = pd.read_parquet(f"{b['_dir']}/{store.STEPS}")
    assert steps_a["loss"].tolist() == steps_b["loss"].tolist()
    for qa, qb in zip(a["quality"], b["quality"]):
        assert qa["psnr"] == qb["psnr"] and qa["ssim"] == qb["ssim"]
    # Throughput counts timed steps only: the resumed segment re-warms its caches untimed.
    assert a["timing"]["timed_steps"] == STEPS - 2 - 2
    assert steps_a["warmup"].sum() == 4
    assert list(interrupted.glob("*/checkpoint.pt")) == []  # removed once the cell is ok
