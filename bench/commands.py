"""What each subcommand does. Validation and data preparation come first, so bad input ends
the command (exit 2) before any results folder exists."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from bench.cell import Cell
from bench.errors import BadInput


def cells_from_args(args, device_type: str, gpus: int) -> tuple[list[Cell], list[str]]:
    """The cells asked for, and notes on defaults that were adapted to this machine."""
    from bench import plan

    notes: list[str] = []
    models = args.model or ["unet", "unetpp"]
    if args.strategy or args.precision:
        default_n = max(gpus, 1) if device_type == "cuda" else 2
        n = args.devices if args.devices is not None else default_n
        configs = [(s, 1 if s == "single" else n, p)
                   for s, p in itertools.product(args.strategy or ["single"],
                                                 args.precision or ["fp32"])]
    else:
        configs, notes = plan.study_configs(device_type, gpus)
        if args.devices is not None:
            configs = [(s, 1 if s == "single" else args.devices, p) for s, _, p in configs]
    if args.zero is not None and not any(s == "deepspeed" for s, _, _ in configs):
        raise BadInput(f"--zero {args.zero} applies only to --strategy deepspeed, "
                       "which was not asked for")
    if args.repeats < 1:
        raise BadInput(f"--repeats {args.repeats} is invalid; it must be at least 1")
    cells = []
    for model, (strategy, devices, precision), repeat in itertools.product(
            models, configs, range(args.repeats)):
        cells.append(Cell(
            model=model, width=args.width, depth=args.depth, norm=args.norm,
            upsample=args.upsample, deep_supervision=args.deep_supervision,
            residual=args.residual,
            strategy=strategy, devices=devices, precision=precision,
            zero_stage=(args.zero or 0) if strategy == "deepspeed" else None,
            scaling=args.scaling, global_batch=args.batch, steps=args.steps,
            warmup=args.warmup, lr=args.lr, noise=tuple(args.noise), noise_mean=args.noise_mean,
            seed=args.seed, repeat=repeat, data=args.data, image_size=args.image_size,
            limit=args.limit, skip_bad=args.skip_bad, channels_last=args.channels_last,
            compile=args.compile, cudnn_benchmark=args.cudnn_benchmark, workers=args.workers,
            pin_memory=args.pin_memory, device_type=device_type,
            timeout_s=getattr(args, "timeout", 1800.0),
            sample_hz=getattr(args, "sample_hz", 2.0)))
    return cells, notes


def plan_cells(args):
    """Validated cells, prepared data and fingerprints; raises BadInput on any bad value."""
    from bench import plan

    device_type = plan.default_device_type(args.device)
    gpus = plan.visible_gpus()
    cells, notes = cells_from_args(args, device_type, gpus)
    for cell in cells:
        plan.validate_cell(cell, gpus)
    prepared = plan.prepare_data(cells, cache_dir=getattr(args, "cache_dir", None))
    plan.check_batch_fits(cells, prepared)
    return cells, prepared, plan.fingerprints(cells, prepared), notes


def cmd_run(args) -> int:
    from bench import plan, store
    from bench.cli import timestamp
    from bench.runner import run_cell, should_skip, CellEvent
    from reports.console import render_summary
    from reports.progress import SweepProgress

    out = args.out or Path("runs") / timestamp()
    plan.check_output_dir(out)
    cells, prepared, fingerprints, notes = plan_cells(args)

    out.mkdir(parents=True, exist_ok=True)
    store.write_json(out / "sweep.json", {"argv": sys.argv, "cells": [c.to_dict() for c in cells]})
    records = []
    with SweepProgress(len(cells)) as progress:
        for cell in cells:
            done = should_skip(out / cell.cell_id, args.force, args.retry_failed)
            if done is not None:
                progress.on_event(CellEvent("skip", cell, record=done))
                records.append(done)
                continue
            data = prepared[plan.DataKey.of(cell)]
            records.append(run_cell(cell, fingerprints[cell], data.to_json(), out,
                                    on_event=progress.on_event))
    render_summary(records, out, notes)
    return 0 if all(r.get("status") == "ok" for r in records) else 1


def cmd_env(args) -> int:
    from bench import envinfo
    info = envinfo.capture()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        from reports.console import render_env
        render_env(info)
    return 0


def cmd_selfbench(args) -> int:
    from bench.selfbench import overhead_ratio
    from reports.console import console
    result = overhead_ratio(model=args.model, steps=args.steps, repeats=args.repeats)
    console().print_json(json.dumps(result))
    return 0


def cmd_parity(args) -> int:
    from bench.parity import run_parity
    from reports.console import render_parity
    if args.check_steps < 1:
        raise BadInput(f"--check-steps {args.check_steps} is invalid; it must be at least 1")
    args.steps = args.check_steps
    args.warmup = 0
    cells, prepared, fingerprints, _ = plan_cells(args)
    report = run_parity(cells, prepared, fingerprints, rtol=args.rtol)
    render_parity(report)
    return 0 if report["passed"] else 1
