"""The sweep specs bench ships, by name (`python -m bench run NAME`).

Each is the raw mapping a YAML file would hold; `spec.load_spec` parses it like any file.
"""
from __future__ import annotations

import itertools

# The seed study's workload at 10% noise: its networks, image size and noise. Its runs compare
# equal epochs (50 each), not equal steps; these specs do too (`epochs`, recorded per cell as
# the steps it gives), at 2 epochs so that a sweep fits a working day.
_SEED_WORKLOAD = {"arch": "seed", "width": 64, "depth": 4, "image_size": 256, "noise": [0.1],
                  "noise_mean": 0.1, "epochs": 2, "warmup": 10, "repeats": 3}
_LOADED = {"workers": 4, "pin_memory": True}  # the seed's DDP loader; its others had neither


def _seed_factorial() -> list[dict]:
    """Every level of the four factors the seed's DDP+AMP run changed at once (process model,
    precision, global batch, loader), so each saving can be split among them. Batch 16 is the
    seed's single-GPU batch, 32 its DP batch and 64 its DDP global batch."""
    processes = ({"strategy": "single", "devices": 1}, {"strategy": "dp", "devices": 2},
                 {"strategy": "ddp", "devices": 2})
    loaders = ({"workers": 0, "pin_memory": False}, _LOADED)
    return [{**process, "precision": precision, "global_batch": batch, **loader}
            for process, precision, batch, loader in itertools.product(
                processes, ("fp32", "amp"), (16, 32, 64), loaders)]


def _gpu() -> list[dict]:
    """For one large GPU, at global batch 32 and 64: single in every precision; channels-last
    and torch.compile on bf16, the fastest on Hopper-class GPUs; DP and DDP on one device
    (fp32 and bf16) beside single, so their own overhead is what differs."""
    configs = []
    for batch in (32, 64):
        configs += [{"strategy": "single", "devices": 1, "precision": p, "global_batch": batch}
                    for p in ("fp32", "tf32", "bf16", "fp16")]
        configs += [{"strategy": "single", "devices": 1, "precision": "bf16",
                     "global_batch": batch, knob: True} for knob in ("channels_last", "compile")]
        configs += [{"strategy": s, "devices": 1, "precision": p, "global_batch": batch}
                    for s in ("dp", "ddp") for p in ("fp32", "bf16")]
    return configs


