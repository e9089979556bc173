"""Data sources, the decode-once cache, the dataset and the global batch sampler."""

from __future__ import annotations

import itertools
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import data
from bench.data import (
    SPLITS,
    DenoiseDataset,
    GlobalBatchSampler,
    PreparedData,
    dihedral,
    prepare,
)
from bench.data.sources import chest, synthetic as synthetic_source
from bench.errors import BadInput
from bench.data.noise import obfuscate


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return prepare("chest-sample", image_size=64, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    cache_dir = tmp_path_factory.mktemp("cache")
    return prepare("synthetic:40", image_size=32, seed=1, cache_dir=cache_dir)


def _assert_partition(prepared: PreparedData) -> None:
    """Every cached image is in exactly one split and no split is empty."""
    indices = [prepared.split(name).tolist() for name in SPLITS]
    assert all(indices)
    assert sorted(itertools.chain(*indices)) == list(range(prepared.num_images))


def _no_decoding(path: Path) -> np.ndarray:
    raise AssertionError(f"decoded {path} although the cache should have been used")


# --------------------------------------------------------------------------- chest-sample


def test_sample_splits_are_spatially_disjoint(sample: PreparedData) -> None:
    meta = sample.metadata()
    height, width = meta["working_shape"]
    owner = np.full((height, width), -1)
    for split_number, name in enumerate(SPLITS):
        for index in sample.split(name):
            y0, x0, y1, x1 = meta["boxes"][index]
            assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
            region = owner[y0:y1, x0:x1]
            assert np.all((region == -1) | (region == split_number)), f"{name} {index} overlaps"
            region[...] = split_number
    # Pairwise, too: no train box intersects a val or test box.
    boxes = {name: [meta["boxes"][i] for i in sample.split(name)] for name in SPLITS}
    for a, b in itertools.combinations(SPLITS, 2):
        for (ay0, ax0, ay1, ax1), (by0, bx0, by1, bx1) in itertools.product(boxes[a], boxes[b]):
            assert ay1 <= by0 or by1 <= ay0 or ax1 <= bx0 or bx1 <= ax0


def test_sample_tiles_are_real_unit_images(sample: PreparedData) -> None:
    _assert_partition(sample)
    images = sample.images()
    assert isinstance(images, np.memmap) and images.dtype == np.uint16
    assert images.shape == (sample.num_images, 64, 64)
    tile = sample.image(int(sample.split("test")[0]))
    assert tile.dtype == np.float32 and 0.0 <= tile.min() and tile.max() <= 1.0
    assert tile.std() > 0.01  # a lung tile, not a blank
    counts = {name: len(sample.split(name)) for name in SPLITS}
    assert counts["train"] > counts["test"] >= 2 * counts["val"] > 0


def test_sample_train_tiles_overlap_only_inside_train_runs(sample: PreparedData) -> None:
    roles = sample.metadata()["column_roles"]
    assert roles.count("test") == 2 and roles.count("val") == 1
    boxes = [sample.metadata()["boxes"][i] for i in sample.split("train")]
    assert any(b[1] - a[1] == 32 for a, b in zip(boxes, boxes[1:]))  # stride size // 2


def test_sample_second_prepare_is_a_cache_hit(
    sample: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chest, "decode_image", _no_decoding)
    again = prepare("chest-sample", image_size=64, cache_dir=Path(sample.images_path).parent)
    assert again == sample
    assert PreparedData.from_json(again.to_json()) == sample


def test_sample_rejects_too_large_tiles_and_limit(cache: Path) -> None:
    with pytest.raises(BadInput, match="image size 512 is too large for the chest sample"):
        prepare("chest-sample", image_size=512, cache_dir=cache)
    with pytest.raises(BadInput, match="limit 5 cannot be used with the chest-sample"):
        prepare("chest-sample", image_size=64, limit=5, cache_dir=cache)


@pytest.mark.parametrize("columns", range(4, 40))
def test_column_roles_generalise(columns: int) -> None:
    roles = data.column_roles(columns)
    assert len(roles) == columns and roles.count("train") >= 1
    assert roles.count("test") >= 2 and roles.count("val") >= 1
    test_columns = [c for c, role in enumerate(roles) if role == "test"]
    assert min(test_columns) < columns / 2 <= max(test_columns) + 0.5  # one block per side


# --------------------------------------------------------------------------- NIH layout

NIH_IMAGES = {  # name → (folder, patient)
    "00000001_000.png": ("images_001", "1"),
    "00000001_001.png": ("images_001", "1"),
    "00000001_002.png": ("images_001", "1"),
    "00000002_000.png": ("images_001", "2"),
    "00000002_001.png": ("images_002", "2"),
    "00000004_000.png": ("images_001", "4"),  # sorts after 00000003 (in images_002)
    "00000003_000.png": ("images_002", "3"),
    "00000005_000.png": ("images_002", "5"),
    "00000005_001.png": ("images_002", "5"),
    "00000006_000.png": ("images_002", "6"),
    "00000007_000.png": ("images_002", "7"),
    "00000008_000.png": ("images_002", "8"),
    "00000009_000.png": ("images_002", "9"),
    "00000010_000.png": ("images_002", "10"),
}


def _write_png(path: Path, value: int, mode: str = "L", size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    gradient = (np.arange(size)[None, :] + value) % 256
    pixels = np.broadcast_to(gradient, (size, size)).astype(np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def _nih_dir(root: Path, *, lists: bool, missing_patient: str | None = None) -> Path:
    for number, (name, (folder, _)) in enumerate(sorted(NIH_IMAGES.items())):
        _write_png(root / folder / "images" / name, 10 * number, "RGBA" if number == 3 else "L")
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age"]
    for name, (_, patient) in NIH_IMAGES.items():
        if name != missing_patient:
            rows.append(f"{name},No Finding,{name[9:12]},{patient},40")
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    if lists:
        test = [n for n, (_, p) in NIH_IMAGES.items() if p in ("2", "7")]
        (root / "test_list.txt").write_text("\n".join(test) + "\n")
        rest = [n for n in NIH_IMAGES if n not in test]
        (root / "train_val_list.txt").write_text("\n".join(rest) + "\n")
    return root


def _patients_by_split(prepared: PreparedData) -> dict[str, set[str]]:
    names = prepared.metadata()["names"]
    return {n: {NIH_IMAGES[names[i]][1] for i in prepared.split(n)} for n in SPLITS}


@pytest.mark.parametrize("lists", [False, True])
def test_nih_split_is_patient_level(tmp_path: Path, cache: Path, lists: bool) -> None:
    root = _nih_dir(tmp_path / "nih", lists=lists)
    prepared = prepare(f"nih:{root}", image_size=16, seed=3, cache_dir=cache)
    _assert_partition(prepared)
    assert prepared.num_images == len(NIH_IMAGES)
    patients = _patients_by_split(prepared)
    for a, b in itertools.combinations(SPLITS, 2):
        assert not patients[a] & patients[b], f"a patient is in both {a} and {b}"
    if lists:
        assert patients["test"] == {"2", "7"}
    images = prepared.images()
    assert images.shape == (len(NIH_IMAGES), 16, 16)
    assert prepared.source == f"nih:{root.resolve()}"


def test_nih_split_depends_on_seed_only(tmp_path: Path, cache: Path) -> None:
    root = _nih_dir(tmp_path / "nih", lists=False)
    first = prepare(f"nih:{root}", image_size=16, seed=0, cache_dir=cache)
    again = prepare(f"nih:{root}", image_size=16, seed=0, cache_dir=tmp_path / "other-cache")
    assert first.digest == again.digest
    splits = {
        prepare(f"nih:{root}", image_size=16, seed=s, cache_dir=cache).digest for s in range(6)
    }
    assert len(splits) > 1


def test_nih_limit_takes_first_sorted_names(tmp_path: Path, cache: Path) -> None:
    root = _nih_dir(tmp_path / "nih", lists=False)
    prepared = prepare(f"nih:{root}", image_size=16, limit=9, cache_dir=cache)
    assert prepared.metadata()["names"] == sorted(NIH_IMAGES)[:9]


def test_nih_bad_inputs(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(BadInput, match=f"data directory {tmp_path / 'absent'} does not exist"):
        prepare(f"nih:{tmp_path / 'absent'}", image_size=16, cache_dir=cache)
    root = _nih_dir(tmp_path / "nih", lists=False, missing_patient="00000006_000.png")
    with pytest.raises(BadInput, match="00000006_000.png has no patient id"):
        prepare(f"nih:{root}", image_size=16, cache_dir=cache)
    (root / "Data_Entry_2017.csv").unlink()
    with pytest.raises(BadInput, match=f"{root / 'Data_Entry_2017.csv'} does not exist"):
        prepare(f"nih:{root}", image_size=16, cache_dir=cache)


# --------------------------------------------------------------------------- folder


def _write_dicom(
    path: Path, pixels: np.ndarray, photometric: str, with_pixels: bool = True
) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CR"
    if with_pixels:
        dataset.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


def _folder(root: Path) -> Path:
    Image.fromarray(np.full((16, 16), 51, np.uint8)).save(_mkparent(root / "a_8bit.png"))
    Image.fromarray(np.full((16, 16), 13107, np.uint16)).save(root / "b_16bit.png")
    Image.fromarray(np.full((16, 16, 3), 102, np.uint8)).save(root / "c_rgb.jpg", quality=100)
    ramp = np.tile(np.arange(16, dtype=np.uint16) * 200, (16, 1))
    _write_dicom(root / "nested" / "d_mono2.dcm", ramp, "MONOCHROME2")
    _write_dicom(root / "nested" / "e_mono1.dcm", ramp, "MONOCHROME1")
    return root


NO_PIXELS = np.zeros((4, 4), np.uint16)


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _by_name(prepared: PreparedData) -> dict[str, np.ndarray]:
    return {name: prepared.image(i) for i, name in enumerate(prepared.metadata()["names"])}


def test_folder_reads_png_16bit_jpeg_and_dicom(tmp_path: Path, cache: Path) -> None:
    root = _folder(tmp_path / "images")
    prepared = prepare(f"folder:{root}", image_size=16, cache_dir=cache)
    _assert_partition(prepared)
    images = _by_name(prepared)
    assert sorted(images) == [
        "a_8bit.png", "b_16bit.png", "c_rgb.jpg", "nested/d_mono2.dcm", "nested/e_mono1.dcm"
    ]
    assert np.allclose(images["a_8bit.png"], 51 / 255, atol=1e-4)
    assert np.allclose(images["b_16bit.png"], 13107 / 65535, atol=1e-4)
    assert np.allclose(images["c_rgb.jpg"], 102 / 255, atol=2 / 255)
    mono2, mono1 = images["nested/d_mono2.dcm"], images["nested/e_mono1.dcm"]
    assert mono2[:, 0].max() < 0.01 and mono2[:, -1].min() > 0.99  # percentile-normalised ramp
    assert np.allclose(mono1, 1 - mono2, atol=1e-4)  # MONOCHROME1 is inverted


def test_folder_resizes_and_center_crops(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "wide"
    for k in range(3):
        pixels = np.zeros((32, 64), np.uint8)
        pixels[:, 16:48] = 255  # the centre square is white, the side bands black
        Image.fromarray(pixels).save(_mkparent(root / f"{k}.png"))
    prepared = prepare(f"folder:{root}", image_size=8, cache_dir=cache)
    assert np.allclose(prepared.image(0), 1.0)  # centre crop kept, bands cropped away


def test_corrupt_png_is_bad_input_naming_the_file(tmp_path: Path, cache: Path) -> None:
    root = _folder(tmp_path / "images")
    bad = root / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    with pytest.raises(BadInput, match=f"cannot decode image {bad}: "):
        prepare(f"folder:{root}", image_size=16, cache_dir=cache)
    assert not cache.exists() or not list(cache.iterdir())  # nothing half-written


def test_skip_bad_skips_and_counts(tmp_path: Path, cache: Path) -> None:
    root = _folder(tmp_path / "images")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "empty.jpg").write_bytes(b"")
    _write_dicom(root / "no_pixels.dcm", NO_PIXELS, "MONOCHROME2", with_pixels=False)
    prepared = prepare(f"folder:{root}", image_size=16, skip_bad=True, cache_dir=cache)
    assert prepared.skipped == 3 and prepared.num_images == 5
    skipped = sorted(prepared.metadata()["skipped_files"])
    assert skipped == ["broken.png", "empty.jpg", "no_pixels.dcm"]
    assert prepared.images().shape == (5, 16, 16)
    _assert_partition(prepared)
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temp files left


def test_dicom_without_pixels_and_empty_file_are_bad_input(tmp_path: Path, cache: Path) -> None:
    root = _folder(tmp_path / "images")
    _write_dicom(root / "no_pixels.dcm", NO_PIXELS, "MONOCHROME2", with_pixels=False)
    with pytest.raises(BadInput, match="cannot decode image .*no_pixels.dcm: .*no pixel data"):
        prepare(f"folder:{root}", image_size=16, cache_dir=cache)
    (root / "no_pixels.dcm").unlink()
    (root / "empty.png").write_bytes(b"")
    with pytest.raises(BadInput, match="cannot decode image .*empty.png: the file is empty"):
        prepare(f"folder:{root}", image_size=16, cache_dir=cache)


def test_folder_bad_inputs(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(BadInput, match=f"data directory {tmp_path / 'none'} does not exist"):
        prepare(f"folder:{tmp_path / 'none'}", image_size=16, cache_dir=cache)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(BadInput, match="contains no PNG, JPEG or DICOM"):
        prepare(f"folder:{tmp_path / 'empty'}", image_size=16, cache_dir=cache)
    _write_png(tmp_path / "two" / "a.png", 0)
    _write_png(tmp_path / "two" / "b.png", 0)
    with pytest.raises(BadInput, match="has 2 decodable images; at least 3"):
        prepare(f"folder:{tmp_path / 'two'}", image_size=16, cache_dir=cache)


def test_changed_file_invalidates_the_cache(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "images"
    for k in range(3):
        _write_png(root / f"{k}.png", 0)
    before = prepare(f"folder:{root}", image_size=16, cache_dir=cache)
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(root / "0.png")
    after = prepare(f"folder:{root}", image_size=16, cache_dir=cache)
    assert after.images_path != before.images_path
    assert np.allclose(after.image(0), 1.0)


# --------------------------------------------------------------------------- sources, cache


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("imagenet", "data source 'imagenet' is unknown; allowed: chest-sample, nih:PATH"),
        ("nih:", "is unknown; allowed"),
        ("synthetic:two", "synthetic image count 'two' is invalid"),
        ("synthetic:2", "synthetic image count '2' is invalid"),
    ],
)
def test_bad_sources(source: str, message: str, cache: Path) -> None:
    with pytest.raises(BadInput, match=message):
        prepare(source, image_size=16, cache_dir=cache)


@pytest.mark.parametrize(("option", "value"), [("image_size", 4), ("limit", 0), ("seed", -1)])
def test_bad_options(option: str, value: int, cache: Path) -> None:
    options = {"image_size": 16, option: value}
    with pytest.raises(BadInput, match=f"{value!r} is invalid"):
        prepare("synthetic:8", cache_dir=cache, **options)


def test_synthetic_is_deterministic_and_split_by_index(synthetic: PreparedData) -> None:
    _assert_partition(synthetic)
    assert synthetic.split("train").tolist() == list(range(28))
    first = data.synthetic_image(3, size=32, seed=1)
    assert np.allclose(synthetic.image(3), first, atol=1 / 65535)
    assert not np.array_equal(first, data.synthetic_image(4, size=32, seed=1))
    assert 0.0 <= first.min() and first.max() <= 1.0 and first.std() > 0.01


def test_cache_dir_defaults_to_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "env-cache"))
    prepared = prepare("synthetic:5", image_size=8)
    assert Path(prepared.images_path).parent == tmp_path / "env-cache"
    monkeypatch.setattr(synthetic_source, "synthetic_image", _no_decoding)
    assert prepare("synthetic:5", image_size=8) == prepared


def test_concurrent_prepares_agree(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom bench.data import prepare\n"
        "print(prepare('synthetic:48', image_size=32, cache_dir=sys.argv[1]).to_json())\n"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    first, second = (PreparedData.from_json(text) for text in outputs)
    assert first == second
    assert first.images().shape == (48, 32, 32)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]


def test_prepared_data_json_round_trip(synthetic: PreparedData) -> None:
    text = synthetic.to_json()
    assert json.loads(text)["images_path"] == synthetic.images_path
    assert PreparedData.from_json(text) == synthetic
    with pytest.raises(BadInput):
        PreparedData.from_json('{"source": "x"}')
    with pytest.raises(BadInput, match="split 'eval' is unknown"):
        synthetic.split("eval")


# --------------------------------------------------------------------------- dataset


def test_dataset_items_are_obfuscated_cache_images(synthetic: PreparedData) -> None:
    dataset = DenoiseDataset(synthetic, "val", sigmas=[0.1], seed=4, noise_mean=0.1, augment=False)
    assert len(dataset) == len(synthetic.split("val"))
    noisy, clean = dataset[2]
    assert noisy.shape == clean.shape == (1, 32, 32)
    assert str(noisy.dtype) == "torch.float32"
    image_id = int(synthetic.split("val")[2])
    assert np.array_equal(clean.numpy()[0], synthetic.image(image_id))
    expected = obfuscate(synthetic.image(image_id), sigma=0.1, seed=4, image_id=image_id, mean=0.1)
    assert np.array_equal(noisy.numpy()[0], expected)
    assert not np.array_equal(noisy.numpy(), clean.numpy())
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def _undo_dihedral(image: np.ndarray, transform: int) -> np.ndarray:
    unflipped = np.flip(image, axis=-1) if transform >= 4 else image
    return np.rot90(unflipped, -(transform % 4), axes=(-2, -1))


def test_dihedral_views_share_one_noise_realisation(synthetic: PreparedData) -> None:
    dataset = DenoiseDataset(synthetic, "train", sigmas=[0.2], seed=0, augment=True)
    assert len(dataset) == 8 * len(synthetic.split("train"))
    base = 5
    noisy0, clean0 = dataset.arrays(8 * base)
    views = set()
    for transform in range(8):
        noisy, clean = dataset.arrays(8 * base + transform)
        assert dataset.item(8 * base + transform)[2] == transform
        assert np.array_equal(_undo_dihedral(noisy, transform), noisy0)
        assert np.array_equal(_undo_dihedral(clean, transform), clean0)
        views.add(np.ascontiguousarray(noisy).tobytes())
    assert len(views) == 8  # eight distinct views


def test_several_sigmas_cycle_with_the_item_index(synthetic: PreparedData) -> None:
    sigmas = [0.1, 0.2, 0.3]
    dataset = DenoiseDataset(synthetic, "train", sigmas=sigmas, seed=2, augment=False)
    for k in range(6):
        image_id, sigma, _ = dataset.item(k)
        assert sigma == sigmas[k % 3]
        expected = obfuscate(synthetic.image(image_id), sigma=sigma, seed=2, image_id=image_id)
        assert np.array_equal(dataset.arrays(k)[0], expected)
    with pytest.raises(BadInput):
        DenoiseDataset(synthetic, "train", sigmas=[], seed=2, augment=False)
    with pytest.raises(BadInput, match="noise level -0.5"):
        DenoiseDataset(synthetic, "train", sigmas=[-0.5], seed=2, augment=False)


def test_dihedral_is_a_group_of_eight() -> None:
    image = np.arange(12.0).reshape(3, 4)
    for transform in range(8):
        assert np.array_equal(_undo_dihedral(dihedral(image, transform), transform), image)


def test_dataset_pickles_without_pixels(synthetic: PreparedData) -> None:
    dataset = DenoiseDataset(synthetic, "train", sigmas=[0.1], seed=0, augment=False)
    dataset[0]  # opens the memory map
    assert len(pickle.dumps(dataset)) < 4096  # workers re-open the map; no copy of the pixels


# --------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_rank_slices_union_to_the_single_device_batch(world_size: int) -> None:
    options = {"global_batch": 8, "steps": 20, "seed": 9}  # 50 // 8 = 6 steps per epoch
    single = list(GlobalBatchSampler(50, world_size=1, rank=0, **options))
    ranks = [
        list(GlobalBatchSampler(50, world_size=world_size, rank=r, **options))
        for r in range(world_size)
    ]
    assert len(single) == 20
    for step in range(20):
        assert all(len(rank[step]) == 8 // world_size for rank in ranks)
        assert [i for rank in ranks for i in rank[step]] == single[step]
    epoch0 = [i for batch in single[:6] for i in batch]
    assert len(set(epoch0)) == 48  # within an epoch no index repeats
    assert single[6] != single[0]  # a new permutation per epoch


def test_sampler_is_deterministic_and_resumes() -> None:
    def make(**extra: int) -> GlobalBatchSampler:
        options = {"global_batch": 6, "world_size": 2, "rank": 1, "steps": 12, "seed": 3}
        return GlobalBatchSampler(30, **options, **extra)

    full = list(make())
    assert full == list(make())
    resumed = make(start_step=7)
    assert len(resumed) == 5
    assert list(resumed) == full[7:]
    other_seed = GlobalBatchSampler(30, global_batch=6, world_size=2, rank=1, steps=12, seed=4)
    assert list(other_seed) != full
    assert make().global_batch_at(7)[3:].tolist() == full[7]


def test_sampler_bad_inputs() -> None:
    with pytest.raises(BadInput, match="global batch 10 is not divisible by world size 4"):
        GlobalBatchSampler(100, global_batch=10, world_size=4, rank=0, steps=1, seed=0)
    with pytest.raises(BadInput, match="global batch 64 is larger than the 50"):
        GlobalBatchSampler(50, global_batch=64, world_size=1, rank=0, steps=1, seed=0)
    with pytest.raises(BadInput, match="rank 2 is invalid"):
        GlobalBatchSampler(50, global_batch=4, world_size=2, rank=2, steps=1, seed=0)


def test_dataloader_with_workers_yields_rank_batches(synthetic: PreparedData) -> None:
    from torch.utils.data import DataLoader

    dataset = DenoiseDataset(synthetic, "train", sigmas=[0.1], seed=0, augment=True)
    sampler = GlobalBatchSampler(
        len(dataset), global_batch=8, world_size=2, rank=1, steps=3, seed=0
    )
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    noisy, clean = batches[2]
    assert noisy.shape == clean.shape == (4, 1, 32, 32)
    expected = np.stack([dataset.arrays(k)[0] for k in list(sampler)[2]])
    assert np.array_equal(noisy.numpy()[:, 0], expected)
