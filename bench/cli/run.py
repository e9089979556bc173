"""`bench run` and `bench parity`. Flags become a `SweepSpec`, the same object a YAML spec
gives, so both reach the one planner and write the same files: spec.yaml, spec.json, a folder
per cell and summary.json."""
from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

from bench.config.spec import (SEED_ARCH_DEFAULTS, Configuration, SweepSpec, load_spec,
                               seed_arch_defaults, spec_key_of_flag, workload_defaults)
from bench.errors import BadInput, stop_name

# `bench run SPEC` options that say how to run a spec, not what it trains.
RUN_OPTIONS_WITH_SPEC = {"command", "handler", "spec", "out", "force", "retry_failed",
                         "cache_dir", "device"}
_DEST_OF_KEY = {"global_batch": "batch", "timeout_s": "timeout"}  # workload key -> flag dest
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def spec_from_flags(args, name: str, device_type: str, gpus: int) -> tuple[SweepSpec, list[str]]:
    """The sweep the flags ask for, and notes on defaults adapted to this machine."""
    from bench.sweep.hardware import study_configs

    notes: list[str] = []
    if args.strategy or args.precision:
        pairs = itertools.product(args.strategy or ["single"], args.precision or ["fp32"])
        configs = [(s, 1 if s == "single" else args.devices, p) for s, p in pairs]
    elif args.devices is not None:  # the study's configurations on --devices devices
        study, notes = study_configs(device_type, gpus)
        configs = [(s, 1 if s == "single" else args.devices, p) for s, _, p in study]
    else:
        configs = None
    if args.devices not in (None, 1) and configs and all(s == "single" for s, _, _ in configs):
        raise BadInput(f"--devices {args.devices} applies only to multi-device strategies (dp, "
                       "ddp, deepspeed, fsdp) and only single, which runs on one device, was "
                       "asked for; add e.g. --strategy ddp")
    if args.zero is not None and not any(s == "deepspeed" for s, _, _ in configs or []):
        raise BadInput(f"--zero {args.zero} applies only to --strategy deepspeed, "
                       "which was not asked for")
    configurations = "study" if configs is None else [
        Configuration(s, d, p, (args.zero or 0) if s == "deepspeed" else None)
        for s, d, p in configs]
    workload = {key: getattr(args, _DEST_OF_KEY.get(key, key), default)
                for key, default in workload_defaults().items()}
    given = {key for key in SEED_ARCH_DEFAULTS if workload[key] is not None}
    workload.update(seed_arch_defaults({workload["arch"]}, given))
    for key, default in workload_defaults().items():  # --norm, --residual: left None if not given
        if workload[key] is None:
            workload[key] = default
    workload["noise"] = list(args.noise)
    if getattr(args, "until_psnr", None) is not None:  # shorthand for the two keys
        workload.update(target_psnr=args.until_psnr, stop_at_target=True)
    spec = SweepSpec(name=name, description="given as `bench run` flags", workload=workload,
                     models=args.model or ["unet", "unetpp"], configurations=configurations,
                     noise=[tuple(args.noise)], scaling=[args.scaling], source="flags",
                     from_flags=True)
    return spec, notes


def reject_workload_flags(args) -> None:
    """`run SPEC` takes the workload from the spec only; a flag beside it would be ignored."""
    from bench.cli.parsers import build_parser
    defaults = vars(build_parser().parse_args(["run"]))
    for dest, value in vars(args).items():
        if dest in RUN_OPTIONS_WITH_SPEC or dest not in defaults:
            continue
        if value != defaults[dest]:
            raise BadInput(f"--{dest.replace('_', '-')} cannot be combined with spec "
                           f"{args.spec}; set {spec_key_of_flag(dest)} in the spec instead")