BUILTIN: dict[str, dict] = {
    "quick": {
        "description": "What `python -m bench run` does with no flags: the seed study's four "
                       "configurations (single fp32, DP, DDP fp32, DDP AMP) sized to this "
                       "machine, U-Net and U-Net++, on the embedded chest radiograph.",
        "workload": {},
        "matrix": {"models": ["unet", "unetpp"], "configurations": "study"},
    },
    "paper": {
        "description": "The seed study (Adebayo & Khan 2025) with its confounds removed: its "
                       "own networks (arch seed: width 64, depth 4, batch norm, plain output) "
                       "and noise (σ 0.1/0.2/0.3, mean +0.1), one factor changed at a time on "
                       "2 GPUs at a fixed global batch of 32 (strong scaling), 3 seeds each.",
        "workload": {"arch": "seed", "width": 64, "depth": 4, "norm": "batch", "residual": False,
                     "global_batch": 32, "scaling": "strong", "noise_mean": 0.1,
                     "image_size": 256, "steps": 300, "warmup": 20, "repeats": 3},
        "matrix": {
            "models": ["unet", "unetpp"],
            "configurations": [
                {"strategy": "single", "devices": 1, "precision": "fp32"},
                {"strategy": "single", "devices": 1, "precision": "amp"},
                {"strategy": "dp", "devices": 2, "precision": "fp32"},
                {"strategy": "ddp", "devices": 2, "precision": "fp32"},
                {"strategy": "ddp", "devices": 2, "precision": "amp"},
            ],
            "noise": [0.1, 0.2, 0.3],
        },
    },
    "gpu": {
        "description": "One large GPU (e.g. an H200): the seed's U-Net and U-Net++ (arch seed, "
                       "width 64, depth 4, 256 px) at global batch 32 and 64, single-device in "
                       "fp32, tf32, bf16 and fp16; bf16 with channels-last and with "
                       "torch.compile; DP and DDP on one device in fp32 and bf16, so their "
                       "overhead over single is measured. 4 loader workers with pinned memory "
                       "keep the GPU fed; 3 seeds each.",
        "workload": {"arch": "seed", "width": 64, "depth": 4, "image_size": 256,
                     "noise": [0.1], "noise_mean": 0.1, "steps": 200, "warmup": 20,
                     "workers": 4, "pin_memory": True, "repeats": 3},
        "matrix": {"models": ["unet", "unetpp"], "configurations": _gpu()},
    },
    "scaling": {
        "description": "DDP on 1, 2, 4 and 8 GPUs, strong (global batch 32 kept) and weak "
                       "(32 per device, linear LR rule) scaling, against single-device fp32.",
        "workload": {"width": 64, "depth": 4, "norm": "group", "global_batch": 32,
                     "image_size": 128, "steps": 200, "warmup": 20},
        "matrix": {
            "models": ["unet"],
            "configurations": [
                {"strategy": "single", "devices": 1, "precision": "fp32"},
                {"strategy": "ddp", "devices": 2, "precision": "fp32"},
                {"strategy": "ddp", "devices": 4, "precision": "fp32"},
                {"strategy": "ddp", "devices": 8, "precision": "fp32"},
            ],
            "scaling": ["strong", "weak"],
        },
    },
    "multinode": {
        "description": "Data parallelism across nodes: DDP, FSDP (sharded per block) and "
                       "DeepSpeed ZeRO-2 on 2 devices beside one device, on a small U-Net whose "
                       "all-reduce dominates a step on a slow link. Submit it with `bench slurm "
                       "multinode --gpus-per-node 1` (add --cpu on CPU nodes): each ×2 cell then "
                       "spans two nodes, and `bench predict --nodes 2` prices the link between "
                       "them.",
        "workload": {"width": 16, "depth": 3, "norm": "group", "image_size": 64,
                     "global_batch": 16, "steps": 30, "warmup": 5, "repeats": 2},
        "matrix": {
            "models": ["unet"],
            "configurations": [
                {"strategy": "single", "devices": 1, "precision": "fp32"},
                {"strategy": "ddp", "devices": 2, "precision": "fp32"},
                {"strategy": "fsdp", "devices": 2, "precision": "fp32"},
                {"strategy": "deepspeed", "zero": 2, "devices": 2, "precision": "fp32"},
            ],
        },
    },
    "seed-confounded": {
        "description": "The seed study's three runs as it ran them, confounds and all: one GPU "
                       "fp32 at batch 16 with no loader workers; DataParallel on 2 GPUs at "
                       "batch 32; DDP + AMP on 2 GPUs at 32 per GPU (64 global) with 4 workers, "
                       "pinned memory and the DDP script's U-Net (arch seed-ddp). Equal epochs.",
        "workload": dict(_SEED_WORKLOAD),
        "matrix": {
            "models": ["unet", "unetpp"],
            "configurations": [
                {"strategy": "single", "devices": 1, "precision": "fp32", "global_batch": 16},
                {"strategy": "dp", "devices": 2, "precision": "fp32", "global_batch": 32},
                {"strategy": "ddp", "devices": 2, "precision": "amp", "global_batch": 64,
                 "arch": "seed-ddp", **_LOADED},
            ],
        },
    },
    "seed-factorial": {
        "description": "Between the seed's single-GPU run and its 2-GPU runs, every "
                       "combination of process model (single, DP, DDP), precision (fp32, AMP), "
                       "global batch (16, 32, 64) and loader (0 workers, or 4 workers + pinned "
                       "memory), at equal epochs on the seed's networks: `bench report` splits "
                       "the seed's 62.65% / 64.67% (DDP+AMP) and 36.34% / 47.16% (DP) savings "
                       "among the factors.",
        "workload": dict(_SEED_WORKLOAD),
        "matrix": {"models": ["unet", "unetpp"], "configurations": _seed_factorial()},
    },
}
