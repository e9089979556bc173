"""A rank that dies or hangs ends its cell with the right status; nothing is left running and
the sweep's other cells complete."""
import json
import os
import signal
import socket

from bench.record import store
from conftest import REPO, TINY
from faultlib import finish, processes_of, rank_process, start_cli, wait_for_step

LONG = ["--steps", "150", "--warmup", "2"]  # long enough to be interrupted mid-run


def test_sigkilled_rank_fails_the_cell_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "results"
    # Two cells: the DDP cell is hit, the single-device cell after it must still be ok.
    proc = start_cli("run", *TINY, *LONG, "--model", "unet", "--strategy", "ddp",
                     "--strategy", "single", "--out", out, "--timeout", "600")
    cell_dir = wait_for_step(out, 3)
    assert "ddp" in cell_dir.name
    rank_process(cell_dir, 1).send_signal(signal.SIGKILL)
    code, output = finish(proc)
    assert code == 1, output  # not every cell ok
    record = json.loads((cell_dir / store.RECORD).read_text())
    assert record["status"] == "failed"
    assert record["error"]["message"] == "rank 1 was killed by signal SIGKILL", record["error"]
    # A failed record still says where it ran (node, Slurm ids), so a retry can be aimed.
    assert record["env"]["hostname"] == socket.gethostname() and "slurm" in record["env"]
    assert processes_of(cell_dir) == []
    others = [r for r in store.records(out)[0] if r["cell_id"] != record["cell_id"]]
    assert [r["status"] for r in others] == ["ok"]


def test_hung_rank_times_out_and_is_reaped(tmp_path):
    out = tmp_path / "results"
    # The cell's clock starts at launch: enough for torchrun and two ranks to start and
    # train 3 steps on a busy 2-core machine, short enough not to hold the suite up.
    proc = start_cli("run", *TINY, *LONG, "--model", "unet", "--strategy", "ddp", "--out", out,
                     "--timeout", "25")
    cell_dir = wait_for_step(out, 3)
    # A stopped rank is the purest hang: its peer blocks in the next all-reduce forever.
    rank_process(cell_dir, 1).send_signal(signal.SIGSTOP)
    code, output = finish(proc)
    record = json.loads((cell_dir / store.RECORD).read_text())
    assert record["status"] == "timeout", record
    assert "timeout of 25 s" in record["error"]["message"]
    assert processes_of(cell_dir) == []


def test_killed_runner_takes_its_cell_down(tmp_path):
    """SIGKILL to `bench run` itself: the cell must not live on as an orphan racing a re-run;
    its ranks get SIGTERM (parent-death signal), checkpoint and stop."""
    import time
    out = tmp_path / "results"
    proc = start_cli("run", *TINY, *LONG, "--model", "unet", "--strategy", "ddp", "--out", out)
    cell_dir = wait_for_step(out, 3)
    proc.kill()  # the runner only; its cell is in a session of its own
    proc.wait()
    deadline = time.time() + 60
    while processes_of(cell_dir) and time.time() < deadline:
        time.sleep(0.5)
    assert processes_of(cell_dir) == []
    record = json.loads((cell_dir / store.RECORD).read_text())
    assert record["status"] == "preempted", record


def test_a_rank_stops_itself_when_its_runner_dies():
    """The mechanism under the test above, alone: a rank on the runner's host watches the
    runner and asks its loop to stop once it is gone (no signal, so nothing can kill a rank
    that is still writing its record)."""
    import subprocess
    import sys
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code = ("import time\n"
            "from bench.worker import checkpoint\n"
            "checkpoint.watch_runner(poll_s=0.1)\n"
            "time.sleep(0.5)\n"
            "print('before', checkpoint.runner_gone(), flush=True)\n"
            "input()\n"  # the test kills the runner, then says go
            "deadline = time.time() + 20\n"
            "while not checkpoint.runner_gone() and time.time() < deadline:\n"
            "    time.sleep(0.05)\n"
            "print('after', checkpoint.runner_gone(), flush=True)\n")
    env = {**os.environ, "BENCH_RUNNER_PID": str(runner.pid),
           "BENCH_RUNNER_HOST": socket.gethostname()}
    rank = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert rank.stdout.readline().split() == ["before", "False"]  # the runner lives
        runner.kill()
        runner.wait()
        rank.stdin.write("go\n")
        rank.stdin.flush()
        assert rank.stdout.readline().split() == ["after", "True"]
        assert rank.wait(timeout=20) == 0  # a request, not a signal: the rank ends normally
    finally:
        runner.kill()
        rank.kill()
    other_host = {**env, "BENCH_RUNNER_HOST": "another-node"}
    probe = subprocess.run([sys.executable, "-c", "import threading\n"
                            "from bench.worker import checkpoint\ncheckpoint.watch_runner()\n"
                            "print(sum(t.name == 'bench-runner-watch' "
                            "for t in threading.enumerate()))"],
                           env=other_host, capture_output=True, text=True, timeout=60,
                           cwd=REPO)
    assert probe.stdout.strip() == "0"  # a rank on another node cannot see the runner
