"""Site One's export: only noisy pixels leave, under opaque names, checked by a manifest."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.twosite import obfuscate as ob
from bench.data import prepare, synthetic_image, to_unit
from bench.errors import BadInput
from bench.twosite.manifest import read_manifest
from bench.data.noise import obfuscate
from conftest import run_cli

SIGMA = 0.1
SIZE = 32
PATIENT_NAME, PATIENT_ID = "DOE^JANE", "PID-77310"


def _write_dicom(path: Path, pixels: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Nine PNGs named after patients and one DICOM carrying patient tags; mid-grey content so
    that clipping at σ 0.1 is rare and the residual's spread is the noise's."""
    folder = tmp_path_factory.mktemp("site-one") / "xrays"
    folder.mkdir()
    for i in range(9):
        image = 0.25 + 0.5 * synthetic_image(i, size=40, seed=3)
        Image.fromarray(np.rint(image * 65535).astype(np.uint16)).save(
            folder / f"patient-{PATIENT_ID}-{i:02d}.png")
    dicom = np.rint((0.3 + 0.4 * synthetic_image(99, size=40, seed=3)) * 4000)
    _write_dicom(folder / f"patient-{PATIENT_ID}-ct.dcm", dicom)
    return folder


@pytest.fixture(scope="module")
def export(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("outbox") / "for-site-two"
    result = ob.export_obfuscated(f"folder:{source}", out, sigma=SIGMA, realisations=2,
                                  image_size=SIZE, seed=5)
    mapping = json.loads(result.mapping.read_text())
    clean = prepare(f"folder:{source}", image_size=SIZE, seed=5)
    return result, mapping, clean


def _noisy_files(out: Path) -> list[Path]:
    return sorted((out / ob.NOISY_DIR).iterdir())


def test_only_noisy_pngs_and_a_manifest_leave(export, source):
    result, mapping, clean = export
    out = result.out
    everything = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert everything == sorted([ob.MANIFEST] + [f"noisy/{p.name}" for p in _noisy_files(out)])
    assert len(_noisy_files(out)) == clean.num_images * 2 == 20
    stems = [p.stem for p in source.iterdir()]
    for path in out.rglob("*"):
        assert re.fullmatch(r"[0-9a-f]{16}-r[01]\.png|manifest\.json|noisy", path.name), path
        assert path.suffix != ".dcm"
        data = path.read_bytes() if path.is_file() else b""
        assert data[128:132] != b"DICM"  # no DICOM preamble
        for secret in (PATIENT_NAME.encode(), PATIENT_ID.encode(), *(s.encode() for s in stems)):
            assert secret not in data, (path, secret)
    for path in _noisy_files(out):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "I;16" and image.info == {}
    # The mapping (names, noise key) stays at Site One: outside OUT and private.
    assert not result.mapping.resolve().is_relative_to(out.resolve())
    assert os.stat(result.mapping).st_mode & 0o077 == 0
    assert sorted(Path(i["name"]).stem for i in mapping["images"]) == sorted(stems)
    assert int(mapping["noise_key"], 16) > 2**64  # a secret key, not the small seed


def test_manifest_states_the_noise_split_and_every_hash(export):
    result, mapping, clean = export
    manifest = json.loads((result.out / ob.MANIFEST).read_text())
    from bench import __version__
    assert (manifest["sigma"], manifest["mean"], manifest["seed"]) == (SIGMA, 0.0, 5)
    assert (manifest["count"], manifest["realisations"], manifest["image_size"]) == (10, 2, SIZE)
    assert manifest["tool"] == {"name": "bench", "version": __version__}
    assert manifest["clean_included"] is False and "not a privacy guarantee" in manifest["privacy"]
    split_of = {i["id"]: i["split"] for i in mapping["images"]}
    index_of = {i["id"]: i["index"] for i in mapping["images"]}
    for entry in manifest["files"]:
        data = (result.out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["split"] == split_of[entry["image"]]
        # Site Two keeps Site One's split: the same one training on the clean source uses.
        assert index_of[entry["image"]] in clean.split(entry["split"])
    verified = read_manifest(result.out)
    assert verified.sigma == SIGMA and len(verified.ids) == 10


def _released(result, mapping):
    """(source index, realisation, noisy pixels) of every released file."""
    index_of = {i["id"]: i["index"] for i in mapping["images"]}
    for path in _noisy_files(result.out):
        image_id, _, realisation = path.stem.partition("-r")
        with Image.open(path) as image:
            yield index_of[image_id], int(realisation), to_unit(np.asarray(image))


def test_no_released_file_is_or_is_near_a_clean_image(export):
    result, mapping, clean = export
    cleans = [clean.image(i) for i in range(clean.num_images)]
    for _, _, noisy in _released(result, mapping):
        rms = [float(np.sqrt(np.mean((noisy - c) ** 2))) for c in cleans]
        # At σ 0.1 a noisy image stays close to its own clean image by design (that is why the
        # audit exists), but no file may be the clean pixels or anything near them.
        assert min(rms) > 0.5 * SIGMA > 1e-3
        assert not any(np.array_equal(noisy, c) for c in cleans)


def test_residual_has_the_declared_sigma_and_realisations_are_independent(export):
    result, mapping, clean = export
    key = int(mapping["noise_key"], 16)
    residuals: dict[int, dict[int, np.ndarray]] = {}
    for index, realisation, noisy in _released(result, mapping):
        image = clean.image(index)
        residuals.setdefault(index, {})[realisation] = noisy - image
        # bench.data.noise is the one source of noise: stream index + k * 2**40 under the key.
        expected = obfuscate(image, sigma=SIGMA, seed=key,
                             image_id=ob.realisation_image_id(index, realisation))
        assert np.max(np.abs(noisy - expected)) <= 0.51 / 65535
    pooled = np.concatenate([r.ravel() for pair in residuals.values() for r in pair.values()])
    assert abs(pooled.std() - SIGMA) < 0.03 * SIGMA
    assert abs(pooled.mean()) < 0.005
    for index, pair in residuals.items():
        # Clipping at 0 and 1 biases both realisations' residuals alike where the clean pixel is
        # near an end, which correlates them without any shared noise: judge the pixels where
        # clipping is rarer than 1 in 10^4. With n pixels independent noise gives |corr| ~ 1/√n;
        # 5/√n leaves a false alarm about once in a million pairs (the key is drawn per run).
        free = ((clean.image(index) > 4 * SIGMA) & (clean.image(index) < 1 - 4 * SIGMA)).ravel()
        assert free.sum() >= 200, free.sum()
        corr = np.corrcoef(pair[0].ravel()[free], pair[1].ravel()[free])[0, 1]
        assert abs(corr) < 5 / np.sqrt(free.sum())


@pytest.mark.parametrize("damage", ["tampered", "missing"])
def test_a_changed_or_missing_file_is_named(export, tmp_path, damage):
    result, _, _ = export
    copy = tmp_path / "received"
    shutil.copytree(result.out, copy)
    victim = _noisy_files(copy)[3]
    if damage == "tampered":
        with Image.open(victim) as image:
            pixels = np.asarray(image).copy()
        pixels[5, 5] ^= 1  # one least-significant bit of one pixel
        Image.fromarray(pixels).save(victim)
    else:
        victim.unlink()
    with pytest.raises(BadInput, match=re.escape(str(victim))) as info:
        read_manifest(copy)
    reason = "is missing" if damage == "missing" else "does not match its SHA-256"
    assert reason in str(info.value)
    if damage == "missing":
        return  # the same BadInput; one CLI run shows it ends the command with exit 2
    out_dir = tmp_path / "results"
    cli = run_cli("run", "--data", f"obfuscated:{copy}", "--target", "noise2noise",
                  "--image-size", SIZE, "--model", "unet", "--strategy", "single", "--out", out_dir)
    assert cli.returncode == 2, cli.stderr
    lines = [line for line in cli.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and victim.name in lines[0]
    assert "does not match its SHA-256" in lines[0]
    assert not out_dir.exists()


def test_bad_requests_raise_before_anything_is_written(export, source, tmp_path):
    result, _, _ = export
    folder = f"folder:{source}"
    cases = [
        (dict(source=folder, out=result.out), "already exists"),
        (dict(source=folder, out=tmp_path / "o", mapping=tmp_path / "o" / "m.json"),
         "inside the output folder"),
        (dict(source=f"obfuscated:{result.out}", out=tmp_path / "o"), "already obfuscated"),
        (dict(source=folder, out=tmp_path / "o", sigma=-1), "noise level -1"),
        (dict(source=folder, out=tmp_path / "o", realisations=0), "--realisations 0"),
    ]
    for kwargs, needle in cases:
        kwargs = {"sigma": SIGMA, "image_size": SIZE, **kwargs}
        with pytest.raises(BadInput, match=re.escape(needle)):
            ob.export_obfuscated(kwargs.pop("source"), kwargs.pop("out"), **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_export_leaves_nothing(source, tmp_path, monkeypatch):
    calls = []

    def failing(unit):
        calls.append(1)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return b"png"

    monkeypatch.setattr(ob, "_encode_png", failing)
    with pytest.raises(OSError):
        ob.export_obfuscated(f"folder:{source}", tmp_path / "out", sigma=SIGMA, image_size=SIZE)
    assert list(tmp_path.iterdir()) == []  # no OUT, no mapping, no temporary folder


def test_cli_obfuscate_bad_input_exits_2_without_output(source, tmp_path):
    out = tmp_path / "out"
    cli = run_cli("obfuscate", f"folder:{source}", out, "--sigma", "-0.2")
    assert cli.returncode == 2 and cli.stdout == ""
    assert cli.stderr.strip().startswith("bench: error: --sigma -0.2 is invalid")
    assert list(tmp_path.iterdir()) == []
