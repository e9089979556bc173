"""model.pt: the trained weights a cell leaves for Site One to score.

``{"format", "state_dict", "cell", "fingerprint"}`` with the cell as a dict of plain values,
so ``torch.load(..., weights_only=True)`` reads it and no pickled code runs. The core saves
nothing itself: `save_after_training` is this plug-in's after-training hook.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BadInput

MODEL_FILE = "model.pt"
MODEL_FORMAT = "bench-model/1"


def save_after_training(job, state_dict: dict, cell_dir: Path) -> None:
    """The after-training hook (bench.plugins): every trained cell keeps its weights beside
    its record, so a model trained at Site Two can be scored at Site One."""
    save_model(Path(cell_dir) / MODEL_FILE, state_dict, job.cell, job.fingerprint)


def save_model(path: str | Path, state_dict: dict, cell, fingerprint: str) -> None:
    """Write the trained weights with their cell and fingerprint, atomically."""
    import torch

    from bench.record import store

    payload = {
        "format": MODEL_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "cell": cell.to_dict(),
        "fingerprint": str(fingerprint),
    }
    store.atomic_write(Path(path), lambda handle: torch.save(payload, handle))


@dataclass
class SavedModel:
    path: Path
    model: Any  # torch.nn.Module holding the trained weights
    cell: Any  # bench.config.cell.Cell
    fingerprint: str


def load_model(path: str | Path) -> SavedModel:
    """Read a model.pt with ``weights_only=True`` and rebuild its model; BadInput when the file
    is missing, is not a bench model, or does not fit its own cell."""
    import pickle

    import torch

    from bench.config.cell import Cell, model_options
    from models import build_model

    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInput(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise BadInput(f"model file {path} cannot be loaded: {_reason(error)}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise BadInput(f"model file {path} is not a bench model (format {MODEL_FORMAT})")
    try:
        cell = Cell.from_dict(payload["cell"])
        model = build_model(cell.model, **model_options(cell))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise BadInput(f"model file {path} does not match its own cell: {_reason(error)}") \
            from None
    return SavedModel(path, model, cell, str(payload.get("fingerprint", "")))


def _reason(error: BaseException) -> str:
    """The first line of an error, short enough for a one-line message."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
