"""`bench slurm`: write (and with --submit, submit) sbatch job arrays for a spec, one array
task per cell that is not ok yet, and a summary job after them (afterany)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.errors import EXIT_INTERRUPTED, BadInput

JOBS = "jobs.json"


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def cmd_slurm(args) -> int:
    from bench.config.spec import load_spec
    from bench.record import store
    from bench.sweep.plan import expand, validate
    from bench.sweep.plan import check_output_dir, prepare_cells
    from bench.sweep.spec_files import SPEC_JSON, write_resolved
    from launchers import get_strategy
    from slurm import render, submit

    sweep_spec = load_spec(args.spec)
    if args.cpu and sweep_spec.device == "cuda":
        raise BadInput(f"--cpu contradicts workload.device cuda of spec {sweep_spec.name}")
    device_type = "cpu" if args.cpu or sweep_spec.device == "cpu" else "cuda"
    gpus = args.gpus_per_node
    if device_type == "cuda" and gpus is None and _needs_gpu_count(sweep_spec):
        raise BadInput(f"spec {sweep_spec.name} sizes its configurations by the GPUs a job "
                       "gets, which this host cannot see; pass --gpus-per-node")
    resolved = expand(sweep_spec, device_type, gpus or 0)
    validate(resolved, None)
    out = (Path(args.out) if args.out else Path("runs") / sweep_spec.name).absolute()
    check_output_dir(out)
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
    prepare_cells(resolved.cells, args.cache_dir)  # bad data fails here, not in every task

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
    write_resolved(out, resolved)
    skipped = len(resolved.cells) - len(tasks)
    if not tasks:
        print(f"all {len(resolved.cells)} cells of {sweep_spec.name} are ok; nothing to submit "
              f"({out})")
        return 0
    written = render.write_scripts(out, sweep=sweep_spec.name, spec_path=out / SPEC_JSON,
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
        if exc.interrupted:
            print(f"bench: slurm stopped by Ctrl-C (SIGINT) while submitting; jobs already "
                  f"submitted: {' '.join(exc.submitted) or 'none'} (scancel them before "
                  "submitting again)", file=sys.stderr)
            return EXIT_INTERRUPTED
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
    """The summary job renders the report too."""
    return ['"$PYTHON" -m bench report "$OUT" --output "$OUT/report.md" '
            '--html "$OUT/report.html" || echo "bench: no report: see above" >&2']
