"""Training data: four sources behind one interface, decoded once into a shared on-disk cache.

Sources (the ``source`` string):

- ``chest-sample`` – the real PA chest radiograph shipped in the ``pydicom-data`` wheel, cut
  into tiles whose train / val / test regions are spatially disjoint;
- ``nih:PATH``      – a local NIH ChestX-ray14 directory, split by patient;
- ``folder:PATH``   – any directory tree of PNG / JPEG / DICOM images, split by image;
- ``synthetic[:N]`` – N procedurally generated images (default 256) for throughput-only runs;
- ``obfuscated:PATH`` – a folder written by ``python -m bench obfuscate`` (bench.twosite.obfuscate): noisy
  realisations only, verified against its manifest; read with ``ObfuscatedDataset``.

``prepare`` decodes and resizes every image once into ``<cache>/<name>.npy`` (uint16,
value = round(x * 65535)) plus a JSON sidecar holding the split index lists and metadata;
both are written atomically, so concurrent processes never see half a file. Ranks receive a
``PreparedData`` (as JSON) and open the array memory-mapped: the page cache is shared, no rank
holds its own copy. Resampling is PIL's BOX filter (area averaging, antialiased) when shrinking
and bilinear when enlarging. torch is imported only by the dataset, never at module import.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from bench.errors import BadInput
from bench.data.noise import obfuscate, validate_mean, validate_seed, validate_sigma

CACHE_FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
ALLOWED_SOURCES = (
    "chest-sample, nih:PATH, folder:PATH, obfuscated:PATH, synthetic or synthetic:N"
)
DEFAULT_SYNTHETIC_COUNT = 256
SAMPLE_FILE = "RG1_UNCR.dcm"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
NIH_CSV = "Data_Entry_2017.csv"
NIH_LISTS = ("train_val_list.txt", "test_list.txt")
DIHEDRAL_VIEWS = 8
# Distinct spawn keys keep the split and synthetic streams apart from the noise streams.
_SPLIT_STREAM = 1
_SYNTHETIC_STREAM = 2


# --------------------------------------------------------------------------- public result


@dataclass(frozen=True)
class PreparedData:
    """Where a prepared data set lives and what it is; JSON-serialisable for rank processes."""

    source: str
    description: str
    image_size: int
    num_images: int
    skipped: int
    digest: str
    images_path: str
    meta_path: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreparedData:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as error:
            message = f"prepared-data description {text[:80]!r} is not valid: {error}"
            raise BadInput(message) from None

    def images(self) -> np.ndarray:
        """The (N, size, size) uint16 array, memory-mapped read-only (shared page cache)."""
        return np.load(self.images_path, mmap_mode="r")

    def image(self, index: int) -> np.ndarray:
        """One cached image as float32 in [0, 1]."""
        return to_unit(self.images()[index])

    def split(self, name: str) -> np.ndarray:
        """Indices into ``images()`` of the ``train``, ``val`` or ``test`` split."""
        if name not in SPLITS:
            raise BadInput(f"split {name!r} is unknown; allowed: {', '.join(SPLITS)}")
        return np.asarray(self.metadata()["splits"][name], dtype=np.int64)

    def metadata(self) -> dict[str, Any]:
        """The JSON sidecar (read-only): splits, names, boxes (chest-sample), skipped files."""
        return _read_sidecar(self.meta_path)


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """Cached uint16 pixels → float32 in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(65535)


# --------------------------------------------------------------------------- prepare


@dataclass
class _Built:
    """What a source builder produced besides the pixels."""

    splits: dict[str, list[int]]
    names: list[str]
    description: str
    skipped: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plan:
    """A source resolved without decoding anything: its cache identity and how to build it."""

    kind: str
    source: str
    identity: dict[str, Any]
    build: Callable[[_ArrayStore], _Built]


