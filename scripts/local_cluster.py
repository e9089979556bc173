#!/usr/bin/env python3
"""A multi-node Slurm cluster on one host, one network namespace per node, for real tests of
multi-node training.

`up N` starts a private munged and slurmctld in the root namespace, a bridge benchbr0 holding
10.231.7.1/24, and slurmd nodes n1..nN, each in its own namespace bench-nI (address
10.231.7.(10+I), own hostname and /etc/hosts), joined to the bridge by a veth pair and pinned to
its own cores when the host has enough; `--rate` limits every link both ways (tbf). Everything
is written to DIR/state.json before it is made, so `down` removes exactly what `up` made, even
after a failed or interrupted `up`. What it does and why: docs/slurm.md, "Several Slurm nodes on
one machine".

    python scripts/local_cluster.py up 2 [--rate 100mbit] [--dir /tmp/bench-cluster]
    eval "$(python scripts/local_cluster.py env)"; srun -N2 hostname
    python scripts/local_cluster.py status     # or: down

From Python: `with NamespaceCluster(2) as cluster: cluster.client("srun", "-N2", "hostname")`.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path("/tmp/bench-cluster")
SUBNET = ipaddress.ip_network("10.231.7.0/24")
BRIDGE = "benchbr0"
PREFIX = "bench-"  # namespaces bench-nI (their veth end has the same name), host ends bench-hI
TOOLS = ("ip", "tc", "nsenter", "unshare", "taskset", "hostname", "mount", "munged",
         "slurmctld", "slurmd", "sinfo", "squeue", "scancel", "scontrol", "srun")
RATE = re.compile(r"([1-9][0-9]*)(kbit|mbit|gbit)")
CRED_EXPIRE_S = 10  # as LocalSlurm: a short requeue hold
# A lost node is noticed after two failed pings, each one taking MessageTimeout + ~1 s (Slurm's
# default MessageTimeout of 10 s made NODE_FAIL take 26-30 s; 5 s makes it ~15 s).
SLURMD_TIMEOUT_S, MESSAGE_TIMEOUT_S = 10, 5
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                          "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"})


class UsageError(Exception):
    """Input or host refused before anything is made (the CLI exits 2)."""


def missing_requirements() -> str | None:
    """Why a cluster cannot start here (one sentence), or None."""
    if os.geteuid() != 0:
        return "local_cluster needs root (network namespaces, slurmd)."
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    return f"local_cluster needs {', '.join(absent)} on PATH." if absent else None


def check_rate(rate: str | None) -> None:
    if rate is not None and not RATE.fullmatch(rate):
        raise UsageError(f"--rate must be digits then kbit, mbit or gbit (e.g. 100mbit), "
                         f"not {rate!r}.")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and out.returncode:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {out.stderr.strip()}")
    return out


def _alive(pid: int | None) -> bool:
    """Running; a zombie counts as gone."""
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, TypeError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class SlurmClient:
    """What a test or a benchmark does with a running cluster whose files are under `root`
    (slurm.conf, log/): every client command with its SLURM_CONF, waiting for jobs, reading
    the job completion file. Shared with tests/slurm_cluster.py's one-node cluster."""
    root: Path | None = None

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def client(self, *argv: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env(),
                              timeout=timeout_s)

    def active_jobs(self, job_ids: list[str] | None = None) -> list[str]:
        """Jobs (array tasks included) not yet in a final state. Every state is asked for:
        squeue's default list leaves out transient ones such as REQUEUED, which a job passes
        through on its way back to PENDING."""
        out = self.client("squeue", "-h", "--states=all", "-o", "%i %T",
                          *(["-j", ",".join(job_ids)] if job_ids else []))
        if out.returncode != 0:
            # squeue -j answers "Invalid job id" once every job has left slurmctld's memory;
            # any other failure (a busy slurmctld timing out) says nothing: ask again.
            if "invalid job id" in (out.stderr + out.stdout).lower():
                return []
            return [f"unknown (squeue failed: {out.stderr.strip()[:200]})"]
        return [line for line in out.stdout.splitlines()
                if line.strip() and line.split()[-1] not in FINAL_STATES]

    def wait_for(self, job_ids: list[str], timeout_s: float, poll_s: float = 1.0) -> None:
        """Poll squeue (never `sbatch --wait`, whose back-off reaches 32 s) until done."""
        deadline = time.monotonic() + timeout_s
        while self.active_jobs(job_ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {job_ids} still queued after {timeout_s:.0f} s: "
                                   f"{self.active_jobs(job_ids)}\n{self.logs()}")
            time.sleep(poll_s)

    def cancel_all(self, wait_s: float) -> None:
        """Cancel this user's jobs and wait up to `wait_s` for them to go; a controller that
        no longer answers is left as it is (the daemons are stopped next)."""
        try:
            self.client("scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name)
            deadline = time.monotonic() + wait_s
            while self.active_jobs() and time.monotonic() < deadline:
                time.sleep(0.5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def completed(self) -> list[dict]:
        """Every finished job from the jobcomp file: JobId, JobState, NodeList, ExitCode..."""
        path = self.root / "log" / "jobcomp.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return [dict(w.split("=", 1) for w in line.split() if "=" in w) for line in lines]

    def logs(self, tail_chars: int = 3000) -> str:
        if self.root is None:
            return ""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            try:  # a daemon may remove or rotate its file while it stops
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail_chars:]}")
            except OSError:
                continue
        return "\n".join(parts)


