"""What this machine offers a sweep: visible GPUs, the device type, what "AMP" means here,
and the seed study's four configurations sized to it. Imports torch only when called."""
from __future__ import annotations

from bench.errors import BadInput


def visible_gpus() -> int:
    """CUDA devices this process can use (imports torch: only called by working commands)."""
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_device_type(requested: str = "auto") -> str:
    if requested not in ("auto", "cpu", "cuda"):
        raise BadInput(f"unknown device '{requested}'; choose auto, cpu or cuda")
    if requested == "auto":
        return "cuda" if visible_gpus() > 0 else "cpu"
    if requested == "cuda" and visible_gpus() == 0:
        raise BadInput("--device cuda was asked for but no CUDA GPU is visible")
    return requested


def amp_precision(device_type: str) -> str:
    """"AMP" means fp16 with loss scaling on GPUs and bf16 on CPUs (fp16 on CPU is not AMP)."""
    return "fp16" if device_type == "cuda" else "bf16"


def cpu_has_native_bf16() -> bool:
    """oneDNN's own answer. Without native bf16 (e.g. AVX2-only CPUs) bf16 convolutions fall
    back to a reference kernel: measured 14x slower than fp32 on a 2-core AVX2 EPYC."""
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def study_configs(device_type: str, gpus: int) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The seed study's four configurations, each changing one factor from its neighbour:
    single fp32 → DataParallel → DDP fp32 → DDP with AMP; and notes on what was left out."""
    n = max(gpus, 1) if device_type == "cuda" else 2
    configs = [("single", 1, "fp32"), ("dp", n, "fp32"), ("ddp", n, "fp32")]
    if device_type == "cuda" or cpu_has_native_bf16():
        return configs + [("ddp", n, amp_precision(device_type))], []
    return configs, ["DDP with AMP (bf16) left out: this CPU has no native bf16, so bf16 "
                     "convolutions would run a slow reference kernel; add --strategy ddp "
                     "--precision bf16 to measure it anyway"]
