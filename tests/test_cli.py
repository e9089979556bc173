"""The CLI: fast start-up, and one clear sentence with exit 2 for each bad input."""
import subprocess
import sys

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


def test_unwritable_output_folder(tmp_path):
    # Root may write anywhere, so make the parent a regular file: nothing can be created there.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli("run", *TINY, "--out", blocker / "results")
    assert result.returncode == 2 and "cannot be created" in result.stderr, result.stderr
