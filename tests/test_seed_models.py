"""The seed study's own networks (arch "seed" / "seed-ddp"): sizes, key names and shapes as the
seed code saves them, the forward details that tell them apart, loading their weights, and
the options they fix. Expected keys and shapes are taken from the seed code's state_dicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import (ARCHS, ModelOptionError, SeedUNet, SeedUNetPlusPlus, SeedWeightsError,
                    UNet, UNetPlusPlus, build_model, count_parameters, load_seed_weights)
from models.blocks import GlobalResidual

SEED_NETS = [("unet", "seed"), ("unet", "seed-ddp"), ("unetpp", "seed"), ("unetpp", "seed-ddp")]


pytestmark = pytest.mark.usefixtures("one_thread")


def _on_meta(name: str, **options) -> nn.Module:
    # The meta device skips allocation and init, so study-sized models build fast.
    with torch.device("meta"):
        return build_model(name, **options)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _one_sentence(message: str) -> bool:
    return "\n" not in message and ". " not in message


# --- sizes and key names at the study's size (width 64, depth 4) ----------------------------


@pytest.mark.parametrize("name,arch,expected", [
    ("unet", "seed", 31_036_481),
    ("unet", "seed-ddp", 31_042_369),
    ("unetpp", "seed", 36_621_185),
    ("unetpp", "seed-ddp", 36_621_185),  # the DDP script's U-Net++ is the same network
])
def test_study_parameter_counts(name: str, arch: str, expected: int) -> None:
    assert count_parameters(_on_meta(name, arch=arch, width=64, depth=4)) == expected


# (entries, first key, last key, {index: key}, {key: shape}) from the seed's state_dicts.
REFERENCE = {
    ("unet", "seed"): (91, "conv1.0.weight", "final_conv.bias",
                       {9: "conv2.0.weight", 45: "upconv6.weight", 47: "conv6.0.weight",
                        80: "conv9.0.weight"},
                       {"conv1.0.weight": (64, 1, 3, 3), "conv1.2.weight": (64, 64, 3, 3),
                        "conv1.3.running_var": (64,), "conv5.2.weight": (1024, 1024, 3, 3),
                        "upconv6.weight": (1024, 512, 2, 2), "upconv6.bias": (512,),
                        "conv6.0.weight": (512, 1024, 3, 3), "conv9.3.num_batches_tracked": (),
                        "upconv9.weight": (128, 64, 2, 2), "final_conv.weight": (1, 64, 1, 1)}),
    ("unet", "seed-ddp"): (136, "conv1.0.weight", "final_conv.bias",
                           {14: "conv2.0.weight", 70: "upconv6.weight", 72: "conv6.0.weight"},
                           {"conv1.1.weight": (64,), "conv1.3.weight": (64, 64, 3, 3),
                            "conv1.4.running_mean": (64,), "conv5.4.weight": (1024,),
                            "upconv6.weight": (1024, 512, 2, 2),
                            "conv6.0.weight": (512, 1024, 3, 3),
                            "upconv9.weight": (128, 64, 2, 2), "conv9.0.weight": (64, 128, 3, 3),
                            "conv9.4.num_batches_tracked": (), "final_conv.bias": (1,)}),
    ("unetpp", "seed"): (137, "conv0_0.block.0.weight", "final.bias",
                         {36: "conv4_0.block.0.weight", 45: "conv0_1.block.0.weight",
                          81: "conv0_2.block.0.weight", 108: "conv0_3.block.0.weight",
                          126: "conv0_4.block.0.weight", 135: "final.weight"},
                         {"conv0_0.block.0.weight": (64, 1, 3, 3),
                          "conv0_0.block.3.running_mean": (64,),
                          "conv4_0.block.2.weight": (1024, 1024, 3, 3),
                          "conv0_1.block.0.weight": (64, 192, 3, 3),
                          "conv3_1.block.0.weight": (512, 1536, 3, 3),
                          "conv2_2.block.0.weight": (256, 1024, 3, 3),
                          "conv1_3.block.0.weight": (128, 640, 3, 3),
                          "conv0_4.block.0.weight": (64, 384, 3, 3),
                          "conv0_4.block.3.num_batches_tracked": (),
                          "final.weight": (1, 64, 1, 1)}),
}
REFERENCE[("unetpp", "seed-ddp")] = REFERENCE[("unetpp", "seed")]


@pytest.mark.parametrize("name,arch", SEED_NETS)
def test_study_state_dict_keys_and_shapes(name: str, arch: str) -> None:
    entries, first, last, at, shapes = REFERENCE[(name, arch)]
    got = _shapes(_on_meta(name, arch=arch, width=64, depth=4))
    keys = list(got)
    assert (len(keys), keys[0], keys[-1]) == (entries, first, last)
    assert {i: keys[i] for i in at} == at
    assert {k: got.get(k) for k in shapes} == shapes


def test_the_two_unets_place_batchnorm_as_the_seed_does() -> None:
    notebook = build_model("unet", arch="seed", width=4, depth=1)
    ddp = build_model("unet", arch="seed-ddp", width=4, depth=1)
    conv, relu, bn = nn.Conv2d, nn.ReLU, nn.BatchNorm2d
    assert [type(m) for m in notebook.conv1] == [conv, relu, conv, bn, relu]
    assert [type(m) for m in ddp.conv1] == [conv, bn, relu, conv, bn, relu]
    assert all(m.bias is not None for m in notebook.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name,arch,prefixes", [
    ("unet", "seed", ["conv1", "conv2", "conv3", "upconv4", "conv4", "upconv5", "conv5",
                      "final_conv"]),
    ("unet", "seed-ddp", ["conv1", "conv2", "conv3", "upconv4", "conv4", "upconv5", "conv5",
                          "final_conv"]),
    ("unetpp", "seed", ["conv0_0", "conv1_0", "conv2_0", "conv0_1", "conv1_1", "conv0_2",
                        "final"]),
])
def test_other_depths_extend_the_seed_numbering(name: str, arch: str, prefixes: list) -> None:
    keys = build_model(name, arch=arch, width=4, depth=2).state_dict()
    assert list(dict.fromkeys(k.split(".")[0] for k in keys)) == prefixes


# --- forward ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,arch", SEED_NETS)
@pytest.mark.parametrize("depth", [2, 3])
def test_output_is_a_tensor_of_input_shape(name: str, arch: str, depth: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, arch=arch, width=4, depth=depth)
    x = torch.randn(2, 1, 32, 32)
    y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape


@pytest.mark.parametrize("name,arch", SEED_NETS)
def test_channel_counts(name: str, arch: str) -> None:
    model = build_model(name, arch=arch, in_channels=3, out_channels=2, width=4, depth=2).eval()
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)


def _record(model: nn.Module, names: list[str]):
    """Hook the named submodules to record their input and output on the next forward."""
    inputs, outputs = {}, {}
    for name in names:
        def hook(module, args, out, name=name):
            inputs[name], outputs[name] = args[0], out
        model.get_submodule(name).register_forward_hook(hook)
    return inputs, outputs


@pytest.mark.parametrize("arch,skip_first", [("seed", True), ("seed-ddp", False)])
def test_unet_concatenation_order(arch: str, skip_first: bool) -> None:
    # The notebook decodes cat(skip, up), the DDP script cat(up, skip): the same channel
    # count, so only the order tells them apart (and decides which weights read the skip).
    depth = 3
    torch.manual_seed(0)
    model = build_model("unet", arch=arch, width=4, depth=depth).eval()
    levels = range(depth)
    decoders = [2 * depth + 1 - k for k in levels]
    inputs, outputs = _record(model, [f"conv{k + 1}" for k in levels]
                              + [f"upconv{n}" for n in decoders] + [f"conv{n}" for n in decoders])
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16))
    for k, n in zip(levels, decoders):
        skip, up = outputs[f"conv{k + 1}"], outputs[f"upconv{n}"]
        pair = (skip, up) if skip_first else (up, skip)
        assert torch.equal(inputs[f"conv{n}"], torch.cat(pair, dim=1))
        assert not torch.equal(inputs[f"conv{n}"], torch.cat(pair[::-1], dim=1))


@pytest.mark.parametrize("arch", ["seed", "seed-ddp"])
def test_unetpp_nested_nodes_use_bilinear_align_corners(arch: str) -> None:
    depth = 3
    torch.manual_seed(0)
    model = build_model("unetpp", arch=arch, width=4, depth=depth).eval()
    nodes = [f"conv{i}_{j}" for j in range(depth + 1) for i in range(depth + 1 - j)]
    inputs, outputs = _record(model, nodes + ["final"])
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16))
    differs = False
    for j in range(1, depth + 1):
        for i in range(depth + 1 - j):
            below = outputs[f"conv{i + 1}_{j - 1}"]
            same_row = [outputs[f"conv{i}_{c}"] for c in range(j)]
            up = F.interpolate(below, scale_factor=2, mode="bilinear", align_corners=True)
            assert torch.equal(inputs[f"conv{i}_{j}"], torch.cat([*same_row, up], dim=1))
            other = F.interpolate(below, scale_factor=2, mode="bilinear", align_corners=False)
            differs |= not torch.allclose(up, other)
    assert differs  # align_corners=False would have failed the check above
    assert torch.equal(inputs["final"], outputs[f"conv0_{depth}"])


# --- loading the seed's weights -------------------------------------------------------------


def _trained_state(name: str, arch: str, seed: int = 0, width: int = 4) -> dict:
    torch.manual_seed(seed)
    model = build_model(name, arch=arch, width=width, depth=2).train()
    with torch.no_grad():
        model(torch.randn(2, 1, 16, 16))  # moves the BatchNorm running statistics off their init
    return model.state_dict()


@pytest.mark.parametrize("name,arch", SEED_NETS)
def test_load_round_trip_from_a_ddp_checkpoint(name: str, arch: str) -> None:
    state = _trained_state(name, arch)
    saved = {f"module.{k}": v.clone() for k, v in state.items()}  # as saved from DDP
    torch.manual_seed(1)
    fresh = build_model(name, arch=arch, width=4, depth=2)
    torch.manual_seed(0)
    source = build_model(name, arch=arch, width=4, depth=2)
    source.load_state_dict(state)
    x = torch.randn(1, 1, 16, 16)
    assert not torch.equal(fresh.eval()(x), source.eval()(x))
    assert load_seed_weights(fresh, saved) is fresh
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), source.eval()(x))


def test_load_unwraps_one_checkpoint_dict_key_only() -> None:
    state = _trained_state("unet", "seed")
    model = build_model("unet", arch="seed", width=4, depth=2)
    load_seed_weights(model, {"epoch": 3, "model_state_dict": state, "optimizer": {"lr": 1}})
    assert torch.equal(model.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    with pytest.raises(SeedWeightsError, match="ambiguous.*'state_dict'.*'model_state_dict'"):
        load_seed_weights(model, {"state_dict": state, "model_state_dict": state})


def _error(model: nn.Module, weights) -> str:
    with pytest.raises(SeedWeightsError) as info:
        load_seed_weights(model, weights)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and _one_sentence(message), message
    return message


def test_missing_unexpected_and_misshapen_weights_are_named() -> None:
    model = build_model("unet", arch="seed", width=4, depth=2)
    state = _trained_state("unet", "seed")
    prefix = "seed weights do not fit unet (arch seed, width 4, depth 2): "

    missing = {k: v for k, v in state.items() if not k.startswith("conv3.")}
    assert _error(model, missing) == prefix + "9 missing keys (first: conv3.0.weight)"

    extra = {**state, "module.final_X01.weight": torch.zeros(1, 4, 1, 1)}
    assert _error(model, extra) == prefix + "1 unexpected key (first: final_X01.weight)"

    wide = _trained_state("unet", "seed", width=8)
    assert _error(model, wide) == prefix + (
        f"{sum(state[k].shape != wide[k].shape for k in state)} shape mismatches (first: shape of "
        "conv1.0.weight is (8, 1, 3, 3) in the file but (4, 1, 3, 3) in the model)")


def test_weights_of_the_other_seed_unet_are_recognised() -> None:
    ddp_model = build_model("unet", arch="seed-ddp", width=4, depth=2)
    message = _error(ddp_model, _trained_state("unet", "seed"))
    assert "missing key" in message and "look like arch 'seed' weights" in message


def test_a_key_with_and_without_the_module_prefix_is_refused() -> None:
    state = _trained_state("unet", "seed")
    model = build_model("unet", arch="seed", width=4, depth=2)
    message = _error(model, {**state, "module.conv1.0.weight": state["conv1.0.weight"]})
    assert "'conv1.0.weight' twice" in message


@pytest.mark.parametrize("model,named", [
    (build_model("unet", width=4, depth=2), "UNet"),
    (build_model("unetpp", arch="bench", width=4, depth=2), "UNetPlusPlus"),
    (GlobalResidual(build_model("unet", arch="seed", width=4, depth=2)), "GlobalResidual"),
])
def test_bench_or_wrapped_models_are_refused(model: nn.Module, named: str) -> None:
    message = _error(model, _trained_state("unet", "seed"))
    assert named in message and "seed" in message


# --- options ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,options,named", [
    ("unet", {"arch": "seed", "norm": "group"}, "fixes norm to 'batch'"),
    ("unetpp", {"arch": "seed-ddp", "norm": "none"}, "'none'"),
    ("unet", {"arch": "seed", "upsample": "bilinear"}, "fixes upsample to 'transpose'"),
    ("unetpp", {"arch": "seed", "upsample": "transpose"}, "fixes upsample to 'bilinear'"),
    ("unet", {"arch": "seed-ddp", "residual": True}, "fixes residual to False"),
    ("unetpp", {"arch": "seed", "deep_supervision": True}, "fixes deep_supervision to False"),
    ("unet", {"arch": "seed", "width": 0}, "width"),
    ("unet", {"arch": "Seed"}, "unknown arch 'Seed'; choose one of: bench, seed, seed-ddp"),
])
def test_options_the_seed_fixes_are_refused(name: str, options: dict, named: str) -> None:
    with pytest.raises(ModelOptionError) as info:
        build_model(name, **options)
    assert named in str(info.value) and _one_sentence(str(info.value))


@pytest.mark.parametrize("name,arch", SEED_NETS)
def test_the_seeds_own_values_are_accepted(name: str, arch: str) -> None:
    upsample = "transpose" if name == "unet" else "bilinear"
    model = build_model(name, arch=arch, width=4, depth=2, norm="batch", upsample=upsample,
                        residual=False, deep_supervision=None)
    assert isinstance(model, SeedUNet if name == "unet" else SeedUNetPlusPlus)
    assert model.arch == arch


def test_bench_arch_is_the_unchanged_default() -> None:
    assert ARCHS == ("bench", "seed", "seed-ddp")
    options = dict(width=64, depth=4, norm="batch", residual=False)
    assert count_parameters(_on_meta("unetpp", **options)) == 33_411_585
    assert count_parameters(_on_meta("unetpp", arch="bench", **options)) == 33_411_585
    assert count_parameters(_on_meta("unet", arch="bench", **options)) == 31_036_481
    assert isinstance(build_model("unet", width=4, depth=2), UNet)
    assert isinstance(build_model("unetpp", arch="bench", width=4, depth=2), UNetPlusPlus)
