"""Noise is a pure function of (seed, image id, sigma): same bits everywhere, no global RNG."""

from __future__ import annotations

import hashlib
import math
import random
import subprocess
import sys

import numpy as np
import pytest

from bench.errors import BadInput
from bench.data.noise import noise_field, obfuscate, validate_mean, validate_sigma

SHAPE = (64, 48)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_noise_is_bit_identical_in_a_separate_process() -> None:
    here = _digest(noise_field(SHAPE, sigma=0.1, seed=7, image_id=42, mean=0.1))
    code = (
        "import hashlib, numpy as np\n"
        "np.random.seed(123)\n"  # a different global RNG state must not matter
        "from bench.data.noise import noise_field\n"
        "a = noise_field((64, 48), sigma=0.1, seed=7, image_id=42, mean=0.1)\n"
        "print(hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())\n"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert there == here


def test_noise_differs_across_image_ids_sigmas_and_seeds() -> None:
    base = noise_field(SHAPE, sigma=0.1, seed=0, image_id=1)
    assert not np.array_equal(base, noise_field(SHAPE, sigma=0.1, seed=0, image_id=2))
    assert not np.array_equal(base, noise_field(SHAPE, sigma=0.1, seed=1, image_id=1))
    other_sigma = noise_field(SHAPE, sigma=0.2, seed=0, image_id=1)
    # A different sigma is a different realisation, not just a rescaled copy.
    assert not np.allclose(other_sigma, 2 * base)
    assert np.array_equal(base, noise_field(SHAPE, sigma=0.1, seed=0, image_id=1))


def test_noise_statistics_follow_mean_and_sigma() -> None:
    noise = noise_field((256, 256), sigma=0.2, seed=3, image_id=9, mean=-0.1)
    assert noise.dtype == np.float32
    assert noise.shape == (256, 256)
    assert abs(float(noise.mean()) + 0.1) < 0.005
    assert abs(float(noise.std()) - 0.2) < 0.005
    assert np.all(noise_field(SHAPE, sigma=0.0, seed=3, image_id=9, mean=0.25) == np.float32(0.25))


def test_global_random_state_is_untouched() -> None:
    np.random.seed(5)
    random.seed(5)
    expected = (np.random.random(), random.random())
    np.random.seed(5)
    random.seed(5)
    noise_field(SHAPE, sigma=0.3, seed=1, image_id=3)
    obfuscate(np.full(SHAPE, 0.5, np.float32), sigma=0.3, seed=1, image_id=3)
    assert (np.random.random(), random.random()) == expected


def test_obfuscate_adds_the_noise_field_and_clips() -> None:
    clean = np.linspace(0, 1, math.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    noisy = obfuscate(clean, sigma=0.3, seed=2, image_id=11, mean=0.1)
    expected = np.clip(clean + noise_field(SHAPE, sigma=0.3, seed=2, image_id=11, mean=0.1), 0, 1)
    assert noisy.dtype == np.float32
    assert np.array_equal(noisy, expected)
    assert noisy.min() == 0.0 and noisy.max() == 1.0  # large noise hits both clip bounds
    assert not np.array_equal(noisy, clean)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "high", None, True])
def test_invalid_sigma_is_bad_input(bad: object) -> None:
    with pytest.raises(BadInput, match="noise level .* is invalid; σ must be a finite number >= 0"):
        validate_sigma(bad)
    with pytest.raises(BadInput):
        noise_field(SHAPE, sigma=bad, seed=0, image_id=0)  # type: ignore[arg-type]


def test_sigma_message_names_the_value() -> None:
    with pytest.raises(BadInput, match=r"noise level -0\.1 is invalid"):
        validate_sigma(-0.1)


def test_valid_values_and_bad_mean_seed_and_id() -> None:
    assert validate_sigma(0) == 0.0 and validate_sigma("0.2") == 0.2
    assert validate_mean(-0.1) == -0.1
    with pytest.raises(BadInput, match="noise mean"):
        noise_field(SHAPE, sigma=0.1, seed=0, image_id=0, mean=float("nan"))
    with pytest.raises(BadInput, match="seed -1 is invalid"):
        noise_field(SHAPE, sigma=0.1, seed=-1, image_id=0)
    with pytest.raises(BadInput, match="image id"):
        noise_field(SHAPE, sigma=0.1, seed=0, image_id=1.5)  # type: ignore[arg-type]
