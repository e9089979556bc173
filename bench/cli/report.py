"""`bench report`, `bench compare` (the regression gate), `bench env` and `bench selfbench`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import plugins
from bench.errors import BadInput


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
    from bench.worker.selfbench import WARMUP, selfbench
    if args.steps <= WARMUP:
        raise BadInput(f"--steps {args.steps} must exceed the {WARMUP} warm-up steps "
                       "selfbench runs")
    if args.devices < 2 and any(s != "single" for s in args.strategy):
        raise BadInput(f"--devices {args.devices} is invalid; a multi-device selfbench needs "
                       "at least 2")
    from bench.sweep.hardware import default_device_type, visible_gpus
    from bench.sweep.runner import free_port
    device_type = default_device_type(args.device)
    multi = any(s != "single" for s in args.strategy)
    if device_type == "cuda" and multi and args.devices > visible_gpus():
        raise BadInput(f"--devices {args.devices} asks for more GPUs than the {visible_gpus()} "
                       "visible; --device cpu runs the ranks on the CPU")
    results = []
    for strategy in args.strategy:
        results.append(selfbench(strategy, 1 if strategy == "single" else args.devices,
                                 model=args.model, steps=args.steps, repeats=args.repeats,
                                 device_type=device_type, port=free_port(), width=args.width,
                                 image_size=args.image_size, global_batch=args.batch))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        from reports.console import render_selfbench
        render_selfbench(results)
    return 0


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
        store.write_text(Path(path), text)
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
    comp = analysis.compare_configs(frame, baseline, margins, args.confidence,
                                    sections=plugins.report_sections())
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
