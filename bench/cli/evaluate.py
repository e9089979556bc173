"""`bench evaluate`: score a model's weights on the fixed test split — PSNR, SSIM and LPIPS per
noise level, beside the noisy input — with the evaluation every training run uses
(bench.worker.evaluate).

Two forms. `--weights FILE` with the model flags: a bare torch-saved state dict (the seed
study's own, with `--arch seed` / `seed-ddp`, or bench's), loaded strictly. `MODEL`: a model.pt
a run saved (or its cell folder), whose cell gives the model; that is the two-site plug-in's
scoring and privacy audit (bench.twosite.cli.cmd_evaluate). Every bad input ends the command
with one sentence and exit 2 before the test split is scored.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.config.cell import Cell, model_options
from bench.errors import BadInput

DEFAULT = Cell()
_MODEL_FLAGS = (("--weights", "weights"), ("--model", "model"), ("--arch", "arch"),
                ("--width", "width"), ("--depth", "depth"), ("--norm", "norm"),
                ("--upsample", "upsample"), ("--deep-supervision", "deep_supervision"),
                ("--[no-]residual", "residual"))


def cmd_evaluate(args) -> int:
    if args.saved is not None:
        return _saved_model(args)
    if args.weights is None:
        raise BadInput("nothing to score: give a state dict with --weights FILE (and the model "
                       "flags), or a model.pt a run saved as MODEL")
    if args.realisations is not None:
        raise BadInput("--realisations is for the privacy audit of a saved MODEL, not for "
                       "--weights")
    from bench.sweep.hardware import default_device_type
    from bench.sweep.plan import check_output_dir

    device = default_device_type(args.device)
    if args.out is not None:
        check_output_dir(args.out)
    cell = _cell(args)
    model = _build(cell)
    _load_weights(model, _read_weights(args.weights), args.weights, cell)
    prepared = _prepare(cell, args.cache_dir)

    from bench.worker.evaluate import evaluate
    quality, _ = evaluate(model, prepared, sigmas=cell.noise, seed=cell.seed,
                          noise_mean=cell.noise_mean, device=device)
    if args.out is not None:
        from bench.record import store
        store.write_json(args.out, quality)
    if args.json:
        print(json.dumps(quality, indent=2))
    else:
        _render(quality, cell, args.weights, device)
    return 0


# --------------------------------------------------------------------------- MODEL (model.pt)


def _saved_model(args) -> int:
    """A run's model.pt: the two-site plug-in scores it and audits the noise's protection."""
    from bench.twosite.cli import cmd_evaluate as score_saved_model
    from bench.twosite.model_file import MODEL_FILE

    given = [flag for flag, key in _MODEL_FLAGS if getattr(args, key) is not None]
    if given:
        raise BadInput(f"MODEL {args.saved} carries its own model; drop {', '.join(given)}, or "
                       "score a bare state dict with --weights FILE instead of MODEL")
    if args.data is None:
        raise BadInput(f"scoring MODEL {args.saved} needs --data SRC, the clean source whose "
                       "test split it is scored on")
    path = Path(args.saved).expanduser()
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise BadInput(f"folder {path} holds no {MODEL_FILE}; give a trained cell's folder "
                           "or the model file itself")
        path = path / MODEL_FILE
    return score_saved_model(argparse.Namespace(
        model=path, data=args.data, sigma=args.noise, mean=args.noise_mean, seed=args.seed,
        image_size=args.image_size, limit=args.limit, skip_bad=args.skip_bad,
        realisations=2 if args.realisations is None else args.realisations,
        device=args.device, json=args.json, out=args.out, cache_dir=args.cache_dir))


# --------------------------------------------------------------------------- --weights FILE


def _cell(args) -> Cell:
    """The workload as a Cell (the one source of defaults; a seed arch implies batch norm and a
    plain output, as for `run`), with noise, mean and seed checked."""
    from bench.config.spec import SEED_ARCH_DEFAULTS, seed_arch_defaults
    from bench.data.noise import validate_mean, validate_seed, validate_sigma

    arch = args.arch or DEFAULT.arch
    implied = seed_arch_defaults({arch}, given={k for k in SEED_ARCH_DEFAULTS
                                                if getattr(args, k) is not None})

    def pick(key: str, value):
        return value if value is not None else implied.get(key, getattr(DEFAULT, key))

    return Cell(
        model=pick("model", args.model), arch=arch, width=pick("width", args.width),
        depth=pick("depth", args.depth), norm=pick("norm", args.norm), upsample=args.upsample,
        deep_supervision=bool(args.deep_supervision), residual=pick("residual", args.residual),
        noise=tuple(validate_sigma(s) for s in (args.noise or DEFAULT.noise)),
        noise_mean=validate_mean(pick("noise_mean", args.noise_mean)),
        seed=validate_seed(args.seed), data=pick("data", args.data),
        image_size=pick("image_size", args.image_size), limit=args.limit,
        skip_bad=args.skip_bad)


def _build(cell: Cell):
    from bench.measure.metrics import LPIPS_MIN_SIDE
    from models import ModelOptionError, build_model, check_image_size

    try:
        model = build_model(cell.model, **model_options(cell))
        check_image_size(cell.depth, cell.image_size)
    except ModelOptionError as exc:
        raise BadInput(str(exc)) from None
    if cell.image_size < LPIPS_MIN_SIDE:
        raise BadInput(f"image size {cell.image_size} is too small to evaluate; LPIPS's AlexNet "
                       f"needs at least {LPIPS_MIN_SIDE} px")
    return model


def _read_weights(path: Path) -> dict:
    """The state dict in `path` (read with weights_only=True: no pickled code runs), without a
    training wrapper's traces (models.state_dict_of)."""
    import torch

    from models import WeightsError, state_dict_of

    path = Path(path).expanduser()
    if path.is_dir():
        raise BadInput(f"weights file {path} is a folder; give the state dict file (a run's "
                       "cell folder goes without --weights, as MODEL)")
    if not path.is_file():
        raise BadInput(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever a bad file raises, the answer is one line
        raise BadInput(f"weights file {path} cannot be read as a torch state dict: "
                       f"{_load_failure(exc)}") from None
    try:
        return state_dict_of(obj, f"weights file {path}")
    except WeightsError as exc:
        raise BadInput(str(exc)) from None


def _load_weights(model, weights: dict, path: Path, cell: Cell) -> None:
    """Strict load; one sentence naming the first missing / unexpected / misshapen keys and,
    when the key names are another architecture's, the flags that build it."""
    from models import fit_problem

    problem = fit_problem(model, weights)
    if problem:
        hint = "" if "look like" in problem else _hint(model, cell, weights)
        raise BadInput(f"weights file {path} does not fit {cell.model} (arch {cell.arch}, width "
                       f"{cell.width}, depth {cell.depth}, norm {cell.norm}, residual "
                       f"{cell.residual}): {problem}{hint}")
    model.load_state_dict(weights, strict=True)


def _hint(model, cell: Cell, weights: dict) -> str:
    """When the file's key names are another architecture's, which flags build that one."""
    import torch

    from models import ARCHS, ModelOptionError, build_model

    keys = set(weights)
    if keys == set(model.state_dict()):  # only shapes differ: the width, not the layout
        return ""
    candidates = [(a, {}) for a in ARCHS if a not in ("bench", cell.arch)] + [
        ("bench", {"norm": n, "residual": r}) for r in (True, False)
        for n in ("group", "batch", "none")
        if cell.arch != "bench" or (n, r) != (cell.norm, cell.residual)]
    for other, extra in candidates:
        options = {"width": 1, "depth": cell.depth, "arch": other, **extra}
        if other == "bench":  # the layout flags the seed arches fix
            options.update(upsample=cell.upsample, deep_supervision=cell.deep_supervision)
        try:
            with torch.device("meta"):
                names = set(build_model(cell.model, **options).state_dict())
        except ModelOptionError:
            continue
        if names == keys:
            flags = f"--arch {other}"
            if extra:
                flags += f" --norm {extra['norm']} --{'' if extra['residual'] else 'no-'}residual"
            return f"; its key names are those of {flags}"
    return ""


def _prepare(cell: Cell, cache_dir):
    from bench.data import prepare

    prepared = prepare(cell.data, image_size=cell.image_size, seed=cell.seed, limit=cell.limit,
                       skip_bad=cell.skip_bad, cache_dir=cache_dir)
    if not prepared.has_clean:
        raise BadInput(f"data source {cell.data} holds no clean images to score against")
    if len(prepared.split("test")) == 0:
        raise BadInput(f"data source {cell.data} yields no test images at image size "
                       f"{cell.image_size}")
    return prepared


# --------------------------------------------------------------------------- output


def _render(quality: list[dict], cell: Cell, path: Path, device: str) -> None:
    from rich.table import Table

    from reports.text import QUALITY_UNITS, console, fmt

    table = Table(title=f"{cell.model} (arch {cell.arch}, width {cell.width}, depth {cell.depth}) "
                        f"· {path}",
                  caption=f"test split of {cell.data}: {quality[0]['test_images']} images at "
                          f"{cell.image_size} px · noise mean {cell.noise_mean:g} · seed "
                          f"{cell.seed} · {device}")
    table.add_column("σ", justify="right")
    for label, _, _ in QUALITY_UNITS.values():
        table.add_column(f"{label} model", justify="right")
        table.add_column(f"{label} noisy", justify="right", style="dim")
    for q in quality:
        cells = [f"{q['sigma']:g}"]
        for key, (_, spec, _) in QUALITY_UNITS.items():
            cells += [fmt(q.get(key), spec), fmt(q.get(f"noisy_{key}"), spec)]
        table.add_row(*cells)
    console().print(table)


def _load_failure(error: BaseException) -> str:
    """torch.load's many-line refusal, as one clause."""
    import re

    text = str(error)
    pickled = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if pickled:
        return (f"it holds a pickled {pickled.group(1)}, which weights_only loading refuses "
                "(no pickled code runs here); save model.state_dict() instead")
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if detail:
        return f"it is not a file torch.save wrote, or it is damaged ({detail.group(1).strip()})"
    if isinstance(error, EOFError):
        return "it ends too early (empty, or cut short)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if "PytorchStreamReader" in text:
        return "it is not a file torch.save wrote, or it is damaged (not a readable archive)"
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    """The first sentence of an error, short enough for a one-line message."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.split(". ")[0].rstrip(".")[:160]
