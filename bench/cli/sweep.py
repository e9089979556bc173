"""`bench cell` (one cell of a spec: what a Slurm array task runs) and `bench status`, plus
the sweep summary both local runs and Slurm's summary job write."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from bench.errors import BadInput

def _cell_of(args):
    """(cell, resolved sweep or None, default results folder) for `bench cell`."""
    from bench.cli.run import resolve
    from bench.sweep.plan import plan_sweep
    from bench.sweep.spec_files import read_resolved, resolved_cells

    path = Path(args.spec)
    data = read_resolved(path) if path.is_file() and path.suffix == ".json" else None
    if data is not None:
        cells, resolved, name, default_out = resolved_cells(data), None, data["name"], path.parent
    else:
        resolved, default_out = resolve(args, None)
        if resolved.spec.workload.get("epochs") is not None:  # steps come from the data
            plan_sweep(resolved, args.cache_dir)
        cells, name = resolved.cells, resolved.spec.name
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
    from bench.config.spec import as_spec_keys
    from bench.record.store import EXIT_PREEMPTED
    from bench.sweep.hardware import visible_gpus
    from bench.sweep.plan import DataKey, check_output_dir, fingerprints, prepare_cells, \
        validate_cell
    from bench.sweep.runner import run_cell, should_skip
    from bench.sweep.spec_files import SPEC_JSON, write_resolved

    cell, resolved, default_out = _cell_of(args)
    gpus = visible_gpus() * allocated_nodes()  # a multi-node cell spans the allocation
    try:
        validate_cell(cell, gpus)
    except BadInput as exc:
        raise BadInput(f"cell {args.index} ({cell.cell_id}): {as_spec_keys(str(exc))}") \
            from None
    out = Path(args.out) if args.out else default_out
    check_output_dir(out)
    prepared = prepare_cells([cell], args.cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resolved is not None and not (out / SPEC_JSON).exists():
        write_resolved(out, resolved)
    done = should_skip(out / cell.cell_id, args.force, retry_failed=True)
    if done is not None:
        print(f"{cell.cell_id}: already ok, skipped")
        return 0
    # run_cell passes a SIGTERM (Slurm's warning before the time limit, or a preemption) on
    # to the cell's processes: the ranks checkpoint and the record says `preempted`.
    data = prepared[DataKey.of(cell)]
    record = run_cell(cell, fingerprints([cell], prepared)[cell], data.to_json(), out,
                      wrap_argv=srun_wrapper(cell))
    status = record.get("status")
    message = (record.get("error") or {}).get("message") or ""
    print(f"{cell.cell_id}: {status}" + (f" — {message}" if message else ""))
    if status == "ok":
        return 0
    return EXIT_PREEMPTED if status == "preempted" else 1


def cmd_status(args) -> int:
    import json

    from bench.cli.summary import render_summary, write_summary
    from bench.sweep.status import sweep_status
    from reports.status import render_status

    status = sweep_status(args.dir)
    if args.summary:
        write_summary(args.dir, status)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    if args.summary:
        render_summary(args.dir, status, [])
    render_status(status, args.dir)
    return 0
