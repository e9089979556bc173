"""Sweeps from a spec: run them locally (resumable), run one cell alone (what a Slurm array
task does), report their status and summary, and write / submit Slurm job arrays.

A sweep lives in one folder (default `runs/<spec name>`): the resolved spec (`spec.yaml` for
people, `spec.json` with the cells by index), one folder per cell, `summary.json`, and for
Slurm a `slurm/` folder with the scripts, index files, logs and `jobs.json`. Re-running a
sweep skips cells whose record is `ok`.

The `cmd_*` functions are CLI commands (they render); everything else returns data.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from bench.errors import BadInput

MISSING = "missing"
SUMMARY = "summary.json"
JOBS = "jobs.json"


# --------------------------------------------------------------------------- parsers

def add_parsers(sub) -> None:
    """The `cell`, `status` and `slurm` subcommands (no heavy imports: --help stays fast)."""
    cell = sub.add_parser("cell", help="run one cell of a spec (what a Slurm array task runs)")
    cell.add_argument("spec", metavar="SPEC",
                      help="a spec YAML, a built-in name, or a sweep's resolved spec.json")
    cell.add_argument("--index", type=int, required=True, help="the cell's index in the spec")
    cell.add_argument("--out", type=Path, default=None,
                      help="the sweep's folder (default: the folder of a spec.json, else "
                           "runs/<name>)")
    cell.add_argument("--expect-id", default=None, metavar="CELL_ID",
                      help="refuse to run unless the index still names this cell")
    cell.add_argument("--device", default="auto", help="auto, cpu or cuda (specs by name)")
    cell.add_argument("--force", action="store_true", help="re-run the cell even if it is ok")
    cell.add_argument("--cache-dir", default=None, help="decoded-image cache")

    status = sub.add_parser("status", help="list a sweep's cells: ok, failed or missing")
    status.add_argument("dir", type=Path, metavar="DIR", help="the sweep's results folder")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--summary", action="store_true",
                        help=f"also write DIR/{SUMMARY} and print the comparison table")

    slurm = sub.add_parser("slurm", help="write (and with --submit, submit) sbatch job arrays "
                                         "for a spec")
    slurm.add_argument("spec", metavar="SPEC", help="a spec YAML or a built-in name")
    slurm.add_argument("--out", type=Path, default=None, help="the sweep's folder (default "
                                                              "runs/<name>)")
    slurm.add_argument("--submit", action="store_true",
                       help="submit the arrays and the summary job, and print the job ids")
    slurm.add_argument("--cpu", action="store_true", help="a CPU-only cluster: gloo ranks")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--qos", default=None)
    slurm.add_argument("--time", default=None,
                       help="time limit per array task (default: the cell timeout + 10 min)")
    slurm.add_argument("--gpus-per-node", type=int, default=None,
                       help="GPUs per node (with --cpu: ranks per node); cells with more "
                            "devices span several nodes; default: each cell on one node")
    slurm.add_argument("--cpus-per-task", type=int, default=None,
                       help="CPUs per node of a task (default: 1 + loader workers per device)")
    slurm.add_argument("--constraint", default=None, help="node features, e.g. a100")
    slurm.add_argument("--exclusive", action="store_true",
                       help="whole nodes only (nothing else disturbs the measurement)")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                       help="an extra #SBATCH option for the arrays, e.g. --mail-type=END "
                            "(repeatable)")
    slurm.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before bench, e.g. 'module load cuda' "
                            "(repeatable)")
    slurm.add_argument("--python", default=None,
                       help="the interpreter the jobs run (default: this one, "
                            f"{sys.executable})")
    slurm.add_argument("--max-concurrent", type=int, default=None,
                       help="array throttle %%K: tasks of one array running at once "
                            "(default 8)")
    slurm.add_argument("--max-array-size", type=int, default=None,
                       help="split arrays above this many tasks (default: the cluster's "
                            "MaxArraySize with --submit, else 1001)")
    slurm.add_argument("--signal-before", type=int, default=None, metavar="SECONDS",
                       help="SIGTERM this long before the time limit (default 120)")
    slurm.add_argument("--force", action="store_true",
                       help="include cells that are already ok")
    slurm.add_argument("--cache-dir", default=None, help="decoded-image cache")


# --------------------------------------------------------------------------- resolving

_SPEC_KEY_OF_FLAG = {"batch": "workload.global_batch", "timeout": "workload.timeout_s",
                     "model": "matrix.models", "strategy": "matrix.configurations",
                     "precision": "matrix.configurations", "devices": "matrix.configurations",
                     "zero": "matrix.configurations", "noise": "matrix.noise",
                     "epochs": "workload.steps"}
_RUN_OPTIONS_WITH_SPEC = {"command", "spec", "out", "force", "retry_failed", "cache_dir", "device"}


def reject_workload_flags(args) -> None:
    """`run SPEC` takes the workload from the spec only; a flag beside it would be ignored."""
    from bench.cli import build_parser
    defaults = vars(build_parser().parse_args(["run"]))
    for dest, value in vars(args).items():
        if dest in _RUN_OPTIONS_WITH_SPEC or dest not in defaults:
            continue
        if value != defaults[dest]:
            key = _SPEC_KEY_OF_FLAG.get(dest, f"workload.{dest}")
            raise BadInput(f"--{dest.replace('_', '-')} cannot be combined with spec "
                           f"{args.spec}; set {key} in the spec instead")


def _sweep_for_this_machine(spec_ref: str, device: str):
    from bench.sweep import plan
    from bench.config import spec as specs
    sweep_spec = specs.load_spec(spec_ref)
    device_type = plan.default_device_type(device if device != "auto" else sweep_spec.device)
    gpus = plan.visible_gpus()
    resolved = specs.expand(sweep_spec, device_type, gpus)
    specs.validate(resolved, gpus)
    return resolved


def _prepare(cells, cache_dir):
    """As `commands.plan_cells` does for flags: data, target checks, batch fit, fingerprints."""
    from bench.sweep import plan
    from bench.twosite.obfuscate import check_training
    prepared = plan.prepare_data(cells, cache_dir=cache_dir)
    for cell in cells:
        check_training(cell, prepared[plan.DataKey.of(cell)])
    plan.check_batch_fits(cells, prepared)
    return prepared, plan.fingerprints(cells, prepared)


# --------------------------------------------------------------------------- local sweep

def cmd_run_spec(args) -> int:
    from bench.sweep import plan
    from bench.config import spec as specs
    from bench.sweep.runner import run_cells
    from reports.progress import SweepProgress

    reject_workload_flags(args)
    resolved = _sweep_for_this_machine(args.spec, args.device)
    out = Path(args.out) if args.out else Path("runs") / resolved.spec.name
    plan.check_output_dir(out)
    prepared, fingerprints = _prepare(resolved.cells, args.cache_dir)

    out.mkdir(parents=True, exist_ok=True)
    specs.write_resolved(out, resolved)
    with SweepProgress(len(resolved.cells)) as progress:
        run_cells(resolved.cells, out, prepared, fingerprints, force=args.force,
                  retry_failed=args.retry_failed, on_event=progress.on_event)
    status = sweep_status(out)
    write_summary(out, status)
    _render_summary(out, status, resolved.notes)
    from bench.sweep.runner import termination_requested
    if termination_requested():
        from bench.worker.train import EXIT_PREEMPTED
        return EXIT_PREEMPTED
    return 0 if status["complete"] else 1


# --------------------------------------------------------------------------- one cell

def _cell_of(args):
    """(cell, resolved sweep or None, default results folder) for `bench cell`."""
    from bench.config import spec as specs
    path = Path(args.spec)
    data = specs.read_resolved(path) if path.is_file() and path.suffix == ".json" else None
    if data is not None:
        cells, resolved, default_out = specs.resolved_cells(data), None, path.parent
        name = data["name"]
    else:
        resolved = _sweep_for_this_machine(args.spec, args.device)
        cells, name = resolved.cells, resolved.spec.name
        default_out = Path("runs") / name
    if not 0 <= args.index < len(cells):
        raise BadInput(f"--index {args.index} is out of range; spec {name} has {len(cells)} "
                       f"cells (0-{len(cells) - 1})")
    cell = cells[args.index]
    if args.expect_id and cell.cell_id != args.expect_id:
        raise BadInput(f"--index {args.index} of spec {name} is cell {cell.cell_id}, not "
                       f"--expect-id {args.expect_id}; the spec changed after the jobs were "
                       "written")
    return cell, resolved, default_out


def srun_wrapper(cell):
    """Under a Slurm array task (BENCH_SRUN set by the script), a multi-rank cell's launcher
    runs through srun, one task per node; None elsewhere."""
    from launchers import get_strategy
    prefix = os.environ.get("BENCH_SRUN", "").strip()
    if not prefix or not get_strategy(cell.strategy).distributed:
        return None
    words = shlex.split(prefix)
    return lambda argv: [*words, *argv]


def allocated_nodes() -> int:
    """Nodes of the Slurm allocation this array task runs on (its script's rendezvous says
    how many; 1 outside Slurm)."""
    from launchers.base import slurm_rendezvous
    rdzv = slurm_rendezvous()
    return rdzv[1] if rdzv else 1


def cmd_cell(args) -> int:
    from bench.sweep import plan
    from bench.config import spec as specs
    from bench.sweep.runner import run_cell, should_skip

    cell, resolved, default_out = _cell_of(args)
    gpus = plan.visible_gpus() * allocated_nodes()  # a multi-node cell spans the allocation
    try:
        plan.validate_cell(cell, gpus)
    except BadInput as exc:
        raise BadInput(f"cell {args.index} ({cell.cell_id}): {specs.as_spec_keys(str(exc))}") \
            from None
    out = Path(args.out) if args.out else default_out
    plan.check_output_dir(out)
    prepared, fingerprints = _prepare([cell], args.cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resolved is not None and not (out / specs.SPEC_JSON).exists():
        specs.write_resolved(out, resolved)
    done = should_skip(out / cell.cell_id, args.force, retry_failed=True)
    if done is not None:
        print(f"{cell.cell_id}: already ok, skipped")
        return 0
    # run_cell passes a SIGTERM (Slurm's warning before the time limit, or a preemption) on
    # to the cell's processes: the ranks checkpoint and the record says `preempted`.
    record = run_cell(cell, fingerprints[cell], prepared[plan.DataKey.of(cell)].to_json(),
                      out, wrap_argv=srun_wrapper(cell))
    status = record.get("status")
    message = (record.get("error") or {}).get("message") or ""
    print(f"{cell.cell_id}: {status}" + (f" — {message}" if message else ""))
    if status == "ok":
        return 0
    from bench.worker.train import EXIT_PREEMPTED
    return EXIT_PREEMPTED if status == "preempted" else 1


# --------------------------------------------------------------------------- status, summary

def sweep_status(out: Path) -> dict:
    """Every cell the sweep's resolved spec names, with its record's status or `missing`,
    plus records in the folder that the spec does not name (`extra`)."""
    from bench.config import spec as specs
    from bench.record import store

    out = Path(out)
    data = specs.read_resolved(out / specs.SPEC_JSON)
    if data is not None:
        name = data["name"]
        expected = [(e["index"], e["cell_id"]) for e in data["cells"]]
    else:
        legacy = _read_json(out / "sweep.json")  # a `bench run` with flags writes this
        if legacy is None and not any(store.cell_dirs(out)):
            raise BadInput(f"{out} holds no sweep: no {specs.SPEC_JSON} and no cell records")
        from bench.config.cell import Cell
        cells = [Cell.from_dict(c) for c in (legacy or {}).get("cells", [])]
        name = out.name
        expected = [(i, c.cell_id) for i, c in enumerate(cells)]
    rows = []
    for index, cell_id in expected:
        rows.append(_row(index, cell_id, store.read_record(out / cell_id)))
    named = {cell_id for _, cell_id in expected}
    extra = [_row(None, d.name, store.read_record(d)) for d in store.cell_dirs(out)
             if d.name not in named]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"name": name, "dir": str(out), "cells": rows, "extra": extra, "counts": counts,
            "complete": bool(rows) and all(r["status"] == "ok" for r in rows)}


def _row(index, cell_id: str, record: dict | None) -> dict:
    if record is None:
        return {"index": index, "cell_id": cell_id, "status": MISSING}
    env = record.get("env") or {}
    return {"index": index, "cell_id": cell_id, "status": record.get("status", "?"),
            "message": (record.get("error") or {}).get("message"),
            "time_to_train_s": (record.get("timing") or {}).get("time_to_train_s"),
            "throughput_img_s": (record.get("timing") or {}).get("throughput_img_s"),
            "slurm": env.get("slurm") or {}, "host": env.get("hostname")}


def _read_json(path: Path):
    import json
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_summary(out: Path, status: dict) -> dict:
    """summary.json: the status of every cell and, over the ok ones, the per-configuration
    comparison (the same statistics as `bench report`: speedups and quality deltas against
    single-device fp32)."""
    import pandas as pd

    from bench import analysis
    from bench.record import store
    records = [r for r in store.records(out)[0]
               if r.get("cell_id") in {row["cell_id"] for row in status["cells"]}]
    frame = pd.DataFrame([store.flatten(r) for r in records])
    table = analysis.summary_table(frame) if not frame.empty else frame
    # store.write_json turns numpy scalars into numbers and NaN into null.
    configurations = [] if table.empty else table.to_dict(orient="records")
    summary = {**status, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "configurations": configurations}
    store.write_json(Path(out) / SUMMARY, summary)
    return summary


def _render_summary(out: Path, status: dict, notes: list[str]) -> None:
    from bench.record import store
    from reports.console import render_summary
    named = {row["cell_id"] for row in status["cells"]}
    records = [r for r in store.records(out)[0] if r.get("cell_id") in named]
    render_summary(records, out, notes)


def cmd_status(args) -> int:
    import json

    from reports.console import console
    from rich.table import Table

    status = sweep_status(args.dir)
    if args.summary:
        write_summary(args.dir, status)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    if args.summary:
        _render_summary(args.dir, status, [])
    colours = {"ok": "green", MISSING: "yellow"}
    table = Table(title=f"sweep {status['name']} — {args.dir}")
    for column in ("#", "cell", "status", "time s", "slurm job", "note"):
        table.add_column(column, justify="right" if column in ("#", "time s") else "left")
    for row in status["cells"] + status["extra"]:
        colour = colours.get(row["status"], "red")
        slurm = row.get("slurm") or {}
        job = slurm.get("slurm_job_id", "")
        if slurm.get("slurm_array_job_id"):
            job = f"{slurm['slurm_array_job_id']}_{slurm.get('slurm_array_task_id', '')} ({job})"
        seconds = row.get("time_to_train_s")
        table.add_row("" if row["index"] is None else str(row["index"]), row["cell_id"],
                      f"[{colour}]{row['status']}[/{colour}]",
                      "" if seconds is None else f"{seconds:.1f}", job,
                      (row.get("message") or "")[:80] + (" (not in the spec)"
                                                         if row["index"] is None else ""))
    out = console()
    out.print(table)
    counts = status["counts"]
    failed = sum(n for s, n in counts.items() if s not in ("ok", MISSING))
    out.print(f"{len(status['cells'])} cells: {counts.get('ok', 0)} ok, {failed} failed, "
              f"{counts.get(MISSING, 0)} missing")
    return 0


# --------------------------------------------------------------------------- slurm

def cmd_slurm(args) -> int:
    import json

    from bench.sweep import plan
    from bench.record import store
    from bench.config import spec as specs
    from launchers import get_strategy
    from slurm import render, submit

    sweep_spec = specs.load_spec(args.spec)
    if args.cpu and sweep_spec.device == "cuda":
        raise BadInput(f"--cpu contradicts workload.device cuda of spec {sweep_spec.name}")
    device_type = "cpu" if args.cpu or sweep_spec.device == "cpu" else "cuda"
    gpus = args.gpus_per_node
    if device_type == "cuda" and gpus is None and _needs_gpu_count(sweep_spec):
        raise BadInput(f"spec {sweep_spec.name} sizes its configurations by the GPUs a job "
                       "gets, which this host cannot see; pass --gpus-per-node")
    resolved = specs.expand(sweep_spec, device_type, gpus or 0)
    specs.validate(resolved, None)
    out = (Path(args.out) if args.out else Path("runs") / sweep_spec.name).absolute()
    plan.check_output_dir(out)
    if args.submit and not submit.have_sbatch():
        raise BadInput("--submit needs sbatch on PATH; without --submit the scripts are "
                       "only written")
    previous = _read_json(out / "slurm" / JOBS) or {}
    if args.submit and not args.force:
        earlier = [a["job_id"] for a in previous.get("arrays", [])]
        busy = submit.active_jobs(earlier)
        if busy:
            raise BadInput(f"sweep {sweep_spec.name} still has queued or running array jobs "
                           f"({', '.join(busy)}) in {out}; wait for them or scancel them "
                           "(--force submits anyway)")
    _prepare(resolved.cells, args.cache_dir)  # bad data fails here, not in every task

    max_array_size = args.max_array_size
    if args.submit:
        cluster = submit.cluster_max_array_size()
        if cluster == 0:
            raise BadInput("this cluster disables job arrays (MaxArraySize = 0)")
        if cluster is not None:
            max_array_size = min(max_array_size or cluster, cluster)
    options = render.SlurmOptions(
        python=args.python or sys.executable, workdir=str(Path.cwd()), cpu=device_type == "cpu",
        partition=args.partition, account=args.account, qos=args.qos, time=args.time,
        gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
        constraint=args.constraint, exclusive=args.exclusive, extra=args.sbatch,
        setup=args.setup,
        max_concurrent=args.max_concurrent if args.max_concurrent is not None
        else render.DEFAULT_MAX_CONCURRENT,
        max_array_size=max_array_size or render.DEFAULT_MAX_ARRAY_SIZE,
        signal_s=args.signal_before if args.signal_before is not None
        else render.DEFAULT_SIGNAL_S,
        report_lines=_report_lines())
    tasks = []
    for index, cell in enumerate(resolved.cells):
        record = store.read_record(out / cell.cell_id)
        if record is not None and record.get("status") == "ok" and not args.force:
            continue
        tasks.append(render.CellTask(index, cell.cell_id, cell.devices,
                                     get_strategy(cell.strategy).distributed, cell.workers,
                                     cell.timeout_s))
    try:
        jobs = render.plan_arrays(tasks, options)
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    out.mkdir(parents=True, exist_ok=True)
    specs.write_resolved(out, resolved)
    skipped = len(resolved.cells) - len(tasks)
    if not tasks:
        print(f"all {len(resolved.cells)} cells of {sweep_spec.name} are ok; nothing to submit "
              f"({out})")
        return 0
    written = render.write_scripts(out, sweep=sweep_spec.name, spec_path=out / specs.SPEC_JSON,
                                   jobs=jobs, options=options)
    for job, script, _ in written.arrays:
        print(f"{script}: {len(job.tasks)} cells, {job.shape.nodes} node(s), "
              f"{job.shape.gpus_per_node or 'no'} GPU(s) and {job.shape.cpus_per_task} CPU(s) "
              "per node")
    print(f"{written.aggregate}: the summary, after every array")
    if skipped:
        print(f"{skipped} cells already ok are left out (--force includes them)")
    if not args.submit:
        print(f"submit with: {written.submit_sh}")
        return 0
    try:
        submitted = submit.submit_all([s for _, s, _ in written.arrays], written.aggregate)
    except submit.SubmitError as exc:
        if exc.submitted:
            print(f"submitted before the failure: {' '.join(exc.submitted)}", file=sys.stderr)
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    earlier = previous.pop("earlier", []) + ([previous] if previous else [])
    store.write_json(out / "slurm" / JOBS, {**submitted.to_dict(),
                                            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                            "earlier": earlier})
    for job_id, script in submitted.arrays:
        print(f"submitted array job {job_id} ({script.name})")
    print(f"submitted summary job {submitted.aggregate} (afterany)")
    print(json.dumps(submitted.to_dict()))
    return 0


def _needs_gpu_count(sweep_spec) -> bool:
    if sweep_spec.configurations == "study":
        return True
    return any(c.devices is None and c.strategy != "single" for c in sweep_spec.configurations)


def _report_lines() -> list[str]:
    """If this bench has a `report` command, the summary job renders the report too."""
    from bench.cli import commands
    if hasattr(commands, "cmd_report"):
        return ['"$PYTHON" -m bench report "$OUT" --output "$OUT/report.md" '
                '--html "$OUT/report.html" || echo "bench: no report: see above" >&2']
    return []
