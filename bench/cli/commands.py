"""What each subcommand does. Validation and data preparation come first, so bad input ends
the command (exit 2) before any results folder exists."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from bench.config.cell import Cell
from bench.errors import BadInput
from bench.cli.sweep import cmd_cell, cmd_slurm, cmd_status  # noqa: F401  (sweep commands)


def cells_from_args(args, device_type: str, gpus: int) -> tuple[list[Cell], list[str]]:
    """The cells asked for, and notes on defaults that were adapted to this machine."""
    from bench.sweep import plan

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
            target=getattr(args, "target", "clean"),
            timeout_s=getattr(args, "timeout", 1800.0),
            sample_hz=getattr(args, "sample_hz", 2.0)))
    return cells, notes


def plan_cells(args):
    """Validated cells, prepared data and fingerprints; raises BadInput on any bad value."""
    from bench.sweep import plan

    device_type = plan.default_device_type(args.device)
    gpus = plan.visible_gpus()
    cells, notes = cells_from_args(args, device_type, gpus)
    epochs = getattr(args, "epochs", None)
    if epochs is not None and epochs < 1:
        raise BadInput(f"--epochs {epochs} is invalid; it must be at least 1")
    for cell in cells:
        # With --epochs the steps come from the data: only the warm-up bound waits for it.
        plan.validate_cell(cell.replace(steps=cell.warmup + 1) if epochs else cell, gpus)
    prepared = plan.prepare_data(cells, cache_dir=getattr(args, "cache_dir", None))
    from bench.twosite.obfuscate import check_training
    for cell in cells:  # target vs source, and an obfuscated folder's declared σ and mean
        check_training(cell, prepared[plan.DataKey.of(cell)])
    plan.check_batch_fits(cells, prepared)
    if epochs is not None:
        cells = plan.steps_for_epochs(cells, prepared, epochs)
        notes.append(f"--epochs {epochs}: {', '.join(sorted({str(c.steps) for c in cells}))} "
                     "steps per cell")
    return cells, prepared, plan.fingerprints(cells, prepared), notes


def cmd_run(args) -> int:
    if getattr(args, "spec", None):  # `run SPEC`: a resumable sweep from a spec
        from bench.cli.sweep import cmd_run_spec
        return cmd_run_spec(args)
    from bench.sweep import plan
    from bench.record import store
    from bench.cli import timestamp
    from bench.sweep.runner import run_cells, termination_requested
    from bench.worker.train import EXIT_PREEMPTED
    from reports.console import render_summary
    from reports.progress import SweepProgress

    out = args.out or Path("runs") / timestamp()
    plan.check_output_dir(out)
    cells, prepared, fingerprints, notes = plan_cells(args)

    out.mkdir(parents=True, exist_ok=True)
    store.write_json(out / "sweep.json", {"argv": sys.argv, "cells": [c.to_dict() for c in cells]})
    with SweepProgress(len(cells)) as progress:
        records, skipped = run_cells(cells, out, prepared, fingerprints, force=args.force,
                                     retry_failed=args.retry_failed, on_event=progress.on_event)
    if skipped:
        notes.append(f"{skipped} cell(s) already recorded in {out} were skipped "
                     "(--force re-runs them)")
    render_summary(records, out, notes)
    if termination_requested():
        return EXIT_PREEMPTED
    return 0 if all(r.get("status") == "ok" for r in records) else 1


def cmd_env(args) -> int:
    from bench.measure import envinfo
    info = envinfo.capture()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        from reports.console import render_env
        render_env(info)
    return 0


def cmd_selfbench(args) -> int:
    from bench.worker.selfbench import WARMUP, overhead_ratio
    from reports.console import console
    if args.steps <= WARMUP:
        raise BadInput(f"--steps {args.steps} must exceed the {WARMUP} warm-up steps selfbench runs")
    if args.repeats < 1:
        raise BadInput(f"--repeats {args.repeats} is invalid; it must be at least 1")
    result = overhead_ratio(model=args.model, steps=args.steps, repeats=args.repeats)
    console().print_json(json.dumps(result))
    share = result["sampler_cpu_share"]
    console().print(
        f"harness/bare {result['harness_overhead_ratio']:.3f} (target {result['harness_target']}"
        f"; per repeat {min(result['harness_ratio_per_repeat']):.3f}–"
        f"{max(result['harness_ratio_per_repeat']):.3f}) · unsampled/sampled at "
        f"{result['sample_hz']:g} Hz {result['sampling_throughput_ratio']:.3f} (target "
        f"{result['sampling_target']}; per repeat {min(result['sampling_ratio_per_repeat']):.3f}"
        f"–{max(result['sampling_ratio_per_repeat']):.3f}) · sampler "
        + (f"{result['sampler_cpu_ms_per_sample']:.2f} ms CPU per sample = {share:.2%} of the "
           f"{result['threads']} threads" if share is not None else "took no sample")
        + f" · step-time CV {result['step_time_cv'] or 0:.1%}")
    return 0


def cmd_parity(args) -> int:
    from bench.sweep.parity import run_parity
    from reports.console import render_parity
    if args.check_steps < 1:
        raise BadInput(f"--check-steps {args.check_steps} is invalid; it must be at least 1")
    args.steps = args.check_steps
    args.warmup = 0
    cells, prepared, fingerprints, _ = plan_cells(args)
    report = run_parity(cells, prepared, fingerprints, rtol=args.rtol)
    render_parity(report)
    return 0 if report["passed"] else 1


def _load_results(path: Path, role: str = "results"):
    from bench.record import store
    if not Path(path).is_dir():
        raise BadInput(f"{role} folder {path} does not exist or is not a folder")
    frame = store.load(path)
    if frame.empty and not frame.attrs.get("unreadable"):
        raise BadInput(f"{role} folder {path} holds no cell records (no */record.json)")
    return frame


def _write_output(path: Path, text: str) -> None:
    from bench.record import store
    try:
        store._atomic_write(Path(path), lambda f: f.write(text.encode()))
    except OSError as exc:
        raise BadInput(f"output file {path} cannot be written: {exc.strerror or exc}") from None


def cmd_report(args) -> int:
    from bench import analysis
    from reports import console as rc

    fmt = args.format
    if args.output is not None and fmt is None:
        fmt = args.output.suffix.lstrip(".").lower()
        if fmt not in rc.EXPORT_FORMATS:
            raise BadInput(f"--output {args.output} has no export format; give --format md, "
                           "csv or json, or a file ending in .md, .csv or .json")
    margins = analysis.Margins(args.margin_psnr, args.margin_ssim, args.margin_lpips)
    baseline = analysis.parse_baseline(args.baseline)
    frame = _load_results(args.results)
    comp = analysis.compare_configs(frame, baseline, margins, args.confidence)
    if args.html is not None:
        from reports.html import render_html
        _write_output(args.html, render_html(frame, comp, args.results))
    if fmt is not None and args.output is None:
        sys.stdout.write(rc.export_report(comp, fmt))
        return 0
    rc.render_report(comp, args.results)
    if fmt is not None:
        _write_output(args.output, rc.export_report(comp, fmt))
        rc.console().print(f"{fmt} export: {args.output}")
    if args.html is not None:
        rc.console().print(f"HTML report: {args.html}")
    return 0


def cmd_compare(args) -> int:
    import bench.analysis.gate as compare
    from reports.console import render_gate

    tolerances = compare.Tolerances(args.tolerance_throughput, args.tolerance_psnr,
                                    args.tolerance_ssim, args.tolerance_lpips,
                                    args.soft_fraction)
    base = _load_results(args.baseline, "baseline results")
    new = _load_results(args.new, "new results")
    result = compare.compare(base, new, tolerances, args.confidence)
    render_gate(result, args.baseline, args.new, show_all=args.all)
    return result.exit_code


def cmd_obfuscate(args) -> int:
    from bench.twosite.obfuscate import PRIVACY_NOTE, export_obfuscated
    result = export_obfuscated(
        args.src, args.out, sigma=args.sigma, mean=args.mean, realisations=args.realisations,
        seed=args.seed, image_size=args.image_size, limit=args.limit, skip_bad=args.skip_bad,
        mapping=args.mapping, include_clean=args.include_clean, cache_dir=args.cache_dir)
    counts = "/".join(str(result.split_counts[name]) for name in ("train", "val", "test"))
    print(f"wrote {result.images} images × {result.realisations} noisy realisations "
          f"(train/val/test {counts}) to {result.out}, checked by {result.out}/manifest.json")
    if result.clean_included:
        print("the clean images were included: clean data leaves Site One with this folder")
    print(f"keep {result.mapping} at Site One: it maps ids to source names and holds the "
          "noise key")
    print(f"note: {PRIVACY_NOTE}")
    return 0


def cmd_evaluate(args) -> int:
    from bench.sweep import plan
    from bench.record import store
    from bench.twosite.audit import attach_to_record, audit_lines, evaluate_model
    device = plan.default_device_type(args.device)
    if args.out is not None:
        plan.check_output_dir(args.out)
    report = evaluate_model(
        args.model, args.data, sigmas=args.sigma, seed=args.seed, noise_mean=args.mean,
        image_size=args.image_size, limit=args.limit, skip_bad=args.skip_bad,
        realisations=args.realisations, device=device, cache_dir=args.cache_dir)
    if args.out is not None:
        store.write_json(args.out, report)
    updated = attach_to_record(report)  # so `bench report` shows this audit too
    text = json.dumps(report, indent=2, default=str) if args.json else "\n".join(audit_lines(report))
    print(text)
    if updated is not None and not args.json:
        print(f"audit written into {updated}")
    return 0
