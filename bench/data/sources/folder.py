"""``folder:PATH``: any directory tree of PNG / JPEG / DICOM images, split by image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.data.decode import decode_files
from bench.data.plan import Built, Plan, file_stats
from bench.data.sources.splits import counts_text, split_by_group
from bench.data.store import ArrayStore
from bench.errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def plan(directory: Path, *, image_size: int, seed: int, limit: int | None, skip_bad: bool,
         **_settings: Any) -> Plan:
    """Every image under ``directory`` in path order (the first ``limit``)."""
    files = sorted(
        (p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(directory).as_posix(),
    )
    if not files:
        raise BadInput(f"data directory {directory} contains no PNG, JPEG or DICOM (.dcm) images")
    files = files[:limit] if limit is not None else files
    identity = {"path": str(directory), "files": file_stats(files, directory)}
    return Plan("folder", f"folder:{directory}", identity,
                lambda store: _build(store, directory, files, image_size, seed, skip_bad))


def _build(store: ArrayStore, directory: Path, files: list[Path], image_size: int, seed: int,
           skip_bad: bool) -> Built:
    kept, skipped = decode_files(files, store, image_size, skip_bad, directory)
    if len(kept) < 3:
        raise BadInput(
            f"data directory {directory} has {len(kept)} decodable images; at least 3 are "
            "needed (one per split)"
        )
    splits = split_by_group([str(i) for i in range(len(kept))], seed, (0.7, 0.15, 0.15))
    return Built(
        splits=splits,
        names=[files[i].relative_to(directory).as_posix() for i in kept],
        skipped=skipped,
        description=(
            f"image folder {directory}: {len(kept)} images at {image_size}² "
            f"({len(skipped)} skipped), image-level split 70/15/15 by seeded permutation, "
            f"train/val/test = {counts_text(splits)}"
        ),
    )
