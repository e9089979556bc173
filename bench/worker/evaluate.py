"""Evaluation on the fixed test split: identical code for every strategy, outside timing.

The model is a fresh single-process fp32 copy holding the trained weights, outputs are
clamped to [0,1], and the noisy input is scored beside the model so a reader sees the gain.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np

SAMPLE_IMAGES = 4  # test images kept per run for the report's visual grid


def evaluate(model, prepared, *, sigmas: Sequence[float], seed: int, noise_mean: float,
             device: str, batch: int = 32) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Quality per noise level, and sample images (noisy/output/clean) at the first level."""
    from bench.measure import metrics
    from bench.data import DenoiseDataset

    model = as_fp32_eval(model, device)
    quality, samples = [], {}
    for sigma in sigmas:
        dataset = DenoiseDataset(prepared, "test", sigmas=[sigma], seed=seed,
                                 noise_mean=noise_mean, augment=False)
        noisy, out, clean = denoise(model, dataset, range(len(dataset)), device, batch)
        with without_tf32():  # LPIPS's AlexNet runs where its inputs are
            model_q = metrics.quality(out, clean)
            noisy_q = metrics.quality(noisy, clean)
        quality.append({"sigma": float(sigma), "test_images": len(dataset), **model_q,
                        **{f"noisy_{k}": v for k, v in noisy_q.items()},
                        "lpips_weights": metrics.lpips_weights_source()})
        if not samples:
            k = min(SAMPLE_IMAGES, len(dataset))
            samples = {"sigma": np.float32(sigma), "noisy": noisy[:k, 0].numpy(),
                       "output": out[:k, 0].numpy(), "clean": clean[:k, 0].numpy()}
    return quality, samples


def as_fp32_eval(model, device: str):
    """The model in fp32 eval mode on `device` (`denoise` turns TF32 off while it runs)."""
    return model.to(device).float().eval()


@contextlib.contextmanager
def without_tf32():
    """TF32 off for the block, then as it was: a tf32 cell turned it on for this process,
    evaluation is fp32 for every cell, and validation between steps must give the training
    its TF32 back."""
    import torch
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def denoise(model, dataset, indices, device: str, batch: int = 32):
    """(noisy, output, clean) CPU tensors of the dataset's `indices`, computed in fp32 (TF32
    off); outputs clamped to [0, 1]."""
    import torch

    indices = list(indices)
    noisy_all, out_all, clean_all = [], [], []
    with torch.no_grad(), without_tf32():
        for start in range(0, len(indices), batch):
            items = [dataset[k] for k in indices[start:start + batch]]
            noisy = torch.stack([n for n, _ in items])
            clean = torch.stack([c for _, c in items])
            out_all.append(model(noisy.to(device)).float().clamp(0, 1).cpu())
            noisy_all.append(noisy)
            clean_all.append(clean)
    return tuple(torch.cat(t) for t in (noisy_all, out_all, clean_all))
