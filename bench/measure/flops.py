"""Model FLOPs per training step (counted, not estimated) and model-FLOPs utilisation against
the vendor's dense peak for the exact device model.

Peaks are *dense* (no 2:4 sparsity) tensor-core TFLOP/s for tf32/bf16/fp16 and CUDA-core FP32
for fp32, taken from the datasheets named beside each entry; where a datasheet only prints the
sparse figure, the dense one is half of it (NVIDIA's footnote "* With sparsity").
"""

from __future__ import annotations

import copy
import re

import torch

DTYPES = ("fp32", "tf32", "bf16", "fp16")
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16",
                  "half": "fp16"}

# Device-name substring (as torch.cuda.get_device_name() / NVML report it) -> dtype -> TFLOP/s.
# None: the device has no such mode (V100: no TF32 and no BF16 tensor cores).
PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    # NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column): FP32 67, TF32 989*, BF16/FP16 1,979*
    "NVIDIA H200": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    # NVIDIA H200 datasheet (H200 NVL column): FP32 60, TF32 835*, BF16/FP16 1,671*
    "NVIDIA H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    # NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): FP32 67, TF32 989*, BF16/FP16 1,979*
    "NVIDIA H100 80GB HBM3": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    # NVIDIA H100 datasheet (H100 PCIe): FP32 51, TF32 756*, BF16/FP16 1,513*
    "NVIDIA H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5},
    # NVIDIA H100 datasheet (H100 NVL): FP32 60, TF32 835*, BF16/FP16 1,671*
    "NVIDIA H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    # NVIDIA A100 Tensor Core GPU datasheet: FP32 19.5, TF32 156, BF16/FP16 312 (dense; same
    # figures for the 40GB/80GB PCIe and SXM4 columns)
    "NVIDIA A100-SXM4-80GB": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "NVIDIA A100-SXM4-40GB": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "NVIDIA A100-PCIE-40GB": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "NVIDIA A100 80GB PCIe": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    # NVIDIA RTX A4500 datasheet: FP32 23.7, "Tensor performance" 189.2 (FP16, sparse) -> 94.6
    # dense; TF32 is half the FP16 tensor rate on GA102 (NVIDIA Ampere GA102 whitepaper).
    "NVIDIA RTX A4500": {"fp32": 23.7, "tf32": 47.3, "bf16": 94.6, "fp16": 94.6},
    # NVIDIA Tesla V100 datasheet (SXM2): FP32 15.7, Tensor (FP16) 125
    "Tesla V100-SXM2-32GB": {"fp32": 15.7, "tf32": None, "bf16": None, "fp16": 125.0},
    "Tesla V100-SXM2-16GB": {"fp32": 15.7, "tf32": None, "bf16": None, "fp16": 125.0},
    # NVIDIA Tesla V100 datasheet (PCIe): FP32 14, Tensor (FP16) 112
    "Tesla V100-PCIE-16GB": {"fp32": 14.0, "tf32": None, "bf16": None, "fp16": 112.0},
    "Tesla V100-PCIE-32GB": {"fp32": 14.0, "tf32": None, "bf16": None, "fp16": 112.0},
    # NVIDIA L40S datasheet: FP32 91.6, TF32 183 (366*), BF16/FP16 362.05 (733*)
    "NVIDIA L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05},
}


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().lower()


def _match(device_name: str) -> str | None:
    """The table key for a device name: an exact name wins, else the longest key contained in
    the name at word boundaries ("NVIDIA H200 NVL" is not "NVIDIA H200"). A MIG slice has a
    fraction of the GPU's peak, so it never matches."""
    name = _norm(device_name)
    if not name or " mig " in f" {name} ":
        return None
    best = None
    for key in PEAK_TFLOPS:
        k = _norm(key)
        if k == name:
            return key
        if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", name) and \
                (best is None or len(k) > len(_norm(best))):
            best = key
    return best


def _dtype(dtype: str | torch.dtype) -> str:
    d = str(dtype).removeprefix("torch.").lower()
    return _DTYPE_ALIASES.get(d, d)


def peak_tflops(device_name: str, dtype: str | torch.dtype) -> float | None:
    """Dense peak TFLOP/s of one device in `dtype` ("fp32", "tf32", "bf16", "fp16"), or None
    when the device or the mode is not in PEAK_TFLOPS."""
    key = _match(device_name)
    return None if key is None else PEAK_TFLOPS[key].get(_dtype(dtype))


def mfu(flops_per_step: float, step_time_s: float, device_name: str, dtype: str | torch.dtype,
        n_devices: int) -> tuple[float | None, str]:
    """Model-FLOPs utilisation: achieved TFLOP/s / (peak TFLOP/s × n_devices).

    `flops_per_step` is the work of one optimizer step on the *global* batch (all devices
    together); `step_time_s` its wall time. Returns (None, reason) when the peak is unknown.
    """
    d = _dtype(dtype)
    if not step_time_s > 0 or n_devices < 1 or flops_per_step < 0:
        return None, (f"cannot compute MFU from step_time_s={step_time_s!r}, "
                      f"n_devices={n_devices!r}, flops_per_step={flops_per_step!r}")
    peak = peak_tflops(device_name, d)
    if peak is None:
        key = _match(device_name)
        why = (f"no dense {d} peak for {device_name!r}" if key is not None else
               f"no peak TFLOP/s known for device {device_name!r}")
        return None, why
    achieved = flops_per_step / step_time_s / 1e12
    basis = f"{peak:g} TFLOP/s {d} dense peak × {n_devices} ({_match(device_name)})"
    return achieved / (peak * n_devices), f"{achieved:.3g} TFLOP/s achieved vs {basis}"


def forward_backward_flops(model: torch.nn.Module,
                           example_input: torch.Tensor) -> tuple[int, int]:
    """(forward, backward) FLOPs of one training step on `example_input`, counted by
    torch.utils.flop_counter.FlopCounterMode (matmul/conv count 2 FLOPs per multiply-add;
    element-wise ops are not counted).

    Loss: L1 of the output against zeros (mean |y|); a deep-supervision model's list of heads
    averages the heads' losses, as training does. The input does not require grad, as in
    training, so the first layer's input-gradient is not computed or counted. Runs on a deep
    copy, so the caller's weights, grads and BatchNorm statistics are untouched.
    """
    from torch.utils.flop_counter import FlopCounterMode

    work = copy.deepcopy(model)
    for p in work.parameters():
        p.grad = None
    x = example_input.detach()
    with FlopCounterMode(display=False) as fwd:
        y = work(x)
        heads = y if isinstance(y, (list, tuple)) else [y]
        loss = sum(torch.nn.functional.l1_loss(h, torch.zeros_like(h)) for h in heads) \
            / len(heads)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    del work, y, loss
    return int(fwd.get_total_flops()), int(bwd.get_total_flops())


def train_step_flops(model: torch.nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward + backward on `example_input` (see forward_backward_flops)."""
    return sum(forward_backward_flops(model, example_input))
