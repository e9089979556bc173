"""Where a step's time goes: forward, backward, exposed communication, optimizer, from a
profiled timeline of a few probe steps, scaled onto the timed window.

The probe steps (bench.worker.probe) run after the timed window, under torch.profiler, each
phase inside a named range and followed by a device synchronize, so a phase's range holds its
device work. Communication is the collectives' own intervals: NCCL kernels on a GPU, gloo's
work on its threads on a CPU. Compute is what the rank itself executes: the non-NCCL kernels
on a GPU, the operators on the rank's main thread on a CPU. Communication not covered by
compute is *exposed* (Holistic Trace Analysis' definition of exposed communication); the rest
overlapped. The probe gives each phase's share of a step; the timed window gives the steps'
share of the window and the data wait, so the fractions describe the window, not the probe.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

PHASES = ("forward", "backward", "optimizer")
STEP_RANGE = "bench.step"
PHASE_RANGE = {p: f"bench.{p}" for p in PHASES}
FRACTIONS = ("data", "forward", "backward", "comm_exposed", "optimizer", "other")

HOST_COLLECTIVE = re.compile(r"^(gloo|nccl|mpi|ucc):", re.IGNORECASE)
DEVICE_COLLECTIVE = re.compile(r"^nccl", re.IGNORECASE)
# The rank's own work on a CPU: its ATen operators (backward's too, nested in autograd's node
# executions). Not the node executions themselves: FSDP's post-backward hook waits inside one
# for its reduce-scatter, which counted that wait as compute and read FSDP's exposed
# communication as 75% hidden (predicted efficiency 0.64 across two nodes at
# 100 Mbit/s where 0.27 was measured). c10d ops only enqueue work, and the waits have no op.
HOST_COMPUTE = re.compile(r"^aten::")
NCCL_DTYPE_BYTES = {"f64": 8, "f32": 4, "f16": 2, "bf16": 2, "i8": 1, "u8": 1, "i32": 4,
                    "u32": 4, "i64": 8, "u64": 8}


@dataclass(frozen=True)
class Span:
    """One profiler event: host op or range (on_device False), or a device kernel."""
    name: str
    start: float  # µs, one clock for host and device events (the profiler aligns them)
    end: float
    thread: int = 0
    on_device: bool = False
    numel: int = 0  # elements of the largest input: a collective's message


Interval = tuple[float, float]


def union(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[list[float]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def length(intervals: Sequence[Interval]) -> float:
    return sum(b - a for a, b in intervals)


def clip(intervals: Sequence[Interval], lo: float, hi: float) -> list[Interval]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


def subtract(intervals: Sequence[Interval], holes: Sequence[Interval]) -> list[Interval]:
    """Parts of merged `intervals` outside merged `holes`."""
    out, holes = [], list(holes)
    for a, b in intervals:
        cur = a
        for h0, h1 in holes:
            if h1 <= cur or h0 >= b:
                continue
            if h0 > cur:
                out.append((cur, h0))
            cur = max(cur, h1)
        if cur < b:
            out.append((cur, b))
    return out


def timeline_itemsize(device: Sequence[Span], itemsize: int) -> int:
    """Bytes per element the collectives carried: on a GPU the NCCL kernels name their dtype
    (when they agree on one); elsewhere the parameters' `itemsize`."""
    sizes = {nccl_itemsize(k.name) for k in device if DEVICE_COLLECTIVE.match(k.name)}
    sizes.discard(None)
    return sizes.pop() if len(sizes) == 1 else itemsize


def nccl_itemsize(name: str) -> int | None:
    """NCCL kernels name their dtype: ncclDevKernel_AllReduce_Sum_f32_RING_LL → 4."""
    for token in name.split("_"):
        if token in NCCL_DTYPE_BYTES:
            return NCCL_DTYPE_BYTES[token]
    return None


