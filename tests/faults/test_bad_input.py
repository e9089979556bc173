"""Every malformed input: one sentence on stderr naming the problem, exit status 2, and no
results folder left behind — checked before any work starts."""
import numpy as np
import pytest

from conftest import TINY, run_cli, run_main


BAD = [
    (["--data", "folder:/nonexistent/xrays"], "does not exist"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--noise", "-0.1"], "-0.1"),
    (["--batch", "0"], "batch 0"),
    (["--steps", "3", "--warmup", "3"], "must exceed --warmup"),
    (["--strategy", "warp"], "unknown strategy 'warp'"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
    (["--strategy", "single", "--precision", "fp16"], "fp16 needs a CUDA GPU"),
    (["--strategy", "ddp", "--devices", "3", "--batch", "8"], "not divisible by 3"),
    (["--strategy", "deepspeed", "--zero", "4", "--devices", "2"], "--zero 4 is invalid"),
    (["--strategy", "ddp", "--zero", "1"], "applies only to --strategy deepspeed"),
    (["--image-size", "30"], "30"),
    (["--image-size", "16"], "too small to evaluate"),  # divides by 2**depth, but LPIPS can't
    (["--strategy", "deepspeed", "--zero", "-1", "--devices", "2"], "--zero -1 is invalid"),
    (["--norm", "layer"], "layer"),
    (["--lr", "-1"], "--lr -1 is invalid"),
    (["--repeats", "0"], "--repeats 0"),
    (["--epochs", "0"], "--epochs 0"),
    (["--batch", "100000"], "exceeds"),
    (["--strategy", "deepspeed", "--devices", "2", "--precision", "fp16"], "fp16 needs a CUDA GPU"),
    (["--strategy", "fsdp", "--devices", "0"], "--devices 0"),
    (["--scaling", "diagonal"], "unknown scaling 'diagonal'"),
    (["--data", "martian:/x"], "martian"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_sentence_and_no_results(tmp_path, capsys, args, needle):
    out_dir = tmp_path / "results"
    result = run_main(capsys, "run", *TINY, "--out", out_dir, *args)
    assert result.returncode == 2, result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), result.stderr
    assert needle in lines[0]
    assert not out_dir.exists()


SPECS = [
    ("name: x\nmatrix: [unclosed\n", "not valid YAML"),
    ("name: x\nworkload: {steps: 4}\nmatrx: {}\n", "matrx"),
    ("name: x\nmatrix: {}\n", "matrix is empty"),
    ("name: x\nmatrix: {configurations: []}\n", "non-empty list"),
    ("name: x\nmatrix: {configurations: [{strategy: warp}]}\n", "warp"),
    ("name: x\nworkload: {steps: two}\n", "workload.steps"),
]


@pytest.mark.parametrize("text,needle", SPECS, ids=["malformed-yaml", "unknown-key",
                         "empty-matrix", "no-configurations", "unknown-strategy", "bad-type"])
def test_bad_spec_exits_2_with_one_sentence_and_no_results(tmp_path, capsys, text, needle):
    spec, out_dir = tmp_path / "sweep.yaml", tmp_path / "results"
    spec.write_text(text)
    result = run_main(capsys, "run", spec, "--out", out_dir)
    assert result.returncode == 2, result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), result.stderr
    assert needle in lines[0]
    assert not out_dir.exists()


def test_cuda_without_a_visible_gpu_is_refused(tmp_path):
    """Hidden GPUs on a GPU host too, so the refusal is tested everywhere (a real process:
    CUDA visibility is fixed when torch starts)."""
    out_dir = tmp_path / "results"
    result = run_cli("run", *TINY, "--out", out_dir, "--device", "cuda",
                     env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2, result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no CUDA GPU is visible" in lines[0], result.stderr
    assert not out_dir.exists()


def test_unwritable_output_folder_is_named(tmp_path):
    # Root may write anywhere, so make the parent a regular file: nothing can be created there.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli("run", *TINY, "--out", blocker / "results")
    assert result.returncode == 2 and "cannot be created" in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def _folder_with(tmp_path, broken_name: str, broken_bytes: bytes | None = None, dicom=False):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray((np.random.default_rng(i).random((40, 40)) * 255).astype("uint8")).save(
            folder / f"ok{i}.png")
    if dicom:
        import pydicom
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.PatientName = "Nobody"
        ds.Modality = "CR"
        ds.save_as(folder / broken_name, enforce_file_format=True)
    else:
        (folder / broken_name).write_bytes(broken_bytes)
    return folder


@pytest.mark.parametrize("name,content,dicom", [
    ("broken.png", b"\x89PNG\r\n\x1a\nnot really", False),
    ("empty.jpg", b"", False),
    ("nopixels.dcm", None, True),
], ids=["corrupt-png", "empty-jpeg", "dicom-without-pixels"])
def test_undecodable_image_is_named(tmp_path, capsys, name, content, dicom):
    folder = _folder_with(tmp_path, name, content, dicom)
    out_dir = tmp_path / "results"
    result = run_main(capsys, "run", *TINY, "--out", out_dir, "--data", f"folder:{folder}")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and name in lines[0], result.stderr
    assert not out_dir.exists()
