"""How many cores this process may really use: the affinity set Slurm, taskset or a cpuset
gives it, further capped by a cgroup CPU quota (a container or a Slurm task with a CPU limit).
`os.cpu_count()` is the node's count, which overstates a task's share of a 64-core node
8-fold when the task was given 8 cores.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_quota_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
                      ) -> float | None:
    """CPUs the process's cgroup (and every parent) allows, quota ÷ period, the tightest
    along the path; None where no quota applies or none can be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: cpu.max holds "QUOTA PERIOD" or "max PERIOD"
            limits += _walk(root, path, _v2_limit)
        elif "cpu" in controllers.split(","):  # cgroup v1: cfs quota and period files
            for mount in (root / controllers, root / "cpu,cpuacct", root / "cpu"):
                if mount.is_dir():
                    limits += _walk(mount, path, _v1_limit)
                    break
    return min(limits) if limits else None


def _walk(mount: Path, path: str, read) -> list[float]:
    """Limits of the cgroup at `path` under `mount` and of its parents up to the mount."""
    out, current = [], mount / path.lstrip("/")
    while True:
        limit = read(current)
        if limit is not None:
            out.append(limit)
        if current == mount or mount not in current.parents:
            return out
        current = current.parent


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" or float(period) <= 0 else float(quota) / float(period)


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = float((folder / "cpu.cfs_quota_us").read_text())
        period = float((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def usable_cores() -> int:
    """Cores this process can keep busy: its affinity set, capped by a cgroup quota (rounded
    up: a 1.5-CPU quota still runs two threads at times)."""
    cores = affinity_cores()
    quota = cgroup_quota_cpus()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def allocated_cpus() -> int | None:
    """The CPUs Slurm gave this task (`SLURM_CPUS_PER_TASK`), or None outside such a task.
    Without a task plugin binding them, the affinity set is the whole node: the allocation
    is then the only thing that says how many cores are this task's."""
    try:
        value = int(os.environ.get("SLURM_CPUS_PER_TASK", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def thread_budget(ranks_on_node: int = 1) -> tuple[int, str]:
    """(threads per rank, where the number came from): the task's cores, the smaller of its
    usable cores and its Slurm allocation, split among the ranks it runs on this node."""
    usable, allocated = usable_cores(), allocated_cpus()
    quota = cgroup_quota_cpus()
    if allocated is not None and allocated < usable:
        cores, source = allocated, "SLURM_CPUS_PER_TASK"
    elif quota and math.ceil(quota) < affinity_cores():
        cores, source = usable, "cgroup CPU quota"
    else:
        cores, source = usable, "affinity set"
    ranks = max(1, ranks_on_node)
    threads = max(1, cores // ranks)
    return threads, f"{source}: {cores} core(s) ÷ {ranks} rank(s) on the node"


def core_facts() -> dict:
    """What the environment record keeps: the node's cores, the affinity set, the quota and
    the usable count the launcher sized its threads by."""
    return {"cpu_count": os.cpu_count(), "affinity_cores": affinity_cores(),
            "cgroup_quota_cpus": cgroup_quota_cpus(), "usable_cores": usable_cores(),
            "allocated_cpus": allocated_cpus()}