def step_attribution(spans: Sequence[Span], itemsize: int) -> list[dict]:
    """Seconds per phase of every probe step in `spans` (one profiler timeline of one rank),
    with its exposed and total communication and the bytes its collectives carried."""
    steps = sorted((s for s in spans if s.name == STEP_RANGE and not s.on_device),
                   key=lambda s: s.start)
    if not steps:
        return []
    main = steps[0].thread
    device = [s for s in spans if s.on_device]
    if device:
        comm = union((s.start, s.end) for s in device if DEVICE_COLLECTIVE.match(s.name))
        compute = union((s.start, s.end) for s in device if not DEVICE_COLLECTIVE.match(s.name))
    else:
        comm = union((s.start, s.end) for s in spans if HOST_COLLECTIVE.match(s.name))
        compute = union((s.start, s.end) for s in spans
                        if s.thread == main and HOST_COMPUTE.match(s.name))
    exposed = subtract(comm, compute)
    phases = {p: [s for s in spans if s.name == PHASE_RANGE[p] and not s.on_device]
              for p in PHASES}
    hosts = [s for s in spans if HOST_COLLECTIVE.match(s.name) and not s.on_device]
    itemsize = timeline_itemsize(device, itemsize)
    out = []
    for step in steps:
        lo, hi = step.start, step.end
        row = {"step_s": (hi - lo) / 1e6, "comm_s": length(clip(comm, lo, hi)) / 1e6,
               "comm_exposed_s": length(clip(exposed, lo, hi)) / 1e6}
        for p in PHASES:
            ranges = [(s.start, s.end) for s in phases[p] if lo <= s.start and s.end <= hi]
            # a phase's time less the exposed communication inside it (counted apart)
            waiting = sum(length(clip(exposed, a, b)) for a, b in ranges)
            row[p + "_s"] = (sum(b - a for a, b in ranges) - waiting) / 1e6
        # Between the phases (and any exposed communication there): other.
        row["other_s"] = max(0.0, row["step_s"] - row["comm_exposed_s"]
                             - sum(row[p + "_s"] for p in PHASES))
        row["comm_bytes"] = sum(s.numel * itemsize for s in hosts if lo <= s.start <= hi)
        out.append(row)
    return out


def probe_summary(rows: Sequence[dict], skip: int = 1,
                  comm_bytes: int | None = None) -> dict | None:
    """Totals over the probe steps after the first `skip` (which warm the profiler up): each
    phase's share of a probe step, exposed and total communication, bytes per step (the rows'
    own, or `comm_bytes` counted in a session that recorded input shapes)."""
    kept = list(rows[skip:]) or list(rows)
    if not kept:
        return None
    total = sum(r["step_s"] for r in kept)
    if total <= 0:
        return None
    comm = sum(r["comm_s"] for r in kept)
    exposed = sum(r["comm_exposed_s"] for r in kept)
    shares = {p: sum(r[p + "_s"] for r in kept) / total for p in PHASES}
    shares["comm_exposed"] = exposed / total
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return {"step_shares": shares, "probe_step_s": total / len(kept),
            "comm_s_per_step": comm / len(kept),
            "comm_overlap": None if comm <= 0 else max(0.0, min(1.0, 1.0 - exposed / comm)),
            "comm_message_bytes_per_step": comm_bytes if comm_bytes is not None else
            round(sum(r["comm_bytes"] for r in kept) / len(kept)),
            "probe_steps": len(kept)}


def combine_ranks(summaries: Sequence[dict | None]) -> dict | None:
    """The ranks' mean shares (each rank's own exposure differs: a faster rank waits longer),
    rank 0's bytes (every data-parallel rank sends the same), and each rank's exposed share."""
    present = [s for s in summaries if s]
    if not present:
        return None
    n = len(present)
    shares = {k: sum(s["step_shares"][k] for s in present) / n
              for k in present[0]["step_shares"]}
    overlaps = [s["comm_overlap"] for s in present if s["comm_overlap"] is not None]
    return {"step_shares": shares,
            "probe_step_s": max(s["probe_step_s"] for s in present),
            "comm_s_per_step": sum(s["comm_s_per_step"] for s in present) / n,
            "comm_overlap": sum(overlaps) / len(overlaps) if overlaps else None,
            "comm_message_bytes_per_step": present[0]["comm_message_bytes_per_step"],
            "comm_exposed_per_rank": [s["step_shares"]["comm_exposed"] for s in present],
            "probe_steps": present[0]["probe_steps"],
            "thread_scaling": present[0].get("thread_scaling")}


def window_breakdown(probe: dict, *, window_s: float, steps_s: float, data_wait_s: float,
                     method: str) -> dict:
    """Fractions of the timed window. The probe's shares divide the steps' own time; the
    window adds the data wait and whatever else lies between steps (`other`). On a GPU the
    host's wait overlaps queued device work: only the device's idle time between steps can be
    the data's, so data = min(host wait, device idle)."""
    steps_frac = min(1.0, steps_s / window_s) if window_s > 0 else 0.0
    between = 1.0 - steps_frac
    data = min(data_wait_s / window_s if window_s > 0 else 0.0, between)
    shares = probe["step_shares"]
    fractions = {"data": data}
    for key in ("forward", "backward", "comm_exposed", "optimizer"):
        fractions[key] = steps_frac * shares[key]
    fractions["other"] = max(0.0, 1.0 - sum(fractions.values()))
    fractions = {k: fractions[k] for k in FRACTIONS}
    return {**fractions,
            "comm_message_bytes_per_step": probe["comm_message_bytes_per_step"],
            "comm_overlap": probe["comm_overlap"],
            "comm_s_per_step": probe["comm_s_per_step"],
            "comm_exposed_per_rank": probe.get("comm_exposed_per_rank"),
            "probe_step_s": probe["probe_step_s"], "probe_steps": probe["probe_steps"],
            "thread_scaling": probe.get("thread_scaling"), "method": method}
