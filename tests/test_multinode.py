"""Across two nodes for real: a Slurm cluster of two network-namespace nodes on this host
(scripts/local_cluster.py, each node its own hostname, address and core), one DDP cell through
`bench slurm --submit` spanning both, checked against the single-device cell of the same sweep.
Needs root, iproute2, util-linux and Slurm + munge (else skipped, saying what is missing)."""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from local_cluster import BRIDGE, NamespaceCluster, missing_requirements  # noqa: E402

pytestmark = pytest.mark.skipif(missing_requirements() is not None,
                                reason=missing_requirements() or "")

TINY = {"steps": 10, "warmup": 2, "global_batch": 8, "width": 4, "depth": 2, "image_size": 32,
        "norm": "group", "sample_hz": 20, "timeout_s": 300}
LONG_BATCH = 256
JOB_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def cluster():
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        pytest.skip(f"a namespace cluster is already up on this host ({BRIDGE} exists)")
    # munged wants every folder above its socket traversable by all: not pytest's tmp_path
    with NamespaceCluster(2, root=Path(f"/tmp/bench-cluster-test-{uuid.uuid4().hex[:8]}")) as c:
        yield c


def test_commbench_across_the_nodes_measures_each_link_apart(cluster, tmp_path):
    # Before the sweep below kills a node: sbatch -N2, 2 ranks on each node.
    tmp_path.chmod(0o755)
    out, log = tmp_path / "cb.json", tmp_path / "cb.log"
    command = (f"{sys.executable} -m bench commbench --device cpu --devices 4 --ops all_reduce "
               f"--min-bytes 64KiB --max-bytes 256KiB --iters 3 --warmup 1 --out {out}")
    job = cluster.client("sbatch", "--parsable", "-N2", "--cpus-per-task=1", f"--chdir={REPO}",
                         f"--output={log}", f"--wrap={command}").stdout.strip()
    cluster.wait_for([job], timeout_s=JOB_TIMEOUT_S)
    assert out.exists(), log.read_text()[-3000:]
    figures = json.loads(out.read_text())
    assert figures["layout"]["nodes"] == 2 and figures["layout"]["ranks_per_node"] == 2
    links = figures["links"]
    assert links["inter-node"]["ranks"] == [0, 2] and links["intra-node"]["ranks"] == [0, 1]
    assert all(r["busbw_gbs"] > 0 for link in links.values() for r in link["results"])
    assert "inter-node link (ranks 0, 2): bus bandwidth" in log.read_text()


