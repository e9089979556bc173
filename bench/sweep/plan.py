"""From a spec (YAML or flags) to validated cells and prepared data — before any work.

Expansion order (and so each cell's index) is repeats × models × noise × scaling ×
configurations: repeat 0 of every configuration, then repeat 1, ..., so a drift of the machine
over a sweep spreads over every configuration instead of landing on the last ones.

Everything that can be wrong with the input is found here, so that a bad value ends the
command with one sentence and exit 2 and no results folder is ever created for it.
"""
from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import plugins
from bench.config.cell import (PRECISIONS, SCALING_MODES, Cell, model_options,
                               workload_fingerprint)
from bench.config.spec import ResolvedSweep, SweepSpec, as_spec_keys, cell_workload
from bench.errors import BadInput
from bench.sweep import hardware


def expand(spec: SweepSpec, device_type: str, gpus: int) -> ResolvedSweep:
    """Cells in index order. `gpus` sizes `study` and default device counts (on a login node
    that will submit GPU jobs, pass the GPUs a job will get, not the ones visible here)."""
    notes: list[str] = []
    default_n = max(gpus, 1) if device_type == "cuda" else 2
    if spec.configurations == "study":
        study, notes = hardware.study_configs(device_type, gpus)
        configs = [(s, d, p, None, ()) for s, d, p in study]
    else:
        configs = []
        for c in spec.configurations:
            devices = c.devices if c.devices is not None else (
                1 if c.strategy == "single" else default_n)
            precision = hardware.amp_precision(device_type) if c.precision == "amp" \
                else c.precision
            zero = (c.zero if c.zero is not None else 0) if c.strategy == "deepspeed" else None
            configs.append((c.strategy, devices, precision, zero, c.overrides))
    base = cell_workload(spec.workload)
    cells: list[Cell] = []
    seen: set[str] = set()
    for repeat, model, sigmas, scaling, (strategy, devices, precision, zero, overrides) in \
            itertools.product(range(spec.repeats), spec.models, spec.noise, spec.scaling,
                              configs):
        cell = Cell.from_dict({**base, **dict(overrides), "model": model,
                               "noise": list(sigmas), "scaling": scaling, "strategy": strategy,
                               "devices": devices, "precision": precision, "zero_stage": zero,
                               "repeat": repeat, "device_type": device_type})
        if cell.cell_id in seen:
            raise BadInput(f"spec {spec.name} yields cell {cell.cell_id} twice; remove the "
                           "duplicate from matrix.configurations")
        seen.add(cell.cell_id)
        cells.append(cell)
    return ResolvedSweep(spec, device_type, cells, notes)


def validate(resolved: ResolvedSweep, gpus: int | None) -> None:
    """plan.validate_cell for every cell; gpus=None: judge each cell as if its GPUs existed
    (a submission host need not have the compute nodes' GPUs). A spec's errors name its keys;
    a sweep given by flags keeps the flags' own words."""
    epochs = resolved.spec.workload.get("epochs")
    for i, cell in enumerate(resolved.cells):
        # With epochs the steps come from the data: only the warm-up bound waits for it.
        checked = cell.replace(steps=cell.warmup + 1) if epochs else cell
        try:
            validate_cell(checked, cell.devices if gpus is None else gpus)
        except BadInput as exc:
            if resolved.spec.from_flags:
                raise
            raise BadInput(f"spec {resolved.spec.name}, cell {i} ({cell.cell_id}): "
                           f"{as_spec_keys(str(exc))}") from None


def shared_core_notes(cells: list[Cell], usable: int | None = None) -> list[str]:
    """A note for each CPU configuration with more gloo ranks than this host's usable cores:
    its ranks (one thread each) take turns on the cores, which changes what it measures."""
    from launchers import get_strategy

    from bench.measure.cores import usable_cores
    usable = usable_cores() if usable is None else usable
    crowded = dict.fromkeys((c.strategy, c.devices) for c in cells if c.device_type == "cpu"
                            and c.devices > usable and get_strategy(c.strategy).distributed)
    return [f"{strategy} ×{devices} on cpu runs {devices} gloo ranks on {usable} usable "
            f"core(s): the ranks share the cores, one thread each, taking turns, so it "
            f"measures distributing over an oversubscribed host, not what {devices} devices "
            "would gain" for strategy, devices in crowded]


