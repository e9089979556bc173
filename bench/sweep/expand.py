"""A spec on this hardware: the cells in index order, each validated before any work.

Expansion order (and so each cell's index) is models × noise × scaling × configurations ×
repeats. Flags and YAML specs both arrive here as a `SweepSpec`.
"""
from __future__ import annotations

import itertools

from bench.config.cell import Cell
from bench.config.spec import ResolvedSweep, SweepSpec, as_spec_keys, cell_workload
from bench.errors import BadInput
from bench.sweep import hardware, plan


def expand(spec: SweepSpec, device_type: str, gpus: int) -> ResolvedSweep:
    """Cells in index order. `gpus` sizes `study` and default device counts (on a login node
    that will submit GPU jobs, pass the GPUs a job will get, not the ones visible here)."""
    notes: list[str] = []
    default_n = max(gpus, 1) if device_type == "cuda" else 2
    if spec.configurations == "study":
        study, notes = hardware.study_configs(device_type, gpus)
        configs = [(s, d, p, None) for s, d, p in study]
    else:
        configs = []
        for c in spec.configurations:
            devices = c.devices if c.devices is not None else (
                1 if c.strategy == "single" else default_n)
            precision = hardware.amp_precision(device_type) if c.precision == "amp" \
                else c.precision
            zero = (c.zero if c.zero is not None else 0) if c.strategy == "deepspeed" else None
            configs.append((c.strategy, devices, precision, zero))
    base = cell_workload(spec.workload)
    cells: list[Cell] = []
    seen: set[str] = set()
    for model, sigmas, scaling, (strategy, devices, precision, zero), repeat in itertools.product(
            spec.models, spec.noise, spec.scaling, configs, range(spec.repeats)):
        cell = Cell.from_dict({**base, "model": model, "noise": list(sigmas), "scaling": scaling,
                               "strategy": strategy, "devices": devices, "precision": precision,
                               "zero_stage": zero, "repeat": repeat,
                               "device_type": device_type})
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
            plan.validate_cell(checked, cell.devices if gpus is None else gpus)
        except BadInput as exc:
            if resolved.spec.from_flags:
                raise
            raise BadInput(f"spec {resolved.spec.name}, cell {i} ({cell.cell_id}): "
                           f"{as_spec_keys(str(exc))}") from None
