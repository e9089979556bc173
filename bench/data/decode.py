"""Image decoding and resampling: every source turns files into [0, 1] float32 squares here.

Resampling is PIL's BOX filter (area averaging, antialiased) when shrinking and bilinear when
enlarging; files are decoded on threads because PIL releases the GIL.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from bench.data.store import ArrayStore
from bench.errors import BadInput


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


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """BOX (area average, antialiased) when shrinking, bilinear when enlarging."""
    shrinking = height * width <= image.shape[0] * image.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))  # mode "F"
    return np.asarray(pil.resize((width, height), method), dtype=np.float32)


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square (no distortion), then resize to size × size."""
    height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return resize(image[top : top + side, left : left + side], size, size)


def decode_files(
    files: Sequence[Path], store: ArrayStore, image_size: int, skip_bad: bool, root: Path
) -> tuple[list[int], list[str]]:
    """Decode ``files`` in order into consecutive slots; return kept indices and skipped names."""

    def load(path: Path) -> np.ndarray | None:
        try:
            return fit_square(decode_image(path), image_size)
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
