"""Ctrl-C on the commands that keep nothing to resume from (commbench, selfbench, parity,
`bench slurm`): one line saying so, exit status 130 (128 + SIGINT, as a shell reports it),
no traceback, and no rank left computing. Each is signalled as a terminal does, SIGINT to
the command's whole process group, once it is busy. (`bench run` saves its cell instead and
exits 3: test_preemption.)"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO

FAKE_SBATCH = """#!/bin/sh
# The first script is accepted at once; the next one hangs, as a busy slurmctld can.
n=$(cat "$STATE/count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$STATE/count"
if [ "$n" -ge 2 ]; then touch "$STATE/busy"; sleep 60; fi
echo "100$n"
"""


@pytest.fixture
def start():
    """`python -m bench ARGS` in a process group of its own, as a terminal's foreground job
    is; whatever a failed test leaves running is killed."""
    started = []

    def run(*args, env=None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, **(env or {})})
        started.append((proc, psutil.Process(proc.pid)))
        return proc
    yield run
    for proc, process in started:
        if proc.poll() is None:
            for p in [*process.children(recursive=True), process]:
                p.kill()
            proc.communicate()


def ranks_of(proc: subprocess.Popen, module: str) -> list[psutil.Process]:
    """The rank processes running `module` that this command started (not torchrun)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if module in cmd and "torch.distributed.run" not in cmd \
                and p.info["status"] != psutil.STATUS_ZOMBIE:
            try:
                if any(a.pid == proc.pid for a in p.parents()):
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
    return found


def wait_until(ready, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert time.time() < deadline, "the command never got busy"
        time.sleep(0.1)


def ctrl_c(proc: subprocess.Popen) -> tuple[int, str, str]:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, out, err


def assert_one_line(code: int, out: str, err: str, command: str) -> None:
    assert code == 130, (code, out, err)
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bench: {command} stopped by Ctrl-C"), err


def test_ctrl_c_stops_commbench_and_its_ranks(start):
    proc = start("commbench", "--device", "cpu", "--devices", "2", "--max-bytes", "256MiB")
    wait_until(lambda: len(ranks_of(proc, "bench.worker.commbench")) == 2)
    ranks = ranks_of(proc, "bench.worker.commbench")
    assert_one_line(*ctrl_c(proc), "commbench")
    psutil.wait_procs(ranks, timeout=10)
    assert not any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks)


def test_ctrl_c_stops_selfbench_and_its_ranks(start):
    proc = start("selfbench", "--device", "cpu", "--strategy", "ddp", "--devices", "2",
                 "--steps", "400", "--repeats", "3", "--width", "4", "--image-size", "32",
                 "--batch", "4")
    wait_until(lambda: len(ranks_of(proc, "bench.worker.selfbench")) == 2)
    ranks = ranks_of(proc, "bench.worker.selfbench")
    assert_one_line(*ctrl_c(proc), "selfbench")
    psutil.wait_procs(ranks, timeout=10)
    assert not any(r.is_running() and r.status() != psutil.STATUS_ZOMBIE for r in ranks)


def test_ctrl_c_stops_parity_mid_cell(tmp_path, start):
    """Parity trains its cells in a temporary folder (TMPDIR here, to see them start)."""
    proc = start("parity", "--device", "cpu", "--model", "unet", "--width", "4", "--depth",
                 "2", "--image-size", "32", "--batch", "8", "--check-steps", "400",
                 "--strategy", "ddp", "--devices", "2", "--norm", "group",
                 env={"TMPDIR": str(tmp_path)})
    wait_until(lambda: any(tmp_path.glob("*/*/progress.json")))
    assert_one_line(*ctrl_c(proc), "parity")


def test_ctrl_c_while_slurm_submits_names_the_jobs_already_queued(tmp_path, start):
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text(FAKE_SBATCH)
    fake.chmod(0o755)
    proc = start("slurm", "scaling", "--cpu", "--submit", "--out", tmp_path / "sweep",
                 env={"PATH": f"{fake.parent}:{os.environ['PATH']}", "STATE": str(tmp_path)})
    wait_until(lambda: (tmp_path / "busy").exists())
    code, out, err = ctrl_c(proc)
    assert_one_line(code, out, err, "slurm")
    assert "already submitted: 1001 " in err  # the one array sbatch accepted
    assert Path(tmp_path / "sweep" / "slurm" / "aggregate.sbatch").exists()
