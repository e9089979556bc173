"""Where a cell's ranks ran, and whether they had the cores they were given.

Several Slurm "nodes" can be one machine (network namespaces or containers on one kernel):
every rank reports its node's identity (hostname, kernel boot id, machine id), its threads and
its affinity set; nodes that share a kernel boot id share one machine's cores. (Virtual
machines on one host each boot their own kernel: they cannot be told apart from here.) When
the threads of all ranks on one machine exceed its cores, the ranks were oversubscribed: they
took turns on the cores, and their step times measure the contention, not the configuration.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MACHINE_ID = Path("/etc/machine-id")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def node_facts() -> dict:
    """This process's node: its name, the identity of the machine under it, and its cores."""
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = list(range(os.cpu_count() or 1))
    return {"host": socket.gethostname(), "boot_id": _read(BOOT_ID),
            "machine_id": _read(MACHINE_ID), "cpu_count": os.cpu_count(),
            "affinity": affinity}


def _machine_key(facts: dict) -> tuple:
    """Nodes on one machine share its kernel (boot id; containers of other images on it differ
    in machine id); without a boot id the machine id, else the node stands alone."""
    if facts.get("boot_id"):
        return "boot", facts["boot_id"]
    if facts.get("machine_id"):
        return "machine", facts["machine_id"]
    return "host", facts.get("host")


def summarize(ranks: list[dict]) -> dict | None:
    """The placement section of a record from each rank's `node` facts and `threads`: the
    nodes, the machines under them, and per machine the threads asked against the cores its
    nodes may use (the union of their affinity sets). None where no rank reported facts."""
    reported = [r for r in ranks if r.get("node")]
    if not reported:
        return None
    nodes: dict[tuple, dict] = {}  # (hostname, boot id) → the node
    for r in reported:
        facts = r["node"]
        # two machines may share a hostname (a container's default): the kernel tells them apart
        node = nodes.setdefault((facts["host"], facts.get("boot_id")),
                                {**facts, "ranks": 0, "threads": 0})
        node["ranks"] += 1
        node["threads"] += int(r.get("threads") or 1)
    machines: dict[tuple, dict] = {}
    for node in nodes.values():
        machine = machines.setdefault(_machine_key(node), {
            "boot_id": node.get("boot_id"), "machine_id": node.get("machine_id"),
            "cpu_count": node.get("cpu_count"), "nodes": [], "cores": set(), "ranks": 0,
            "threads": 0})
        machine["nodes"].append(node["host"])
        machine["cores"] |= set(node.get("affinity") or [])
        machine["ranks"] += node["ranks"]
        machine["threads"] += node["threads"]
    out = []
    for machine in machines.values():
        cores = len(machine.pop("cores")) or machine.get("cpu_count") or 1
        machine.update(usable_cores=cores, oversubscribed=machine["threads"] > cores)
        out.append(machine)
    section = {"nodes": [{k: v for k, v in n.items() if k != "affinity"}
                         | {"cores": len(n.get("affinity") or [])} for n in nodes.values()],
               "machines": out, "oversubscribed": any(m["oversubscribed"] for m in out),
               "rule": "a machine = nodes with one kernel boot id; oversubscribed when the "
                       "threads of its ranks exceed the cores its nodes may use (the union of "
                       "their affinity sets)"}
    section["note"] = oversubscription(section)
    return section


def oversubscription(placement: dict | None) -> str | None:
    """One sentence on the oversubscribed machines of a placement section, or None."""
    if not placement or not placement.get("oversubscribed"):
        return None
    parts = [f"{m['ranks']} rank(s) with {m['threads']} thread(s) on {m['usable_cores']} "
             f"core(s) of one machine (node(s) {', '.join(m['nodes'])})"
             for m in placement["machines"] if m["oversubscribed"]]
    return ("ranks oversubscribed: " + "; ".join(parts) + "; they took turns on the cores, so "
            "the step times measure contention, not the configuration")
