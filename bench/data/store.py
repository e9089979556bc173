"""The cache's files: a uint16 image stack and JSON, each written beside its final name and
renamed into place, so concurrent processes never see half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from bench.errors import BadInput


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """Cached uint16 pixels → float32 in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(65535)


class ArrayStore:
    """A uint16 .npy stack built in a temporary file next to its final name, then renamed."""

    def __init__(self, final: Path, image_size: int) -> None:
        self.final = final
        self.image_size = image_size
        self._tmp: Path | None = None
        self._array: np.ndarray | None = None

    def allocate(self, count: int) -> None:
        self._tmp = temp_path(self.final)
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


def temp_path(final: Path) -> Path:
    handle, name = tempfile.mkstemp(dir=final.parent, prefix=final.name + ".", suffix=".tmp")
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp's 0600 would hide the cache from other readers
    return Path(name)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"cache directory {path} cannot be created: {error.strerror}") from None
