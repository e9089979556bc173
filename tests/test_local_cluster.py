"""scripts/local_cluster.py for real: a Slurm cluster whose nodes are network namespaces on this
host, each with its own hostname, address and core; links limited both ways with tbf; and a
`down` that leaves nothing behind, even after an `up` that failed half way. Needs root, iproute2,
util-linux and Slurm/munge (else skipped, saying what is missing); takes ~10 s."""
import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "local_cluster.py"
_spec = importlib.util.spec_from_file_location("local_cluster", SCRIPT)
lc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lc)

pytestmark = pytest.mark.skipif(lc.missing_requirements() is not None,
                                reason=lc.missing_requirements() or "")

# Each task says who it is: hostname, first address, the cores it may run on.
PROBE = ("import os, socket, subprocess; print(socket.gethostname(), subprocess.run("
         "['hostname', '-I'], capture_output=True, text=True).stdout.split()[0], "
         "','.join(map(str, sorted(os.sched_getaffinity(0)))))")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def leftovers(state: dict, root: Path) -> list[str]:
    """Whatever of the cluster recorded in STATE is still on the host."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [w for w in netns.split() if w.startswith(lc.PREFIX)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    left += [name for name in [lc.BRIDGE, *(n["veth"] for n in state["node_info"])]
             if re.search(rf"\b{name}\b", links)]
    left += [f"{e['name']} (pid {e['pid']})" for e in state["pids"] if lc._alive(e["pid"])]
    for proc in Path("/proc").glob("[0-9]*"):  # anything else started from the cluster's folder
        try:
            if str(root).encode() in (proc / "cmdline").read_bytes() and lc._alive(proc.name):
                left.append(f"pid {proc.name}: {(proc / 'cmdline').read_bytes()[:80]!r}")
        except OSError:
            pass
    return left + ([str(root)] if root.exists() else [])


@pytest.fixture
def root():
    if subprocess.run(["ip", "link", "show", lc.BRIDGE], capture_output=True).returncode == 0:
        pytest.skip(f"a namespace cluster is already up on this host ({lc.BRIDGE} exists)")
    path = Path(f"/tmp/bench-cluster-test-{uuid.uuid4().hex[:8]}")
    yield path
    if (path / "state.json").exists():  # a failed test must not leave a cluster behind
        lc.NamespaceCluster.attach(path).down()


def test_two_nodes_each_have_their_hostname_address_and_core_and_down_leaves_nothing(root):
    with lc.NamespaceCluster(2, root=root) as cluster:
        state = json.loads(cluster.state_file.read_text())
        sinfo = cluster.client("sinfo", "-h", "-N", "-o", "%N %T").stdout.split()
        assert sinfo == ["n1", "idle", "n2", "idle"]
        out = cluster.client("srun", "-N2", "-l", "python3", "-c", PROBE, timeout_s=60)
        assert out.returncode == 0, out.stderr + cluster.logs()
    tasks = {}
    for line in out.stdout.splitlines():
        _, host, addr, cores = line.split()
        tasks[host] = (addr, cores)
    assert sorted(tasks) == ["n1", "n2"]
    nodes = {n["name"]: n for n in state["node_info"]}
    assert {h: a for h, (a, _) in tasks.items()} == {h: n["addr"] for h, n in nodes.items()}
    assert len({a for a, _ in tasks.values()}) == 2
    if len(os.sched_getaffinity(0)) >= 2:  # each node on cores of its own (2 cores: 0 and 1)
        assert state["pinned"] is True
        assert {h: c for h, (_, c) in tasks.items()} == {
            h: ",".join(map(str, n["cores"])) for h, n in nodes.items()}
        assert not set(nodes["n1"]["cores"]) & set(nodes["n2"]["cores"])
    assert leftovers(state, root) == []


def test_cli_rate_limits_both_ends_of_every_link_and_down_removes_it(root):
    up = cli("up", 2, "--rate", "100mbit", "--dir", root)
    try:
        assert up.returncode == 0, up.stderr
        assert f"export SLURM_CONF={root / 'slurm.conf'}" in up.stdout
        state = json.loads((root / "state.json").read_text())
        for node in state["node_info"]:
            for where, dev in (([], node["veth"]), (["-n", node["netns"]], node["netns"])):
                qdisc = subprocess.run(["tc", *where, "qdisc", "show", "dev", dev],
                                       capture_output=True, text=True).stdout
                assert "tbf" in qdisc and "rate 100Mbit" in qdisc, (dev, qdisc)
        status = cli("status", "--dir", root).stdout
        assert "100mbit each way" in status and "NOT RUNNING" not in status
        assert cli("env", "--dir", root).stdout.strip() == \
            f"export SLURM_CONF={root / 'slurm.conf'}"
    finally:
        down = cli("down", "--dir", root)
    assert down.returncode == 0, down.stderr
    assert leftovers(state, root) == []
    assert cli("down", "--dir", root).returncode == 0  # idempotent


class FailingUp(lc.NamespaceCluster):
    """Fails just after recording FAIL_AT (kind, name), before making it."""
    fail_at: tuple[str, str] = ("", "")

    def _record(self, kind=None, item=None):
        super()._record(kind, item)
        if kind and (kind, item if isinstance(item, str) else item["name"]) == self.fail_at:
            raise RuntimeError(f"deliberate failure before making {self.fail_at}")


@pytest.mark.parametrize("fail_at", [("veths", "bench-h2"), ("pids", "slurmd.n2")],
                         ids=["in-the-network", "with-a-node-running"])
def test_down_after_a_failed_up_removes_exactly_what_it_made(root, fail_at):
    cluster = FailingUp(2, root=root)
    cluster.fail_at = fail_at
    with pytest.raises(RuntimeError, match="deliberate"):
        cluster.up(cleanup_on_failure=False)
    state = json.loads((root / "state.json").read_text())
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "bench-n1" in netns and "bench-n2" in netns  # made before the failure
    assert [e["name"] for e in state["pids"] if lc._alive(e["pid"])] == (
        ["munged"] if fail_at[0] == "veths" else ["munged", "slurmctld", "slurmd.n1"])
    down = cli("down", "--dir", root)  # a fresh process, with the state file alone
    assert down.returncode == 0, down.stderr
    cluster.down()  # reaps our children (they are gone already); nothing else to do
    assert leftovers(state, root) == []


@pytest.mark.parametrize("rate", ["fast", "100mb", "0mbit", "10"])
def test_a_bad_rate_is_refused_in_one_sentence_before_anything_is_made(root, rate):
    out = cli("up", 2, "--rate", rate, "--dir", root)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "kbit, mbit or gbit" in out.stderr
    assert not root.exists()
