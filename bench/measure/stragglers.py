"""Who made the other ranks wait: per-rank lateness at the gradient synchronisation.

Under DDP every rank's step lasts as long as the slowest rank's, because all of them leave the
all-reduce together. A rank's wait there (bench.measure.arrivals: `ready` to `synced`, on its
own clock) is therefore the time from its own arrival to the common departure, and the
difference between two ranks' waits is the difference of their arrivals: the lateness of rank
r in a step is max_j(wait_j) − wait_r, the time it arrived after the earliest rank. No two
processes' clocks are compared, so offsets between nodes cannot enter.

Where the lateness comes from: each rank's arrival is its previous optimizer step, the host's
time between steps, the batch fetch and forward/backward up to the last gradient, all counted
from the previous step's common departure. A late rank's excess over the other ranks' median in
each part, in the steps it came last, names the phase: `data` (the fetch), `compute` (forward,
backward, optimizer), `host` (between steps); where none exceeds the noise threshold, the rank
left the previous all-reduce later than the others did: `communication`. Strategies without a
gradient-ready point (FSDP, DeepSpeed) are compared on their data waits alone, and the record
says so.

A rank is named only when it is late beyond noise, by size and by consistency: its arrival
after the other ranks' median (per step; `behind`) has a median of at least NOISE_SHARE of the
median step and NOISE_FLOOR_S — against the others' median rather than the earliest rank, so
that with many ranks one early rank does not make every other look late (with two ranks it is
the other rank), and over the median step, so a rank late in a few steps is not named — and
its mean place in the order of arrivals lies ORDER_Z standard errors above where ranks that
arrive in random order sit (one-sided p < 0.01): on a host with more ranks than cores, which
rank the scheduler holds back changes from step to step, and a large median lateness alone
named a rank in 1 of 10 undisturbed cells of 4 ranks on 2 cores. Both were chosen from
undisturbed and slowed DDP cells on this project's 2-core machines (benchmarks/stragglers.py;
docs/results.md, "Stragglers", has the figures).
"""
from __future__ import annotations

import numpy as np

NOISE_SHARE = 0.10  # of the median step: a rank closer than this to the others is noise
NOISE_FLOOR_S = 0.5e-3  # the scheduler's jitter on a busy host
ORDER_Z = 2.33  # how far later than chance in the order of arrivals (one-sided p < 0.01)
ARRIVAL_METHOD = ("per rank and step, the wait from the last gradient bucket handed to the "
                  "all-reduce (a DDP communication hook) to backward's return; lateness = "
                  "the longest wait that step − the rank's own (host clock on CPU, CUDA events "
                  "on GPU)")
DATA_METHOD = ("per rank and step, the wait for its batch; this strategy has no gradient-ready "
               "point bench can mark, so lateness in compute is not measured")


def lateness(per_rank: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray], bool]:
    """(lateness [rank, step], each phase's seconds [rank, step], whether arrivals were
    marked) from each rank's spans (StepMarks.spans). A step without a gradient-ready mark on
    some rank has no lateness (NaN); a cell with none at all is compared on data waits."""
    span = {k: np.array([r[k] for r in per_rank], dtype=float)
            for k in ("data_s", "compute_s", "sync_wait_s", "optimizer_s", "gap_s")}
    if not np.isfinite(span["sync_wait_s"]).any():  # data waits alone
        return span["data_s"] - span["data_s"].min(axis=0), {"data": span["data_s"]}, False
    wait = span["sync_wait_s"]
    # the previous optimizer step, none before a segment's first step (its gap is unmarked:
    # a new process) nor before the first
    previous_opt = np.roll(span["optimizer_s"], 1, axis=1)
    previous_opt[:, 0] = 0.0
    previous_opt[~np.isfinite(span["gap_s"])] = 0.0
    parts = {"data": span["data_s"], "compute": span["compute_s"] + previous_opt,
             "host": np.nan_to_num(span["gap_s"], nan=0.0)}
    return wait.max(axis=0) - wait, parts, True


def after_others(values: np.ndarray, r: int) -> np.ndarray:
    """Per step, rank r's value minus the median of the other ranks' (with two ranks: minus
    the other's), so the scale is the same whatever the number of ranks."""
    return values[r] - np.median(np.delete(values, r, axis=0), axis=0)


def phase_of(r: int, behind: np.ndarray, parts: dict[str, np.ndarray], steps: np.ndarray,
             threshold: float) -> tuple[str | None, dict]:
    """Where rank r's lateness comes from in `steps` (those it arrived after the other ranks'
    median beyond the threshold): each phase's median excess over the other ranks' median
    that step, against `behind` (its arrival after theirs). The largest excess beyond the
    threshold names it; where no phase of its own exceeds the threshold, the rank left the
    previous all-reduce late (its link): communication. On a host with more busy threads than
    cores, ranks also leave late when they wait for a core, so a phase of the rank's own work
    is named wherever one stands out."""
    if not steps.any():
        return None, {}
    excess = {name: float(np.median(after_others(part[:, steps], r)))
              for name, part in parts.items()}
    own = float(np.median(behind[steps]))
    if len(parts) > 1:
        excess["communication"] = own - sum(max(v, 0.0) for v in excess.values())
    beyond = {name: v for name, v in excess.items() if v >= threshold}
    mine = {name: v for name, v in beyond.items() if name != "communication"}
    if mine:
        return max(mine, key=mine.get), excess
    return ("communication" if beyond else None), excess


