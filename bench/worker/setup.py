"""Everything a rank builds before its first step: model, optimizer, strategy, data, sampler.

Every strategy gets the same code and the same initial weights (seeded just before the model
is built), and each rank reads its own share of the same global batches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from bench.config.cell import Cell, Job, model_options


@dataclass
class Training:
    engine: object
    loader: object
    flops_per_step: int | None


def build_seeded_model(cell: Cell):
    """Same code and same initial weights for every strategy: seeded just before building."""
    import torch

    from models import build_model
    torch.manual_seed(cell.workload_seed)
    return build_model(cell.model, **model_options(cell))


def build_training(cell: Cell, strategy, runtime, prepared, start_step: int = 0) -> Training:
    """Seeded model, optimizer, strategy wrapper and the rank's share of the global batches."""
    import torch

    if runtime.device_type == "cuda":
        torch.backends.cudnn.benchmark = cell.cudnn_benchmark
    model = build_seeded_model(cell).to(runtime.device)
    if cell.channels_last:
        model = model.to(memory_format=torch.channels_last)
    flops_per_step = count_flops(model, cell, runtime) if runtime.is_main else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cell.effective_lr)
    engine = strategy.wrap(model, optimizer, cell, runtime)
    if cell.compile:
        engine.model = torch.compile(engine.model)

    return Training(engine, training_loader(cell, runtime, prepared, start_step),
                    flops_per_step)


def training_loader(cell: Cell, runtime, prepared, start_step: int = 0):
    """This rank's share of the cell's global batches, from `start_step` on."""
    import torch

    from bench.data import GlobalBatchSampler, training_dataset

    # Clean images plus seeded noise, or the pairs of the cell's target (a plug-in's).
    dataset = training_dataset(prepared, "train", target=cell.target, sigmas=cell.noise,
                               seed=cell.workload_seed, noise_mean=cell.noise_mean, augment=True)
    batches = GlobalBatchSampler(len(dataset), global_batch=cell.effective_global_batch,
                                 world_size=runtime.world_size, rank=runtime.rank,
                                 steps=cell.steps, seed=cell.workload_seed,
                                 start_step=start_step)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=cell.workers,
        pin_memory=cell.pin_memory and runtime.device_type == "cuda",
        persistent_workers=cell.workers > 0)


def count_flops(model, cell: Cell, runtime) -> int | None:
    """FLOPs of one optimizer step over the global batch (forward + backward), counted once."""
    import copy

    import torch

    from bench.measure.flops import train_step_flops
    batch = min(cell.per_device_batch, 2)  # count on a small batch; FLOPs scale linearly
    example = torch.zeros(batch, 1, cell.image_size, cell.image_size, device=runtime.device)
    try:
        flops = train_step_flops(copy.deepcopy(model), example)
    except Exception as exc:  # noqa: BLE001 - counting is a nicety; it never stops a run
        import logging
        logging.getLogger(__name__).warning("FLOPs not counted, so no MFU: %s: %s",
                                            type(exc).__name__, exc)
        return None
    return int(flops * cell.effective_global_batch / batch)


def start_telemetry(job: Job, runtime):
    """Local rank 0 of every node samples its node: every rank's process there and the node's
    GPUs of the cell (rank 0 then adds the nodes up; one node: the whole cell)."""
    if runtime.local_rank != 0 or job.cell.sample_hz <= 0:
        return None
    from bench.measure.telemetry import Sampler
    # t0=0: samples carry absolute time.monotonic(), the clock of the timed window.
    sampler = Sampler(job.cell.sample_hz, gpu_indices=gpu_indices(job.cell),
                      root_pid=cell_root_pid(), t0=0.0)
    sampler.start()
    sampler.set_phase("setup")
    return sampler


def cell_root_pid() -> int:
    """The process whose tree holds every rank of this node: torchrun's agent (it starts each
    worker in a session of its own, so the process group would miss them), else this one."""
    return os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else os.getpid()


def gpu_indices(cell: Cell) -> list[int]:
    """This node's GPUs of the cell, as NVML numbers them (physically: it ignores
    CUDA_VISIBLE_DEVICES, so translate). A node holds LOCAL_WORLD_SIZE of a multi-node cell's
    ranks (torchrun sets it); DataParallel drives all its devices from one process."""
    if cell.device_type != "cuda":
        return []
    local = int(os.environ.get("LOCAL_WORLD_SIZE", cell.devices)) if "TORCHELASTIC_RUN_ID" \
        in os.environ else cell.devices
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v for v in visible.split(",") if v.strip()]
    if ids and all(v.strip().isdigit() for v in ids):
        return [int(v) for v in ids[:local]]
    return list(range(local))
