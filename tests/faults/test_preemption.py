"""SIGTERM (Slurm's warning before a time limit or preemption) and Ctrl-C (SIGINT, which a
terminal sends to the runner's whole process group): checkpoint at the next step boundary,
status `preempted`, exit 3 with one line saying how to resume, and a re-run resumes to exactly
the uninterrupted result."""
import json
import os
import signal
import time

import pandas as pd
import pytest

from bench.record import store
from conftest import TINY, run_cli
from faultlib import finish, processes_of, start_cli, wait_for_step

# Long enough (~5 s at ~16 ms a step here) that SIGTERM always lands mid-run: progress is
# reported at most twice a second, so a short cell could finish before the signal arrives.
STEPS = 300
RUN = [*TINY, "--steps", str(STEPS), "--warmup", "2", "--model", "unet", "--sample-hz", "0"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of each strategy, made once for every way of stopping it."""
    made = {}

    def of(strategy: str) -> dict:
        if strategy not in made:
            out = tmp_path_factory.mktemp(f"reference-{strategy}")
            whole = run_cli("run", *RUN, "--strategy", strategy, "--out", out)
            assert whole.returncode == 0, whole.stdout + whole.stderr
            (made[strategy],) = store.records(out)[0]
        return made[strategy]
    return of


def stop(proc, how: str) -> None:
    if how == "SIGTERM":  # to the runner, as Slurm signals the batch step
        proc.send_signal(signal.SIGTERM)
    else:  # what a terminal's Ctrl-C does: SIGINT to the foreground process group
        os.killpg(proc.pid, signal.SIGINT)


# The ranks see SIGTERM either way (the runner passes Ctrl-C on as SIGTERM), so Ctrl-C is
# tried on the strategy with the longer way down: torchrun and two ranks agreeing to stop.
@pytest.mark.parametrize("strategy,how", [("single", "SIGTERM"), ("ddp", "SIGTERM"),
                                          ("ddp", "SIGINT")])
def test_preempted_cell_resumes_to_identical_weights(tmp_path, strategy, how, reference):
    interrupted = tmp_path / "interrupted"
    proc = start_cli("run", *RUN, "--strategy", strategy, "--out", interrupted)
    cell_dir = wait_for_step(interrupted, 12)
    # The cell's processes are in sessions of their own: a Ctrl-C reaches the runner only,
    # and the runner alone decides how its cell stops.
    assert all(os.getsid(p.pid) != os.getsid(proc.pid) for p in processes_of(cell_dir))
    stop(proc, how)
    code, output = finish(proc)
    assert code == 3, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    resume = [line for line in output.splitlines() if line.startswith("bench: stopped by")]
    assert len(resume) == 1 and "to resume, run the same command" in resume[0], output
    assert f"--out {interrupted}" in resume[0]
    record = json.loads((cell_dir / store.RECORD).read_text())
    assert record["status"] == "preempted", record
    named = "Ctrl-C (SIGINT)" if how == "SIGINT" else "SIGTERM"
    assert record["error"]["message"].startswith(f"stopped by {named} after step"), record
    stopped = record["timing"]["steps_done"]
    assert 12 <= stopped < STEPS
    assert (cell_dir / "checkpoint.pt").exists()
    assert record["env"]["hostname"] and "slurm" in record["env"]

    resumed = run_cli("run", *RUN, "--strategy", strategy, "--out", interrupted)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    (a,) = store.records(interrupted)[0]
    b = reference(strategy)
    assert a["status"] == "ok" and a["resumed"] is True and b["resumed"] is False
    assert [s["start_step"] for s in a["segments"]] == [0, stopped]
    # Identical trajectory and final weights: every step's loss and the evaluated quality.
    steps_a = pd.read_parquet(f"{a['_dir']}/{store.STEPS}")
    steps_b = pd.read_parquet(f"{b['_dir']}/{store.STEPS}")
    assert steps_a["loss"].tolist() == steps_b["loss"].tolist()
    for qa, qb in zip(a["quality"], b["quality"]):
        assert qa["psnr"] == qb["psnr"] and qa["ssim"] == qb["ssim"]
    # The validation curve survives the checkpoint: the same points, the same scores.
    curve_a, curve_b = a["validation"]["curve"], b["validation"]["curve"]
    assert [(p["step"], p["psnr"]) for p in curve_a] == [(p["step"], p["psnr"]) for p in curve_b]
    assert a["validation"]["pauses"] == b["validation"]["pauses"] == len(curve_b)
    # Throughput counts timed steps only: the resumed segment re-warms its caches untimed.
    assert a["timing"]["timed_steps"] == STEPS - 2 - 2
    assert steps_a["warmup"].sum() == 4
    if strategy == "ddp":  # both segments' arrivals, over every timed step of the two
        assert a["stragglers"]["steps"] == a["timing"]["timed_steps"]
        assert steps_a["lateness_rank1_s"].notna().all()
    assert list(interrupted.glob("*/checkpoint.pt")) == []  # removed once the cell is ok
    # The attribution probe's profiler (kineto) prints a USDT profiler_start / profiler_stop
    # pair per session unless told not to; the cell's log is for what went wrong.
    assert "profiler_start" not in (cell_dir / store.LOG).read_text()


def test_a_second_ctrl_c_stops_at_once_and_still_leaves_a_record(tmp_path):
    """The second Ctrl-C, moments after the first, need not wait for the ranks to save: the
    cell may be killed first. Either way the folder keeps a `preempted` record (never
    nothing), no process of the cell lives on, and the same command finishes the cell."""
    out = tmp_path / "twice"
    proc = start_cli("run", *RUN, "--strategy", "ddp", "--out", out)
    cell_dir = wait_for_step(out, 12)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    code, output = finish(proc)
    assert code == 3, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert sum(line.startswith("bench: stopped by") for line in output.splitlines()) == 1
    record = json.loads((cell_dir / store.RECORD).read_text())
    assert record["status"] == "preempted", record
    # stopped in time to save (it says the step) or killed first (it says what it kept)
    assert (cell_dir / "checkpoint.pt").exists() == (record["checkpoint"] is not None)
    assert processes_of(cell_dir) == []

    again = run_cli("run", *RUN, "--strategy", "ddp", "--out", out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((cell_dir / store.RECORD).read_text())["status"] == "ok"