class NamespaceCluster(SlurmClient):
    def __init__(self, nodes: int, rate: str | None = None, root: Path = DEFAULT_DIR,
                 pin: bool = True):
        check_rate(rate)
        if not 1 <= nodes <= 200:
            raise UsageError(f"N must be 1 to 200 (node I is 10.231.7.(10+I)), not {nodes}.")
        self.nodes, self.rate, self.root, self.pin = nodes, rate, Path(root), pin
        self.state: dict = {}
        self.procs: dict[int, subprocess.Popen] = {}  # daemons started here: reaped by down

    @classmethod
    def attach(cls, root: Path = DEFAULT_DIR) -> "NamespaceCluster":
        """The cluster that `up` (perhaps in another process) recorded in ROOT/state.json."""
        state = json.loads((Path(root) / "state.json").read_text())
        cluster = cls(state["nodes"], state["rate"], root)
        cluster.state = state
        return cluster

    conf = property(lambda self: self.root / "slurm.conf")
    state_file = property(lambda self: self.root / "state.json")

    def _record(self, kind: str | None = None, item=None) -> None:
        """Add ITEM to the state's KIND list and save the state: called before ITEM is made."""
        if kind:
            self.state[kind].append(item)
        (self.root / "state.json.tmp").write_text(json.dumps(self.state, indent=1))
        (self.root / "state.json.tmp").replace(self.state_file)

    # ----------------------------------------------------------------- up
    def up(self, timeout_s: float = 60.0, cleanup_on_failure: bool = True) -> "NamespaceCluster":
        if missing_requirements():
            raise UsageError(missing_requirements())
        if self.state_file.exists():
            raise UsageError(f"A cluster is up in {self.root} (state.json exists): run down first.")
        if self.root.exists() and any(self.root.iterdir()):
            raise UsageError(f"{self.root} exists and is not empty: pick another --dir.")
        self._check_host()
        cores = sorted(os.sched_getaffinity(0))
        pinned, size, extra = self.pin and len(cores) >= self.nodes, *divmod(len(cores),
                                                                              self.nodes)
        starts = [i * size + min(i, extra) for i in range(self.nodes + 1)]  # even, in order
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged wants its socket's folder and every parent traversable
        self.state = {
            "dir": str(self.root), "nodes": self.nodes, "rate": self.rate, "pinned": pinned,
            "host_cores": len(cores), "controller": socket.gethostname().split(".")[0],
            "node_info": [{"name": f"n{i}", "netns": f"{PREFIX}n{i}", "veth": f"{PREFIX}h{i}",
                           "addr": str(SUBNET[10 + i]),
                           "cores": cores[starts[i - 1]:starts[i]] if pinned else []}
                          for i in range(1, self.nodes + 1)],
            "bridges": [], "netns": [], "veths": [], "pids": [], "files": []}
        self._record()
        try:
            for sub in ("log", "ctld", "spool"):
                (self.root / sub).mkdir()
            self._start_munged()
            self._make_network()
            self._write_files()
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: self.client("scontrol", "ping").returncode == 0, 30, "slurmctld")
            self._start_nodes()
            self._wait(lambda: self.client("sinfo", "-h", "-N", "-o", "%T").stdout.split()
                       == ["idle"] * self.nodes, timeout_s, "every node to be idle")
        except BaseException:
            if cleanup_on_failure:
                self.down()
            raise
        return self

    def _check_host(self) -> None:
        """Refuse a folder munged cannot serve its socket from, and a subnet or names already
        on the host (another cluster, or anything else)."""
        closed = [str(d) for d in self.root.absolute().parents
                  if d.exists() and not d.stat().st_mode & 0o001]
        if closed:
            raise UsageError(f"munged needs every folder above {self.root} to be executable "
                             f"by all, and {closed[0]} is not: choose another --dir.")
        text = _run("ip", "-o", "-4", "addr").stdout + _run("ip", "-4", "route").stdout
        used = [net for net in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?", text)
                if ipaddress.ip_network(net, strict=False).overlaps(SUBNET)]
        names = _run("ip", "-o", "link").stdout + _run("ip", "netns", "list").stdout
        used += [n for n in [BRIDGE] + [f"{PREFIX}{k}{i}" for i in range(1, self.nodes + 1)
                                        for k in "hn"] if re.search(rf"\b{n}\b", names)]
        if used:
            raise UsageError(f"{SUBNET} or the names {BRIDGE}/{PREFIX}* are already in use on "
                             f"this host ({', '.join(used)}): run down for that cluster first.")

    def _start_munged(self) -> None:
        key, sock = self.root / "munge.key", self.root / "munge.socket"
        self._record("files", str(key))
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        self._spawn("munged", ["munged", "-F", f"--socket={sock}", f"--key-file={key}",
                               f"--pid-file={self.root / 'munged.pid'}",
                               f"--seed-file={self.root / 'munged.seed'}"])
        self._wait(sock.exists, 15, "munged's socket")

    def _make_network(self) -> None:
        self._record("bridges", BRIDGE)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{SUBNET[1]}/{SUBNET.prefixlen}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for node in self.state["node_info"]:
            ns, veth = node["netns"], node["veth"]  # the namespace's end is named as it is
            self._record("netns", ns)
            _run("ip", "netns", "add", ns)
            self._record("veths", veth)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", ns, "netns", ns)
            _run("ip", "link", "set", veth, "master", BRIDGE, "up")
            _run("ip", "-n", ns, "addr", "add", f"{node['addr']}/{SUBNET.prefixlen}", "dev", ns)
            _run("ip", "-n", ns, "link", "set", ns, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            if self.rate:  # egress on both ends: the link is limited in each direction
                digits, unit = RATE.fullmatch(self.rate).groups()
                bits = int(digits) * {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}[unit]
                burst = str(max(32 * 1024, bits // 8 // 50))  # 20 ms: 250 kB at 100mbit
                for where, dev in (([], veth), (["-n", ns], ns)):
                    _run("tc", *where, "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                         self.rate, "burst", burst, "latency", "400ms")

    def _write_files(self) -> None:
        st, root = self.state, self.root
        hosts = root / "hosts"  # bind-mounted over each node's /etc/hosts
        self._record("files", str(hosts))
        hosts.write_text("\n".join(["127.0.0.1 localhost", f"{SUBNET[1]} {st['controller']}"]
                                   + [f"{n['addr']} {n['name']}" for n in st["node_info"]]) + "\n")
        lines = [
            "ClusterName=benchns", f"SlurmctldHost={st['controller']}({SUBNET[1]})",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge.socket'},cred_expire={CRED_EXPIRE_S}",
            f"StateSaveLocation={root / 'ctld'}", f"SlurmdSpoolDir={root / 'spool' / '%n'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root}/slurmd.%n.pid",
            f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "SchedulerParameters=batch_sched_delay=0",
            "MpiDefault=none", "ReturnToService=2", "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={root}/log/jobcomp.txt", "SlurmctldTimeout=30", "InactiveLimit=0",
            f"SlurmdTimeout={SLURMD_TIMEOUT_S}", f"MessageTimeout={MESSAGE_TIMEOUT_S}",
            "KillWait=5", "MinJobAge=300",
            *(f"NodeName={n['name']} NodeAddr={n['addr']} CPUs={len(n['cores']) or 1} "
              "State=UNKNOWN" for n in st["node_info"]),
            f"PartitionName=debug Nodes={','.join(n['name'] for n in st['node_info'])} "
            "Default=YES MaxTime=INFINITE State=UP"]
        self._record("files", str(self.conf))
        self.conf.write_text("\n".join(lines) + "\n")

    def _start_nodes(self) -> None:
        """Each slurmd in its namespace via nsenter (`ip netns exec` remounts /sys, and slurmd
        needs /sys/fs/cgroup), with its own hostname and /etc/hosts; every step execs."""
        q = lambda path: shlex.quote(str(path))  # noqa: E731
        for node in self.state["node_info"]:
            pin = f"taskset -c {','.join(map(str, node['cores']))} " if node["cores"] else ""
            inner = (f"hostname {node['name']} && mount --bind {q(self.root / 'hosts')} "
                     f"/etc/hosts && exec {pin}slurmd -D -N {node['name']} -f {q(self.conf)}")
            self._spawn(f"slurmd.{node['name']}", [
                "nsenter", f"--net=/run/netns/{node['netns']}", "unshare", "--uts", "--mount",
                "--propagation", "private", "sh", "-c", inner])

    def _spawn(self, name: str, argv: list[str]) -> None:
        entry = {"name": name, "pid": None, "pidfile": str(self.root / f"{name}.pid")}
        self._record("pids", entry)  # its pidfile before the process exists, its pid just after
        with open(self.root / "log" / f"{name}.out", "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[proc.pid] = proc
        entry["pid"] = proc.pid
        self._record()

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            dead = [e["name"] for e in self.state["pids"] if not _alive(e["pid"])]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout_s:.0f} s"
                raise RuntimeError(f"{why} while waiting for {what}:\n{self.logs()}")
            time.sleep(0.3)

    # ----------------------------------------------------------------- faults
    def _node(self, node: str | int) -> dict:
        name = f"n{node}" if isinstance(node, int) else node
        return next(n for n in self.state["node_info"] if n["name"] == name)

    def link_down(self, node: str | int, up: bool = False) -> None:
        """Cut the node off: its host-side veth down (`up=True` restores it)."""
        _run("ip", "link", "set", self._node(node)["veth"], "up" if up else "down")

    def kill_node(self, node: str | int) -> None:
        """SIGKILL the node's slurmd and every process in its namespace (its job steps)."""
        info = self._node(node)
        entry = next(e for e in self.state["pids"] if e["name"] == f"slurmd.{info['name']}")
        self._kill(self._pid_of(entry), grace_s=0)
        self._kill_netns(info["netns"])

    def status(self) -> str:
        st = self.state
        lines = [self.client("sinfo", "-N").stdout.rstrip()] + [
            f"{n['name']}: namespace {n['netns']}, address {n['addr']}, cores "
            f"{','.join(map(str, n['cores'])) or 'shared (not pinned)'}, link "
            f"{st['rate'] + ' each way' if st['rate'] else 'unlimited'}" for n in st["node_info"]]
        lines += [f"{e['name']}: pid {e['pid']} {'alive' if _alive(e['pid']) else 'NOT RUNNING'}"
                  for e in st["pids"]]
        return "\n".join(lines + ([] if st["pinned"] else [self.oversubscribed()]))

    def oversubscribed(self) -> str:
        return (f"The {self.nodes} nodes share the host's {self.state['host_cores']} cores "
                f"({'oversubscribed' if self.nodes > self.state['host_cores'] else 'not pinned'}"
                "), so no timing figure from this cluster stands for separate machines.")

    # ----------------------------------------------------------------- down
    def _pid_of(self, entry: dict) -> int | None:
        """The recorded pid, else its pidfile's, while it is still one of ours."""
        pidfile = Path(entry["pidfile"])
        for pid in (entry.get("pid"), pidfile.exists() and pidfile.read_text().strip()):
            try:
                if _alive(pid) and str(self.root).encode() in Path(f"/proc/{int(pid)}/cmdline"
                                                                    ).read_bytes():
                    return int(pid)
            except (OSError, ValueError):
                pass
        return None

    def _kill(self, pid: int | None, grace_s: float = 10.0) -> None:
        """SIGTERM and up to GRACE_S to go (0: none), then SIGKILL."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            if _alive(pid) and wait_s:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    return
                deadline = time.monotonic() + wait_s
                while _alive(pid) and time.monotonic() < deadline:
                    if pid in self.procs:
                        self.procs[pid].poll()  # reap a child of ours
                    time.sleep(0.05)

    def _kill_netns(self, ns: str) -> None:
        for _ in range(20):  # until none is left: one may fork while the others go
            pids = [int(p) for p in _run("ip", "netns", "pids", ns, check=False).stdout.split()]
            if not any(_alive(p) for p in pids):
                return
            for pid in pids:
                self._kill(pid, grace_s=0)

    def down(self) -> None:
        """Cancel jobs, stop the daemons newest first, empty the namespaces, delete veths,
        namespaces, bridge and DIR. Works from the state file alone; idempotent."""
        on_disk = self.state_file.exists()
        st = self.state = json.loads(self.state_file.read_text()) if on_disk else self.state
        if st and any(e["name"] == "slurmctld" and self._pid_of(e) for e in st["pids"]):
            self.cancel_all(wait_s=10)
        for entry in reversed(st.get("pids", [])):
            self._kill(self._pid_of(entry))
        for ns in st.get("netns", []):
            self._kill_netns(ns)
        for argv in ([("link", "del", v) for v in st.get("veths", [])]
                     + [("netns", "del", ns) for ns in st.get("netns", [])]
                     + [("link", "del", b) for b in st.get("bridges", [])]):
            _run("ip", *argv, check=False)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs.clear()
        if on_disk:
            shutil.rmtree(self.root, ignore_errors=True)
        self.state = {}

    def __enter__(self) -> "NamespaceCluster":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "env", "status", "down"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--dir", type=Path, default=DEFAULT_DIR)
        if name == "up":
            cmd.add_argument("nodes", type=int)
            cmd.add_argument("--rate", help="limit every link, both ways: e.g. 100mbit, 1gbit")
            cmd.add_argument("--no-pin", action="store_true", help="leave every node free on "
                             "every core (as a shared node without CPU binding)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "up":
            cluster = NamespaceCluster(args.nodes, args.rate, args.dir,
                                       pin=not args.no_pin).up()
            print("\n".join(f"{n['name']}: {n['addr']} in namespace {n['netns']}, cores "
                            f"{','.join(map(str, n['cores'])) or 'shared'}"
                            for n in cluster.state["node_info"]))
            print(f"{args.nodes} nodes idle after {time.monotonic() - started:.1f} s, links "
                  f"{args.rate or 'unlimited'}; `down --dir {args.dir}` stops them.")
            if not cluster.state["pinned"]:
                print(cluster.oversubscribed())
            print(f"export SLURM_CONF={cluster.conf}")
        elif not (args.dir / "state.json").exists():
            print(f"No cluster is recorded in {args.dir}.", file=sys.stderr)
            return 0 if args.command == "down" else 1
        elif args.command == "down":
            if missing_requirements():
                raise UsageError(missing_requirements())
            NamespaceCluster.attach(args.dir).down()
            print(f"Cluster in {args.dir} removed in {time.monotonic() - started:.1f} s.")
        else:
            cluster = NamespaceCluster.attach(args.dir)
            print(cluster.status() if args.command == "status"
                  else f"export SLURM_CONF={cluster.conf}")
        return 0
    except UsageError as refused:
        print(refused, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args.command} interrupted" + (": everything it made is removed." if
              args.command == "up" else "; run it again."), file=sys.stderr)
        return 130
    except RuntimeError as failed:
        gone = " (everything it made is removed)" if args.command == "up" else ""
        print(f"{args.command} failed{gone}: {failed}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
