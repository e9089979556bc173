"""Two sites: Site Two trains on an obfuscated folder without clean data; Site One audits."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.twosite import audit
from bench.record import store
from bench.twosite import obfuscate as ob
from bench.config.cell import Cell
from bench import plugins
from bench.data import (DenoiseDataset, check_training, prepare, synthetic_image,
                        training_dataset)
from bench.errors import BadInput
from bench.twosite.manifest import read_manifest
from bench.twosite.source import ObfuscatedDataset
from conftest import run_cli

SIZE = 32
# On the CPU even where a GPU is visible, so the suite means the same everywhere.
SMALL = ["--device", "cpu", "--model", "unet", "--strategy", "single", "--width", "4",
         "--depth", "2", "--batch", "8", "--warmup", "1", "--sample-hz", "0"]


@pytest.fixture(autouse=True, scope="module")
def two_site_plugin():
    """The obfuscated source and the noise2noise target, as the CLI registers them."""
    plugins.load(["bench.twosite"])


def _folder(root: Path, count: int = 10) -> Path:
    folder = root / "clean-xrays"
    folder.mkdir()
    for i in range(count):
        image = synthetic_image(i, size=SIZE, seed=1)
        Image.fromarray(np.rint(image * 65535).astype(np.uint16)).save(folder / f"p{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-sites")
    folder = _folder(root)
    plain = ob.export_obfuscated(f"folder:{folder}", root / "noisy-only", sigma=0.1,
                                 image_size=SIZE, realisations=2)
    with_clean = ob.export_obfuscated(f"folder:{folder}", root / "with-clean", sigma=0.1,
                                      image_size=SIZE, realisations=2, include_clean=True)
    return folder, plain, with_clean


def test_noise2noise_pairs_are_two_realisations_and_never_clean(sites):
    folder, plain, _ = sites
    prepared = prepare(f"obfuscated:{plain.out}", image_size=SIZE)
    manifest = read_manifest(plain.out)
    n = len(manifest.ids)
    assert len(prepared.images()) == 2 * n  # the cache holds noisy rows only: nothing clean
    data = ObfuscatedDataset(prepared, "train", target="noise2noise", augment=True)
    assert len(data) == len(prepared.split("train")) * 2 * 8
    seen = set()
    for k in range(0, len(data), 8):  # one view of every (image, ordered pair)
        image, row_in, row_out, transform = data.item(k)
        assert transform == 0 and row_in != row_out and {row_in, row_out} == {image, n + image}
        seen.add((row_in, row_out))
        source, target = data.arrays(k)
        with Image.open(manifest.noisy_file(image, row_in // n)) as png:
            assert np.array_equal(source, np.asarray(png) / np.float32(65535))
        with Image.open(manifest.noisy_file(image, row_out // n)) as png:
            assert np.array_equal(target, np.asarray(png) / np.float32(65535))
    assert len(seen) == 2 * len(prepared.split("train"))  # both directions (A→B and B→A)


def test_target_rules(sites):
    folder, plain, with_clean = sites
    obfuscated = prepare(f"obfuscated:{plain.out}", image_size=SIZE)
    clean = prepare(f"folder:{folder}", image_size=SIZE)
    cases = [
        (Cell(data="x", target="noise2noise"), clean, "needs --data obfuscated:PATH"),
        (Cell(data="x", target="clean"), obfuscated, "holds no clean images"),
        (Cell(data="x", target="noise2noise", noise=(0.2,)), obfuscated, "pass --noise 0.1"),
        (Cell(data="x", target="noise2noise", noise_mean=0.1), obfuscated, "--noise-mean 0"),
        (Cell(data="x", target="denoise"), clean, "target 'denoise' is unknown"),
    ]
    for cell, prepared, needle in cases:
        with pytest.raises(BadInput, match=re.escape(needle)):
            check_training(cell, prepared)
    with pytest.raises(BadInput, match="already noisy"):  # no noise is ever added twice
        DenoiseDataset(obfuscated, "train", sigmas=[0.1], seed=0, augment=False)
    assert isinstance(training_dataset(clean, "train", target="clean", sigmas=[0.1], seed=0,
                                       noise_mean=0.0, augment=False), DenoiseDataset)
    with pytest.raises(BadInput, match="pass --image-size 32"):
        prepare(f"obfuscated:{plain.out}", image_size=64)
    check_training(Cell(data="x", target="noise2noise"), obfuscated)  # fine


def test_clean_targets_say_that_clean_data_left_site_one(sites, tmp_path):
    folder, _, with_clean = sites
    prepared = prepare(f"obfuscated:{with_clean.out}", image_size=SIZE)
    cell = Cell(data=f"obfuscated:{with_clean.out}", target="clean", image_size=SIZE)
    check_training(cell, prepared)
    data = ObfuscatedDataset(prepared, "train", target="clean", augment=False)
    image = data.item(0)[0]
    reference = prepare(f"folder:{folder}", image_size=SIZE)
    mapping = json.loads(with_clean.mapping.read_text())
    index = {i["id"]: i["index"] for i in mapping["images"]}[prepared.metadata()["names"][image]]
    assert np.array_equal(data.arrays(0)[1], reference.image(index))
    fields = ob.record_fields(cell, prepared, ["n"], tmp_path)
    assert fields["two_site"]["clean_data_left_site_one"] is True
    assert any("clean data left Site One" in note for note in fields["notes"])
    assert fields["notes"][0] == "n"


def test_target_field_keeps_ordinary_cell_ids():
    plain = Cell()
    assert "target" not in plain.to_dict() and Cell.from_dict(plain.to_dict()) == plain
    assert Cell(target="clean").cell_id == plain.cell_id
    n2n = Cell(target="noise2noise")
    assert "-n2n-" in n2n.cell_id and n2n.cell_id != plain.cell_id
    assert Cell.from_dict(n2n.to_dict()) == n2n
    from bench.config.cell import workload_fingerprint
    assert workload_fingerprint(n2n, "d") != workload_fingerprint(plain, "d")


def test_noise2noise_never_reads_the_clean_source(tmp_path):
    """Site One obfuscates, then its clean folder and decode cache vanish: Site Two still
    trains, so nothing in its training touched clean data."""
    folder = _folder(tmp_path)
    site_one_cache = tmp_path / "site-one-cache"
    out = tmp_path / "outbox"
    made = run_cli("obfuscate", f"folder:{folder}", out, "--sigma", "0.1", "--image-size", SIZE,
                   env={"BENCH_CACHE_DIR": str(site_one_cache)})
    assert made.returncode == 0, made.stderr
    assert "keep" in made.stdout and "not a privacy guarantee" in made.stdout
    shutil.rmtree(folder)
    shutil.rmtree(site_one_cache)
    site_two_cache = tmp_path / "site-two-cache"
    site_two_cache.mkdir()
    results = tmp_path / "results"
    trained = run_cli("run", "--data", f"obfuscated:{out}", "--target", "noise2noise",
                      "--image-size", SIZE, "--steps", "4", *SMALL, "--out", results,
                      env={"BENCH_CACHE_DIR": str(site_two_cache)})
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert all(p.name.startswith("obfuscated-") for p in site_two_cache.iterdir())
    (record,) = store.records(results)[0]
    assert record["status"] == "ok" and record["cell"]["target"] == "noise2noise"
    assert record["quality"] == [] and "Site One" in record["quality_note"]
    assert record["two_site"]["clean_data_left_site_one"] is False
    assert record["two_site"]["obfuscation"]["realisations"] == 2
    assert "no quality is computed at Site Two" in trained.stdout
    payload = torch.load(Path(record["_dir"]) / audit.MODEL_FILE, weights_only=True)
    assert set(payload) == {"format", "state_dict", "cell", "fingerprint"}
    assert payload["fingerprint"] == record["fingerprint"]
    assert Cell.from_dict(payload["cell"]).cell_id == record["cell_id"]


def test_noise2noise_model_beats_the_noisy_input_at_site_one(tmp_path):
    """chest-sample at σ 0.1: Site Two trains on noisy pairs only; Site One scores the model on
    its clean test tiles, and the audit reports the protection and what the model recovers."""
    out = tmp_path / "outbox"
    ob.export_obfuscated("chest-sample", out, sigma=0.1, image_size=SIZE, realisations=2,
                         noise_key=20181010)  # fixed for a repeatable test; secret in real use
    results = tmp_path / "results"
    trained = run_cli("run", "--data", f"obfuscated:{out}", "--target", "noise2noise",
                      "--image-size", SIZE, "--model", "unet", "--strategy", "single",
                      "--width", "8", "--depth", "2", "--batch", "16", "--steps", "40",
                      "--warmup", "1", "--lr", "3e-3", "--sample-hz", "0", "--device", "cpu",
                      "--out", results)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (model_file,) = results.glob(f"*/{audit.MODEL_FILE}")
    report_file = tmp_path / "audit.json"
    scored = run_cli("evaluate", model_file, "--data", "chest-sample", "--sigma", "0.1",
                     "--device", "cpu", "--out", report_file)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(report_file.read_text())
    (level,) = report["audit"]
    protection, recovered = level["protection"]["psnr"], level["recovered"]["psnr"]
    assert recovered > protection + 2.0, level
    assert level["gap"]["psnr"] == pytest.approx(recovered - protection)
    assert level["averaged"]["psnr"] == pytest.approx(protection + 3.0, abs=0.5)  # √2 less noise
    (q,) = report["quality"]
    assert (q["psnr"], q["noisy_psnr"]) == (recovered, protection)
    assert report["target"] == "noise2noise" and report["clean_data_left_site_one"] is False
    for needle in ("protection: obfuscated vs clean", "recovered by the model",
                   "not a privacy guarantee", f"{recovered:6.2f} dB", f"{protection:6.2f} dB"):
        assert needle in scored.stdout, needle
    # Site Two's record had no audit (no clean image there); Site One's evaluation put it in,
    # and the report shows it with the statement.
    (record,) = store.records(results)[0]
    assert record["audit"]["measured_at"].startswith("bench evaluate")
    assert record["audit"]["levels"][0]["recovered"]["psnr"] == recovered
    assert record["audit"]["clean_data_left_site_one"] is False
    shown = run_cli("report", results)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "privacy audit" in text and "not a privacy guarantee" in text
    assert f"{recovered:.2f}" in text and f"{protection:.2f}" in text


def test_evaluate_rejects_what_it_cannot_score(tmp_path):
    junk = tmp_path / "model.pt"
    junk.write_text("not a model")
    with pytest.raises(BadInput, match="cannot be loaded"):
        audit.load_model(junk)
    torch.save({"format": "something else"}, junk)
    with pytest.raises(BadInput, match="is not a bench model"):
        audit.load_model(junk)
    with pytest.raises(BadInput, match="does not exist"):
        audit.load_model(tmp_path / "missing.pt")
    from bench.worker.setup import build_seeded_model
    cell = Cell(width=4, depth=2, image_size=SIZE)
    audit.save_model(junk, build_seeded_model(cell).state_dict(), cell, "f" * 16)
    assert os.stat(junk).st_size > 0
    with pytest.raises(BadInput, match="holds no clean images"):
        audit.evaluate_model(junk, "obfuscated:/anywhere")


def test_noise2noise_opens_no_clean_file_even_when_site_one_sent_them(tmp_path):
    folder = _folder(tmp_path)
    out = tmp_path / "outbox"
    made = run_cli("obfuscate", f"folder:{folder}", out, "--sigma", "0.1", "--image-size", SIZE,
                   "--include-clean")
    assert made.returncode == 0, made.stderr
    shutil.rmtree(out / ob.CLEAN_DIR)  # from now on, whatever opens a clean file fails
    trained = run_cli("run", "--data", f"obfuscated:{out}", "--target", "noise2noise",
                      "--image-size", SIZE, "--steps", "4", *SMALL, "--out", tmp_path / "n2n")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    supervised = run_cli("run", "--data", f"obfuscated:{out}", "--target", "clean",
                         "--image-size", SIZE, "--steps", "4", *SMALL, "--out", tmp_path / "sup")
    assert supervised.returncode == 2 and "is missing" in supervised.stderr, supervised.stderr
