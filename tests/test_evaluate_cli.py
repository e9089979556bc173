"""`bench evaluate --weights`: a state dict scored on the fixed test split through the CLI gives
exactly what bench.worker.evaluate gives for the same weights; what it cannot score ends with
one sentence and exit 2 before any work."""
from __future__ import annotations

import json

import pytest
import torch

from bench.data import prepare
from bench.worker.evaluate import evaluate
from conftest import run_cli, run_main
from models import build_model

SIZE = 64
SMALL = ["--model", "unet", "--width", "4", "--depth", "2", "--image-size", str(SIZE),
         "--device", "cpu"]
KEYS = ("psnr", "ssim", "lpips", "noisy_psnr", "noisy_ssim", "noisy_lpips")


def _trained_like(arch: str, **options) -> torch.nn.Module:
    """A small model whose weights are nothing a fresh build has: random running statistics
    and an output offset, so its output tracks the input (and a load that silently kept
    fresh weights would score differently)."""
    torch.manual_seed(7)
    model = build_model("unet", arch=arch, width=4, depth=2, **options)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_mean"):
                tensor.copy_(torch.randn_like(tensor) * 0.1)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.05)
    return model.eval()


def _direct(model, sigmas, noise_mean) -> list[dict]:
    prepared = prepare("chest-sample", image_size=SIZE, seed=0)
    return evaluate(model, prepared, sigmas=sigmas, seed=0, noise_mean=noise_mean,
                    device="cpu")[0]


def _same_scores(got: list[dict], want: list[dict]) -> None:
    assert [q["sigma"] for q in got] == [q["sigma"] for q in want]
    for g, w in zip(got, want):
        assert g["test_images"] == w["test_images"] > 0
        for key in KEYS:
            assert g[key] == pytest.approx(w[key], abs=1e-6), (g["sigma"], key)


def _one_sentence_exit_2(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr.strip()
    assert err.startswith("bench: error: ") and "\n" not in err, err
    assert result.stdout == ""
    return err


def test_seed_weights_score_as_the_model_itself(tmp_path, capsys):
    """The seed's own key names, saved through DDP (a "module." prefix), load into arch seed
    and score exactly as the model does when evaluated directly."""
    model = _trained_like("seed")
    weights = tmp_path / "seed-unet.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, weights)

    result = run_main(capsys, "evaluate", "--weights", weights, "--arch", "seed", *SMALL,
                      "--noise", "0.1", "0.2", "--noise-mean", "0.1", "--json")
    assert result.returncode == 0, result.stderr
    want = _direct(model, [0.1, 0.2], 0.1)
    _same_scores(json.loads(result.stdout), want)
    # The check has teeth: fresh weights of the same network score otherwise.
    torch.manual_seed(0)
    fresh = _direct(build_model("unet", arch="seed", width=4, depth=2), [0.1], 0.1)
    assert abs(fresh[0]["psnr"] - want[0]["psnr"]) > 0.01


def test_bench_weights_print_the_table_and_write_json(tmp_path):
    """arch bench, in a fresh process as a user runs it: the Rich table per σ and --out."""
    model = _trained_like("bench", norm="group", residual=True)
    weights = tmp_path / "bench-unet.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "scores.json"
    result = run_cli("evaluate", "--weights", weights, *SMALL, "--noise", "0.1", "--out", out,
                     timeout=120)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for needle in ("PSNR dB model", "PSNR dB noisy", "SSIM model", "LPIPS noisy",
                   "unet (arch bench, width 4, depth 2)", "test split of chest-sample"):
        assert needle in text, needle
    got = json.loads(out.read_text())
    _same_scores(got, _direct(model, [0.1], 0.0))
    assert f"{got[0]['psnr']:.2f}" in text and f"{got[0]['noisy_psnr']:.2f}" in text


@pytest.mark.parametrize("arch", ["seed", "bench"])
def test_a_renamed_key_is_named_in_one_sentence(tmp_path, capsys, arch):
    options = {"norm": "group", "residual": True} if arch == "bench" else {}  # the CLI's
    state = build_model("unet", arch=arch, width=4, depth=2, **options).state_dict()
    first = next(iter(state))
    state[first + "_renamed"] = state.pop(first)
    weights = tmp_path / "renamed.pt"
    torch.save(state, weights)
    err = _one_sentence_exit_2(run_main(capsys, "evaluate", "--weights", weights,
                                        "--arch", arch, *SMALL))
    assert f"missing key (first: {first})" in err
    assert f"unexpected key (first: {first}_renamed)" in err
    assert str(weights) in err


def test_another_architectures_weights_are_named(tmp_path, capsys):
    weights = tmp_path / "seed.pt"
    torch.save(build_model("unet", arch="seed", width=4, depth=2).state_dict(), weights)
    err = _one_sentence_exit_2(run_main(capsys, "evaluate", "--weights", weights, *SMALL))
    assert "missing keys" in err and "its key names are those of --arch seed" in err


def test_a_missing_weights_file_is_refused(tmp_path, capsys):
    err = _one_sentence_exit_2(run_main(capsys, "evaluate", "--weights", tmp_path / "none.pt",
                                        "--arch", "seed", *SMALL))
    assert "does not exist" in err


@pytest.mark.parametrize("content,needle", [
    (b"not a model at all", "not a file torch.save wrote"),
    (b"", "ends too early"),
])
def test_a_garbage_file_is_refused(tmp_path, capsys, content, needle):
    weights = tmp_path / "garbage.pt"
    weights.write_bytes(content)
    err = _one_sentence_exit_2(run_main(capsys, "evaluate", "--weights", weights,
                                        "--arch", "seed", *SMALL))
    assert "cannot be read as a torch state dict" in err and needle in err


def test_a_pickled_module_is_refused_without_running_its_code(tmp_path, capsys):
    weights = tmp_path / "whole-model.pt"
    torch.save(build_model("unet", arch="seed", width=4, depth=2), weights)
    err = _one_sentence_exit_2(run_main(capsys, "evaluate", "--weights", weights,
                                        "--arch", "seed", *SMALL))
    assert "SeedUNet" in err and "state_dict()" in err


@pytest.mark.parametrize("extra,needle", [
    (["--arch", "seed", "--norm", "group"], "fixes norm to 'batch'"),
    (["--arch", "nope"], "unknown arch 'nope'"),
    (["--image-size", "30"], "image size 30"),
    (["--noise", "-1"], "--noise/--sigma -1 is invalid"),
    (["--data", "folder:/no/such/folder"], "/no/such/folder"),
    (["--realisations", "3"], "--realisations"),
])
def test_bad_options_are_refused_before_work(tmp_path, capsys, extra, needle):
    weights = tmp_path / "bench.pt"
    torch.save(build_model("unet", width=4, depth=2, norm="group", residual=True).state_dict(),
               weights)
    err = _one_sentence_exit_2(run_main(capsys, "evaluate", "--weights", weights, *SMALL,
                                        *extra))
    assert needle in err


def test_nothing_to_score_and_a_saved_model_with_model_flags(tmp_path, capsys):
    assert "nothing to score" in _one_sentence_exit_2(run_main(capsys, "evaluate"))
    err = _one_sentence_exit_2(run_main(capsys, "evaluate", tmp_path / "model.pt",
                                        "--data", "chest-sample", "--width", "4"))
    assert "carries its own model" in err and "--width" in err
    err = _one_sentence_exit_2(run_main(capsys, "evaluate", tmp_path, "--data", "chest-sample"))
    assert "holds no model.pt" in err
