"""Site Two's data: the ``obfuscated:PATH`` source and the ``noise2noise`` target.

Both reach the core through ``bench.plugins`` (``register`` in this package):
``plan_obfuscated`` plans an obfuscated folder (noisy realisations only, verified against its
manifest), ``obfuscated_dataset`` reads it for every target and ``check_obfuscated`` checks a
cell against it; ``noise2noise_dataset`` and ``check_noise2noise`` are the noise2noise target.
The data layer adds no noise to these rows and never scores against them: Site Two holds no
clean test images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench import plugins
from bench.data import (DIHEDRAL_VIEWS, SPLITS, ArrayStore, Built, PairDataset, Plan,
                        PreparedData, decode_image, dihedral, to_unit, training_dataset)
from bench.errors import BadInput
from bench.twosite.manifest import Manifest, read_manifest

SCHEME = "obfuscated"
TARGETS = ("clean", "noise2noise")


def is_obfuscated(prepared: PreparedData) -> bool:
    """True for data prepared from an obfuscated folder: its images are already noisy."""
    return prepared.source.startswith(f"{SCHEME}:")


# --------------------------------------------------------------------------- planning


def plan_obfuscated(directory: Path, *, image_size: int, limit: int | None,
                    noisy_only: bool = False, **_settings: Any) -> Plan:
    """Rows of the cached array: realisation k of image i at k * N + i, then (only when Site
    One sent them) the clean images at R * N + i. Every file is checked against the manifest
    on each prepare, cached or not."""
    if limit is not None:
        raise BadInput(f"limit {limit} cannot be used with an obfuscated source; omit it")
    manifest = read_manifest(directory, skip_clean=noisy_only)
    if manifest.image_size != image_size:
        raise BadInput(
            f"obfuscated folder {directory} holds {manifest.image_size}-px images; pass "
            f"--image-size {manifest.image_size} (got {image_size})"
        )
    count, realisations = len(manifest.ids), manifest.realisations
    files = [manifest.noisy_file(i, k) for k in range(realisations) for i in range(count)]
    with_clean = manifest.clean_included and not noisy_only
    if with_clean:
        files += [manifest.clean_file(i) for i in range(count)]
    identity = {"path": str(directory), "manifest_sha256": manifest.sha256}
    return Plan(SCHEME, f"{SCHEME}:{directory}", identity,
                lambda store: _build(store, manifest, files, image_size, with_clean))


def _build(store: ArrayStore, manifest: Manifest, files: list[Path], size: int,
           with_clean: bool) -> Built:
    store.allocate(len(files))
    for row, path in enumerate(files):
        pixels = decode_image(path)
        if pixels.shape != (size, size):
            raise BadInput(f"obfuscated file {path} is not {size}×{size} pixels")
        store.put(row, pixels)
    count = len(manifest.ids)
    counts = "/".join(str(len(manifest.splits[name])) for name in SPLITS)
    return Built(
        splits=manifest.splits,
        names=list(manifest.ids),
        description=(
            f"obfuscated folder {manifest.folder}: {count} images × {manifest.realisations} "
            f"noisy realisations at {size}² (σ {manifest.sigma:g}, mean {manifest.mean:g}"
            f"{', with clean images' if manifest.clean_included else ', no clean images'}), "
            f"Site One's split train/val/test = {counts}"
        ),
        extra={
            "obfuscated": {
                "images": count,
                "realisations": manifest.realisations,
                "sigma": manifest.sigma,
                "mean": manifest.mean,
                "seed": manifest.seed,
                "clean_rows": with_clean,
                "manifest_sha256": manifest.sha256,
            }
        },
    )


# --------------------------------------------------------------------------- reading


class ObfuscatedDataset(PairDataset):
    """(input, target) float32 tensors of shape (1, H, W) from one split of an obfuscated folder.

    Nothing is added: the images are Site One's noisy realisations. With ``target
    "noise2noise"`` (Lehtinen et al. 2018) an item is realisation a as input and realisation
    b ≠ a of the same image as target, for every ordered pair (so each realisation is input
    and target in turn), minus the declared noise mean so the target's median is the clean
    value; only noisy rows are ever read. With ``target "clean"`` an item is realisation a and
    the clean image, which exists only where Site One sent it. With ``augment`` each pair is
    seen through the 8 dihedral transforms, like DenoiseDataset.
    """

    def __init__(self, prepared: PreparedData, split: str, *, target: str, augment: bool) -> None:
        if not is_obfuscated(prepared):
            raise BadInput(f"data source {prepared.source} is not an obfuscated folder")
        info = prepared.metadata()["obfuscated"]
        self.count = int(info["images"])
        self.pairs = _pairs(target, info, prepared.source.partition(":")[2])
        self.prepared = prepared
        self.split_name = split
        self.target = target
        self.image_ids = prepared.split(split)
        self.target_offset = np.float32(info["mean"] if target == "noise2noise" else 0.0)
        self.augment = bool(augment)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_ids) * len(self.pairs) * (DIHEDRAL_VIEWS if self.augment else 1)

    def item(self, index: int) -> tuple[int, int, int, int]:
        """(image index, input row, target row, dihedral transform) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} is out of range for {len(self)} items")
        rest, transform = divmod(index, DIHEDRAL_VIEWS) if self.augment else (index, 0)
        base, pair = divmod(rest, len(self.pairs))
        image = int(self.image_ids[base])
        first, second = self.pairs[pair]
        return image, first * self.count + image, second * self.count + image, transform

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        _, input_row, target_row, transform = self.item(index)
        if self._images is None:
            self._images = self.prepared.images()
        source = to_unit(self._images[input_row])
        target = to_unit(self._images[target_row]) - self.target_offset
        return dihedral(source, transform), dihedral(target, transform)



