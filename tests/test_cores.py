"""Usable cores (bench/measure/cores.py): a task's affinity set and cgroup CPU quota, not the
node's count, size the ranks' threads and the prediction's capacity."""
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bench.measure.cores import cgroup_quota_cpus

REPORT = "import json; from bench.measure.cores import core_facts; print(json.dumps(core_facts()))"


def _facts(prefix: list[str]) -> dict:
    out = subprocess.run([*prefix, sys.executable, "-c", REPORT], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(shutil.which("taskset") is None or (os.cpu_count() or 1) < 2,
                    reason="needs taskset and at least 2 cores")
def test_a_task_bound_to_one_core_has_one_usable_core():
    facts = _facts(["taskset", "-c", "0"])
    assert facts["cpu_count"] == os.cpu_count() and facts["cpu_count"] >= 2
    assert facts["affinity_cores"] == 1 and facts["usable_cores"] == 1


def _cpu_cgroup() -> Path | None:
    """A fresh cgroup with the cpu controller (v1 or v2), or None where this host lets none
    be made (not root, read-only or absent controller)."""
    root = Path("/sys/fs/cgroup")
    for parent in (root / "cpu", root):
        if (parent / "cpu.cfs_quota_us").exists() or (parent / "cgroup.subtree_control").exists():
            folder = parent / f"bench-test-{uuid.uuid4().hex[:8]}"
            try:
                folder.mkdir()
            except OSError:
                continue
            if (folder / "cpu.cfs_quota_us").exists() or (folder / "cpu.max").exists():
                return folder
            folder.rmdir()
    return None


def test_a_cgroup_quota_caps_the_usable_cores():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs at least 2 cores")
    folder = _cpu_cgroup()
    if folder is None:
        pytest.skip("needs root and a cgroup cpu controller this host lets tests write")
    try:
        if (folder / "cpu.max").exists():
            (folder / "cpu.max").write_text("100000 100000\n")
        else:
            (folder / "cpu.cfs_period_us").write_text("100000\n")
            (folder / "cpu.cfs_quota_us").write_text("100000\n")
        # The shell moves itself into the cgroup, then becomes the Python that reports.
        code = f'echo $$ > {folder}/cgroup.procs && exec "$0" -c "$1"'
        out = subprocess.run(["sh", "-c", code, sys.executable, REPORT], check=True,
                             capture_output=True, text=True)
        facts = json.loads(out.stdout)
    finally:
        folder.rmdir()
    assert facts["cgroup_quota_cpus"] == pytest.approx(1.0)
    assert facts["affinity_cores"] >= 2 and facts["usable_cores"] == 1


def test_quota_read_from_the_tightest_cgroup_on_the_path(tmp_path):
    # cgroup v2 layout: a 4-CPU parent, a 2.5-CPU child, the process in a grandchild without
    # a limit of its own.
    for path, limit in (("a", "400000 100000"), ("a/b", "250000 100000"), ("a/b/c", "max 100000")):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "cpu.max").write_text(limit + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/a/b/c\n")
    assert cgroup_quota_cpus(tmp_path, proc) == pytest.approx(2.5)
    proc.write_text("0::/\n")
    assert cgroup_quota_cpus(tmp_path, proc) is None


def test_prediction_capacity_counts_the_tasks_cores_not_the_nodes():
    from bench.analysis.scaling_inputs import compute_capacity, shared_cores
    # A 64-core node, a Slurm task given 8 of them; the single run used all 8 threads.
    single = {"cell": {"device_type": "cpu"},
              "env": {"cpu_count": 64, "usable_cores": 8}, "runtime": {"threads_per_rank": 8}}
    # 2 ranks share the task's 8 cores: one single run's worth, not 64 ÷ 8 = 8 capped at 2.
    assert compute_capacity(single, n=2) == pytest.approx(1.0)
    assert "8 usable cores" in shared_cores(single, None)
    del single["env"]["usable_cores"]  # an older record: the node's count, said so
    assert compute_capacity(single, n=2) == pytest.approx(2.0)
    assert "predates" in shared_cores(single, None)


def test_ranks_take_their_threads_from_the_slurm_allocation(monkeypatch):
    from bench.measure import cores
    monkeypatch.setattr(cores, "affinity_cores", lambda: 8)
    monkeypatch.setattr(cores, "cgroup_quota_cpus", lambda: None)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cores.thread_budget(2) == (4, "affinity set: 8 core(s) ÷ 2 rank(s) on the node")
    # Slurm gave the task 2 CPUs, but without a task plugin its affinity is the whole node.
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert cores.thread_budget(2) == (1, "SLURM_CPUS_PER_TASK: 2 core(s) ÷ 2 rank(s) on the node")
    assert cores.thread_budget(1)[0] == 2
    # An allocation larger than the affinity set does not add cores; nonsense is ignored.
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    assert cores.thread_budget(1) == (8, "affinity set: 8 core(s) ÷ 1 rank(s) on the node")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "two")
    assert cores.thread_budget(1)[0] == 8
    monkeypatch.setattr(cores, "cgroup_quota_cpus", lambda: 3.0)
    assert cores.thread_budget(1) == (3, "cgroup CPU quota: 3 core(s) ÷ 1 rank(s) on the node")


def _rank(host: str, boot: str, affinity: list[int], threads: int) -> dict:
    return {"threads": threads, "node": {"host": host, "boot_id": boot, "machine_id": "m",
                                         "cpu_count": 2, "affinity": affinity}}


def test_nodes_on_one_machine_are_recognised_and_their_oversubscription_named():
    from bench.measure.placement import summarize
    # Two namespace nodes pinned to a core each, one rank of one thread each: fits.
    fits = summarize([_rank("n1", "b", [0], 1), _rank("n2", "b", [1], 1)])
    assert fits["oversubscribed"] is False and fits["note"] is None
    assert len(fits["machines"]) == 1 and fits["machines"][0]["nodes"] == ["n1", "n2"]
    # The layout of the issue: both nodes free on both cores, each rank 2 threads: 4 on 2.
    crowded = summarize([_rank("n1", "b", [0, 1], 2), _rank("n2", "b", [0, 1], 2)])
    assert crowded["oversubscribed"] is True
    assert crowded["machines"][0]["threads"] == 4 and crowded["machines"][0]["usable_cores"] == 2
    assert "4 thread(s) on 2 core(s) of one machine (node(s) n1, n2)" in crowded["note"]
    # The same threads on two machines (boot ids differ) are not oversubscribed.
    apart = summarize([_rank("n1", "b1", [0, 1], 2), _rank("n2", "b2", [0, 1], 2)])
    assert apart["oversubscribed"] is False and len(apart["machines"]) == 2
    # Two machines that share a hostname (a container's default) stay two nodes.
    twins = summarize([_rank("x", "b1", [0, 1], 2), _rank("x", "b2", [0, 1], 2)])
    assert len(twins["nodes"]) == 2 and twins["oversubscribed"] is False
    assert summarize([{"host": "x"}]) is None  # records from before the facts existed


def test_the_prediction_counts_a_tasks_allocation_not_its_affinity():
    from bench.analysis.scaling_inputs import usable_cores
    # 3 one-CPU Slurm tasks on a 2-core host, each free on both cores (no CPU binding)
    assert usable_cores({"cpu_count": 2, "usable_cores": 2, "allocated_cpus": 1}) == 1
    assert usable_cores({"cpu_count": 2, "usable_cores": 2, "allocated_cpus": None}) == 2
    assert usable_cores({"cpu_count": 64}) == 64  # a record from before either was kept
