"""A real one-node Slurm cluster on localhost, for tests of the Slurm integration.

Starts a private munged, slurmctld and slurmd (Debian's slurm-wlm 22.05 packages, run as root,
no systemd) from a fresh folder under /tmp, and stops exactly those daemons by the PIDs it
started, after cancelling every job. Its slurm.conf is written below, with a comment on each
setting a test relies on; the client side (sbatch, squeue, waiting for jobs) is scripts/
local_cluster.py's SlurmClient, shared with the multi-node cluster.

As a module: `with LocalSlurm() as cluster: ...` (see tests/test_slurm_real.py).
As a script: `python tests/slurm_cluster.py` starts one, prints the SLURM_CONF to export, and
stops it on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from local_cluster import FINAL_STATES, SlurmClient, free_port  # noqa: E402,F401 (tests)

DAEMONS = ("munged", "slurmctld", "slurmd")
CRED_EXPIRE_S = 10  # the requeue hold: short for tests (Slurm's default is 120 s)
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun")


def missing_requirements() -> str | None:
    """Why a local cluster cannot start here, or None."""
    absent = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]
    if absent:
        return (f"Slurm/munge not installed (missing {', '.join(absent)}); apt-get install "
                "--no-install-recommends slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    return None


class LocalSlurm(SlurmClient):
    def __init__(self, *, max_array_size: int | None = None, cpus: int | None = None,
                 partition: str = "debug"):
        self.max_array_size = max_array_size
        self.cpus = cpus or os.cpu_count() or 1
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.root: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}

    # ----------------------------------------------------------------- set-up
    def _write_config(self) -> Path:
        root = self.root
        for sub in ("state", "spool", "log"):
            (root / sub).mkdir()
        lines = [
            "ClusterName=benchtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire also sets how long a requeued job waits before it may start again
            # (slurm.conf(5)); a relaunch inside that window fails "Job credential revoked".
            f"AuthInfo=socket={root / 'munge.socket'},cred_expire={CRED_EXPIRE_S}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=batch_sched_delay=0",
            "MpiDefault=none",
            "ReturnToService=2",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={root / 'log' / 'jobcomp.txt'}",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=300",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE "
            "State=UP",
        ]
        if self.max_array_size is not None:
            lines.append(f"MaxArraySize={self.max_array_size}")
        conf = root / "slurm.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout_s: float = 60.0) -> "LocalSlurm":
        why = missing_requirements()
        if why:
            raise RuntimeError(why)
        # munged insists that its socket's folder and every parent are traversable by all.
        self.root = Path(tempfile.mkdtemp(prefix="bench-slurm-", dir="/tmp"))
        self.root.chmod(0o755)
        conf = self._write_config()
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        log = self.root / "log"
        try:
            self._spawn("munged", ["munged", "-F", f"--socket={self.root / 'munge.socket'}",
                                   f"--key-file={key}", f"--pid-file={self.root / 'munged.pid'}",
                                   f"--seed-file={self.root / 'munged.seed'}"], log)
            self._wait(lambda: (self.root / "munge.socket").exists(), 15, "munged's socket")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)], log)
            self._wait(lambda: self.client("scontrol", "ping").returncode == 0, timeout_s,
                       "slurmctld to answer")
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(conf)], log)
            self._wait(self._node_idle, timeout_s, f"node {self.node} to be idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str], log: Path) -> None:
        out = open(log / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env(),
                                            start_new_session=True)
        out.close()

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for "
                                       f"{what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{self.logs()}")

    def _node_idle(self) -> bool:
        out = self.client("sinfo", "-h", "-N", "-o", "%T")
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    # ----------------------------------------------------------------- use
    def job_state(self, job_id: str) -> dict:
        """`scontrol show job -o` as a dict (there is no sacct without slurmdbd)."""
        out = self.client("scontrol", "show", "job", "-o", job_id)
        fields = {}
        for word in out.stdout.split():
            if "=" in word:
                key, _, value = word.partition("=")
                fields[key] = value
        return fields

    # ----------------------------------------------------------------- tear-down
    def stop(self) -> None:
        """Cancel every job and wait for them to go; then stop the daemons this object
        started, newest first, by PID (slurmd leaves running jobs alone on SIGTERM)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.cancel_all(wait_s=30)
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    import argparse
    parser = argparse.ArgumentParser(description="a one-node Slurm cluster on localhost")
    parser.add_argument("--max-array-size", type=int, default=None)
    args = parser.parse_args()
    cluster = LocalSlurm(max_array_size=args.max_array_size).start()
    stop = {"now": False}

    def request_stop(signum, frame):
        stop["now"] = True
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(f"export SLURM_CONF={cluster.conf}   # Ctrl-C stops the cluster", flush=True)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
