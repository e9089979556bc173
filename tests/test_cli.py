"""The CLI: fast start-up, and one clear sentence with exit 2 for each bad input."""
import subprocess
import sys

import pytest

from conftest import REPO, TINY, run_cli


def test_help_lists_commands_without_importing_torch():
    code = ("import sys\nfrom bench.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert "run" in out.stdout and "parity" in out.stdout and "env" in out.stdout
    assert out.stdout.strip().endswith("NOTORCH")


def test_env_json():
    import json
    out = run_cli("env", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["torch"] and info["cpu"] and "git_commit" in info and info["gpus"] == []


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
    (["--strategy", "deepspeed", "--zero", "4", "--devices", "2"], "ZeRO stage 4"),
    (["--strategy", "ddp", "--zero", "1"], "applies only to --strategy deepspeed"),
    (["--device", "cuda"], "no CUDA GPU is visible"),
    (["--image-size", "30"], "30"),
    (["--norm", "layer"], "layer"),
    (["--lr", "-1"], "learning rate"),
    (["--repeats", "0"], "--repeats 0"),
    (["--batch", "100000"], "exceeds"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_sentence_and_no_results(tmp_path, args, needle):
    out_dir = tmp_path / "results"
    result = run_cli("run", *TINY, "--out", out_dir, *args)
    assert result.returncode == 2, result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), result.stderr
    assert needle in lines[0]
    assert not out_dir.exists()


def test_corrupt_image_is_named(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image
    import numpy as np
    for i in range(4):
        Image.fromarray((np.random.default_rng(i).random((40, 40)) * 255).astype("uint8")).save(
            folder / f"ok{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out_dir = tmp_path / "results"
    result = run_cli("run", *TINY, "--out", out_dir, "--data", f"folder:{folder}")
    assert result.returncode == 2
    assert "broken.png" in result.stderr
    assert not out_dir.exists()


def test_unwritable_output_folder(tmp_path):
    # Root may write anywhere, so make the parent a regular file: nothing can be created there.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli("run", *TINY, "--out", blocker / "results")
    assert result.returncode == 2 and "cannot be created" in result.stderr, result.stderr
