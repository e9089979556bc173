"""Counted training-step FLOPs against hand counts; peak lookup by exact device; MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.measure.flops import (PEAK_TFLOPS, _match, forward_backward_flops, mfu, peak_tflops,
                         train_step_flops)


def test_linear_flops_match_analytic_count():
    b, i, h, o = 4, 32, 64, 8
    model = nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o))
    fwd, bwd = forward_backward_flops(model, torch.randn(b, i))
    assert fwd == 2 * b * (i * h + h * o)                 # 2 FLOPs per multiply-add
    # Backward: both weight grads, plus the input grad of layer 2 only (the input needs none).
    assert bwd == 2 * b * i * h + 2 * (2 * b * h * o)
    assert train_step_flops(model, torch.randn(b, i)) == fwd + bwd


def test_conv_flops_match_analytic_count():
    n, c, hw = 2, 3, 16
    model = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    fwd, bwd = forward_backward_flops(model, torch.randn(n, c, hw, hw))
    macs1 = n * hw * hw * 8 * c * 9
    macs2 = n * hw * hw * 4 * 8 * 9
    assert fwd == 2 * (macs1 + macs2)
    assert bwd == 2 * macs1 + 2 * (2 * macs2)
    assert 1.5 < bwd / fwd <= 2.0                         # ≈ 2× forward, less the first layer


def test_caller_model_is_untouched():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 1, 8, 8))                        # materialise the lazy layer
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert train_step_flops(model, torch.randn(2, 1, 8, 8)) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # incl. BN running stats
    assert all(p.grad is None for p in model.parameters())


def test_peak_lookup_is_exact_and_most_specific():
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.5
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.5       # SXM
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") != peak_tflops("NVIDIA H100 80GB HBM3", "bf16")
    assert peak_tflops("NVIDIA H200 NVL", "bf16") == 835.5             # not the SXM "NVIDIA H200"
    assert peak_tflops("NVIDIA H200", "bf16") == 989.5
    # A longer reported name takes the most specific key it contains, not the first one.
    assert peak_tflops("NVIDIA H200 NVL 141GB", "bf16") == 835.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") == 156.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", torch.bfloat16) == 312.0
    assert peak_tflops("Tesla V100-SXM2-32GB", "bf16") is None           # no such mode
    for unknown in ("cpu", "NVIDIA H100", "NVIDIA GeForce RTX 4090", "",
                    "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA A100-SXM4-80GBX"):
        assert peak_tflops(unknown, "bf16") is None, unknown
    # Every listed device resolves to its own entry, never to a shorter, more general one.
    for name in PEAK_TFLOPS:
        assert _match(name) == name
        assert _match(name.upper()) == name                  # case is not significant


def test_mfu_arithmetic_and_reasons():
    # 2 devices at 312 TFLOP/s peak; 156 TFLOP/s achieved in total is 25 %.
    value, why = mfu(156e12 * 0.5, 0.5, "NVIDIA A100-SXM4-40GB", "bf16", 2)
    assert value == pytest.approx(0.25)
    assert "312" in why and "bf16" in why
    value, why = mfu(1e12, 1.0, "cpu", "fp32", 1)
    assert value is None and "'cpu'" in why
    value, why = mfu(1e12, 1.0, "Tesla V100-PCIE-16GB", "tf32", 1)
    assert value is None and "tf32" in why and "V100" in why
    value, why = mfu(1e12, 0.0, "NVIDIA H200", "bf16", 1)
    assert value is None and "step_time_s" in why


def test_deep_supervision_heads_are_counted():
    """U-Net++ with deep supervision returns a list of heads; its FLOPs are counted (the list
    once reached zeros_like and no MFU was reported), and the extra heads cost a little more."""
    from models import build_model
    x = torch.zeros(2, 1, 32, 32)
    options = dict(width=4, depth=2, norm="group")
    torch.manual_seed(0)
    plain = train_step_flops(build_model("unetpp", **options), x)
    torch.manual_seed(0)
    deep = train_step_flops(build_model("unetpp", deep_supervision=True, **options), x)
    assert deep > plain > 0
