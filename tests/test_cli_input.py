"""Bad command-line input is refused before any work, in one line with exit 2: every numeric
flag of every command, output folders that cannot be made, spec files and their data sources,
flags a command does not know; and a reader that stops early ends a command quietly."""
import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, TINY, run_cli, run_main


def _commands():
    import argparse

    from bench.cli import command_parser
    parser = command_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


# What each command needs besides the flag under test, so that only that flag can be refused.
REQUIRED = {"run": [], "parity": [], "env": [], "selfbench": [], "spec": [],
            "report": ["results"], "compare": ["base", "new"], "evaluate": [],
            "cell": ["quick", "--index", "0"], "status": ["results"], "slurm": ["quick"],
            "commbench": [], "predict": ["results"],
            "obfuscate": ["chest-sample", "out", "--sigma", "0.1"]}
_WORKLOAD = ("run", "parity")
# Flags for which 0 is a legitimate value, and why.
ZERO_OK = {
    **{(c, "--warmup"): "no untimed warm-up steps" for c in (*_WORKLOAD, "commbench")},
    **{(c, "--seed"): "seed 0 (the default)" for c in (*_WORKLOAD, "evaluate", "obfuscate")},
    **{(c, "--workers"): "the data is loaded in the training process" for c in _WORKLOAD},
    **{(c, "--zero"): "ZeRO stage 0 (DeepSpeed's plain data parallelism)" for c in _WORKLOAD},
    **{(c, "--noise"): "σ 0: a noise-free control" for c in (*_WORKLOAD, "evaluate")},
    ("run", "--sample-hz"): "telemetry off",
    **{(c, "--eval-every"): "no validation during training" for c in _WORKLOAD},
    ("cell", "--index"): "the first cell",
    **{("report", f"--margin-{m}"): "strict parity" for m in ("psnr", "ssim", "lpips")},
    ("predict", "--overlap"): "no communication hidden",
    ("predict", "--overhead"): "no fixed per-step overhead",
    ("predict", "--latency"): "a bandwidth-only link model",
}
# The noise mean N(mean, σ²) may be any finite number: 0, and a negative bias too.
MEAN = {("run", "--noise-mean"), ("parity", "--noise-mean"), ("evaluate", "--noise-mean"),
        ("obfuscate", "--mean")}
ZERO_OK.update({flag: "no bias" for flag in MEAN})


def numeric_flags():
    """(command, flag, action) for every option whose type is a number: plain int / float
    (which refuse nothing) or one of bench.config.numbers' checkers."""
    from bench.config.numbers import Number
    out = []
    for command, parser in _commands().items():
        for action in parser._actions:
            if action.option_strings and (action.type in (int, float)
                                          or isinstance(action.type, Number)):
                out.append((command, action.option_strings[0], action))
    return out


def _refusal(capsys, argv) -> str:
    from bench.cli import parse_args
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, (argv, err)
    return lines[0]


def test_every_numeric_flag_refuses_zero_a_negative_and_a_non_number(capsys):
    from bench.cli import parse_args
    commands = _commands()
    assert set(commands) == set(REQUIRED), "a new command: say in REQUIRED what it needs"
    flags = numeric_flags()
    seen = {(c, f) for c, f, _ in flags}
    # The walk reaches the flags of the issue, the plug-in's and every allow-listed one.
    assert {("predict", "--devices"), ("predict", "--nodes"), ("run", "--devices"),
            ("obfuscate", "--sigma"), *ZERO_OK} <= seen
    for command, flag, action in flags:
        base = [command, *REQUIRED[command]]
        values = ["abc", "nan"]
        values += [] if (command, flag) in MEAN else ["-2"]
        values += [] if (command, flag) in ZERO_OK else ["0"]
        for value in values:
            line = _refusal(capsys, [*base, flag, value])
            assert line.startswith("bench: error:") and flag in line and value in line, line
        for value in (["0"] if (command, flag) in ZERO_OK else []) + (
                ["-2"] if (command, flag) in MEAN else []):
            args = parse_args([*base, flag, value])
            got = getattr(args, action.dest)
            assert (got[0] if isinstance(got, list) else got) == float(value), (command, flag)


def test_the_issues_numbers_end_in_one_sentence(tmp_path):
    """`predict --devices 0` was a ZeroDivisionError traceback and `--devices -2` a table of
    negative figures; `--nodes 0` was accepted. Here over a results folder it could read."""
    from test_predict import _record
    cell = tmp_path / "single1"
    cell.mkdir()
    (cell / "record.json").write_text(json.dumps(_record("single", 1, 100.0, 0.16)))
    for argv in (["--devices", "0"], ["--devices", "-2"], ["--nodes", "0"]):
        result = run_cli("predict", tmp_path, "--bandwidth", "1", "--latency", "1", *argv,
                         timeout=120)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.strip().splitlines() == [
            f"bench: error: {argv[0]} {argv[1]} is invalid; it must be a whole number of "
            "at least 1"]


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs /proc")
def test_an_output_folder_that_cannot_be_made_is_refused_before_work(capsys, monkeypatch):
    """/proc takes no new folder, whatever its permission bits say to root."""
    import bench.sweep.plan as plan

    def no_work(*args, **kwargs):
        raise AssertionError("data was prepared before the output folder was checked")
    monkeypatch.setattr(plan, "plan_sweep", no_work)
    result = run_main(capsys, "run", *TINY, "--strategy", "single", "--data", "synthetic:8",
                      "--out", "/proc/benchout")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "/proc/benchout cannot be created" in lines[0]


