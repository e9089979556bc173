"""How often bench names the right straggler: every case of tests/injection.py (one DDP rank's
compute or data path slowed from outside, or nothing slowed) run N times through `bench run`,
each run's verdict against the case's truth, and the lateness figures behind it.

    python benchmarks/stragglers.py [--runs 10] [--cases compute data ...] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from injection import CASES, run_cases  # noqa: E402


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)


def trials(names: list[str], folder: Path) -> list[dict]:
    """The cases of one cell size in one `bench run` (as its repeats), each judged."""
    shutil.rmtree(folder, ignore_errors=True)
    start = time.monotonic()
    records = run_cases(names, folder, run_cli)
    seconds = (time.monotonic() - start) / len(names)
    return [{**judged(name, records[name]["stragglers"], seconds),
             "lateness_s": timed_lateness(folder / records[name]["cell_id"])} for name in names]


def timed_lateness(cell_dir: Path) -> list[list[float]]:
    """Each rank's lateness over the timed steps (kept in --json, to try other rules on)."""
    import pandas as pd
    steps = pd.read_parquet(cell_dir / "steps.parquet")
    steps = steps[~steps["warmup"].to_numpy(bool)]
    return [steps[c].tolist() for c in steps if c.startswith("lateness_rank")]


def judged(name: str, s: dict, seconds: float) -> dict:
    slowed = CASES[name][1]
    truth = (slowed[1], slowed[0]) if slowed else (None, None)
    worst = max(s["per_rank"], key=lambda r: r["behind_median_s"])
    return {"case": name, "named": s["slowest_rank"], "phase": s["phase"],
            "right": (s["slowest_rank"], s["phase"]) == truth, "seconds": seconds,
            "step_ms": 1e3 * s["step_median_s"], "threshold_ms": 1e3 * s["threshold_s"],
            "worst_rank": worst["rank"], "worst_late_ms": 1e3 * worst["lateness_median_s"],
            "worst_last_share": worst["last_share"],
            # what the rule reads: after the median rank, in the median step, ÷ the step
            "worst_behind_share": worst["behind_median_s"] / s["step_median_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-stragglers-") as tmp:
        for i in range(args.runs):  # the cases alternate, so a drift reaches each alike
            sizes: dict[int, list[str]] = {}
            for name in args.cases:
                sizes.setdefault(CASES[name][0], []).append(name)
            got = []
            for names in sizes.values():
                turn = i % len(names)  # which case runs as which repeat rotates too
                got += trials(names[turn:] + names[:turn], Path(tmp) / "run")
            for row in got:
                rows.append(row)
                print(f"run {i + 1} {row['case']:14s} named {row['named']} {row['phase']}: "
                      f"{'right' if row['right'] else 'WRONG'}; latest rank {row['worst_rank']} "
                      f"{row['worst_late_ms']:.2f} ms late, after the median rank by "
                      f"{row['worst_behind_share']:.1%} of a {row['step_ms']:.1f} ms step, "
                      f"last in {row['worst_last_share']:.0%} "
                      f"({row['seconds']:.1f} s a cell)", flush=True)
    print("\ncase            right  latest rank after the median rank (% of a step): min–max")
    for name in args.cases:
        mine = [r for r in rows if r["case"] == name]
        shares = [r["worst_behind_share"] for r in mine]
        print(f"{name:14s} {sum(r['right'] for r in mine):3d}/{len(mine)}  "
              f"{min(shares):.1%}–{max(shares):.1%}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
