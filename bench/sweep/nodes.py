"""The nodes of a Slurm allocation, and which of them a failed multi-node cell lost.

A rank on a lost node cannot say so itself: its peers see only a connection reset, or wait in
a collective until their timeout. Two pieces of evidence name the node: a TCP connection to its
slurmd port that is refused or never answered (its daemons killed, its link down), and srun's
own `Node failure on n2`; what srun said of the node's task (`srun: error: n2: task 1:
Killed`) is added to the first. Only the allocation's own nodes are contacted.
"""
from __future__ import annotations

import re
import socket
import subprocess

SRUN_TASK = re.compile(r"srun: error: ([\w.\-]+): tasks? [\d,\-]+: (.+)")
NODE_FAILURE = re.compile(r"[Nn]ode failure on ([\w.\-]+)")
FAILURE_SAID = "srun reported a node failure"
DEFAULT_SLURMD_PORT = 6818
PROBE_S = 3.0


def _slurm(*argv: str) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout if out.returncode == 0 else ""


def allocation_hosts(nodelist: str | None) -> list[str]:
    """The hosts of a Slurm node list (`n[1-2]` → n1, n2), first node first."""
    return _slurm("scontrol", "show", "hostnames", nodelist).split() if nodelist else []


def slurmd_port() -> int:
    match = re.search(r"^\s*SlurmdPort\s*=\s*(\d+)", _slurm("scontrol", "show", "config"),
                      re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_SLURMD_PORT


def from_srun(log: str) -> dict[str, str]:
    """{node: what srun said}, in the order srun said it: the first is the cause (with
    --kill-on-bad-exit, srun then ends the other nodes' tasks and reports those too)."""
    found = sorted([(m.start(), m.group(1), FAILURE_SAID)
                    for m in NODE_FAILURE.finditer(log)] +
                   [(m.start(), m.group(1), f"srun: its task {m.group(2).strip().rstrip('.')}")
                    for m in SRUN_TASK.finditer(log)])
    out: dict[str, str] = {}
    for _, node, what in found:
        out.setdefault(node, what)
    return out


def node_address(node: str) -> str:
    """Where slurmctld reaches a node (its NodeAddr), else its name."""
    match = re.search(r"\bNodeAddr=(\S+)", _slurm("scontrol", "show", "node", "-o", node))
    return match.group(1) if match else node


def unreachable(hosts: list[str], port: int, timeout_s: float = PROBE_S,
                address=node_address) -> dict[str, str]:
    """{node: why} for each host whose slurmd does not accept a connection. A name that does
    not resolve says nothing about the node, and names none."""
    out = {}
    for host in hosts:
        try:
            with socket.create_connection((address(host), port), timeout=timeout_s):
                pass
        except socket.gaierror:
            continue
        except socket.timeout:
            out[host] = f"its slurmd (port {port}) did not answer within {timeout_s:g} s"
        except OSError as exc:
            out[host] = f"its slurmd (port {port}) refused or failed: {exc.strerror or exc}"
    return out


def lost_nodes(log: str, hosts: list[str]) -> dict[str, str]:
    """{node: evidence} for the nodes of a multi-node allocation (`hosts`) that a failed cell
    lost: each node whose slurmd no longer answers, with what srun said of it, and each node
    srun reported a node failure on. A task that merely exited (an exception, a rank killed
    on a node that lives on, the survivors srun ended) names no node: the rank's own error
    says what happened."""
    if len(hosts) < 2:
        return {}
    said = from_srun(log)
    lost = {node: why + (f"; {said[node]}" if node in said else "")
            for node, why in unreachable(hosts, slurmd_port()).items()}
    for node, what in said.items():
        if what == FAILURE_SAID:
            lost.setdefault(node, what)
    return lost


def lost_sentence(lost: dict[str, str]) -> str:
    return "; ".join(f"node {node} lost ({why})" for node, why in lost.items())