def _spec_file(folder, data):
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s", "workload": {"data": data, "device": "cpu", "image_size": 32, "width": 4,
                                  "depth": 2, "steps": 3, "warmup": 1},
        "matrix": {"models": ["unet"], "configurations": [{"strategy": "single"}]}}))
    return path


def test_spec_checks_its_data_source_without_decoding(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "notes.txt").write_text("no image here")
    nih = tmp_path / "nih"
    (nih / "images_001" / "images").mkdir(parents=True)
    for data, needle in ((f"folder:{tmp_path / 'missing'}", "does not exist"),
                         (f"folder:{images}", "contains no PNG, JPEG or DICOM"),
                         (f"nih:{nih}", "Data_Entry_2017.csv does not exist")):
        result = run_main(capsys, "spec", _spec_file(tmp_path, data))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr
        assert result.stdout == ""
    # Image files that are there are enough: nothing is decoded to show a spec.
    (images / "a.png").write_bytes(b"not decoded by bench spec")
    result = run_main(capsys, "spec", _spec_file(tmp_path, f"folder:{images}"))
    assert result.returncode == 0 and "1 cells on cpu" in result.stdout, result.stderr


def test_devices_with_only_the_single_strategy_is_refused(capsys):
    for argv in (["--strategy", "single"], ["--precision", "bf16"]):
        result = run_main(capsys, "run", *TINY, *argv, "--devices", "4")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "--devices 4 applies only to multi-device strategies" in lines[0]


def test_more_gloo_ranks_than_cores_are_noted_before_the_run_starts(tmp_path, capsys,
                                                                    monkeypatch):
    from bench.measure.cores import usable_cores
    ranks = usable_cores() + 1
    note = f"note: ddp ×{ranks} on cpu runs {ranks} gloo ranks on {usable_cores()} usable"
    spec = _spec_file(tmp_path, "synthetic:16")
    raw = yaml.safe_load(spec.read_text())
    raw["workload"]["global_batch"] = 2 * ranks  # divisible by the ranks
    raw["matrix"]["configurations"] += [{"strategy": "ddp", "devices": ranks},
                                        {"strategy": "ddp", "devices": 1}]
    spec.write_text(yaml.safe_dump(raw))
    result = run_main(capsys, "spec", spec)
    assert result.returncode == 0 and result.stdout.count("share the cores") == 1
    assert f"# {note}" in result.stdout
    # `run` says it before its first cell starts.
    import bench.sweep.runner as runner

    class Started(Exception):
        pass

    def stop(*args, **kwargs):
        raise Started
    monkeypatch.setattr(runner, "run_cells", stop)
    with pytest.raises(Started):
        run_main(capsys, "run", *TINY, "--data", "synthetic:16", "--model", "unet",
                 "--strategy", "ddp", "--devices", ranks, "--batch", 2 * ranks,
                 "--out", tmp_path / "out")
    assert note in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["spec", "--schema"],
    ["predict", "{results}", "--json"],
    ["predict", "{results}"],  # a Rich table
])
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path, argv):
    """Into a pipe whose reader is already gone (as `| head -1` is after its line): no
    BrokenPipeError traceback, and the status a process killed by SIGPIPE reports."""
    from test_predict import _record
    cell = tmp_path / "single1"
    cell.mkdir()
    (cell / "record.json").write_text(json.dumps(_record("single", 1, 100.0, 0.16)))
    argv = [a.format(results=tmp_path) for a in argv] + (
        ["--bandwidth", "1", "--latency", "1"] if argv[0] == "predict" else [])
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_a_mistyped_flag_shows_the_commands_usage(capsys):
    result = run_main(capsys, "spec", "quick", "--devcie", "cpu")
    assert result.returncode == 2
    assert "usage: python -m bench spec" in result.stderr
    assert "COMMAND ..." not in result.stderr
    assert "unrecognized arguments: --devcie cpu (did you mean --device?)" in result.stderr


def test_an_empty_spec_file_says_so(tmp_path, capsys):
    for text in ("", "# only a comment\n", "---\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        result = run_main(capsys, "spec", path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert f"spec file {path} is empty" in lines[0] and "NoneType" not in lines[0]
    (tmp_path / "list.yaml").write_text("[1, 2]\n")
    result = run_main(capsys, "spec", tmp_path / "list.yaml")
    assert result.returncode == 2 and "holds '[1, 2]'" in result.stderr
