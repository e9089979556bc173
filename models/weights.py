"""Strict loading of saved weights, above all those saved by the seed study's own code.

The seed networks (models.seed) carry the seed's key names, so loading them is a strict load
that first undoes what a training wrapper adds (the `module.` prefix of DDP / DataParallel, a
checkpoint dict around the state dict) and says in one sentence what does not fit.
`state_dict_of` and `fit_problem` do the same for any model (`bench evaluate --weights`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from models.seed import SeedUNet, SeedUNetPlusPlus

_PREFIX = "module."
# Keys under which training scripts commonly nest the state dict in a checkpoint dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


class WeightsError(ValueError):
    """Weights are not a state dict, or do not fit the model; one sentence."""


class SeedWeightsError(WeightsError):
    """Seed weights do not fit the model; the message is one sentence naming the first problem."""


def load_seed_weights(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """Load `state_dict`, saved by the seed study's code, into `model` (built with arch "seed"
    or "seed-ddp"); a leading "module." on keys is dropped, and a checkpoint dict holding the
    state dict under exactly one of state_dict / model_state_dict / model is unwrapped.
    Raises SeedWeightsError on any missing or unexpected key or shape mismatch. Returns model."""
    if not isinstance(model, (SeedUNet, SeedUNetPlusPlus)):
        raise SeedWeightsError(_refusal(model))
    try:
        weights = state_dict_of(state_dict, "seed weights")
    except WeightsError as exc:
        raise SeedWeightsError(str(exc)) from None
    problem = fit_problem(model, weights)
    if problem:
        raise SeedWeightsError(f"seed weights do not fit {model.model_name} (arch {model.arch}, "
                               f"width {model.width}, depth {model.depth}): {problem}")
    model.load_state_dict(weights, strict=True)
    return model


def _refusal(model: nn.Module) -> str:
    kind = type(model).__name__
    if hasattr(model, "net"):
        return (f"load_seed_weights needs the bare seed network, but got it wrapped in {kind} "
                "(residual=True), which the seed networks never are")
    if hasattr(model, "module"):
        return (f"load_seed_weights needs the bare seed network, but got it wrapped in {kind}; "
                "load into model.module, or before wrapping")
    return (f"load_seed_weights needs a model built with arch 'seed' or 'seed-ddp', got {kind} "
            "(arch 'bench' networks have other layers and key names)")


def state_dict_of(obj: Any, noun: str = "weights") -> dict[str, Any]:
    """The state dict in `obj` without a training wrapper's traces; WeightsError (naming the
    weights `noun`) when it holds none."""
    return _strip_prefix(_unwrap(obj, noun), noun)


def _unwrap(obj: Any, noun: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{noun} must be a state dict (key name -> tensor), "
                           f"got {type(obj).__name__}")
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    found = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
    if len(found) > 1:
        raise WeightsError(f"{noun} are ambiguous: they hold both {found[0]!r} and "
                           f"{found[1]!r}; pass the state dict itself")
    if not found:
        odd = next(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise WeightsError(f"{noun} are not a state dict: entry {odd!r} is not a "
                           f"tensor and none of {', '.join(_WRAPPER_KEYS)} holds one")
    return obj[found[0]]


def _strip_prefix(weights: Mapping[str, Any], noun: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in weights.items():
        name = key[len(_PREFIX):] if isinstance(key, str) and key.startswith(_PREFIX) else key
        if name in out:
            raise WeightsError(f"{noun} hold {name!r} twice, with and without the "
                               f"{_PREFIX!r} prefix")
        out[name] = value
    return out


def _plural(n: int, noun: str, suffix: str = "s") -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{suffix}"


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def fit_problem(model: nn.Module, weights: dict[str, Any]) -> str:
    """'' when `weights` fit `model` exactly, else the clause saying what is wrong."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [k for k in expected if k in weights and not (
        isinstance(weights[k], torch.Tensor) and weights[k].shape == expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{_plural(len(missing), 'missing key')} (first: {missing[0]})")
    if unexpected:
        parts.append(f"{_plural(len(unexpected), 'unexpected key')} (first: {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{_plural(len(wrong), 'shape mismatch', 'es')} (first: shape of {k} is "
                     f"{_shape(weights[k])} in the file but {_shape(expected[k])} in the model)")
    if not parts:
        return ""
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if missing or unexpected:
        text += _other_unet_hint(model, weights)
    return text


def _other_unet_hint(model: nn.Module, weights: dict[str, Any]) -> str:
    # The two seed U-Nets share layer names but not block layouts; say which one the file is.
    if not isinstance(model, SeedUNet):
        return ""
    other = "seed-ddp" if model.arch == "seed" else "seed"
    twin = SeedUNet(width=1, depth=model.depth, arch=other)  # only its key names are used
    if set(twin.state_dict()) != set(weights):
        return ""
    return f"; they look like arch {other!r} weights"