def prepare(
    source: str,
    *,
    image_size: int,
    seed: int = 0,
    limit: int | None = None,
    skip_bad: bool = False,
    cache_dir: str | Path | None = None,
    noisy_only: bool = False,
) -> PreparedData:
    """Decode ``source`` once into the cache (or find it there) and describe the result.
    ``noisy_only``: of an obfuscated folder, open only the noisy files, never a clean image
    Site One may have sent along (noise2noise training at Site Two)."""
    image_size = _validate_image_size(image_size)
    seed = validate_seed(seed)
    limit = _validate_limit(limit)
    plan = _plan(source, image_size=image_size, seed=seed, limit=limit, skip_bad=bool(skip_bad),
                 noisy_only=bool(noisy_only))
    key = _cache_key(plan, image_size=image_size, seed=seed, limit=limit, skip_bad=bool(skip_bad),
                     **({"noisy_only": True} if noisy_only else {}))
    root = cache_root(cache_dir)
    stem = root / f"{plan.kind}-{image_size}px-{key[:24]}"
    npy_path, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")

    cached = _load_cached(npy_path, meta_path, key)
    if cached is not None:
        return cached

    _make_dir(root)
    store = _ArrayStore(npy_path, image_size)
    try:
        built = plan.build(store)
        count = store.publish()
    except BaseException:
        store.discard()
        raise
    meta = {
        "format": CACHE_FORMAT_VERSION,
        "key": key,
        "source": plan.source,
        "kind": plan.kind,
        "description": built.description,
        "image_size": image_size,
        "num_images": count,
        "splits": built.splits,
        "names": built.names,
        "skipped": len(built.skipped),
        "skipped_files": built.skipped,
        "digest": _digest(key, built.splits),
        **built.extra,
    }
    _write_atomic(meta_path, json.dumps(meta).encode())
    return _prepared(meta, npy_path, meta_path)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: the argument, else $BENCH_CACHE_DIR, else ~/.cache/bench."""
    if cache_dir is None:
        cache_dir = os.environ.get("BENCH_CACHE_DIR") or Path.home() / ".cache" / "bench"
    return Path(cache_dir).expanduser()


def _plan(source: str, *, image_size: int, seed: int, limit: int | None, skip_bad: bool,
          noisy_only: bool = False) -> _Plan:
    if not isinstance(source, str):
        raise BadInput(f"data source {source!r} is not a string; allowed: {ALLOWED_SOURCES}")
    kind, has_arg, arg = source.strip().partition(":")
    if kind == "chest-sample" and not has_arg:
        if limit is not None:
            raise BadInput(f"limit {limit} cannot be used with the chest-sample source; omit it")
        return _sample_plan(image_size)
    if kind == "synthetic":
        count = _parse_count(arg) if has_arg else DEFAULT_SYNTHETIC_COUNT
        return _synthetic_plan(count if limit is None else min(count, limit), image_size, seed)
    if kind in ("nih", "folder") and arg:
        directory = _existing_dir(arg)
        if kind == "nih":
            return _nih_plan(directory, image_size, seed, limit, skip_bad)
        return _folder_plan(directory, image_size, seed, limit, skip_bad)
    if kind == "obfuscated" and arg:
        return _obfuscated_plan(_existing_dir(arg), image_size, limit, noisy_only)
    raise BadInput(f"data source {source!r} is unknown; allowed: {ALLOWED_SOURCES}")


def _cache_key(plan: _Plan, **settings: Any) -> str:
    payload = {"format": CACHE_FORMAT_VERSION, "kind": plan.kind, "identity": plan.identity}
    payload.update(settings)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _digest(key: str, splits: dict[str, list[int]]) -> str:
    text = key + json.dumps({name: splits[name] for name in SPLITS})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_cached(npy_path: Path, meta_path: Path, key: str) -> PreparedData | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or meta.get("format") != CACHE_FORMAT_VERSION:
        return None
    if not npy_path.is_file():
        return None
    return _prepared(meta, npy_path, meta_path)


def _prepared(meta: dict[str, Any], npy_path: Path, meta_path: Path) -> PreparedData:
    return PreparedData(
        source=meta["source"],
        description=meta["description"],
        image_size=meta["image_size"],
        num_images=meta["num_images"],
        skipped=meta["skipped"],
        digest=meta["digest"],
        images_path=str(npy_path),
        meta_path=str(meta_path),
    )


@lru_cache(maxsize=16)
def _parsed_sidecar(path: str, mtime_ns: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _read_sidecar(path: str) -> dict[str, Any]:
    # Sidecars are replaced, never edited, so (path, mtime) identifies their content and a
    # large NIH sidecar is parsed once per process. Callers must not mutate the result.
    return _parsed_sidecar(path, os.stat(path).st_mtime_ns)


# --------------------------------------------------------------------------- atomic files


class _ArrayStore:
    """A uint16 .npy stack built in a temporary file next to its final name, then renamed."""

    def __init__(self, final: Path, image_size: int) -> None:
        self.final = final
        self.image_size = image_size
        self._tmp: Path | None = None
        self._array: np.ndarray | None = None

    def allocate(self, count: int) -> None:
        self._tmp = _temp_path(self.final)
        shape = (count, self.image_size, self.image_size)
        self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.uint16, shape=shape)

    def put(self, index: int, image: np.ndarray) -> None:
        assert self._array is not None
        self._array[index] = np.rint(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` images (the rest were skipped files)."""
        assert self._array is not None and self._tmp is not None
        if count == len(self._array):
            return
        old_array, old_tmp = self._array, self._tmp
        self.allocate(count)
        for start in range(0, count, 256):
            stop = min(start + 256, count)
            self._array[start:stop] = old_array[start:stop]
        del old_array
        old_tmp.unlink()

    def publish(self) -> int:
        """fsync the array and rename it into place; return the number of images."""
        assert self._array is not None and self._tmp is not None
        count = len(self._array)
        self._array.flush()
        self._array = None  # closes the mapping
        with open(self._tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self._tmp, self.final)
        self._tmp = None
        return count

    def discard(self) -> None:
        self._array = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def _temp_path(final: Path) -> Path:
    handle, name = tempfile.mkstemp(dir=final.parent, prefix=final.name + ".", suffix=".tmp")
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp's 0600 would hide the cache from other readers
    return Path(name)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"cache directory {path} cannot be created: {error.strerror}") from None


