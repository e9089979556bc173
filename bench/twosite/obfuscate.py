"""The obfuscated folder of the two-site pipeline: Site One writes it, Site Two verifies it.

``bench.data.noise`` is the noise itself; this module is what ships it. Site One runs
``export_obfuscated`` (``python -m bench obfuscate``): every image of a data source is decoded
exactly as for training, and only its noisy realisations leave, as 16-bit greyscale PNGs
(value = round(x · 65535), the same grid as the decode cache) with no metadata chunk, under
opaque random ids, beside a ``manifest.json``::

    OUT/manifest.json         σ, mean, seed, counts, image size, split and SHA-256 of each file
    OUT/noisy/<id>-r<k>.png   realisation k of image <id> (k = 0 … R-1)
    OUT/clean/<id>.png        only with include_clean: the seed study's supervised mode

Realisation k of source image i is ``obfuscate(clean_i, sigma, seed=KEY, image_id=i + k·2⁴⁰)``:
independent streams of the one noise function. KEY is a fresh 128-bit secret, not the seed:
whoever knows the generator's seed and an image's index can regenerate its noise and subtract
it, so the key stays at Site One in the mapping file (outside OUT, mode 0600) together with the
original file names. The manifest's ``seed`` is the split seed of the source, and the split of
every file is listed so that Site Two keeps Site One's train / val / test split.

The folder is built under a temporary name beside OUT and renamed into place only when complete,
so a failure leaves nothing behind. Site Two reads it as ``--data obfuscated:OUT``
(``bench.twosite.source``); ``bench.twosite.manifest.read_manifest`` checks every file against
its SHA-256 first and names any that is missing or changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BadInput
from bench.data.noise import obfuscate, validate_mean, validate_seed, validate_sigma
from bench.twosite.manifest import CLEAN_DIR, FORMAT, MANIFEST, NOISY_DIR, SPLIT_NAMES

MAPPING_SUFFIX = ".site-one-mapping.json"
# Realisation k of image i draws image id i + k * 2**40: distinct for any source below 2**40
# images, and realisation 0 is the image's ordinary noise stream under the same seed.
REALISATION_STRIDE = 2**40
PRIVACY_NOTE = (
    "additive Gaussian noise is not a privacy guarantee: it has no formal privacy bound, a "
    "denoiser trained on the released images recovers much of each clean image, averaging the "
    "released realisations of an image lowers the noise by the square root of their number, and "
    "anyone who learns the noise key can subtract the noise exactly"
)


def realisation_image_id(index: int, realisation: int) -> int:
    """The noise-stream id of realisation ``realisation`` of source image ``index``."""
    return int(index) + int(realisation) * REALISATION_STRIDE


# --------------------------------------------------------------------------- Site One


@dataclass(frozen=True)
class ExportResult:
    """What ``export_obfuscated`` wrote."""

    out: Path
    mapping: Path
    images: int
    realisations: int
    files: int
    split_counts: dict[str, int]
    clean_included: bool


def default_mapping_path(out: str | Path) -> Path:
    """``OUT.site-one-mapping.json`` beside OUT (never inside it)."""
    out = Path(out).expanduser().absolute()
    return out.with_name(out.name + MAPPING_SUFFIX)


def export_obfuscated(
    source: str,
    out: str | Path,
    *,
    sigma: float,
    mean: float = 0.0,
    realisations: int = 2,
    seed: int = 0,
    image_size: int = 64,
    limit: int | None = None,
    skip_bad: bool = False,
    mapping: str | Path | None = None,
    include_clean: bool = False,
    cache_dir: str | Path | None = None,
    noise_key: int | None = None,
) -> ExportResult:
    """Write the noisy realisations of every image of ``source`` to the new folder ``out``.

    Everything that can be wrong with the input raises BadInput before anything is written.
    ``noise_key`` (a secret; drawn from the OS when None) seeds the noise; it is written only
    to the mapping file, which stays at Site One.
    """
    from bench.data import prepare

    sigma = validate_sigma(sigma)
    mean = validate_mean(mean)
    seed = validate_seed(seed)
    if isinstance(realisations, bool) or not isinstance(realisations, int) or realisations < 1:
        raise BadInput(f"--realisations {realisations!r} is invalid; it must be an integer >= 1")
    out = Path(out).expanduser().absolute()
    mapping_path = Path(mapping).expanduser().absolute() if mapping else default_mapping_path(out)
    _check_destinations(out, mapping_path)
    if isinstance(source, str) and source.strip().startswith("obfuscated:"):
        raise BadInput(f"data source {source!r} is already obfuscated; obfuscate a clean source")
    key = secrets.randbits(128) if noise_key is None else validate_seed(noise_key, "noise key")

    prepared = prepare(source, image_size=image_size, seed=seed, limit=limit,
                       skip_bad=skip_bad, cache_dir=cache_dir)
    meta = prepared.metadata()
    split_of = {int(i): name for name in SPLIT_NAMES for i in meta["splits"][name]}
    count = prepared.num_images
    ids = _opaque_ids(count)
    order = sorted(range(count), key=lambda i: ids[i])  # listing order reveals no source order

    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        (tmp / NOISY_DIR).mkdir()
        if include_clean:
            (tmp / CLEAN_DIR).mkdir()
        images = prepared.images()

        def write_image(index: int) -> list[dict[str, Any]]:
            clean = np.asarray(images[index], dtype=np.float32) / np.float32(65535)
            entries = []
            for k in range(realisations):
                noisy = obfuscate(clean, sigma=sigma, seed=key, mean=mean,
                                  image_id=realisation_image_id(index, k))
                name = f"{NOISY_DIR}/{ids[index]}-r{k}.png"
                entries.append(_write_png(tmp, name, noisy, ids[index], split_of[index], k))
            if include_clean:
                name = f"{CLEAN_DIR}/{ids[index]}.png"
                entries.append(_write_png(tmp, name, clean, ids[index], split_of[index], None))
            return entries

        pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        try:
            files = [entry for entries in pool.map(write_image, order) for entry in entries]
        finally:
            pool.shutdown(cancel_futures=True)
        manifest = {
            "format": FORMAT,
            "tool": _tool(),
            "sigma": sigma,
            "mean": mean,
            "seed": seed,
            "seed_role": (
                "split seed of the source at Site One; the noise was drawn with a secret "
                "128-bit key that never leaves Site One"
            ),
            "count": count,
            "realisations": realisations,
            "image_size": prepared.image_size,
            "pixel_format": "16-bit greyscale PNG, value = round(x * 65535) for x in [0, 1]; "
                            "noisy values were clipped to [0, 1]",
            "noise": f"realisation k of an image = clip(clean + N({mean:g}, {sigma:g}²), 0, 1), "
                     "independent across realisations and images",
            "source_kind": prepared.source.partition(":")[0],
            "clean_included": bool(include_clean),
            "splits": {name: sum(1 for i in order if split_of[i] == name) for name in SPLIT_NAMES},
            "images": [{"id": ids[i], "split": split_of[i]} for i in order],
            "files": files,
            "privacy": PRIVACY_NOTE,
        }
        manifest_bytes = json.dumps(manifest, indent=1).encode()
        _write_file(tmp / MANIFEST, manifest_bytes)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the folder from Site Two's readers
        site_one = {
            "format": FORMAT + "/site-one-mapping",
            "warning": "keep at Site One: the noise key lets anyone subtract the noise exactly, "
                       "and the names may identify patients",
            "obfuscated_folder": str(out),
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "source": prepared.source,
            "source_description": prepared.description,
            "seed": seed,
            "sigma": sigma,
            "mean": mean,
            "noise_key": format(key, "x"),
            "noise": "realisation k of image i = bench.data.noise.obfuscate(clean_i, sigma, "
                     f"seed=int(noise_key, 16), image_id=i + k * {REALISATION_STRIDE}, mean)",
            "images": [{"id": ids[i], "index": i, "name": meta["names"][i], "split": split_of[i]}
                       for i in order],
        }
        _write_private_json(mapping_path, site_one)
        try:
            os.rename(tmp, out)
        except OSError as error:
            mapping_path.unlink(missing_ok=True)
            raise BadInput(f"output folder {out} cannot be created: {error.strerror}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(out.parent)
    return ExportResult(out=out, mapping=mapping_path, images=count, realisations=realisations,
                        files=len(files), split_counts=manifest["splits"],
                        clean_included=bool(include_clean))


def _check_destinations(out: Path, mapping: Path) -> None:
    if out.exists():
        raise BadInput(f"output folder {out} already exists; name a new folder")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        raise BadInput(f"output folder {out} cannot be created: {out.parent} is not a writable "
                       "folder")
    if mapping.resolve().is_relative_to(out.resolve()):
        raise BadInput(f"mapping file {mapping} lies inside the output folder {out}; it must stay "
                       "at Site One, outside the folder that is sent")
    if mapping.exists():
        raise BadInput(f"mapping file {mapping} already exists; name a new one with --mapping")
    parent = mapping.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"mapping file {mapping} cannot be created: {parent} is not a writable "
                       "folder")


def _opaque_ids(count: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(secrets.token_hex(8))
    return list(ids)


def _encode_png(unit: np.ndarray) -> bytes:
    pixels = np.rint(np.clip(unit, 0.0, 1.0) * 65535.0).astype(np.uint16)
    buffer = io.BytesIO()
    # Only the pixels are written: PIL adds no text, time or physical-size chunk here.
    from PIL import Image

    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_png(root: Path, name: str, unit: np.ndarray, image_id: str, split: str,
               realisation: int | None) -> dict[str, Any]:
    data = _encode_png(unit)
    _write_file(root / name, data)
    return {"path": name, "image": image_id, "realisation": realisation, "split": split,
            "kind": "noisy" if realisation is not None else "clean",
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_private_json(path: Path, obj: Any) -> None:
    """Written beside its final name, fsynced and renamed; readable by its owner only."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(json.dumps(obj, indent=1).encode())
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _tool() -> dict[str, str]:
    from bench import __version__

    return {"name": "bench", "version": __version__}