def _pairs(target: str, info: dict[str, Any], folder: str) -> list[tuple[int, int]]:
    """(input block, target block) of each item kind; block R is the clean rows."""
    realisations = int(info["realisations"])
    if target == "noise2noise":
        if realisations < 2:
            raise BadInput(
                f"obfuscated folder {folder} has {realisations} realisation per image; "
                "--target noise2noise needs 2 or more (obfuscate --realisations 2)"
            )
        return [(a, b) for a in range(realisations) for b in range(realisations) if a != b]
    if target == "clean":
        if not info["clean_rows"]:
            raise BadInput(
                f"obfuscated folder {folder} holds no clean images, so --target clean has "
                "no targets; use --target noise2noise (Site One would have to send its "
                "clean images: obfuscate --include-clean)"
            )
        return [(a, realisations) for a in range(realisations)]
    raise BadInput(f"target {target!r} is unknown; choose one of: {', '.join(TARGETS)}")


def obfuscated_dataset(prepared: PreparedData, split: str, *, target: str, augment: bool,
                       **_options: Any) -> ObfuscatedDataset:
    """The source's reader for every target: nothing is added to Site One's noise."""
    return ObfuscatedDataset(prepared, split, target=target, augment=augment)


def noise2noise_dataset(prepared: PreparedData, split: str, *, augment: bool,
                         **_options: Any) -> ObfuscatedDataset:
    """noise2noise on a built-in (clean) source: refused, it has no independent realisations."""
    if not is_obfuscated(prepared):
        raise BadInput(
            f"--target noise2noise trains on independent noisy realisations and needs --data "
            f"obfuscated:PATH (written by python -m bench obfuscate), not {prepared.source}"
        )
    return ObfuscatedDataset(prepared, split, target="noise2noise", augment=augment)


# --------------------------------------------------------------------------- checks


def check_training(cell: Any, prepared: PreparedData) -> None:
    """BadInput unless ``cell`` can train on ``prepared`` with its target: noise2noise only on
    an obfuscated folder with two or more realisations, clean targets only where clean images
    exist, and σ / mean equal to what Site One declared."""
    training_dataset(prepared, "train", target=cell.target, sigmas=cell.noise,
                     seed=cell.workload_seed, noise_mean=cell.noise_mean, augment=True)
    if is_obfuscated(prepared):
        _check_declared_noise(cell, prepared)


def check_obfuscated(cell: Any, prepared: PreparedData) -> None:
    """The source's check: its pairs exist for the cell's target, under Site One's σ / mean."""
    obfuscated_dataset(prepared, "train", target=cell.target, augment=True)
    _check_declared_noise(cell, prepared)


def check_noise2noise(cell: Any, prepared: PreparedData) -> None:
    """The target's check: an obfuscated folder of 2+ realisations, under Site One's σ / mean."""
    noise2noise_dataset(prepared, "train", augment=True)
    _check_declared_noise(cell, prepared)


def _check_declared_noise(cell: Any, prepared: PreparedData) -> None:
    # Site One's noise is in the pixels already: the cell must declare that same noise.
    info = prepared.metadata()["obfuscated"]
    if tuple(cell.noise) != (info["sigma"],) or cell.noise_mean != info["mean"]:
        raise BadInput(
            f"obfuscated folder {prepared.source.partition(':')[2]} was made with σ "
            f"{info['sigma']:g} and mean {info['mean']:g}; pass --noise {info['sigma']:g} "
            f"--noise-mean {info['mean']:g} (got --noise "
            f"{' '.join(f'{s:g}' for s in cell.noise)} --noise-mean {cell.noise_mean:g})")