# --------------------------------------------------------------------------- decoding


def decode_image(path: Path) -> np.ndarray:
    """Decode a PNG / JPEG / DICOM file into a 2-D float32 array in [0, 1].

    8-bit rasters are scaled by 255 (colour converted to grey), 16-bit PNGs by 65535; DICOM
    is normalised between its 0.5 and 99.5 percentiles and MONOCHROME1 is inverted.
    """
    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty")
        if path.suffix.lower() == ".dcm":
            return _decode_dicom(path)
        return _decode_raster(path)
    except Exception as error:  # any decoder failure is the file's fault, reported as such
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInput(f"cannot decode image {path}: {reason[:160]}") from None


def _decode_raster(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        if image.mode.startswith("I"):  # 16-bit grey PNG ("I;16" or "I")
            pixels = np.asarray(image).astype(np.float32) / np.float32(65535)
        else:
            pixels = np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255)
    return np.clip(pixels, 0.0, 1.0)


def _decode_dicom(path: Path) -> np.ndarray:
    import pydicom  # imported here: only DICOM sources need it

    dataset = pydicom.dcmread(path)
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ValueError("the DICOM file has no pixel data")
    pixels = dataset.pixel_array
    if pixels.ndim != 2:
        raise ValueError(f"expected one grey frame, found pixel array of shape {pixels.shape}")
    return _normalise_radiograph(pixels, str(dataset.get("PhotometricInterpretation", "")))


def _normalise_radiograph(pixels: np.ndarray, photometric: str) -> np.ndarray:
    # Robust percentiles ignore collimator edges and burnt-in markers at the extremes.
    low, high = np.percentile(pixels, [0.5, 99.5])
    scaled = (pixels.astype(np.float32) - np.float32(low)) / np.float32(max(high - low, 1e-12))
    unit = np.clip(scaled, 0.0, 1.0)
    return 1.0 - unit if photometric == "MONOCHROME1" else unit  # MONOCHROME1: bright = low value


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """BOX (area average, antialiased) when shrinking, bilinear when enlarging."""
    shrinking = height * width <= image.shape[0] * image.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))  # mode "F"
    return np.asarray(pil.resize((width, height), method), dtype=np.float32)


