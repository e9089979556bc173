"""Back at Site One: saved models, their score on clean images, and the privacy audit.

Every trained cell saves ``model.pt`` (`bench.twosite.model_file`, this plug-in's
after-training hook). ``evaluate_model`` (``python -m bench evaluate``) scores such a model on the
clean test split of a source with ``bench.worker.evaluate.evaluate`` — the code every training run
uses — and audits, per noise level, what the obfuscation protects and what the model gives
back:

- protection: the obfuscated (noisy) image against the clean one;
- recovered: the model's output from that noisy image against the clean one;
- gap: recovered minus protection (dB of PSNR, SSIM, LPIPS);
- averaged: the mean of R independent realisations of each image (the realisations a
  noise2noise export releases), minus the declared noise mean: no model needed.

The noisy test inputs are drawn with ``seed`` (noise stream i + k·2⁴⁰ for realisation k of
image i, as in an export): fresh realisations at the same σ, statistically the same as the
released ones, whose key stays secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from bench.errors import BadInput
# model.pt's names, re-exported: callers knew them as bench.twosite.audit's.
from bench.twosite.model_file import (MODEL_FILE, MODEL_FORMAT, SavedModel,  # noqa: F401
                                      load_model, save_model)

STATEMENT = (
    "Additive Gaussian noise is not a privacy guarantee: it carries no formal bound (it is not "
    "differential privacy), a denoiser trained on the released images — which needs no clean "
    "image — gives back much of each clean image, averaging the released realisations lowers "
    "the noise by the square root of their number, and anyone who learns the noise key can "
    "subtract the noise exactly."
)


# --------------------------------------------------------------------------- evaluation


def evaluate_model(
    model_path: str | Path,
    source: str,
    *,
    sigmas: Sequence[float] | None = None,
    seed: int = 0,
    noise_mean: float | None = None,
    image_size: int | None = None,
    limit: int | None = None,
    skip_bad: bool = False,
    realisations: int = 2,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score a saved model on the clean test images of ``source`` and audit the privacy the
    noise gives. σ, noise mean and image size default to the model's own cell; ``seed`` is
    the split seed of the source (the one given to ``obfuscate``) and seeds the test noise."""
    from bench.data import prepare
    from bench.worker.evaluate import evaluate
    from bench.data.noise import validate_mean, validate_seed, validate_sigma
    from models import check_image_size

    saved = load_model(model_path)
    cell = saved.cell
    if isinstance(source, str) and source.strip().startswith("obfuscated:"):
        raise BadInput(f"data source {source!r} holds no clean images; evaluate at Site One on "
                       "the clean source the folder was made from")
    sigmas = [validate_sigma(s) for s in (sigmas if sigmas else cell.noise)]
    noise_mean = validate_mean(cell.noise_mean if noise_mean is None else noise_mean)
    seed = validate_seed(seed)
    if isinstance(realisations, bool) or not isinstance(realisations, int) or realisations < 1:
        raise BadInput(f"--realisations {realisations!r} is invalid; it must be an integer >= 1")
    image_size = cell.image_size if image_size is None else image_size
    check_image_size(cell.depth, image_size)
    prepared = prepare(source, image_size=image_size, seed=seed, limit=limit, skip_bad=skip_bad,
                       cache_dir=cache_dir)
    if len(prepared.split("test")) == 0:
        raise BadInput(f"data source {source} yields no test images at image size {image_size}")

    quality, _ = evaluate(saved.model, prepared, sigmas=sigmas, seed=seed,
                          noise_mean=noise_mean, device=device)
    audit = [_audit_level(q, prepared, seed=seed, noise_mean=noise_mean,
                          realisations=realisations) for q in quality]
    return {
        "model": str(saved.path),
        "cell_id": cell.cell_id,
        "fingerprint": saved.fingerprint,
        "model_name": cell.model,
        "target": cell.target,
        "trained_on": cell.data,
        "clean_data_left_site_one": cell.target == "clean",
        "training_note": _training_note(cell),
        "data": {"source": prepared.source, "description": prepared.description,
                 "image_size": image_size, "seed": seed, "noise_mean": noise_mean,
                 "test_images": len(prepared.split("test"))},
        "quality": quality,
        "audit": audit,
        "statement": STATEMENT,
    }


def _training_note(cell) -> str:
    if cell.target == "noise2noise":
        return ("trained with noise2noise on an obfuscated folder: its training read no clean "
                "image")
    if cell.data.startswith("obfuscated:"):
        return ("trained with clean targets that Site One sent with the obfuscated folder: clean "
                "data left Site One")
    return ("trained with clean targets on the clean source: the training read clean images, so "
            "in a two-site setting clean data left Site One")


def audit_level(q: dict) -> dict[str, Any]:
    """One σ of the audit from one entry of a record's quality list: the obfuscated image
    against the clean one (protection), the model's output (recovered) and the gap."""
    keys = ("psnr", "ssim", "lpips")
    protection = {k: q.get(f"noisy_{k}") for k in keys}
    recovered = {k: q.get(k) for k in keys}
    gap = {k: (recovered[k] - protection[k]
               if recovered[k] is not None and protection[k] is not None else None) for k in keys}
    return {"sigma": q["sigma"], "protection": protection, "recovered": recovered, "gap": gap}


TRAINING_RUN = "training run"  # the audit's `measured_at` when a training run scored itself


