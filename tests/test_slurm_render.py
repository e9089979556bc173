"""sbatch rendering: shapes, array splitting at MaxArraySize, and the scripts themselves."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from slurm import render, submit
from slurm.render import CellTask, SlurmOptions


def options(**kw):
    return SlurmOptions(python="/opt/venv/bin/python", workdir="/home/me/bench", **kw)


def task(i, devices=1, distributed=False, workers=0, timeout_s=1800.0):
    return CellTask(i, f"cell-{i}", devices, distributed, workers, timeout_s)


def test_split_covers_every_task_once_and_respects_the_cap():
    tasks = [task(i) for i in range(2500)]
    jobs = render.plan_arrays(tasks, options(max_array_size=1001))
    assert [len(j.tasks) for j in jobs] == [1001, 1001, 498]
    assert [t.index for j in jobs for t in j.tasks] == list(range(2500))
    assert [(j.part, j.parts) for j in jobs] == [(1, 3), (2, 3), (3, 3)]
    assert len({j.stem for j in jobs}) == 3
    assert render.split([1, 2, 3], 1) == [[1], [2], [3]]
    assert render.plan_arrays([task(0)], options(max_array_size=1001))[0].stem == "array-1n1g1c"


def test_cells_group_by_resource_shape():
    tasks = [task(0), task(1, 2, False), task(2, 2, True), task(3, 8, True), task(4),
             task(5, 2, True, workers=3)]
    jobs = render.plan_arrays(tasks, options(gpus_per_node=4))
    by_shape = {j.shape: [t.index for t in j.tasks] for j in jobs}
    # DataParallel and DDP on the same devices hold the same resources (one array).
    assert by_shape == {render.Shape(1, 1, 1): [0, 4], render.Shape(1, 2, 2): [1, 2],
                        render.Shape(2, 4, 4): [3], render.Shape(1, 2, 8): [5]}
    cpu_jobs = render.plan_arrays(tasks[:3], options(cpu=True))
    assert {j.shape.gpus_per_node for j in cpu_jobs} == {0}
    assert cpu_jobs[0].shape.tag == "1n1c"


@pytest.mark.parametrize("cell,opts,needle", [
    (task(0, 4, False), dict(gpus_per_node=2), "cannot span nodes"),
    (task(0, 6, True), dict(gpus_per_node=4), "do not fill whole nodes"),
    (task(0), dict(max_concurrent=0), "--max-concurrent 0"),
    (task(0), dict(time="soon"), "--time 'soon'"),
    (task(0), dict(extra=["mail-type=END"]), "--sbatch 'mail-type=END'"),
    (task(0), dict(max_array_size=0), "--max-array-size 0"),
])
def test_impossible_layouts_are_refused(cell, opts, needle):
    with pytest.raises(render.SlurmInputError, match=re.escape(needle)):
        render.plan_arrays([cell], options(**opts))


def test_time_limit_follows_the_cell_timeout():
    assert render.format_time(1800 + 600) == "0-00:40:00"
    assert render.format_time(3 * 86400 + 61) == "3-00:02:00"
    job = render.plan_arrays([task(0, timeout_s=100), task(1, timeout_s=3000)], options())[0]
    assert job.time_limit == "0-01:00:00"
    assert render.plan_arrays([task(0)], options(time="2:00:00"))[0].time_limit == "2:00:00"


def sbatch_directives(script: str) -> list[str]:
    """What sbatch reads: #SBATCH lines before the first command."""
    out = []
    for line in script.splitlines()[1:]:
        if line.startswith("#SBATCH"):
            out.append(line[len("#SBATCH "):])
        elif line.strip() and not line.startswith("#"):
            break
    return out


def test_rendered_array_script(tmp_path):
    opts = options(partition="gpu", account="proj1", qos="high", constraint="a100",
                   gpus_per_node=4, extra=["--mail-type=END"], exclusive=True,
                   setup=["module load cuda/12.4", "source ~/venv/bin/activate"],
                   max_concurrent=3)
    jobs = render.plan_arrays([task(i, 8, True) for i in range(5)], opts)
    written = render.write_scripts(tmp_path, sweep="demo", spec_path=tmp_path / "spec.json",
                                   jobs=jobs, options=opts)
    (job, script_path, index_path) = written.arrays[0]
    script = script_path.read_text()
    assert "{{" not in script
    directives = sbatch_directives(script)
    for expected in ("--job-name=bench-demo-2n4g4c", "--array=0-4%3", "--nodes=2",
                     "--ntasks-per-node=1", "--cpus-per-task=4", "--gpus-per-node=4",
                     "--partition=gpu", "--account=proj1", "--qos=high", "--constraint=a100",
                     "--exclusive", "--mail-type=END", "--signal=B:TERM@120", "--requeue",
                     "--time=0-00:40:00", "--chdir=/home/me/bench",
                     f"--output={tmp_path}/slurm/logs/%x_%A_%a.out"):
        assert expected in directives, expected
    # Set-up first, then the interpreter; each array task finds its cell in the index file.
    assert script.index("module load cuda/12.4") < script.index("PYTHON=/opt/venv/bin/python")
    assert index_path.read_text().splitlines() == [f"{i}\tcell-{i}" for i in range(5)]
    assert 'sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$INDEX_FILE"' in script
    assert '-m bench cell "$SPEC" --index "$CELL_INDEX" --expect-id "$CELL_ID"' in script
    # Multi-node rendezvous on the first node, ranks through srun, one task per node.
    rdzv = 'export BENCH_RDZV="$RDZV_HOST:$RDZV_PORT,$SLURM_JOB_NUM_NODES,$SLURM_JOB_ID"'
    assert rdzv in script
    assert "scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1" in script
    assert re.search(r'BENCH_SRUN="srun --nodes=\$SLURM_JOB_NUM_NODES .*--ntasks-per-node=1',
                     script)
    # Preemption: forward SIGTERM to the cell; exit 3 requeues this very array task.
    assert "trap 'kill -TERM \"$CELL_PID\" 2>/dev/null' TERM" in script
    assert 'if [ "$RC" -eq 3 ]' in script
    assert 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in script
    assert subprocess.run(["bash", "-n", str(script_path)]).returncode == 0

    aggregate = written.aggregate.read_text()
    assert '-m bench status "$OUT" --summary' in aggregate
    assert "--partition=gpu" in sbatch_directives(aggregate)
    assert not any("gpus" in d for d in sbatch_directives(aggregate))
    submit_sh = written.submit_sh.read_text()
    assert "--dependency=afterany:$deps" in submit_sh and str(script_path) in submit_sh
    for path in (written.aggregate, written.submit_sh):
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_cpu_script_requests_no_gpus(tmp_path):
    opts = options(cpu=True)
    jobs = render.plan_arrays([task(0, 2, True)], opts)
    written = render.write_scripts(tmp_path, sweep="c", spec_path=tmp_path / "spec.json",
                                   jobs=jobs, options=opts)
    directives = sbatch_directives(written.arrays[0][1].read_text())
    assert "--cpus-per-task=2" in directives and "--array=0-0%8" in directives
    assert not any("gpu" in d for d in directives)


