"""Shared test set-up: a per-session decoded-image cache and a helper to run the CLI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def one_thread():
    """For tests of tiny models: extra threads only add sync overhead, badly so on a busy box."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """One cache for the whole session, so tests never touch the user's ~/.cache/bench."""
    cache = tmp_path_factory.mktemp("bench-cache")
    os.environ["BENCH_CACHE_DIR"] = str(cache)
    yield cache


def run_cli(*args, timeout=900, env=None):
    """`python -m bench ARGS` in a fresh process, as a user would run it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def run_main(capsys, *args):
    """bench's `main` in this process: the function `python -m bench` exits with, without a
    new interpreter each time. For input that must be refused before any work starts; what
    runs cells or needs a real exit status uses run_cli."""
    from bench.cli import main
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


# Small, fast workload shared by end-to-end tests: every strategy trains the same thing, on
# the CPU (gloo ranks) even where a GPU is visible, so the suite means the same everywhere.
TINY = ["--device", "cpu", "--steps", "6", "--warmup", "2", "--batch", "8", "--width", "4", "--depth", "2",
        "--image-size", "32", "--sample-hz", "5"]


def run_spec(folder: Path, spec: dict) -> list[dict]:
    """Write `spec` as a YAML file in `folder`, run it as a user would (`bench run FILE`) and
    return its records; the run must succeed and every record be readable."""
    import yaml

    from bench.record import store
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = folder / "results"
    result = run_cli("run", folder / "spec.yaml", "--out", out)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    records, unreadable = store.records(out)
    assert not unreadable
    return records


# The tiny workload as a spec: one `bench run` trains every strategy (one process to start),
# for tests/test_strategies.py and tests/test_fsdp.py alike (ZeRO-3 is test_fsdp's).
STRATEGIES_SPEC = {
    "name": "strategies",
    "workload": {"device": "cpu", "steps": 6, "warmup": 2, "global_batch": 8, "width": 4,
                 "depth": 2, "image_size": 32, "sample_hz": 5},
    "matrix": {"models": ["unet"], "configurations": [
        {"strategy": "single"},
        {"strategy": "dp", "devices": 2},
        {"strategy": "ddp", "devices": 2, "precision": "fp32"},
        {"strategy": "ddp", "devices": 2, "precision": "bf16"},
        {"strategy": "deepspeed", "devices": 2, "precision": "fp32", "zero": 1},
        {"strategy": "deepspeed", "devices": 2, "precision": "bf16", "zero": 2},
        {"strategy": "deepspeed", "devices": 2, "precision": "fp32", "zero": 3},
        {"strategy": "fsdp", "devices": 2, "precision": "fp32"}]}}


@pytest.fixture(scope="session")
def strategies_sweep(tmp_path_factory):
    """Every record of STRATEGIES_SPEC by (strategy, precision, ZeRO stage)."""
    records = run_spec(tmp_path_factory.mktemp("strategies"), STRATEGIES_SPEC)
    return {(r["cell"]["strategy"], r["cell"]["precision"], r["cell"]["zero_stage"]): r
            for r in records}
