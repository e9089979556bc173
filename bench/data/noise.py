"""Data obfuscation: additive Gaussian noise that is a pure function of (seed, image id, sigma).

The noise of an image never comes from the global RNG, so every process, rank and
configuration that asks for image ``image_id`` at level ``sigma`` gets the same bits.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from bench.errors import BadInput


def validate_sigma(sigma: object) -> float:
    """Return ``sigma`` as a float, or raise BadInput unless it is a finite number >= 0."""
    value = _as_float(sigma)
    if value is None or not math.isfinite(value) or value < 0:
        raise BadInput(f"noise level {sigma!r} is invalid; σ must be a finite number >= 0")
    return value


def validate_mean(mean: object) -> float:
    """Return the noise mean as a float, or raise BadInput unless it is finite (any sign)."""
    value = _as_float(mean)
    if value is None or not math.isfinite(value):
        raise BadInput(f"noise mean {mean!r} is invalid; it must be a finite number")
    return value


def validate_seed(seed: object, what: str = "seed") -> int:
    """Return ``seed`` as an int, or raise BadInput unless it is an integer >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BadInput(f"{what} {seed!r} is invalid; it must be an integer >= 0")
    return int(seed)


def noise_field(
    shape: Sequence[int], *, sigma: float, seed: int, image_id: int, mean: float = 0.0
) -> np.ndarray:
    """Gaussian noise N(mean, sigma²) of ``shape`` as float32, identical in any process."""
    sigma = validate_sigma(sigma)
    mean = validate_mean(mean)
    generator = _noise_generator(seed, image_id, sigma)
    noise = generator.standard_normal(tuple(shape), dtype=np.float32)
    noise *= np.float32(sigma)
    noise += np.float32(mean)
    return noise


def obfuscate(
    clean: np.ndarray, *, sigma: float, seed: int, image_id: int, mean: float = 0.0
) -> np.ndarray:
    """``clean`` (values in [0, 1]) plus its noise realisation, clipped to [0, 1], float32."""
    clean = np.asarray(clean, dtype=np.float32)
    noisy = clean + noise_field(clean.shape, sigma=sigma, seed=seed, image_id=image_id, mean=mean)
    return np.clip(noisy, 0.0, 1.0, out=noisy)


def _noise_generator(seed: int, image_id: int, sigma: float) -> np.random.Generator:
    # SeedSequence needs non-negative integers; sigma enters in micro-units so that
    # 0.1 and 0.1000000001 name the same realisation.
    entropy = [validate_seed(seed), validate_seed(image_id, "image id"), round(sigma * 1e6)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