def submit(cluster, spec: dict, folder):
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = folder / "runs"
    result = subprocess.run([sys.executable, "-m", "bench", "slurm", str(path), "--submit",
                             "--cpu", "--gpus-per-node", "1", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, env=cluster.env(), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    return out, [a["job_id"] for a in jobs["arrays"]] + [jobs["aggregate"]]


def wait_for_step(cell_dir: Path, step: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads((cell_dir / "progress.json").read_text())["step"] >= step:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{cell_dir.name} did not reach step {step} in {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def sweep(cluster, tmp_path_factory):
    """One submission: a short DDP cell across both nodes and a long one (the same shape, so
    one array, run in that order; long by its batch: a configuration cannot set its own steps),
    then the single-device cell. Once the long cell trains, node n2 is killed: its slurmd and
    every process in its namespace, as a machine that went away."""
    spec = {"name": "twonodes", "workload": TINY, "matrix": {"models": ["unet"],
            "configurations": [{"strategy": "ddp", "devices": 2},
                               {"strategy": "ddp", "devices": 2, "global_batch": LONG_BATCH},
                               {"strategy": "single", "devices": 1}]}}
    out, jobs = submit(cluster, spec, tmp_path_factory.mktemp("sweep"))
    cells = {c["cell"]["global_batch"] if c["cell"]["strategy"] == "ddp" else "single":
             out / c["cell_id"] for c in json.loads((out / "spec.json").read_text())["cells"]}
    doomed = cells[LONG_BATCH]
    wait_for_step(doomed, 3, JOB_TIMEOUT_S)
    killed = time.monotonic()
    cluster.kill_node("n2")
    while not (doomed / "record.json").exists() and time.monotonic() - killed < 300:
        time.sleep(0.3)
    noticed_s = time.monotonic() - killed
    cluster.wait_for(jobs, timeout_s=JOB_TIMEOUT_S)
    logs = "\n".join(p.read_text()[-3000:] for p in (out / "slurm" / "logs").glob("*"))
    return {"out": out, "cells": cells, "noticed_s": noticed_s, "logs": logs}


def record_of(cell_dir: Path) -> dict:
    return json.loads((cell_dir / "record.json").read_text())


def test_a_ddp_cell_spans_two_nodes_with_each_nodes_telemetry_and_single_device_parity(sweep):
    out, logs = sweep["out"], sweep["logs"]
    ddp, single = record_of(sweep["cells"][8]), record_of(sweep["cells"]["single"])
    assert ddp["status"] == "ok" and single["status"] == "ok", logs
    # Two hosts, one rank and one telemetry stream each, recognised as one machine whose
    # two cores the ranks' threads fit: each rank took its thread count from its allocation.
    placement = ddp["runtime"]["placement"]
    assert sorted(n["host"] for n in placement["nodes"]) == ["n1", "n2"]
    assert [n["ranks"] for n in placement["nodes"]] == [1, 1]
    assert len(placement["machines"]) == 1 and placement["oversubscribed"] is False
    assert ddp["runtime"]["threads_per_rank"] == 1
    assert ddp["runtime"]["threads_source"].startswith(("SLURM_CPUS_PER_TASK", "affinity"))
    telemetry = ddp["telemetry"]
    assert telemetry["nodes"] == 2
    assert sorted(n["host"] for n in telemetry["per_node"]) == ["n1", "n2"]
    assert all(not n.get("missing") for n in telemetry["per_node"]), telemetry["per_node"]
    # Each node's sampler ran on its own node (a window of a few tiny steps may hold none of
    # a 1-core node's samples: the cell's whole timeline is checked).
    samples = pd.read_parquet(out / ddp["cell_id"] / "telemetry.parquet")
    assert samples.groupby("node").size().to_dict().keys() == {"n1", "n2"}
    assert samples.groupby("node").size().min() >= 2
    assert ddp["env"]["slurm"]["slurm_job_nodelist"] in ("n[1-2]", "n1,n2")
    # Launched through srun, one torchrun per node, meeting at a c10d rendezvous on n1.
    launch = (out / ddp["cell_id"] / "cell.log").read_text().splitlines()[0]
    assert launch.startswith("$ srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=1")
    assert "--rdzv-backend=c10d" in launch and "--rdzv-endpoint=n1:" in launch
    assert "--nnodes=2" in launch and "--nproc-per-node=1" in launch
    assert ddp["runtime"]["world_size"] == 2 and ddp["runtime"]["backend"] == "gloo"
    # fp32 group-norm DDP across the nodes trains the single device's steps.
    losses = [pd.read_parquet(out / r["cell_id"] / "steps.parquet")["loss"].to_numpy()
              for r in (ddp, single)]
    assert abs(losses[0] - losses[1]).max() <= 1e-4 * abs(losses[1]).max()


def test_a_node_lost_mid_cell_is_named_and_the_sweep_goes_on(sweep):
    lost = record_of(sweep["cells"][LONG_BATCH])
    assert lost["status"] in ("failed", "timeout"), sweep["logs"]
    assert lost["error"]["nodes_lost"] == ["n2"]
    assert lost["error"]["message"].startswith("node n2 lost (its slurmd")
    assert sweep["noticed_s"] < TINY["timeout_s"]  # within the cell's timeout
    # Every other cell finished, the summary job still ran, and nothing written was lost.
    assert record_of(sweep["cells"]["single"])["status"] == "ok"
    assert record_of(sweep["cells"][8])["status"] == "ok"
    summary = json.loads((sweep["out"] / "summary.json").read_text())
    assert summary["counts"] == {"ok": 2, "failed": 1} or summary["counts"] == {
        "ok": 2, "timeout": 1}
    assert (sweep["out"] / "report.md").exists() and (sweep["out"] / "report.html").exists()
