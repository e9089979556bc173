"""The obfuscated folder's manifest, as Site Two reads it: parsed, and every file verified.

Site One writes the manifest (``bench.twosite.obfuscate``); Site Two trusts a folder only
after ``read_manifest`` has checked each listed file against its SHA-256, so a missing or
changed file is named before any training starts.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.noise import validate_mean, validate_seed, validate_sigma
from bench.errors import BadInput

FORMAT = "bench-obfuscated/1"
MANIFEST = "manifest.json"
NOISY_DIR = "noisy"
CLEAN_DIR = "clean"
SPLIT_NAMES = ("train", "val", "test")
_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
_SHA_PATTERN = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Manifest:
    """A verified obfuscated folder: every listed file exists and matches its SHA-256."""

    folder: Path
    sha256: str
    sigma: float
    mean: float
    seed: int
    realisations: int
    image_size: int
    ids: tuple[str, ...]
    splits: dict[str, list[int]]
    clean_included: bool
    source_kind: str

    def noisy_file(self, index: int, realisation: int) -> Path:
        return self.folder / NOISY_DIR / f"{self.ids[index]}-r{realisation}.png"

    def clean_file(self, index: int) -> Path:
        return self.folder / CLEAN_DIR / f"{self.ids[index]}.png"


def read_manifest(folder: str | Path, skip_clean: bool = False) -> Manifest:
    """Parse ``folder/manifest.json`` and check every file it lists (with ``skip_clean``, every
    noisy one: a clean image is then never opened); BadInput names the first file that is
    missing or whose SHA-256 differs."""
    folder = Path(folder).expanduser().resolve()
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"obfuscated folder {folder} has no {MANIFEST}") from None
    except OSError as error:
        raise BadInput(f"manifest {path} cannot be read: {error.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadInput(f"manifest {path} is not valid JSON") from None
    manifest = _parse(data, folder, hashlib.sha256(raw).hexdigest())
    for entry in data["files"]:
        if not (skip_clean and str(entry["path"]).startswith(f"{CLEAN_DIR}/")):
            _verify_file(folder, entry)
    return manifest


def _parse(data: Any, folder: Path, digest: str) -> Manifest:
    where = folder / MANIFEST
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"manifest {where} is not a {FORMAT} manifest")
    try:
        sigma, mean = validate_sigma(data["sigma"]), validate_mean(data["mean"])
        seed = validate_seed(data["seed"])
        realisations, image_size, count = data["realisations"], data["image_size"], data["count"]
        images, files, clean = data["images"], data["files"], data["clean_included"]
        if not all(isinstance(v, int) and v >= 1 for v in (realisations, image_size, count)):
            raise ValueError("counts must be positive integers")
        if not isinstance(images, list) or len(images) != count or not isinstance(files, list):
            raise ValueError("the image list does not hold `count` images")
        ids = tuple(str(image["id"]) for image in images)
        roles = [image["split"] for image in images]
    except (KeyError, TypeError, ValueError, BadInput):
        raise BadInput(f"manifest {where} is malformed: a required field is missing or "
                       "invalid") from None
    if len(set(ids)) != len(ids) or not all(_ID_PATTERN.fullmatch(i) for i in ids):
        raise BadInput(f"manifest {where} is malformed: image ids must be unique 16-hex ids")
    if not all(role in SPLIT_NAMES for role in roles):
        raise BadInput(f"manifest {where} is malformed: a split is not train, val or test")
    expected = {f"{NOISY_DIR}/{i}-r{k}.png" for i in ids for k in range(realisations)}
    if clean:
        expected |= {f"{CLEAN_DIR}/{i}.png" for i in ids}
    listed = [entry.get("path") if isinstance(entry, dict) else None for entry in files]
    if len(listed) != len(expected) or set(listed) != expected:
        raise BadInput(f"manifest {where} is malformed: its file list does not match its images "
                       "and realisations")
    if not all(isinstance(e.get("sha256"), str) and _SHA_PATTERN.fullmatch(e["sha256"])
               for e in files):
        raise BadInput(f"manifest {where} is malformed: a file lacks its SHA-256")
    splits = {name: [k for k, role in enumerate(roles) if role == name] for name in SPLIT_NAMES}
    return Manifest(folder=folder, sha256=digest, sigma=sigma, mean=mean, seed=seed,
                    realisations=realisations, image_size=image_size, ids=ids, splits=splits,
                    clean_included=bool(clean), source_kind=str(data.get("source_kind", "")))


def _verify_file(folder: Path, entry: dict[str, Any]) -> None:
    path = folder / entry["path"]
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise BadInput(f"obfuscated file {path} listed in {MANIFEST} is missing") from None
    except OSError as error:
        raise BadInput(f"obfuscated file {path} cannot be read: {error.strerror}") from None
    if digest.hexdigest() != entry["sha256"]:
        raise BadInput(f"obfuscated file {path} does not match its SHA-256 in {MANIFEST}; it was "
                       "changed after export")