def _fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square (no distortion), then resize to size × size."""
    height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return _resize(image[top : top + side, left : left + side], size, size)


def _decode_files(
    files: Sequence[Path], store: _ArrayStore, image_size: int, skip_bad: bool, root: Path
) -> tuple[list[int], list[str]]:
    """Decode ``files`` in order into consecutive slots; return kept indices and skipped names."""

    def load(path: Path) -> np.ndarray | None:
        try:
            return _fit_square(decode_image(path), image_size)
        except BadInput:
            if skip_bad:
                return None
            raise

    store.allocate(len(files))
    kept: list[int] = []
    skipped: list[str] = []
    # PIL decodes and resizes without the GIL, so threads use every core.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        for index, image in enumerate(pool.map(load, files)):
            if image is None:
                skipped.append(files[index].relative_to(root).as_posix())
                continue
            store.put(len(kept), image)
            kept.append(index)
    finally:
        pool.shutdown(cancel_futures=True)
    if not kept:
        raise BadInput(f"none of the {len(files)} images in {root} could be decoded")
    store.truncate(len(kept))
    return kept, skipped


# --------------------------------------------------------------------------- chest-sample


def sample_path() -> Path:
    """The PA chest radiograph inside the installed pydicom-data wheel (module data_store)."""
    spec = importlib.util.find_spec("data_store")  # locates the package without importing it
    if spec is None or spec.origin is None:
        raise BadInput(
            "the chest-sample source needs the pydicom-data package, which is not installed"
        )
    path = Path(spec.origin).parent / "data" / SAMPLE_FILE
    if not path.is_file():
        raise BadInput(f"the chest-sample file {path} is missing from the pydicom-data package")
    return path


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


Box = tuple[int, int, int, int]


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


def _sample_plan(image_size: int) -> _Plan:
    path = sample_path()
    identity = {"file": SAMPLE_FILE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    def build(store: _ArrayStore) -> _Built:
        native = decode_image(path)
        short = work_short_side(min(native.shape), image_size)
        scale = short / min(native.shape)
        height, width = (max(short, round(side * scale)) for side in native.shape)
        work = _resize(native, height, width)
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
        counts = "/".join(str(len(splits[name])) for name in SPLITS)
        return _Built(
            splits=splits,
            names=[f"{SAMPLE_FILE} y{box[0]} x{box[1]}" for _, box in ordered],
            description=(
                f"chest-sample {SAMPLE_FILE} (PA chest CR {native.shape[0]}×{native.shape[1]}, "
                f"area-resampled to {height}×{width}): {image_size}-px tiles in {n_columns} "
                f"columns, spatially disjoint train/val/test = {counts} tiles"
            ),
            extra={
                "boxes": [list(box) for _, box in ordered],
                "working_shape": [height, width],
                "column_roles": roles,
            },
        )

    return _Plan("chest-sample", "chest-sample", identity, build)


# --------------------------------------------------------------------------- NIH ChestX-ray14


def _nih_plan(
    directory: Path, image_size: int, seed: int, limit: int | None, skip_bad: bool
) -> _Plan:
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
        "files": _file_stats(files, directory),
        "metadata": _file_stats([csv_path, *(lists if official else [])], directory),
    }

    def build(store: _ArrayStore) -> _Built:
        patients = _nih_patients(csv_path, files)
        candidates = files
        listed: tuple[set[str], set[str]] | None = None
        if official:
            listed = (_read_list(lists[0]), _read_list(lists[1]))
            candidates = [p for p in files if p.name in listed[0] or p.name in listed[1]]
            if not candidates:
                raise BadInput(
                    f"none of the selected images in {directory} is named in "
                    f"{NIH_LISTS[0]} or {NIH_LISTS[1]}"
                )
        kept, skipped = _decode_files(candidates, store, image_size, skip_bad, directory)
        names = [candidates[i].name for i in kept]
        owners = [patients[name] for name in names]
        if listed is not None:
            splits = _split_official(names, owners, listed[1], seed)
            how = "official test list (closed over patients), train_val split 90/10 by patient"
        else:
            splits = _split_by_group(owners, seed, (0.7, 0.15, 0.15))
            how = "70/15/15 by seeded permutation of patients"
        _require_nonempty(splits, directory)
        counts = "/".join(str(len(splits[name])) for name in SPLITS)
        return _Built(
            splits=splits,
            names=names,
            skipped=skipped,
            description=(
                f"NIH ChestX-ray14 at {directory}: {len(names)} images at {image_size}² "
                f"({len(skipped)} skipped, {len(files) - len(candidates)} unlisted), "
                f"patient-level split ({how}), train/val/test = {counts}"
            ),
            extra={"patients": owners, "unlisted": len(files) - len(candidates)},
        )

    return _Plan("nih", f"nih:{directory}", identity, build)


def _nih_patients(csv_path: Path, files: Sequence[Path]) -> dict[str, str]:
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


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _split_official(
    names: Sequence[str], owners: Sequence[str], test_list: set[str], seed: int
) -> dict[str, list[int]]:
    # A patient with any image in the official test list is test-only, so no patient
    # straddles test and train even if the lists were edited by hand.
    test_patients = {owner for name, owner in zip(names, owners) if name in test_list}
    test = [i for i, owner in enumerate(owners) if owner in test_patients]
    rest = [i for i, owner in enumerate(owners) if owner not in test_patients]
    inner = _split_by_group([owners[i] for i in rest], seed, (0.9, 0.1, 0.0))
    return {
        "train": [rest[i] for i in inner["train"]],
        "val": [rest[i] for i in inner["val"]],
        "test": test,
    }


# --------------------------------------------------------------------------- folder


def _folder_plan(
    directory: Path, image_size: int, seed: int, limit: int | None, skip_bad: bool
) -> _Plan:
    files = sorted(
        (p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(directory).as_posix(),
    )
    if not files:
        raise BadInput(f"data directory {directory} contains no PNG, JPEG or DICOM (.dcm) images")
    files = files[:limit] if limit is not None else files
    identity = {"path": str(directory), "files": _file_stats(files, directory)}

    def build(store: _ArrayStore) -> _Built:
        kept, skipped = _decode_files(files, store, image_size, skip_bad, directory)
        if len(kept) < 3:
            raise BadInput(
                f"data directory {directory} has {len(kept)} decodable images; at least 3 are "
                "needed (one per split)"
            )
        splits = _split_by_group([str(i) for i in range(len(kept))], seed, (0.7, 0.15, 0.15))
        counts = "/".join(str(len(splits[name])) for name in SPLITS)
        return _Built(
            splits=splits,
            names=[files[i].relative_to(directory).as_posix() for i in kept],
            skipped=skipped,
            description=(
                f"image folder {directory}: {len(kept)} images at {image_size}² "
                f"({len(skipped)} skipped), image-level split 70/15/15 by seeded permutation, "
                f"train/val/test = {counts}"
            ),
        )

    return _Plan("folder", f"folder:{directory}", identity, build)


# --------------------------------------------------------------------------- obfuscated


def _obfuscated_plan(directory: Path, image_size: int, limit: int | None,
                     noisy_only: bool = False) -> _Plan:
    """Rows of the cached array: realisation k of image i at k * N + i, then (only when Site
    One sent them) the clean images at R * N + i. Every file is checked against the manifest
    on each prepare, cached or not."""
    from bench.twosite.obfuscate import read_manifest

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

    def build(store: _ArrayStore) -> _Built:
        store.allocate(len(files))
        for row, path in enumerate(files):
            pixels = decode_image(path)
            if pixels.shape != (image_size, image_size):
                raise BadInput(f"obfuscated file {path} is not {image_size}×{image_size} pixels")
            store.put(row, pixels)
        counts = "/".join(str(len(manifest.splits[name])) for name in SPLITS)
        return _Built(
            splits=manifest.splits,
            names=list(manifest.ids),
            description=(
                f"obfuscated folder {directory}: {count} images × {realisations} noisy "
                f"realisations at {image_size}² (σ {manifest.sigma:g}, mean {manifest.mean:g}"
                f"{', with clean images' if manifest.clean_included else ', no clean images'}), "
                f"Site One's split train/val/test = {counts}"
            ),
            extra={
                "obfuscated": {
                    "images": count,
                    "realisations": realisations,
                    "sigma": manifest.sigma,
                    "mean": manifest.mean,
                    "seed": manifest.seed,
                    "clean_rows": with_clean,
                    "manifest_sha256": manifest.sha256,
                }
            },
        )

    identity = {"path": str(directory), "manifest_sha256": manifest.sha256}
    return _Plan("obfuscated", f"obfuscated:{directory}", identity, build)


def is_obfuscated(prepared: PreparedData) -> bool:
    """True for data prepared from an obfuscated folder: its images are already noisy."""
    return prepared.source.startswith("obfuscated:")


# --------------------------------------------------------------------------- synthetic


def synthetic_image(image_id: int, *, size: int, seed: int) -> np.ndarray:
    """A smooth background plus a few soft-edged ellipses; a pure function of its arguments."""
    entropy = np.random.SeedSequence([seed, image_id], spawn_key=(_SYNTHETIC_STREAM,))
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


def _synthetic_plan(count: int, image_size: int, seed: int) -> _Plan:
    def build(store: _ArrayStore) -> _Built:
        store.allocate(count)
        for index in range(count):
            store.put(index, synthetic_image(index, size=image_size, seed=seed))
        n_test, n_val = _split_counts(count, (0.7, 0.15, 0.15))
        n_train = count - n_val - n_test
        splits = {
            "train": list(range(n_train)),
            "val": list(range(n_train, n_train + n_val)),
            "test": list(range(n_train + n_val, count)),
        }
        return _Built(
            splits=splits,
            names=[f"synthetic-{index}" for index in range(count)],
            description=(
                f"synthetic: {count} generated images at {image_size}² (seed {seed}), split "
                f"70/15/15 by index, train/val/test = {n_train}/{n_val}/{n_test}"
            ),
        )

    if count < 3:
        raise BadInput(f"synthetic image count {count} is too small; at least 3 are needed")
    return _Plan("synthetic", f"synthetic:{count}", {"count": count}, build)


# --------------------------------------------------------------------------- splitting helpers


def _split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """(test, val) group counts: rounded fractions, at least one where asked and possible."""
    _, val_fraction, test_fraction = fractions
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 and n >= 3 else 0
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 and n - n_test >= 2 else 0
    return n_test, n_val


def _split_by_group(
    groups: Sequence[str], seed: int, fractions: tuple[float, float, float]
) -> dict[str, list[int]]:
    """Split item indices so that every group (patient, or the item itself) lands in one split;
    groups are assigned by a seeded permutation of their sorted ids."""
    unique = sorted(set(groups))
    entropy = np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM,))
    rng = np.random.Generator(np.random.PCG64(entropy))
    order = [unique[i] for i in rng.permutation(len(unique))]
    n_test, n_val = _split_counts(len(unique), fractions)
    role = {g: "test" for g in order[:n_test]}
    role.update({g: "val" for g in order[n_test : n_test + n_val]})
    splits: dict[str, list[int]] = {name: [] for name in SPLITS}
    for index, group in enumerate(groups):
        splits[role.get(group, "train")].append(index)
    return splits


def _require_nonempty(splits: dict[str, list[int]], directory: Path) -> None:
    for name in SPLITS:
        if not splits[name]:
            raise BadInput(
                f"data directory {directory} yields an empty {name} split; it needs images of "
                "more patients (raise the limit)"
            )


# --------------------------------------------------------------------------- validation helpers


def _file_stats(files: Sequence[Path], root: Path) -> list[list[Any]]:
    rows = []
    for path in files:
        stat = path.stat()
        rows.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return rows


def _existing_dir(text: str) -> Path:
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise BadInput(f"data directory {path} does not exist")
    return path


def _parse_count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 3:
        raise BadInput(f"synthetic image count {text!r} is invalid; it must be an integer >= 3")
    return int(text)


def _is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def _require_int(name: str, value: object, minimum: int) -> int:
    if not _is_int_at_least(value, minimum):
        raise BadInput(f"{name} {value!r} is invalid; it must be an integer >= {minimum}")
    return int(value)  # type: ignore[call-overload]


def _validate_image_size(image_size: object) -> int:
    return _require_int("image size", image_size, 8)


def _validate_limit(limit: object) -> int | None:
    if limit is not None and not _is_int_at_least(limit, 1):
        raise BadInput(f"limit {limit!r} is invalid; it must be an integer >= 1 or omitted")
    return None if limit is None else int(limit)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- torch side


def dihedral(image: np.ndarray, transform: int) -> np.ndarray:
    """Symmetry ``transform`` (0–7) of the square: rotate by 90°·(t mod 4), then flip
    left-right when t >= 4. Works on the last two axes."""
    rotated = np.rot90(image, transform % 4, axes=(-2, -1))
    return np.flip(rotated, axis=-1) if transform >= 4 else rotated


class DenoiseDataset:
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
        if is_obfuscated(prepared):  # adding noise to noisy images would be a silent error
            raise BadInput(f"data source {prepared.source} is already noisy; read it with "
                           "ObfuscatedDataset, not DenoiseDataset")
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

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        noisy, clean = self.arrays(index)
        return (
            torch.from_numpy(np.ascontiguousarray(noisy)[None]),
            torch.from_numpy(np.ascontiguousarray(clean)[None]),
        )

    def __getstate__(self) -> dict[str, Any]:
        # Workers re-open the memory map instead of receiving a pickled copy of the pixels.
        return {**self.__dict__, "_images": None}


TARGETS = ("clean", "noise2noise")


class ObfuscatedDataset:
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
        folder = prepared.source.partition(":")[2]
        self.count, realisations = int(info["images"]), int(info["realisations"])
        if target == "noise2noise":
            if realisations < 2:
                raise BadInput(
                    f"obfuscated folder {folder} has {realisations} realisation per image; "
                    "--target noise2noise needs 2 or more (obfuscate --realisations 2)"
                )
            self.pairs = [(a, b) for a in range(realisations) for b in range(realisations)
                          if a != b]
        elif target == "clean":
            if not info["clean_rows"]:
                raise BadInput(
                    f"obfuscated folder {folder} holds no clean images, so --target clean has "
                    "no targets; use --target noise2noise (Site One would have to send its "
                    "clean images: obfuscate --include-clean)"
                )
            self.pairs = [(a, realisations) for a in range(realisations)]  # row block R: clean
        else:
            raise BadInput(f"target {target!r} is unknown; choose one of: {', '.join(TARGETS)}")
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

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        source, target = self.arrays(index)
        return (
            torch.from_numpy(np.ascontiguousarray(source)[None]),
            torch.from_numpy(np.ascontiguousarray(target)[None]),
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}


def training_dataset(
    prepared: PreparedData,
    split: str,
    *,
    target: str,
    sigmas: Sequence[float],
    seed: int,
    noise_mean: float,
    augment: bool,
) -> DenoiseDataset | ObfuscatedDataset:
    """The dataset a training run reads: an obfuscated folder's pairs, or clean images with
    seeded noise added (the ordinary single-site workload, target "clean" only)."""
    if is_obfuscated(prepared):
        return ObfuscatedDataset(prepared, split, target=target, augment=augment)
    if target not in TARGETS:
        raise BadInput(f"target {target!r} is unknown; choose one of: {', '.join(TARGETS)}")
    if target != "clean":
        raise BadInput(
            f"--target {target} trains on independent noisy realisations and needs --data "
            f"obfuscated:PATH (written by python -m bench obfuscate), not {prepared.source}"
        )
    return DenoiseDataset(prepared, split, sigmas=sigmas, seed=seed, noise_mean=noise_mean,
                          augment=augment)


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
            _require_int(name, value, minimum)
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
