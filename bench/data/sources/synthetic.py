"""``synthetic[:N]``: N procedurally generated images (default 256) for throughput-only runs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.data.plan import Built, Plan
from bench.data.sources.splits import split_counts
from bench.data.store import ArrayStore
from bench.errors import BadInput

DEFAULT_SYNTHETIC_COUNT = 256
# A distinct spawn key keeps the synthetic stream apart from the split and noise streams.
SYNTHETIC_STREAM = 2


def synthetic_image(image_id: int, *, size: int, seed: int) -> np.ndarray:
    """A smooth background plus a few soft-edged ellipses; a pure function of its arguments."""
    entropy = np.random.SeedSequence([seed, image_id], spawn_key=(SYNTHETIC_STREAM,))
    rng = np.random.Generator(np.random.PCG64(entropy))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(size)
    tilt_x, tilt_y = rng.uniform(-0.2, 0.2, size=2)
    cx, cy, width = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.4)
    image = 0.35 + tilt_x * (xx - 0.5) + tilt_y * (yy - 0.5)
    image += 0.2 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
    for _ in range(int(rng.integers(3, 7))):
        ex, ey = rng.uniform(0.1, 0.9, size=2)
        rx, ry = rng.uniform(0.04, 0.25, size=2)
        angle, amplitude = rng.uniform(0, math.pi), rng.uniform(-0.3, 0.4)
        softness = rng.uniform(0.05, 0.3)
        u = ((xx - ex) * math.cos(angle) + (yy - ey) * math.sin(angle)) / rx
        v = (-(xx - ex) * math.sin(angle) + (yy - ey) * math.cos(angle)) / ry
        radius = np.sqrt(u * u + v * v)
        # Soft-edged ellipse: a logistic step in the elliptic radius (tanh form cannot overflow).
        image += amplitude * 0.5 * (1.0 - np.tanh((radius - 1.0) / (2.0 * softness)))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def plan(count_text: str | None, *, image_size: int, seed: int, limit: int | None,
         **_settings: Any) -> Plan:
    """``count_text`` is what follows ``synthetic:`` (None: the default count)."""
    count = parse_count(count_text) if count_text is not None else DEFAULT_SYNTHETIC_COUNT
    count = count if limit is None else min(count, limit)
    if count < 3:
        raise BadInput(f"synthetic image count {count} is too small; at least 3 are needed")
    return Plan("synthetic", f"synthetic:{count}", {"count": count},
                lambda store: _build(store, count, image_size, seed))


def _build(store: ArrayStore, count: int, image_size: int, seed: int) -> Built:
    store.allocate(count)
    for index in range(count):
        store.put(index, synthetic_image(index, size=image_size, seed=seed))
    n_test, n_val = split_counts(count, (0.7, 0.15, 0.15))
    n_train = count - n_val - n_test
    splits = {
        "train": list(range(n_train)),
        "val": list(range(n_train, n_train + n_val)),
        "test": list(range(n_train + n_val, count)),
    }
    return Built(
        splits=splits,
        names=[f"synthetic-{index}" for index in range(count)],
        description=(
            f"synthetic: {count} generated images at {image_size}² (seed {seed}), split "
            f"70/15/15 by index, train/val/test = {n_train}/{n_val}/{n_test}"
        ),
    )


def parse_count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 3:
        raise BadInput(f"synthetic image count {text!r} is invalid; it must be an integer >= 3")
    return int(text)
