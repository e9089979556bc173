"""Who made the other ranks wait, per multi-rank cell (the record's `stragglers`, measured by
bench.measure.stragglers): one row per cell, with the sentence a report prints where a rank
or a node stands out beyond noise, and none where none does."""
from __future__ import annotations

import pandas as pd

from bench.analysis.frame import _column, is_missing, prepare

PHASE_WORDS = {"data": "from data loading", "compute": "in its forward/backward computation",
               "host": "between steps, on the host", "communication": "leaving the previous "
               "all-reduce late (its link)"}


def stragglers_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ok cell with a `stragglers` record, in configuration and repeat order."""
    rows = prepare(frame)
    if rows.empty or "stragglers.per_rank" not in rows:
        return pd.DataFrame()
    out = []
    for _, row in rows.iterrows():
        per_rank = row["stragglers.per_rank"]
        if not isinstance(per_rank, (list, tuple)) or len(per_rank) < 2:
            continue  # one rank, or a record from before arrivals were marked
        per_rank = [dict(r) for r in per_rank]
        named = row.get("stragglers.slowest_rank")
        named = None if is_missing(named) else int(named)
        entry = {"config": row["config"], "devices": int(row["cell.devices"]),
                 "precision": row["cell.precision"], "repeat": int(row["cell.repeat"]),
                 "cell_id": row["cell_id"], "_dir": row.get("_dir"),
                 "model": row["cell.model"], "noise": row["noise"],
                 "fingerprint": row["fingerprint"], "per_rank": per_rank, "slowest_rank": named,
                 "phase": None if is_missing(row.get("stragglers.phase"))
                 else row["stragglers.phase"], "measured": row.get("stragglers.measured"),
                 "threshold_s": row.get("stragglers.threshold_s"),
                 "rule": row.get("stragglers.threshold_rule"),
                 "per_host": list(row.get("stragglers.per_host") or [])}
        entry["sentence"] = sentence(entry)
        out.append(entry)
    table = pd.DataFrame(out)
    if not table.empty:  # a rank, or None: not a float column with NaN
        table["slowest_rank"] = pd.Series([e["slowest_rank"] for e in out], dtype=object)
    return table


def late_node(entry: dict) -> dict | None:
    """The host whose every rank is late beyond the threshold, where it holds the rank named
    and more than one rank, and no other host is late: a node, not a rank, stands out."""
    hosts = entry["per_host"]
    late = [h for h in hosts if h.get("all_late")]
    if len(hosts) < 2 or len(late) != 1 or len(late[0]["ranks"]) < 2:
        return None
    return late[0] if entry["slowest_rank"] in late[0]["ranks"] else None


def sentence(entry: dict) -> str:
    """'rank 3 on n2 arrives 41 ms late in 92% of steps, from data loading; the other ranks
    wait 18% of the window for it', or '' where no rank stands out beyond noise."""
    if entry["slowest_rank"] is None:
        return ""
    row = entry["per_rank"][entry["slowest_rank"]]
    node = late_node(entry)
    who = (f"ranks {', '.join(map(str, node['ranks']))} on {node['host']} arrive"
           if node else f"rank {row['rank']} on {row['host']} arrives")
    text = (f"{entry['model']} {entry['config']} ×{entry['devices']} {entry['precision']} (repeat "
            f"{entry['repeat']}): {who} {1e3 * row['lateness_median_s']:.3g} ms late "
            f"(median) and last in {row['last_share']:.0%} of steps")
    if entry["phase"]:
        text += f", {PHASE_WORDS.get(entry['phase'], entry['phase'])}"
    if row.get("others_wait_share") is not None:
        text += f"; the other ranks wait {row['others_wait_share']:.0%} of the window for it"
    return text + "."


def _side(rows: pd.DataFrame) -> dict | None:
    """The cells of one side of the gate: the ranks they name (with phases) and the mean
    share of the window the other ranks spent waiting for each cell's latest rank."""
    per_rank = [p for p in _column(rows, "stragglers.per_rank", None)
                if isinstance(p, (list, tuple)) and len(p) > 1]
    if not per_rank:
        return None
    named = [(int(r), p) for r, p in zip(_column(rows, "stragglers.slowest_rank", None),
                                         _column(rows, "stragglers.phase", None))
             if not is_missing(r)]
    waits = [max(float(x.get("others_wait_share") or 0.0) for x in p) for p in per_rank]
    return {"cells": len(per_rank), "named": named, "wait": sum(waits) / len(waits)}


EXPLAINED = 0.5  # of a slowdown, the share the extra waiting must account for: a straggler's


def slowdown_kind(base: pd.DataFrame, new: pd.DataFrame, throughput_ratio: float) -> str:
    """Whether NEW's loss of throughput against BASELINE comes from one rank that made the
    others wait (a straggler regression) or from every rank alike (uniform): the share of the
    slowdown that the others' added waiting accounts for. With w the share of a window the
    other ranks wait for the latest rank and d = 1 − `throughput_ratio` (new ÷ baseline, the
    gate's geometric-mean ratio), the
    added waiting per new window is w_new − w_base·(1 − d); a straggler when that is at least
    EXPLAINED·d. '' where either side has no `stragglers` or nothing slowed down."""
    b, n = _side(base), _side(new)
    if b is None or n is None:
        return ""
    slowdown = 1 - throughput_ratio
    if not slowdown > 0:  # faster, or no ratio (NaN)
        return ""
    explained = (n["wait"] - b["wait"] * (1 - slowdown)) / slowdown
    wait = (f"the others wait {n['wait']:.0%} of the window for the latest rank (baseline "
            f"{b['wait']:.0%}): {max(explained, 0):.0%} of the slowdown")
    if explained >= EXPLAINED:
        ranks = sorted({f"rank {r} ({phase or 'phase unclear'})" for r, phase in n["named"]})
        who = f"{', '.join(ranks)} named in {len(n['named'])}/{n['cells']} new cells; " \
            if ranks else ""
        return f"straggler regression: {who}{wait}"
    return f"uniform: every rank slower; {wait}"
