"""Evaluation on the fixed test split: identical code for every strategy, outside timing.

The model is a fresh single-process fp32 copy holding the trained weights, outputs are
clamped to [0,1], and the noisy input is scored beside the model so a reader sees the gain.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SAMPLE_IMAGES = 4  # test images kept per run for the report's visual grid


def evaluate(model, prepared, *, sigmas: Sequence[float], seed: int, noise_mean: float,
             device: str, batch: int = 32) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Quality per noise level, and sample images (noisy/output/clean) at the first level."""
    import torch

    from bench.measure import metrics
    from bench.data import DenoiseDataset

    model = model.to(device).float().eval()
    if device.startswith("cuda"):
        # A tf32 cell turned TF32 on for this process; evaluation is fp32 for every cell.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    quality, samples = [], {}
    for sigma in sigmas:
        dataset = DenoiseDataset(prepared, "test", sigmas=[sigma], seed=seed,
                                 noise_mean=noise_mean, augment=False)
        noisy_all, out_all, clean_all = [], [], []
        with torch.no_grad():
            for start in range(0, len(dataset), batch):
                items = [dataset[k] for k in range(start, min(start + batch, len(dataset)))]
                noisy = torch.stack([n for n, _ in items])
                clean = torch.stack([c for _, c in items])
                out = model(noisy.to(device)).float().clamp(0, 1).cpu()
                noisy_all.append(noisy)
                out_all.append(out)
                clean_all.append(clean)
        noisy, out, clean = (torch.cat(t) for t in (noisy_all, out_all, clean_all))
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
