"""`--skip-bad` is said where a user reads: `run` names the files it left out before training,
and `report` says so too — not only `record.json`."""
import numpy as np
from PIL import Image

from conftest import TINY, run_cli


def test_run_and_report_name_the_files_skip_bad_left_out(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for k in range(12):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(root / f"{k:02}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "out"
    run = run_cli("run", *TINY, "--model", "unet", "--strategy", "single", "--data",
                  f"folder:{root}", "--skip-bad", "--out", out, "--cache-dir", tmp_path / "c")
    assert run.returncode == 0, run.stderr
    said = f"--skip-bad left out 1 undecodable file(s) of folder:{root}: broken.png"
    text = " ".join(run.stdout.split())
    assert text.index(said) < text.index("speedup summary")  # before the work, and again
    assert text.count(said) == 2
    report = run_cli("report", out)
    assert report.returncode == 0, report.stderr
    assert said in " ".join(report.stdout.split())
