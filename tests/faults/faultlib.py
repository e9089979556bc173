"""Fault-injection helpers: find a cell's rank processes and wait for its progress."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for its conftest

from conftest import REPO  # noqa: E402


def start_cli(*args) -> subprocess.Popen:
    """`python -m bench ARGS` in the background, in its own process group."""
    return subprocess.Popen([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_step(results: Path, step: int, timeout: float = 240) -> Path:
    """The cell folder, once its rank 0 reports having finished `step` steps."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for progress in results.glob("*/progress.json"):
            try:
                if json.loads(progress.read_text())["step"] >= step:
                    return progress.parent
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.1)
    raise TimeoutError(f"no cell under {results} reached step {step} in {timeout} s")


def rank_process(cell_dir: Path, rank: int) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "bench.worker" in cmd and str(cell_dir) in cmd:
            try:
                if proc.environ().get("RANK", "0") == str(rank):
                    return proc
            except psutil.NoSuchProcess:
                continue
    raise LookupError(f"no rank {rank} process for {cell_dir}")


def processes_of(cell_dir: Path) -> list[psutil.Process]:
    """Every live process whose command line names the cell (launcher and ranks)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(cell_dir) in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise
    return proc.returncode, out
