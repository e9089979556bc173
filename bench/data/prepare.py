"""``prepare``: decode a source once into the shared on-disk cache and describe the result.

Every image is decoded and resized once into ``<cache>/<name>.npy`` (uint16, value =
round(x * 65535)) plus a JSON sidecar holding the split index lists and metadata; both are
written atomically. Ranks receive a ``PreparedData`` (as JSON) and open the array
memory-mapped: the page cache is shared, no rank holds its own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.checks import validate_image_size, validate_limit
from bench.data.noise import validate_seed
from bench.data.plan import SPLITS, Plan
from bench.data.sources import BUILTIN, resolve
from bench.data.store import ArrayStore, make_dir, to_unit, write_atomic
from bench.errors import BadInput

CACHE_FORMAT_VERSION = 1


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

    @property
    def scheme(self) -> str:
        """The source's scheme (``folder``, ``synthetic``, a plug-in's, ...)."""
        return self.source.partition(":")[0]

    @property
    def has_clean(self) -> bool:
        """Whether the rows are clean images, so the core may add noise and score against
        them: true for the built-in sources. A plug-in source's rows (already-noisy images,
        say) are read only by its own dataset, and there is no clean test set to score on."""
        return self.scheme in BUILTIN

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

    def skipped_files(self) -> list[str]:
        """The files `--skip-bad` left out because they did not decode."""
        return list(self.metadata().get("skipped_files") or []) if self.skipped else []

    def metadata(self) -> dict[str, Any]:
        """The JSON sidecar (read-only): splits, names, boxes (chest-sample), skipped files."""
        return _read_sidecar(self.meta_path)


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
    ``noisy_only``: a source that holds both noisy and clean images opens only the noisy ones
    (a target such as noise2noise that must never read a clean image)."""
    image_size = validate_image_size(image_size)
    seed = validate_seed(seed)
    limit = validate_limit(limit)
    plan = resolve(source, image_size=image_size, seed=seed, limit=limit,
                   skip_bad=bool(skip_bad), noisy_only=bool(noisy_only))
    key = _cache_key(plan, image_size=image_size, seed=seed, limit=limit, skip_bad=bool(skip_bad),
                     **({"noisy_only": True} if noisy_only else {}))
    root = cache_root(cache_dir)
    stem = root / f"{plan.kind}-{image_size}px-{key[:24]}"
    npy_path, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")

    cached = _load_cached(npy_path, meta_path, key)
    if cached is not None:
        return cached
    make_dir(root)
    meta = _build(plan, ArrayStore(npy_path, image_size), key, image_size)
    write_atomic(meta_path, json.dumps(meta).encode())
    return _prepared(meta, npy_path, meta_path)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: the argument, else $BENCH_CACHE_DIR, else ~/.cache/bench."""
    if cache_dir is None:
        cache_dir = os.environ.get("BENCH_CACHE_DIR") or Path.home() / ".cache" / "bench"
    return Path(cache_dir).expanduser()


def _build(plan: Plan, store: ArrayStore, key: str, image_size: int) -> dict[str, Any]:
    """Run the plan into the published array; return the sidecar's content."""
    try:
        built = plan.build(store)
        count = store.publish()
    except BaseException:
        store.discard()
        raise
    return {
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


def _cache_key(plan: Plan, **settings: Any) -> str:
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