# --------------------------------------------------------------------------- Site Two training


def record_fields(cell, prepared, notes: list[str], cell_dir: Path) -> dict[str, Any]:
    """What a training record adds when it trained on an obfuscated folder (else nothing)."""
    from bench.twosite.model_file import MODEL_FILE
    from bench.twosite.source import is_obfuscated

    if not is_obfuscated(prepared):
        return {}
    info = prepared.metadata()["obfuscated"]
    clean_left = cell.target == "clean"
    model_file = Path(cell_dir) / MODEL_FILE
    sigma = " ".join(f"{s:g}" for s in cell.noise)
    how = (
        "noise2noise (Lehtinen et al. 2018): input one noisy realisation, target another "
        "realisation of the same image; no clean image was read"
        if not clean_left else
        "clean targets: Site One sent its clean images with the obfuscated folder, so clean data "
        "left Site One (the seed study's supervised mode)"
    )
    quality_note = (
        "no quality is computed at Site Two, which holds no clean test images; score the saved "
        f"model at Site One: python -m bench evaluate {model_file} --data SRC --sigma {sigma} "
        f"--seed {info['seed']}"
    )
    return {
        "quality_note": quality_note,
        "two_site": {
            "site": "two",
            "target": cell.target,
            "clean_data_left_site_one": clean_left,
            "training": how,
            "obfuscated_folder": prepared.source.partition(":")[2],
            "manifest_sha256": info["manifest_sha256"],
            "obfuscation": {k: info[k] for k in ("sigma", "mean", "realisations", "images",
                                                 "seed")},
            "model_file": str(model_file),
            "privacy": PRIVACY_NOTE,
        },
        "notes": [*notes, f"two-site training on an obfuscated folder, {how}",
                  quality_note],
    }