def validate_cell(cell: Cell, gpus: int) -> None:
    from launchers import get_strategy
    from models import ModelOptionError, build_model, check_image_size

    from bench.data.noise import validate_sigma

    if cell.precision not in PRECISIONS:
        raise BadInput(f"unknown precision '{cell.precision}'; choose one of: "
                       f"{', '.join(PRECISIONS)}")
    if cell.scaling not in SCALING_MODES:
        raise BadInput(f"unknown scaling '{cell.scaling}'; choose strong or weak")
    if cell.global_batch < 1:
        raise BadInput(f"batch {cell.global_batch} is invalid; the global batch must be at least 1")
    if cell.steps < 1:
        raise BadInput(f"--steps {cell.steps} is invalid; it must be at least 1")
    if cell.warmup < 0:
        raise BadInput(f"--warmup {cell.warmup} is invalid; it must be 0 or more")
    if cell.steps <= cell.warmup:
        raise BadInput(f"--steps {cell.steps} must exceed --warmup {cell.warmup}, "
                       "or no step would be timed")
    if not cell.lr > 0:
        raise BadInput(f"--lr {cell.lr} is invalid; the learning rate must be positive")
    if not cell.noise:
        raise BadInput("no noise level given; pass at least one σ with --noise")
    for sigma in cell.noise:
        validate_sigma(sigma)
    if cell.workers < 0:
        raise BadInput(f"--workers {cell.workers} is invalid; it must be 0 or more")
    if not cell.timeout_s > 0:
        raise BadInput(f"--timeout {cell.timeout_s} is invalid; it must be positive")
    validate_quality_target(cell)
    if cell.target not in plugins.target_names():
        raise BadInput(f"--target {cell.target} is unknown; choose one of: "
                       f"{', '.join(plugins.target_names())}")
    get_strategy(cell.strategy).validate(cell, gpus)
    # models/ is the one authority on model options; a width-1 build checks them cheaply.
    width = cell.width
    try:
        build_model(cell.model, **{**model_options(cell), "width": 1 if width >= 1 else width})
        check_image_size(cell.depth, cell.image_size)
    except ModelOptionError as exc:
        raise BadInput(str(exc)) from None
    from bench.measure.metrics import LPIPS_MIN_SIDE
    if cell.image_size < LPIPS_MIN_SIDE:  # found now, not after training, at evaluation
        raise BadInput(f"image size {cell.image_size} is too small to evaluate; LPIPS's AlexNet "
                       f"needs at least {LPIPS_MIN_SIDE} px")


def validate_quality_target(cell: Cell) -> None:
    """Validation during training and the cell's own target: a number of steps, a finite
    quality, and a stop that has a target and points to stop at."""
    import math
    if cell.eval_every is not None and (isinstance(cell.eval_every, bool)
                                        or not isinstance(cell.eval_every, int)
                                        or cell.eval_every < 0):
        raise BadInput(f"--eval-every {cell.eval_every} is invalid; give a number of steps "
                       "(0 turns validation during training off)")
    if cell.target_psnr is not None and not (isinstance(cell.target_psnr, (int, float))
                                             and math.isfinite(cell.target_psnr)
                                             and cell.target_psnr > 0):
        raise BadInput(f"--target-psnr {cell.target_psnr} is invalid; give a PSNR in dB, "
                       "above 0 (images in [0, 1] never score below it)")
    if cell.stop_at_target and cell.target_psnr is None:
        raise BadInput("--stop-at-target needs a target to stop at; give --target-psnr DB "
                       "(or --until-psnr DB, which sets both)")
    if cell.stop_at_target and cell.validation_every == 0:
        raise BadInput("--stop-at-target needs validation during training to see the target; "
                       "--eval-every 0 turns it off")


@dataclass(frozen=True)
class DataKey:
    """Cells that share these fields share one prepared (decoded, split, cached) dataset."""
    source: str
    image_size: int
    seed: int
    limit: int | None
    skip_bad: bool
    noisy_only: bool = False  # e.g. noise2noise: the data layer opens no clean image at all

    @classmethod
    def of(cls, cell: Cell) -> "DataKey":
        # The split depends on the base seed only: every repeat evaluates on the same images.
        from bench.data import target_noisy_only
        return cls(cell.data, cell.image_size, cell.seed, cell.limit, cell.skip_bad,
                   target_noisy_only(cell.target))


