"""The sweep specs bench ships, by name (`python -m bench run NAME`).

Each is the raw mapping a YAML file would hold; `spec.load_spec` parses it like any file.
"""
from __future__ import annotations

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
                       "models (width 64, depth 4, batch norm, plain output) and noise "
                       "(σ 0.1/0.2/0.3, mean +0.1), one factor changed at a time on 2 GPUs at a "
                       "fixed global batch of 32 (strong scaling), 3 seeds each.",
        "workload": {"width": 64, "depth": 4, "norm": "batch", "residual": False,
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
}