def record_audit(cell, quality: list[dict], measured_at: str,
                 levels: list[dict] | None = None) -> dict[str, Any]:
    """The `audit` section of a record: every training run scores its model against clean
    test images, which is exactly what the audit needs; `bench evaluate` at Site One replaces
    it with its own (which adds the averaged realisations)."""
    return {"measured_at": measured_at, "target": cell.target,
            "clean_data_left_site_one": cell.target == "clean",
            "training_note": _training_note(cell),
            "levels": levels if levels is not None else [audit_level(q) for q in quality],
            "statement": STATEMENT}


def record_extras(record: dict, *, cell, prepared, cell_dir: Path) -> dict[str, Any]:
    """The record-extras hook (bench.plugins): a training run that scored its model on clean
    images carries its audit; one trained on an obfuscated folder says so (two_site, notes)."""
    from bench.twosite.obfuscate import record_fields

    extra: dict[str, Any] = {}
    if record.get("quality"):
        extra["audit"] = record_audit(cell, record["quality"], TRAINING_RUN)
    extra.update(record_fields(cell, prepared, record["notes"], Path(cell_dir)))
    return extra


def attach_to_record(report: dict[str, Any]) -> Path | None:
    """Put a Site One evaluation's audit into the record of the cell that saved the model,
    when that record sits beside it; the record file it updated, or None."""
    from bench.record import store
    from bench.config.cell import Cell
    cell_dir = Path(report["model"]).parent
    record = store.read_record(cell_dir)
    if record is None or record.get("cell_id") != report["cell_id"]:
        return None
    record["audit"] = record_audit(Cell.from_dict(record["cell"]), report["quality"],
                                   f"bench evaluate on {report['data']['source']}",
                                   levels=report["audit"])
    store.write_json(cell_dir / store.RECORD, record)
    return cell_dir / store.RECORD


def _audit_level(q: dict, prepared, *, seed: int, noise_mean: float,
                 realisations: int) -> dict[str, Any]:
    return {**audit_level(q),
            "averaged": _averaged_quality(prepared, q["sigma"], seed=seed, noise_mean=noise_mean,
                                          realisations=realisations)}


def _averaged_quality(prepared, sigma: float, *, seed: int, noise_mean: float,
                      realisations: int) -> dict[str, Any]:
    """Quality of the mean of ``realisations`` noisy copies of every test image (mean removed)."""
    import numpy as np
    import torch

    from bench.measure import metrics
    from bench.data import to_unit
    from bench.twosite.obfuscate import realisation_image_id
    from bench.data.noise import obfuscate

    images = prepared.images()
    clean, averaged = [], []
    for index in prepared.split("test"):
        image = to_unit(images[int(index)])
        copies = [obfuscate(image, sigma=sigma, seed=seed, mean=noise_mean,
                            image_id=realisation_image_id(int(index), k))
                  for k in range(realisations)]
        clean.append(image)
        averaged.append(np.clip(np.mean(copies, axis=0) - noise_mean, 0.0, 1.0))
    as_tensor = [torch.from_numpy(np.stack(a)[:, None].astype(np.float32))
                 for a in (averaged, clean)]
    return {"realisations": realisations, **metrics.quality(*as_tensor)}


# --------------------------------------------------------------------------- text


def audit_lines(report: dict[str, Any]) -> list[str]:
    """The evaluation and the audit as plain lines, for the CLI to print."""
    data = report["data"]
    lines = [
        f"model {report['model']}: {report['model_name']}, target {report['target']}, trained on "
        f"{report['trained_on']} (fingerprint {report['fingerprint']})",
        f"  {report['training_note']}",
        f"scored at Site One on the clean test split of {data['source']}: {data['test_images']} "
        f"images at {data['image_size']} px, test noise seed {data['seed']}",
    ]
    for q in report["quality"]:
        rows = [("model output", q["psnr"], q["ssim"], q["lpips"], ""),
                ("noisy input", q["noisy_psnr"], q["noisy_ssim"], q["noisy_lpips"], "")]
        lines += _level_rows(q["sigma"], rows)
    lines.append("privacy audit (higher PSNR / SSIM and lower LPIPS: more of the clean image is "
                 "visible)")
    for level in report["audit"]:
        prot, rec, gap, avg = (level[k] for k in ("protection", "recovered", "gap", "averaged"))
        rows = [("protection: obfuscated vs clean", prot["psnr"], prot["ssim"], prot["lpips"], ""),
                ("recovered by the model", rec["psnr"], rec["ssim"], rec["lpips"],
                 f"gap {_signed(gap['psnr'])} dB"),
                (f"mean of {avg['realisations']} realisations", avg["psnr"], avg["ssim"],
                 avg["lpips"], "no model needed")]
        lines += _level_rows(level["sigma"], rows)
    lines.append(report["statement"])
    return lines


def _level_rows(sigma: float, rows: list[tuple]) -> list[str]:
    head = f"σ {sigma:g}"
    width = max(len(row[0]) for row in rows) + 1
    out = []
    for n, (label, psnr, ssim, lpips, tail) in enumerate(rows):
        lead = head if n == 0 else " " * len(head)
        text = f"{lead}  {(label + ':').ljust(width)} {_triple(psnr, ssim, lpips)}"
        out.append(f"{text}  ({tail})" if tail else text)
    return out


def _triple(psnr, ssim, lpips) -> str:
    def fmt(value, spec: str) -> str:
        return "—" if value is None else format(value, spec)
    return f"PSNR {fmt(psnr, '6.2f')} dB  SSIM {fmt(ssim, '.3f')}  LPIPS {fmt(lpips, '.3f')}"


def _signed(value) -> str:
    return "—" if value is None else format(value, "+.2f")
