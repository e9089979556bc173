"""Against a real Slurm (slurmctld + slurmd + munge on localhost, see slurm_cluster.py):
`bench slurm --submit` job arrays split at MaxArraySize, Slurm ids in every record, the
afterany summary job, and a preempted array task that requeues itself and resumes from its
checkpoint. (Multi-rank cells through srun + torchrun, across nodes: test_multinode.py.)"""
import json
import subprocess
import sys
import time

import pytest
import yaml

from bench.config import spec as specs
from bench.sweep import plan as planner
from bench.sweep import spec_files
from conftest import REPO
from slurm_cluster import FINAL_STATES, LocalSlurm, missing_requirements

pytestmark = pytest.mark.skipif(missing_requirements() is not None,
                                reason=missing_requirements() or "")

TINY = {"steps": 6, "warmup": 2, "global_batch": 8, "width": 4, "depth": 2, "image_size": 32,
        "sample_hz": 5, "timeout_s": 600}
JOB_TIMEOUT_S = 1200  # the 2 cores are shared; a cell can take a minute under load


@pytest.fixture(scope="module")
def cluster():
    # MaxArraySize=1: two cells of one shape must become two arrays.
    with LocalSlurm(max_array_size=1) as c:
        yield c


def submit(cluster, spec: dict, tmp_path, *extra):
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs" / spec["name"]
    result = subprocess.run([sys.executable, "-m", "bench", "slurm", str(path), "--submit",
                             "--cpu", "--out", str(out), *extra], cwd=REPO,
                            capture_output=True, text=True, env=cluster.env(), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    cells = planner.expand(specs.load_spec(str(path)), "cpu", 0).cells
    return out, jobs, cells, result.stdout


def test_sweep_of_job_arrays_split_at_the_clusters_max_array_size(cluster, tmp_path):
    spec = {"name": "arrays", "workload": TINY,
            "matrix": {"models": ["unet"],
                       "configurations": [{"strategy": "single"}, {"strategy": "dp", "devices": 2},
                                          {"strategy": "dp", "devices": 2, "global_batch": 16}]}}
    out, jobs, cells, stdout = submit(cluster, spec, tmp_path)
    array_ids = [a["job_id"] for a in jobs["arrays"]]
    # single (1 CPU) is one shape; the two DP cells on 2 devices share the other, which the
    # cluster's MaxArraySize of 1 (read from scontrol) splits into two arrays. (A multi-rank
    # cell through srun and torchrun's c10d rendezvous: tests/test_multinode.py, across nodes.)
    assert len(array_ids) == 3, stdout
    assert f"submitted summary job {jobs['aggregate']}" in stdout
    try:
        cluster.wait_for([*array_ids, jobs["aggregate"]], timeout_s=JOB_TIMEOUT_S)
    finally:
        logs = "\n".join(p.read_text()[-2000:] for p in (out / "slurm" / "logs").glob("*"))
    finished = {(r.get("ArrayJobId"), r.get("ArrayTaskId")) if r.get("ArrayJobId") else r["JobId"]:
                r for r in cluster.completed()}
    assert finished[jobs["aggregate"]]["JobState"] == "COMPLETED", logs

    # Which array task ran which cell: the index files say, and every record agrees.
    task_of = {}
    for array in jobs["arrays"]:
        index_file = array["script"].replace(".sbatch", ".index")
        for task_id, line in enumerate(open(index_file).read().splitlines()):
            task_of[line.split("\t")[1]] = (array["job_id"], str(task_id))
    assert set(task_of) == {c.cell_id for c in cells}
    for cell in cells:
        record = json.loads((out / cell.cell_id / "record.json").read_text())
        assert record["status"] == "ok", (cell.cell_id, record.get("error"), logs)
        slurm = record["env"]["slurm"]
        array_job, task_id = task_of[cell.cell_id]
        assert slurm["slurm_array_job_id"] == array_job and slurm["slurm_array_task_id"] == task_id
        assert slurm["slurm_job_id"] == finished[(array_job, task_id)]["JobId"]
        assert slurm["slurm_job_nodelist"] == cluster.node
        assert "cuda_visible_devices" in record["env"]
        assert finished[(array_job, task_id)]["ExitCode"] == "0:0"

    # The afterany job wrote the summary.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["counts"] == {"ok": 3}
    assert {row["cell_id"] for row in summary["cells"]} == {c.cell_id for c in cells}
    assert len(summary["configurations"]) == 3

    # Nothing left to do: a second submission submits nothing.
    again = subprocess.run([sys.executable, "-m", "bench", "slurm", str(tmp_path / "arrays.yaml"),
                            "--submit", "--cpu", "--out", str(out)], cwd=REPO,
                           capture_output=True, text=True, env=cluster.env(), timeout=300)
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stderr


def test_preempted_task_requeues_itself_and_resumes(cluster, tmp_path):
    spec = {"name": "preempt", "workload": {**TINY, "steps": 60},
            "matrix": {"models": ["unet"], "configurations": [{"strategy": "single"}]}}
    out, jobs, (cell,), _ = submit(cluster, spec, tmp_path)
    (array_id,) = [a["job_id"] for a in jobs["arrays"]]
    task = f"{array_id}_0"
    progress = out / cell.cell_id / "progress.json"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not progress.exists():  # training has begun: the ranks handle SIGTERM now
        assert time.monotonic() < deadline and cluster.active_jobs([array_id]), \
            cluster.logs()
        time.sleep(0.3)
    # What --signal=B:TERM@120 does before a time limit: SIGTERM to the batch shell only.
    sent = cluster.client("scancel", "--batch", "--signal=TERM", task)
    assert sent.returncode == 0, sent.stderr

    # The task requeues itself; Slurm holds it back for the credential lifetime (cred_expire,
    # 10 s here) and then runs it again. Forcing an earlier start makes slurmd refuse the
    # relaunch ("Job credential revoked") and the task fails, so the test waits as a cluster
    # would. Judged by the task's own state, not by squeue's list, which a busy slurmctld
    # can leave empty for a moment mid-requeue.
    while time.monotonic() < deadline:
        state = cluster.job_state(task)
        if state.get("Restarts") == "1" and state.get("JobState") in FINAL_STATES:
            break
        time.sleep(0.5)
    cluster.wait_for([array_id, jobs["aggregate"]], timeout_s=max(1, deadline - time.monotonic()))
    log = next((out / "slurm" / "logs").glob("bench-preempt-*_0.out")).read_text()
    assert f"was preempted; requeueing array task {task}" in log, log
    record = json.loads((out / cell.cell_id / "record.json").read_text())
    assert record["status"] == "ok", (record.get("error"), log)
    assert record["resumed"] and record["env"]["slurm"]["slurm_restart_count"] == "1"
    assert record["env"]["slurm"]["slurm_array_job_id"] == array_id
    assert record["segments"][0]["end_step"] < 60 and record["segments"][-1]["end_step"] == 60
    # Whenever the summary job ran, the requeued run's own refresh leaves the sweep's summary
    # saying what finally happened.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and [c["status"] for c in summary["cells"]] == ["ok"], summary
