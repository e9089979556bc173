"""Seeded train / val / test splits shared by the built-in sources."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.plan import SPLITS
from bench.errors import BadInput

# A distinct spawn key keeps the split stream apart from the noise streams.
SPLIT_STREAM = 1


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """(test, val) group counts: rounded fractions, at least one where asked and possible."""
    _, val_fraction, test_fraction = fractions
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 and n >= 3 else 0
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 and n - n_test >= 2 else 0
    return n_test, n_val


def split_by_group(
    groups: Sequence[str], seed: int, fractions: tuple[float, float, float]
) -> dict[str, list[int]]:
    """Split item indices so that every group (patient, or the item itself) lands in one split;
    groups are assigned by a seeded permutation of their sorted ids."""
    unique = sorted(set(groups))
    entropy = np.random.SeedSequence(seed, spawn_key=(SPLIT_STREAM,))
    rng = np.random.Generator(np.random.PCG64(entropy))
    order = [unique[i] for i in rng.permutation(len(unique))]
    n_test, n_val = split_counts(len(unique), fractions)
    role = {g: "test" for g in order[:n_test]}
    role.update({g: "val" for g in order[n_test : n_test + n_val]})
    splits: dict[str, list[int]] = {name: [] for name in SPLITS}
    for index, group in enumerate(groups):
        splits[role.get(group, "train")].append(index)
    return splits


def require_nonempty(splits: dict[str, list[int]], directory: Path) -> None:
    for name in SPLITS:
        if not splits[name]:
            raise BadInput(
                f"data directory {directory} yields an empty {name} split; it needs images of "
                "more patients (raise the limit)"
            )


def counts_text(splits: dict[str, list[int]]) -> str:
    """``train/val/test`` sizes as the descriptions print them."""
    return "/".join(str(len(splits[name])) for name in SPLITS)
