"""Does `bench predict --nodes 2` hold across real nodes? On a two-node Slurm cluster of
network namespaces on this host (scripts/local_cluster.py, each node on its own core), at each
link rate (a tbf limit on every link): commbench measures the link between the nodes through
sbatch; the `multinode` spec's single, DDP ×2 and FSDP ×2 cells run through `bench slurm
--submit` (each ×2 cell across both nodes); `bench predict` takes the link from the commbench
file, not from the rate; the table sets the predictions beside the measured cells.

    python benchmarks/multinode.py [--rates 1gbit 100mbit] [--repeats 2] [--json FILE]

Needs root, iproute2, util-linux and Slurm + munge (docs/slurm.md, "Several Slurm nodes on one
machine").
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from local_cluster import NamespaceCluster, missing_requirements  # noqa: E402

UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
JOB_TIMEOUT_S = 1800


def rate_gbs(rate: str) -> float:
    """A tc rate ('100mbit') in GB/s (1e9 bytes/s)."""
    value, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(kbit|mbit|gbit)", rate).groups()
    return float(value) * UNITS[unit] / 8 / 1e9


def sweep_spec(repeats: int) -> dict:
    from bench.config.builtin_specs import BUILTIN
    spec = json.loads(json.dumps(BUILTIN["multinode"]))
    spec["name"] = "multinode-check"
    spec["workload"]["repeats"] = repeats
    spec["matrix"]["configurations"] = [c for c in spec["matrix"]["configurations"]
                                        if c["strategy"] in ("single", "ddp", "fsdp")]
    return spec


def bench(cluster, *args, timeout_s=600) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO,
                         env=cluster.env(), capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"bench {args[0]} failed: {out.stderr[-2000:]}")
    return out


def commbench(cluster, folder: Path) -> dict:
    """commbench over both nodes (one rank each) as a user runs it: sbatch -N2."""
    out = folder / "commbench.json"
    command = (f"{sys.executable} -m bench commbench --device cpu --devices 2 --ops all_reduce "
               f"--min-bytes 64KiB --max-bytes 16MiB --iters 10 --warmup 2 --out {out}")
    sub = cluster.client("sbatch", "--parsable", "-N2", "--ntasks-per-node=1",
                         "--cpus-per-task=1", f"--chdir={REPO}",
                         f"--output={folder / 'commbench.log'}", f"--wrap={command}")
    job = sub.stdout.strip().split(";")[0]
    cluster.wait_for([job], timeout_s=JOB_TIMEOUT_S)
    if not out.exists():
        raise RuntimeError("commbench wrote nothing: "
                           + (folder / "commbench.log").read_text()[-2000:])
    return json.loads(out.read_text())


def one_rate(rate: str, repeats: int, folder: Path) -> dict:
    folder.mkdir(parents=True)
    with NamespaceCluster(2, rate=rate, root=folder / "cluster") as cluster:
        t0 = time.monotonic()
        figures = commbench(cluster, folder)
        spec_path = folder / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(sweep_spec(repeats)))
        results = folder / "runs"
        bench(cluster, "slurm", spec_path, "--submit", "--cpu", "--gpus-per-node", "1",
              "--out", results)
        jobs = json.loads((results / "slurm" / "jobs.json").read_text())
        cluster.wait_for([a["job_id"] for a in jobs["arrays"]] + [jobs["aggregate"]],
                         timeout_s=JOB_TIMEOUT_S)
        wall = time.monotonic() - t0
    predicted = json.loads(bench(cluster, "predict", results, "--nodes", "2", "--devices", "2",
                                 "--strategy", "ddp", "fsdp", "--commbench",
                                 folder / "commbench.json", "--json").stdout)
    inter = figures["links"]["inter-node"]
    largest = max((r for r in inter["results"] if r["op"] == "all_reduce"),
                  key=lambda r: r["bytes"])
    family = predicted["families"][0]
    return {"rate": rate, "rate_gbs": rate_gbs(rate), "busbw_gbs": largest["busbw_gbs"],
            "busbw_bytes": largest["bytes"], "link": family["links"], "wall_s": wall,
            "rows": [{k: r.get(k) for k in ("strategy", "devices", "efficiency",
                                            "measured_efficiency", "error", "measured_cells")}
                     for r in family["rows"]],
            "placement_notes": family["assumptions"][:1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", default=["1gbit", "100mbit"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep each rate's results and commbench file under DIR")
    args = parser.parse_args()
    why = missing_requirements()
    if why:
        print(f"benchmarks/multinode.py: {why}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-multinode-") as tmp:
        Path(tmp).chmod(0o755)  # munged serves its socket only from folders all may traverse
        for rate in args.rates:
            rows.append(one_rate(rate, args.repeats, Path(tmp) / rate))
            if args.keep:
                shutil.copytree(Path(tmp) / rate, args.keep / rate,
                                ignore=shutil.ignore_patterns("cluster"))
            print(f"{rate}: done in {rows[-1]['wall_s']:.0f} s", flush=True)
    print(f"\n{'rate':>8} {'shaped GB/s':>11} {'commbench busbw':>15} {'ratio':>6}   "
          f"{'strategy':>8} {'predicted':>9} {'measured':>8} {'error':>7}")
    for r in rows:
        for k, row in enumerate(r["rows"]):
            head = (f"{r['rate']:>8} {r['rate_gbs']:>11.4f} {r['busbw_gbs']:>15.4f} "
                    f"{r['busbw_gbs'] / r['rate_gbs']:>6.2f}" if k == 0 else " " * 43)
            error = "—" if row["error"] is None else f"{100 * row['error']:+.1f}%"
            measured = row["measured_efficiency"]
            print(f"{head}   {row['strategy']:>8} {row['efficiency']:>9.3f} "
                  f"{measured if measured is None else format(measured, '.3f'):>8} {error:>7}")
    print("\nbusbw: commbench's all_reduce bus bandwidth at its largest message "
          f"({rows[0]['busbw_bytes'] / 2**20:g} MiB) between the two nodes, one rank each; "
          "predicted: `bench predict --nodes 2 --commbench` (fit over every size)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