def sweep_of(args, default_out, device_type_of, gpus_of):
    """(spec, notes, device type, results folder) the arguments of `bench run` or `bench
    parity` ask for, checked as far as needs no hardware: `device_type_of(device)` turns the
    --device (or the spec's) into the device type, and `gpus_of()` (asked only when flags size
    the configurations) the GPUs that size default device counts."""
    if getattr(args, "spec", None):
        reject_workload_flags(args)
        spec, notes = load_spec(args.spec), []
        device_type = device_type_of(args.device if args.device != "auto" else spec.device)
        return spec, notes, device_type, Path(args.out) if args.out else Path("runs") / spec.name
    device_type = device_type_of(args.device)
    out = Path(getattr(args, "out", None) or default_out)
    name = out.name if out.name and set(out.name) <= _NAME_OK else "run"
    return (*spec_from_flags(args, name, device_type, gpus_of()), device_type, out)


def resolve(args, default_out):
    """(resolved sweep, results folder, notes) for `bench run` and `bench parity`, all checked."""
    from bench.sweep import hardware
    from bench.sweep.plan import expand, shared_core_notes, validate

    spec, notes, device_type, out = sweep_of(args, default_out, hardware.default_device_type,
                                             hardware.visible_gpus)
    gpus = hardware.visible_gpus()
    resolved = expand(spec, device_type, gpus)
    validate(resolved, gpus)
    resolved.notes = [*resolved.notes, *notes, *shared_core_notes(resolved.cells)]
    return resolved, out


def cmd_run(args) -> int:
    from bench.cli.summary import render_summary, write_summary
    from bench.record.store import EXIT_PREEMPTED
    from bench.sweep.plan import check_output_dir, plan_sweep
    from bench.sweep.runner import run_cells, termination_requested
    from bench.sweep.spec_files import write_resolved
    from bench.sweep.status import sweep_status
    from reports.progress import SweepProgress

    resolved, out = resolve(args, Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    check_output_dir(out)
    plan = plan_sweep(resolved, args.cache_dir)
    for note in plan.notes:  # before the first cell, while stopping is still cheap
        print(f"note: {note}")
    for line in skipped_lines(plan.prepared):  # before training; the summary repeats it
        print(f"note: {line}")

    out.mkdir(parents=True, exist_ok=True)
    write_resolved(out, plan.resolved)
    with SweepProgress(len(plan.cells)) as progress:
        _, skipped = run_cells(plan.cells, out, plan.prepared, plan.fingerprints,
                               force=args.force, retry_failed=args.retry_failed,
                               on_event=progress.on_event)
    if skipped:
        plan.notes.append(f"{skipped} cell(s) already recorded in {out} were skipped "
                          "(--force re-runs them)")
    status = sweep_status(out)
    write_summary(out, status)
    render_summary(out, status, plan.notes)
    if termination_requested():
        print(resume_line(args, out), file=sys.stderr)
        return EXIT_PREEMPTED
    return 0 if status["complete"] else 1


def resume_line(args, out: Path) -> str:
    """What a stopped sweep tells its user: the very command that resumes it (with the
    results folder named: the default one is new for every run)."""
    import shlex

    from bench.sweep.runner import termination_signal
    words = list(sys.argv[1:])
    if getattr(args, "out", None) is None:
        words += ["--out", str(out)]
    return (f"bench: stopped by {stop_name(termination_signal())}; to resume, run the same "
            f"command: python -m bench {shlex.join(words)}")


def skipped_lines(prepared: dict) -> list[str]:
    """A line per prepared data set that `--skip-bad` thinned, said where the run starts."""
    from bench.analysis.compare import skipped_sentence
    return [skipped_sentence(p.source, p.skipped, p.skipped_files())
            for p in {p.digest: p for p in prepared.values()}.values() if p.skipped]


def cmd_parity(args) -> int:
    from bench.sweep.parity import run_parity
    from bench.sweep.plan import plan_sweep
    from reports.console import render_parity
    args.steps = args.check_steps
    args.warmup = 0
    resolved, _ = resolve(args, Path("parity"))
    plan = plan_sweep(resolved, None)
    for note in plan.notes:
        print(f"note: {note}")
    report = run_parity(plan.cells, plan.prepared, plan.fingerprints, rtol=args.rtol)
    render_parity(report)
    return 0 if report["passed"] else 1
