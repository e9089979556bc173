"""Registry of parallel strategies. Importing this package does not import torch."""
from __future__ import annotations

from bench.errors import BadInput

_MODULES = {
    "single": ("launchers.single", "Single"),
    "dp": ("launchers.dp", "DataParallel"),
    "ddp": ("launchers.ddp", "DistributedDataParallel"),
    "deepspeed": ("launchers.deepspeed", "DeepSpeed"),
    "fsdp": ("launchers.fsdp", "FSDP"),
}
STRATEGY_NAMES = tuple(_MODULES)


def get_strategy(name: str):
    if name not in _MODULES:
        raise BadInput(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGY_NAMES)}")
    import importlib
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(module), cls)()
