"""``chest-sample``: the real PA chest radiograph shipped in the ``pydicom-data`` wheel, cut
into tiles whose train / val / test regions are spatially disjoint."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from bench.data.decode import decode_image, resize
from bench.data.plan import SPLITS, Built, Plan
from bench.data.sources.splits import counts_text
from bench.data.store import ArrayStore
from bench.errors import BadInput

SAMPLE_FILE = "RG1_UNCR.dcm"
ENV_ASSETS = "BENCH_ASSETS"  # a folder holding a copy of SAMPLE_FILE (`make gpu-kit` builds one)

Box = tuple[int, int, int, int]


def sample_path() -> Path:
    """The PA chest radiograph: the file inside the installed pydicom-data wheel (module
    data_store, located without importing it), else ``$BENCH_ASSETS/RG1_UNCR.dcm``."""
    spec = importlib.util.find_spec("data_store")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "data" / SAMPLE_FILE
        if path.is_file():
            return path
    assets = os.environ.get(ENV_ASSETS)
    copy = Path(assets).expanduser() / SAMPLE_FILE if assets else None
    if copy is not None and copy.is_file():
        return copy
    where = f"{copy} does not exist" if copy is not None else f"${ENV_ASSETS} is unset"
    raise BadInput(
        f"the chest-sample source needs the radiograph {SAMPLE_FILE}: install the pydicom-data "
        f"package or set {ENV_ASSETS} to a folder holding it (`make gpu-kit` builds one), but "
        f"pydicom-data {'lacks it' if spec is not None else 'is not installed'} and {where}"
    )


def work_short_side(native_short_side: int, image_size: int) -> int:
    """Short side of the working image: enough for 8 tiles across, never upsampled."""
    return min(native_short_side, max(512, 8 * image_size))


def column_roles(n_columns: int) -> list[str]:
    """Split role of each tile column: two test blocks (one over each lung), a val block in
    the middle, train elsewhere. Roughly 20 % test and 10 % val, at least 2 and 1 columns."""
    n_test = max(2, round(0.2 * n_columns))
    n_val = max(1, round(0.1 * n_columns))
    blocks = [("test", 0.3, n_test // 2), ("test", 0.7, n_test - n_test // 2), ("val", 0.5, n_val)]
    roles = ["train"] * n_columns
    for role, centre, width in blocks:
        for offset in range(width):
            target = centre * (n_columns - 1) + offset - (width - 1) / 2
            free = [c for c in range(n_columns) if roles[c] == "train"]
            roles[min(free, key=lambda c: (abs(c - target), c))] = role
    return roles


def tile_boxes(height: int, width: int, size: int, roles: Sequence[str]) -> dict[str, list[Box]]:
    """Pixel boxes (y0, x0, y1, x1) per split on a grid centred in a height × width image.

    Val / test tiles are the grid cells of their columns; train tiles slide with stride
    size // 2 but only inside contiguous runs of train columns, so no pixel is shared.
    """
    n_rows = height // size
    x_off, y_off = (width - len(roles) * size) // 2, (height - n_rows * size) // 2
    stride = max(1, size // 2)
    boxes: dict[str, list[Box]] = {name: [] for name in SPLITS}
    for column, role in enumerate(roles):
        if role != "train":
            x0 = x_off + column * size
            for row in range(n_rows):
                y0 = y_off + row * size
                boxes[role].append((y0, x0, y0 + size, x0 + size))
    ys = range(y_off, y_off + n_rows * size - size + 1, stride)
    for first, last in _train_runs(roles):
        xs = range(x_off + first * size, x_off + (last + 1) * size - size + 1, stride)
        boxes["train"].extend((y0, x0, y0 + size, x0 + size) for y0 in ys for x0 in xs)
    boxes["train"].sort()
    return boxes


def _train_runs(roles: Sequence[str]) -> Iterator[tuple[int, int]]:
    """(first, last) column of each contiguous run of train columns."""
    start = None
    for column, role in enumerate([*roles, "end"]):
        if role == "train" and start is None:
            start = column
        elif role != "train" and start is not None:
            yield start, column - 1
            start = None


def plan(_: None, *, image_size: int, limit: int | None, **_settings: Any) -> Plan:
    """The sample's tiles at ``image_size``; the file's SHA-256 is its cache identity."""
    if limit is not None:
        raise BadInput(f"limit {limit} cannot be used with the chest-sample source; omit it")
    path = sample_path()
    identity = {"file": SAMPLE_FILE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return Plan("chest-sample", "chest-sample", identity,
                lambda store: _build(store, path, image_size))


def _build(store: ArrayStore, path: Path, image_size: int) -> Built:
    native = decode_image(path)
    short = work_short_side(min(native.shape), image_size)
    scale = short / min(native.shape)
    height, width = (max(short, round(side * scale)) for side in native.shape)
    work = resize(native, height, width)
    n_columns = width // image_size
    if n_columns < 4 or height < image_size:
        raise BadInput(
            f"image size {image_size} is too large for the chest sample: its {height}×{width} "
            f"working image holds {n_columns} tile columns and at least 4 are needed"
        )
    roles = column_roles(n_columns)
    boxes = tile_boxes(height, width, image_size, roles)
    ordered = [(name, box) for name in SPLITS for box in boxes[name]]
    store.allocate(len(ordered))
    for index, (_, (y0, x0, y1, x1)) in enumerate(ordered):
        store.put(index, work[y0:y1, x0:x1])
    splits = {name: [i for i, (n, _) in enumerate(ordered) if n == name] for name in SPLITS}
    return Built(
        splits=splits,
        names=[f"{SAMPLE_FILE} y{box[0]} x{box[1]}" for _, box in ordered],
        description=(
            f"chest-sample {SAMPLE_FILE} (PA chest CR {native.shape[0]}×{native.shape[1]}, "
            f"area-resampled to {height}×{width}): {image_size}-px tiles in {n_columns} "
            f"columns, spatially disjoint train/val/test = {counts_text(splits)} tiles"
        ),
        extra={
            "boxes": [list(box) for _, box in ordered],
            "working_shape": [height, width],
            "column_roles": roles,
        },
    )
