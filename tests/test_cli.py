"""The CLI: fast start-up, and one clear sentence with exit 2 for each bad input."""
import subprocess
import sys

from conftest import REPO, run_cli


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
    assert info["torch"] and info["cpu"] and "git_commit" in info
    import torch
    assert len(info["gpus"]) == torch.cuda.device_count()
