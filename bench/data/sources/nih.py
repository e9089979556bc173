"""``nih:PATH``: a local NIH ChestX-ray14 directory, split by patient (never across splits)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

from bench.data.decode import decode_files
from bench.data.plan import Built, Plan, file_stats
from bench.data.sources.splits import counts_text, require_nonempty, split_by_group
from bench.data.store import ArrayStore
from bench.errors import BadInput

NIH_CSV = "Data_Entry_2017.csv"
NIH_LISTS = ("train_val_list.txt", "test_list.txt")


def plan(directory: Path, *, image_size: int, seed: int, limit: int | None, skip_bad: bool,
         **_settings: Any) -> Plan:
    """The images_*/images/*.png files (the first ``limit`` by name); the official lists are
    used when both are present."""
    csv_path = directory / NIH_CSV
    if not csv_path.is_file():
        raise BadInput(f"NIH metadata file {csv_path} does not exist")
    files = sorted(directory.glob("images_*/images/*.png"), key=lambda p: (p.name, p.as_posix()))
    if not files:
        raise BadInput(f"data directory {directory} holds no images_*/images/*.png files")
    files = files[:limit] if limit is not None else files
    lists = [directory / name for name in NIH_LISTS]
    official = all(path.is_file() for path in lists)
    identity = {
        "path": str(directory),
        "files": file_stats(files, directory),
        "metadata": file_stats([csv_path, *(lists if official else [])], directory),
    }
    return Plan("nih", f"nih:{directory}", identity, lambda store: _build(
        store, directory, files, lists if official else None, image_size, seed, skip_bad))


def _build(store: ArrayStore, directory: Path, files: list[Path], lists: list[Path] | None,
           image_size: int, seed: int, skip_bad: bool) -> Built:
    patients = nih_patients(directory / NIH_CSV, files)
    candidates = files
    listed: tuple[set[str], set[str]] | None = None
    if lists is not None:
        listed = (read_list(lists[0]), read_list(lists[1]))
        candidates = [p for p in files if p.name in listed[0] or p.name in listed[1]]
        if not candidates:
            raise BadInput(
                f"none of the selected images in {directory} is named in "
                f"{NIH_LISTS[0]} or {NIH_LISTS[1]}"
            )
    kept, skipped = decode_files(candidates, store, image_size, skip_bad, directory)
    names = [candidates[i].name for i in kept]
    owners = [patients[name] for name in names]
    if listed is not None:
        splits = split_official(names, owners, listed[1], seed)
        how = "official test list (closed over patients), train_val split 90/10 by patient"
    else:
        splits = split_by_group(owners, seed, (0.7, 0.15, 0.15))
        how = "70/15/15 by seeded permutation of patients"
    require_nonempty(splits, directory)
    return Built(
        splits=splits,
        names=names,
        skipped=skipped,
        description=(
            f"NIH ChestX-ray14 at {directory}: {len(names)} images at {image_size}² "
            f"({len(skipped)} skipped, {len(files) - len(candidates)} unlisted), "
            f"patient-level split ({how}), train/val/test = {counts_text(splits)}"
        ),
        extra={"patients": owners, "unlisted": len(files) - len(candidates)},
    )


def nih_patients(csv_path: Path, files: Sequence[Path]) -> dict[str, str]:
    """Patient id of every file, from Data_Entry_2017.csv; BadInput for a missing one."""
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not {"Image Index", "Patient ID"} <= columns:
            raise BadInput(
                f"NIH metadata file {csv_path} lacks the 'Image Index' or 'Patient ID' column"
            )
        table = {row["Image Index"].strip(): (row["Patient ID"] or "").strip() for row in reader}
    for path in files:
        if not table.get(path.name):
            raise BadInput(f"image {path} has no patient id in {csv_path}")
    return {path.name: table[path.name] for path in files}


def read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def split_official(
    names: Sequence[str], owners: Sequence[str], test_list: set[str], seed: int
) -> dict[str, list[int]]:
    # A patient with any image in the official test list is test-only, so no patient
    # straddles test and train even if the lists were edited by hand.
    test_patients = {owner for name, owner in zip(names, owners) if name in test_list}
    test = [i for i, owner in enumerate(owners) if owner in test_patients]
    rest = [i for i, owner in enumerate(owners) if owner not in test_patients]
    inner = split_by_group([owners[i] for i in rest], seed, (0.9, 0.1, 0.0))
    return {
        "train": [rest[i] for i in inner["train"]],
        "val": [rest[i] for i in inner["val"]],
        "test": test,
    }
