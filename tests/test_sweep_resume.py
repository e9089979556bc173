"""A local sweep killed midway resumes: a re-run skips the cells whose record is ok and runs
only the rest; `bench status` tells them apart."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import yaml

from bench.config import spec as specs
from bench.sweep import plan as planner
from bench.sweep import spec_files
from bench.record import store
from conftest import REPO, run_cli

SPEC = {"name": "resume", "workload": {"steps": 6, "warmup": 2, "global_batch": 8, "width": 4,
                                       "depth": 2, "image_size": 32, "sample_hz": 5,
                                       "device": "cpu"},
        "matrix": {"models": ["unet"], "configurations": [{"strategy": "single"}],
                   "noise": [0.1, 0.2]}}


def wait_for(path, proc, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return
        assert proc.poll() is None, f"the sweep ended early with {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


def kill_everything(proc):
    """SIGKILL the sweep's process group, and the cell it was running (which the runner put
    in a session of its own): as if the machine had gone away."""
    tree = [proc, *psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGKILL)
    for p in tree:
        try:
            p.kill() if isinstance(p, psutil.Process) else None
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)
    psutil.wait_procs([p for p in tree if isinstance(p, psutil.Process)], timeout=30)


def test_killed_sweep_reruns_only_the_missing_cells(tmp_path):
    spec_path = tmp_path / "resume.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    first, second = [c.cell_id for c in
                     planner.expand(specs.load_spec(str(spec_path)), "cpu", 0).cells]
    out = tmp_path / "runs" / "resume"
    argv = [sys.executable, "-m", "bench", "run", str(spec_path), "--out", str(out)]

    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for(out / first / "record.json", proc, timeout_s=900)
    finally:
        kill_everything(proc)
    record_path = out / first / "record.json"
    before = (record_path.stat().st_mtime_ns, record_path.read_bytes())
    assert json.loads(before[1])["status"] == "ok"
    assert not (out / second / "record.json").exists()
    assert (out / "spec.yaml").exists() and (out / "spec.json").exists()

    status = run_cli("status", out, "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["cell_id"]: r["status"] for r in json.loads(status.stdout)["cells"]}
    assert rows == {first: "ok", second: "missing"}
    human = run_cli("status", out)
    assert human.returncode == 0 and "2 cells: 1 ok, 0 failed, 1 missing" in human.stdout

    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # The first cell was not run again: its record is byte-for-byte the same file.
    assert (record_path.stat().st_mtime_ns, record_path.read_bytes()) == before
    assert json.loads((out / second / "record.json").read_text())["status"] == "ok"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["counts"] == {"ok": 2}


def test_status_and_summary_of_a_partly_failed_sweep(tmp_path):
    from bench.record import store
    from bench.cli.summary import write_summary
    from bench.sweep.status import sweep_status

    raw = {**SPEC, "matrix": {**SPEC["matrix"], "noise": [0.1, 0.2, 0.3]}}
    resolved = planner.expand(specs.parse_spec(raw), "cpu", 0)
    spec_files.write_resolved(tmp_path, resolved)
    ok, failed, missing = resolved.cells
    store.write_json(tmp_path / ok.cell_id / "record.json", {
        "cell_id": ok.cell_id, "cell": ok.to_dict(), "fingerprint": "f", "status": "ok",
        "timing": {"throughput_img_s": 10.0, "train_time_s": 2.0}, "quality": [],
        "env": {"slurm": {"slurm_job_id": "7"}}})
    store.write_json(tmp_path / failed.cell_id / "record.json", {
        "cell_id": failed.cell_id, "cell": failed.to_dict(), "fingerprint": "f",
        # gloo's messages hold "[/path:line]", which Rich would read as a closing tag
        "status": "failed", "error": {"message": "rank 1 was killed by signal SIGKILL; "
                                                 "[/gloo/tcp/pair.cc:545] Read error"}})
    (tmp_path / missing.cell_id).mkdir()  # started, never finished: no record

    status = sweep_status(tmp_path)
    assert [r["status"] for r in status["cells"]] == ["ok", "failed", "missing"]
    assert status["counts"] == {"ok": 1, "failed": 1, "missing": 1} and not status["complete"]
    assert status["cells"][0]["slurm"] == {"slurm_job_id": "7"}
    assert status["cells"][1]["message"].startswith("rank 1 was killed")
    summary = write_summary(tmp_path, status)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["counts"] == summary["counts"]
    assert len(saved["configurations"]) == 1
    assert saved["configurations"][0]["throughput_median"] == 10.0
    human = run_cli("status", tmp_path)
    assert human.returncode == 0 and "3 cells: 1 ok, 1 failed, 1 missing" in human.stdout
    assert "[/gloo/tcp/pair.cc:545]" in human.stdout.replace("\n", "")
    from bench.cli.summary import render_summary
    render_summary(tmp_path, status, [])  # the failures' lines: text, not markup


def test_concurrent_array_tasks_write_only_their_own_cells(tmp_path):
    """Two array tasks of one sweep start at the same moment in the same results folder:
    each writes its own cell folder, and the shared spec files stay whole."""
    spec_file, out = tmp_path / "resume.yaml", tmp_path / "results"
    spec_file.write_text(yaml.safe_dump(SPEC))
    tasks = [subprocess.Popen([sys.executable, "-m", "bench", "cell", str(spec_file),
                               "--index", str(i), "--out", str(out)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (0, 1)]
    outputs = [t.communicate(timeout=600)[0] for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outputs
    cells = planner.expand(specs.load_spec(str(spec_file)), "cpu", 0).cells
    records = {r["cell_id"]: r for r in store.records(out)[0]}
    assert set(records) == {c.cell_id for c in cells}  # one folder each, none shared
    assert all(r["status"] == "ok" for r in records.values())
    assert len(json.loads((out / spec_files.SPEC_JSON).read_text())["cells"]) == 2
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*/.*.tmp"))