def check_sources(cells: list[Cell]) -> None:
    """What can be known of each cell's data without decoding an image: the source's planner
    finds its folder, its files (a folder with images, the NIH layout and metadata file, an
    obfuscated folder's manifest) and its count; BadInput names what is wrong."""
    from bench.data.sources import resolve
    for key in dict.fromkeys(DataKey.of(c) for c in cells):
        resolve(key.source, image_size=key.image_size, seed=key.seed, limit=key.limit,
                skip_bad=key.skip_bad, noisy_only=key.noisy_only)


def prepare_data(cells: list[Cell], cache_dir: str | None = None) -> dict[DataKey, object]:
    from bench.data import prepare
    prepared = {}
    for key in dict.fromkeys(DataKey.of(c) for c in cells):
        prepared[key] = prepare(key.source, image_size=key.image_size, seed=key.seed,
                                limit=key.limit, skip_bad=key.skip_bad, cache_dir=cache_dir,
                                noisy_only=key.noisy_only)
        if len(prepared[key].split("train")) == 0 or len(prepared[key].split("test")) == 0:
            raise BadInput(f"data source {key.source} yields no training or no test images "
                           f"at image size {key.image_size}")
    return prepared


def steps_for_epochs(cells: list[Cell], prepared: dict, epochs: int) -> list[Cell]:
    """The cells with `steps` = epochs × the full global batches of one pass over the
    training set the sampler draws from (its incomplete tail is dropped, as in training).
    Called after `check_batch_fits`, so every epoch holds at least one batch."""
    from bench.data import training_dataset
    out = []
    for cell in cells:
        items = len(training_dataset(prepared[DataKey.of(cell)], "train", target=cell.target,
                                     sigmas=cell.noise, seed=cell.workload_seed,
                                     noise_mean=cell.noise_mean, augment=True))
        steps = epochs * (items // cell.effective_global_batch)
        if steps <= cell.warmup:
            raise BadInput(f"--epochs {epochs} gives {steps} steps, which must exceed --warmup "
                           f"{cell.warmup}, or no step would be timed")
        out.append(cell.replace(steps=steps))
    return out


def check_batch_fits(cells: list[Cell], prepared: dict) -> None:
    for cell in cells:
        n_train = len(prepared[DataKey.of(cell)].split("train")) * 8  # 8 dihedral variants
        if cell.effective_global_batch > n_train:
            raise BadInput(f"global batch {cell.effective_global_batch} exceeds the "
                           f"{n_train} augmented training images of {cell.data}")


def fingerprints(cells: list[Cell], prepared: dict) -> dict[Cell, str]:
    return {c: workload_fingerprint(c, prepared[DataKey.of(c)].digest) for c in cells}


def check_output_dir(out: Path) -> None:
    """The results folder must be creatable and writable: its nearest existing folder must
    take a new folder (tried and removed at once; permission bits alone say yes for root in
    /proc or on a read-only mount)."""
    probe = Path(out)
    while not probe.exists():
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        try:
            tempfile.TemporaryDirectory(prefix=".bench-probe-", dir=probe).cleanup()
            return
        except OSError:
            pass
    raise BadInput(f"output folder {out} cannot be created: {probe} is not a writable folder")


@dataclass
class Plan:
    """Everything a sweep needs before its first cell starts, all checked."""
    resolved: ResolvedSweep
    prepared: dict
    fingerprints: dict[Cell, str]
    notes: list[str] = field(default_factory=list)

    @property
    def cells(self) -> list[Cell]:
        return self.resolved.cells


def prepare_cells(cells: list[Cell], cache_dir: str | None = None) -> dict:
    """Prepared data for the cells, each cell's target checked against its data and its
    batch against the training set."""
    from bench.data import check_training
    prepared = prepare_data(cells, cache_dir=cache_dir)
    for cell in cells:
        check_training(cell, prepared[DataKey.of(cell)])
    check_batch_fits(cells, prepared)
    return prepared


def plan_sweep(resolved: ResolvedSweep, cache_dir: str | None = None) -> Plan:
    """Prepared data, steps from `epochs` and fingerprints: the last checks before work,
    shared by every command that runs cells."""
    prepared = prepare_cells(resolved.cells, cache_dir)
    notes = list(resolved.notes)
    epochs = resolved.spec.workload.get("epochs")
    if epochs is not None:
        resolved.cells = steps_for_epochs(resolved.cells, prepared, epochs)
        steps = ", ".join(sorted({str(c.steps) for c in resolved.cells}))
        key = "--epochs" if resolved.spec.from_flags else "workload.epochs"
        notes.append(f"{key} {epochs}: {steps} steps per cell")
    return Plan(resolved, prepared, fingerprints(resolved.cells, prepared), notes)