def test_rewriting_a_smaller_plan_removes_stale_arrays(tmp_path):
    opts = options(max_array_size=2)
    kw = dict(sweep="s", spec_path=tmp_path / "spec.json", options=opts)
    five = render.plan_arrays([task(i) for i in range(5)], opts)
    render.write_scripts(tmp_path, jobs=five, **kw)
    assert len(list((tmp_path / "slurm").glob("array-*.sbatch"))) == 3
    render.write_scripts(tmp_path, jobs=render.plan_arrays([task(0)], opts), **kw)
    assert sorted(p.name for p in (tmp_path / "slurm").glob("array-*")) == [
        "array-1n1g1c.index", "array-1n1g1c.sbatch"]


def test_max_array_size_from_scontrol_output():
    text = ("Configuration data as of 2025-01-01\nMaxArraySize            = 1001\n"
            "MaxJobCount = 10000\n")
    assert submit.parse_max_array_size(text) == 1001
    assert submit.parse_max_array_size("MaxJobCount = 5\n") is None


def test_slurm_command_writes_every_cell_into_some_array(tmp_path):
    out = tmp_path / "paper"
    result = run_cli("slurm", "paper", "--gpus-per-node", "2", "--max-array-size", "16",
                     "--partition", "gpu", "--setup", "module load cuda", "--out", out)
    assert result.returncode == 0, result.stderr
    spec = json.loads((out / "spec.json").read_text())
    assert len(spec["cells"]) == 90
    lines = [line.split("\t") for p in sorted((out / "slurm").glob("*.index"))
             for line in p.read_text().splitlines()]
    assert sorted(int(i) for i, _ in lines) == list(range(90))
    by_index = {e["index"]: e["cell_id"] for e in spec["cells"]}
    assert all(by_index[int(i)] == cell_id for i, cell_id in lines)
    for script in (out / "slurm").glob("array-*.sbatch"):
        directives = sbatch_directives(script.read_text())
        n = int(next(d for d in directives if d.startswith("--array=0-"))[10:].split("%")[0])
        assert n + 1 <= 16
        assert "--partition=gpu" in directives
    # Single-device, then 2-GPU arrays (DP and DDP share a shape): 36 and 54 cells.
    sizes = {}
    for p in (out / "slurm").glob("*.index"):
        tag = p.stem.split("-part")[0]
        sizes[tag] = sizes.get(tag, 0) + len(p.read_text().splitlines())
    assert sizes == {"array-1n1g1c": 36, "array-1n2g2c": 54}
    assert "submit with:" in result.stdout and (out / "slurm" / "submit.sh").exists()


def test_slurm_command_bad_input(tmp_path):
    out = tmp_path / "q"
    result = run_cli("slurm", "quick", "--out", out)
    assert result.returncode == 2 and "--gpus-per-node" in result.stderr
    result = run_cli("slurm", "paper", "--gpus-per-node", "2", "--cpus-per-task", "0",
                     "--out", out)
    assert result.returncode == 2 and "--cpus-per-task 0" in result.stderr
    no_slurm = {"PATH": str(Path(shutil.which("bash")).parent.parent / "nonexistent")}
    result = run_cli("slurm", "scaling", "--cpu", "--submit", "--out", out, env=no_slurm)
    assert result.returncode == 2 and "--submit needs sbatch" in result.stderr, result.stderr
    assert not out.exists()
    assert os.environ.get("PATH")  # the test's own environment is untouched


def test_a_multi_node_cell_counts_the_allocation_s_nodes(monkeypatch):
    from bench.cli.sweep import allocated_nodes
    monkeypatch.delenv("BENCH_RDZV", raising=False)
    assert allocated_nodes() == 1
    monkeypatch.setenv("BENCH_RDZV", "node1:29500,4,1234")  # what array.sbatch exports
    assert allocated_nodes() == 4
    from bench.errors import BadInput
    monkeypatch.setenv("BENCH_RDZV", "node1:29500")
    with pytest.raises(BadInput, match="BENCH_RDZV='node1:29500' is malformed"):
        allocated_nodes()
