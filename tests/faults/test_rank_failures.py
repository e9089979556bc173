"""A rank that dies or hangs ends its cell with the right status; nothing is left running and
the sweep's other cells complete."""
import json
import signal
import socket

from bench.record import store
from conftest import TINY
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
