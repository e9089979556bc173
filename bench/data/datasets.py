"""The torch side: the datasets a training run reads and the sampler that feeds every rank.

torch is imported only when an item is fetched, never at module import. Which dataset a run
reads is decided here: a plug-in source or target supplies its own (``bench.plugins``);
the built-in target ``clean`` adds seeded noise to clean images.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from bench import plugins
from bench.data.checks import require_int
from bench.data.noise import obfuscate, validate_mean, validate_seed, validate_sigma
from bench.data.prepare import PreparedData
from bench.data.sources import extension
from bench.data.store import to_unit
from bench.errors import BadInput

DIHEDRAL_VIEWS = 8


def dihedral(image: np.ndarray, transform: int) -> np.ndarray:
    """Symmetry ``transform`` (0–7) of the square: rotate by 90°·(t mod 4), then flip
    left-right when t >= 4. Works on the last two axes."""
    rotated = np.rot90(image, transform % 4, axes=(-2, -1))
    return np.flip(rotated, axis=-1) if transform >= 4 else rotated


class PairDataset:
    """A map-style dataset whose `arrays(index)` gives (input, target) float32 images; items
    are (1, H, W) tensors. Subclasses read pixels from a memory map opened on first use."""

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        source, target = self.arrays(index)
        return (torch.from_numpy(np.ascontiguousarray(source)[None]),
                torch.from_numpy(np.ascontiguousarray(target)[None]))

    def __getstate__(self) -> dict[str, Any]:
        # Workers re-open the memory map instead of receiving a pickled copy of the pixels.
        return {**self.__dict__, "_images": None}


class DenoiseDataset(PairDataset):
    """(noisy, clean) float32 tensors of shape (1, H, W) from one split of a prepared data set.

    Base image ``i`` (its index in the cached array, a stable id) at level σ is always
    ``obfuscate(clean_i, sigma=σ, seed=seed, image_id=i, mean=noise_mean)``: the same noise in
    every epoch, process and configuration. Item ``k`` uses ``sigmas[k % len(sigmas)]``.
    With ``augment`` there are 8 items per base image: item k is base image ``k // 8`` seen
    through dihedral transform ``k % 8``, applied to noisy and clean after the noise was
    added, so the views of an image at one σ carry the same (transformed) noise realisation.
    The map-style protocol is all DataLoader needs; no global RNG is used.
    """

    def __init__(
        self,
        prepared: PreparedData,
        split: str,
        *,
        sigmas: Sequence[float],
        seed: int,
        noise_mean: float = 0.0,
        augment: bool,
    ) -> None:
        if isinstance(sigmas, (int, float)) or len(sigmas) == 0:
            raise BadInput(f"noise levels {sigmas!r} are invalid; give a non-empty list of σ")
        if not prepared.has_clean:  # adding noise to noisy images would be a silent error
            raise BadInput(f"data source {prepared.source} is already noisy; read it with its "
                           "source's own dataset (training_dataset), not DenoiseDataset")
        self.prepared = prepared
        self.split_name = split
        self.image_ids = prepared.split(split)
        self.sigmas = tuple(validate_sigma(sigma) for sigma in sigmas)
        self.seed = validate_seed(seed)
        self.noise_mean = validate_mean(noise_mean)
        self.augment = bool(augment)
        self._images: np.ndarray | None = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.image_ids) * (DIHEDRAL_VIEWS if self.augment else 1)

    def item(self, index: int) -> tuple[int, float, int]:
        """(image id, σ, dihedral transform) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} is out of range for {len(self)} items")
        base, transform = divmod(index, DIHEDRAL_VIEWS) if self.augment else (index, 0)
        return int(self.image_ids[base]), self.sigmas[index % len(self.sigmas)], transform

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(noisy, clean) of item ``index`` as (H, W) float32 numpy arrays."""
        image_id, sigma, transform = self.item(index)
        if self._images is None:
            self._images = self.prepared.images()
        clean = to_unit(self._images[image_id])
        noisy = obfuscate(
            clean, sigma=sigma, seed=self.seed, image_id=image_id, mean=self.noise_mean
        )
        return dihedral(noisy, transform), dihedral(clean, transform)



def training_dataset(
    prepared: PreparedData,
    split: str,
    *,
    target: str,
    sigmas: Sequence[float],
    seed: int,
    noise_mean: float,
    augment: bool,
) -> Any:
    """The dataset a training run reads. A plug-in source's rows are read by its own dataset
    for every target (they may already be noisy); on the built-in sources, target "clean" is
    clean images with seeded noise added and a plug-in target builds its own pairs."""
    options: dict[str, Any] = dict(sigmas=sigmas, seed=seed, noise_mean=noise_mean,
                                   augment=augment)
    source = extension(prepared.scheme)
    if source is not None and source.dataset is not None:
        return source.dataset(prepared, split, target=target, **options)
    if target == "clean":
        return DenoiseDataset(prepared, split, **options)
    added = plugins.target(target)
    if added is None:
        raise BadInput(f"target {target!r} is unknown; choose one of: "
                       f"{', '.join(plugins.target_names())}")
    return added.dataset(prepared, split, **options)


def check_training(cell: Any, prepared: PreparedData) -> None:
    """BadInput unless ``cell`` can train on ``prepared``: its training set must build (target
    against source), then the plug-in source's and the plug-in target's own rules must hold
    (the declared noise of images that are already noisy, say). The one entry planners call,
    so they never need to know which plug-in made the data."""
    training_dataset(prepared, "train", target=cell.target, sigmas=cell.noise,
                     seed=cell.workload_seed, noise_mean=cell.noise_mean, augment=True)
    entries = (extension(prepared.scheme), plugins.target(cell.target))
    for check in dict.fromkeys(entry.check for entry in entries if entry and entry.check):
        check(cell, prepared)


def target_noisy_only(target: str) -> bool:
    """Whether training on ``target`` must never open a clean image (``prepare(noisy_only=)``)."""
    added = plugins.target(target)
    return added is not None and added.noisy_only


class GlobalBatchSampler:
    """This rank's share of the same global batches a single device would see.

    Epoch e is ``Generator(PCG64(SeedSequence([seed, e]))).permutation(dataset_len)`` cut into
    consecutive global batches (an incomplete tail is dropped); optimizer step s uses global
    batch s (counting across epochs) and rank r takes its slice ``[r*b, (r+1)*b)`` with
    b = global_batch // world_size. Pass as ``DataLoader(dataset, batch_sampler=...)``.
    """

    def __init__(
        self,
        dataset_len: int,
        *,
        global_batch: int,
        world_size: int,
        rank: int,
        steps: int,
        seed: int,
        start_step: int = 0,
    ) -> None:
        for name, value, minimum in (
            ("dataset length", dataset_len, 1),
            ("global batch", global_batch, 1),
            ("world size", world_size, 1),
            ("rank", rank, 0),
            ("steps", steps, 0),
            ("start step", start_step, 0),
        ):
            require_int(name, value, minimum)
        _check_shares(dataset_len, global_batch, world_size, rank, steps, start_step)
        self.dataset_len = int(dataset_len)
        self.global_batch = int(global_batch)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.steps = int(steps)
        self.seed = validate_seed(seed)
        self.start_step = int(start_step)
        self.local_batch = self.global_batch // self.world_size
        self.batches_per_epoch = self.dataset_len // self.global_batch

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        entropy = np.random.SeedSequence([self.seed, epoch])
        return np.random.Generator(np.random.PCG64(entropy)).permutation(self.dataset_len)

    def global_batch_at(self, step: int) -> np.ndarray:
        """All dataset indices of optimizer step ``step`` (every rank's share, in rank order)."""
        epoch, position = divmod(step, self.batches_per_epoch)
        start = position * self.global_batch
        return self.epoch_permutation(epoch)[start : start + self.global_batch]

    def __iter__(self) -> Iterator[list[int]]:
        permutation, current_epoch = None, -1
        for step in range(self.start_step, self.steps):
            epoch, position = divmod(step, self.batches_per_epoch)
            if epoch != current_epoch:  # one permutation per epoch, not per step
                permutation, current_epoch = self.epoch_permutation(epoch), epoch
            start = position * self.global_batch + self.rank * self.local_batch
            yield permutation[start : start + self.local_batch].tolist()

    def __len__(self) -> int:
        return self.steps - self.start_step


def _check_shares(dataset_len: int, global_batch: int, world_size: int, rank: int, steps: int,
                  start_step: int) -> None:
    """Every rank gets an equal, non-empty share of batches that fit the data."""
    if global_batch % world_size:
        raise BadInput(
            f"global batch {global_batch} is not divisible by world size {world_size}; "
            "every rank must get the same share"
        )
    if global_batch > dataset_len:
        raise BadInput(
            f"global batch {global_batch} is larger than the {dataset_len} training items"
        )
    if rank >= world_size:
        raise BadInput(f"rank {rank} is invalid; it must be below world size {world_size}")
    if start_step > steps:
        raise BadInput(f"start step {start_step} is invalid; it must not exceed steps {steps}")