def of_ranks(ranks: list[dict], timed: np.ndarray,
             window_s: float) -> tuple[dict | None, list | None]:
    """(the record's `stragglers`, each rank's lateness per step) from every rank's history
    (its `spans`, `host`, `step_times_s`); (None, None) with one rank or without spans."""
    if len(ranks) < 2 or any(len((r.get("spans") or {}).get("data_s", [])) != len(timed)
                             for r in ranks):
        return None, None
    per_rank = [{**r["spans"], "step_times_s": r["step_times_s"]} for r in ranks]
    computed = lateness(per_rank)
    return (summarize(per_rank, [r["host"] for r in ranks], timed, window_s, computed),
            list(computed[0]))


def summarize(per_rank: list[dict], hosts: list[str], timed: np.ndarray,
              window_s: float, computed: tuple | None = None) -> dict | None:
    """The record's `stragglers`: per rank its lateness over the timed steps and the phase
    it comes from; the rank named (or None, within noise), its host and phase. `computed`:
    lateness(per_rank), where the caller has it already."""
    late_all, parts_all, arrived = computed or lateness(per_rank)
    used = np.asarray(timed, dtype=bool) & np.isfinite(late_all).all(axis=0)
    if len(per_rank) < 2 or not used.any():
        return None
    late = late_all[:, used]
    parts = {k: v[:, used] for k, v in parts_all.items()}
    steps_s = np.array([r["step_times_s"] for r in per_rank], dtype=float)[:, used]
    step_s = float(np.median(steps_s.max(axis=0)))
    threshold = max(NOISE_SHARE * step_s, NOISE_FLOOR_S)
    last = late.argmax(axis=0)
    others = late.shape[0] - 1
    position, z = arrival_order(late)
    rows = []
    for r in range(late.shape[0]):
        is_last = last == r
        behind = after_others(late, r)  # per step: after the other ranks' median
        # what the others waited for r, where it came last: its lateness over theirs
        waited = (late[r][is_last][None, :] - np.delete(late[:, is_last], r, axis=0)).sum() \
            / others if is_last.any() else 0.0
        behind_s = float(np.median(behind))
        # a phase only for a rank late beyond noise, read where it was
        phase, excess = phase_of(r, behind, parts, behind >= threshold, threshold) \
            if behind_s >= threshold else (None, {})
        rows.append({"rank": r, "host": hosts[r],
                     "lateness_median_s": float(np.median(late[r])),
                     "lateness_p90_s": float(np.percentile(late[r], 90)),
                     "behind_median_s": behind_s,
                     "last_share": float(is_last.mean()),
                     "arrival_position": float(position[r]), "arrival_position_z": float(z[r]),
                     "others_wait_share": float(waited / window_s) if window_s > 0 else None,
                     "phase": phase, "phase_excess_median_s": excess})
    worst = max(rows, key=lambda row: row["behind_median_s"])
    named = worst["behind_median_s"] >= threshold and worst["arrival_position_z"] >= ORDER_Z
    return {"method": ARRIVAL_METHOD if arrived else DATA_METHOD,
            "measured": "arrival" if arrived else "data",
            "threshold_s": threshold,
            "threshold_rule": (f"arrives after the other ranks' median by ≥ max({NOISE_SHARE:.0%}"
                               f" of the median step, {NOISE_FLOOR_S * 1e3:g} ms) in the "
                               "median timed step, and later in the order of arrivals than "
                               f"chance places a rank (z ≥ {ORDER_Z:g}, one-sided p < 0.01)"),
            "steps": int(used.sum()), "unmarked_steps": int(timed.sum() - used.sum()),
            "step_median_s": step_s,
            "most_often_last": int(np.bincount(last, minlength=late.shape[0]).argmax()),
            "slowest_rank": worst["rank"] if named else None,
            "phase": worst["phase"] if named else None,
            "host": worst["host"] if named else None,
            "per_rank": rows, "per_host": per_host(rows, threshold)}


def arrival_order(late: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per rank, its mean place in each step's order of arrivals (0 first, 1 last), and how
    far that lies above the 0.5 of ranks that arrive in random order, in standard errors: a
    place uniform over N has variance (N + 1) / (12 (N − 1)) on this scale."""
    ranks, steps = late.shape
    place = late.argsort(axis=0, kind="stable").argsort(axis=0) / (ranks - 1)
    mean = place.mean(axis=1)
    se = np.sqrt((ranks + 1) / (12 * (ranks - 1)) / steps)
    return mean, (mean - 0.5) / se


def per_host(rows: list[dict], threshold: float) -> list[dict]:
    """Each host's ranks and whether every one of them arrives after the other ranks' median
    beyond the threshold: a whole node late (its link, its file system) rather than one
    rank."""
    hosts: dict[str, list[dict]] = {}
    for row in rows:
        hosts.setdefault(row["host"], []).append(row)
    return [{"host": host, "ranks": [row["rank"] for row in members],
             "lateness_median_s": float(np.median([row["lateness_median_s"]
                                                   for row in members])),
             "all_late": all(row["behind_median_s"] >= threshold for row in members)}
            for host, members in hosts.items()]
