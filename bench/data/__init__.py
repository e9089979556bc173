"""Training data: sources behind one interface, decoded once into a shared on-disk cache.

Built-in sources (the ``source`` string; plug-ins add more through ``bench.plugins``):

- ``chest-sample`` – the real PA chest radiograph shipped in the ``pydicom-data`` wheel, cut
  into tiles whose train / val / test regions are spatially disjoint;
- ``nih:PATH``      – a local NIH ChestX-ray14 directory, split by patient;
- ``folder:PATH``   – any directory tree of PNG / JPEG / DICOM images, split by image;
- ``synthetic[:N]`` – N procedurally generated images (default 256) for throughput-only runs.

``prepare`` (``bench.data.prepare``) decodes every image once into the cache; the planners
live in ``bench.data.sources``, decoding in ``bench.data.decode``, the datasets and the batch
sampler in ``bench.data.datasets``. This module re-exports what the rest of bench uses.
"""

from __future__ import annotations

from bench.data.datasets import (
    DIHEDRAL_VIEWS,
    DenoiseDataset,
    GlobalBatchSampler,
    PairDataset,
    check_training,
    dihedral,
    target_noisy_only,
    training_dataset,
)
from bench.data.decode import decode_image, fit_square, resize
from bench.data.plan import SPLITS, Built, Plan, existing_dir, file_stats
from bench.data.prepare import CACHE_FORMAT_VERSION, PreparedData, cache_root, prepare
from bench.data.sources import allowed as allowed_sources
from bench.data.sources.chest import (
    SAMPLE_FILE,
    Box,
    column_roles,
    sample_path,
    tile_boxes,
    work_short_side,
)
from bench.data.sources.folder import IMAGE_SUFFIXES
from bench.data.sources.nih import NIH_CSV, NIH_LISTS
from bench.data.sources.synthetic import DEFAULT_SYNTHETIC_COUNT, synthetic_image
from bench.data.store import ArrayStore, to_unit

__all__ = [
    "ArrayStore", "Box", "Built", "CACHE_FORMAT_VERSION", "DEFAULT_SYNTHETIC_COUNT",
    "DIHEDRAL_VIEWS", "DenoiseDataset", "GlobalBatchSampler", "PairDataset", "IMAGE_SUFFIXES",
    "NIH_CSV",
    "NIH_LISTS", "Plan", "PreparedData", "SAMPLE_FILE", "SPLITS", "allowed_sources",
    "cache_root", "check_training", "column_roles", "decode_image", "dihedral", "existing_dir",
    "file_stats", "fit_square", "prepare", "resize", "sample_path",
    "synthetic_image", "target_noisy_only", "tile_boxes", "to_unit", "training_dataset",
    "work_short_side",
]
