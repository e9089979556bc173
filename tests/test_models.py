"""Tests for the models package: shapes, sizes, options, determinism, and that it learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models import ModelOptionError as BadInput
from models import MODEL_NAMES, build_model, check_image_size, count_parameters
from models.blocks import DoubleConv, group_count
from models.unet import UNet
from models.unetpp import UNetPlusPlus


pytestmark = pytest.mark.usefixtures("one_thread")


def _count_on_meta(name: str, **options) -> int:
    # The meta device skips weight allocation and init, so study-sized models count fast.
    with torch.device("meta"):
        return count_parameters(build_model(name, **options))


# --- shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(
    "depth,norm,upsample",
    [
        (1, "batch", "transpose"),
        (2, "group", "bilinear"),
        (3, "none", "transpose"),
        (4, "batch", "bilinear"),
        (5, "group", "transpose"),
    ],
)
def test_output_shape_matches_input(name: str, depth: int, norm: str, upsample: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, width=4, depth=depth, norm=norm, upsample=upsample)
    x = torch.randn(2, 1, 32, 32)
    y = model(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == x.shape


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channel_counts(name: str) -> None:
    model = build_model(name, in_channels=3, out_channels=2, width=4, depth=2).eval()
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_is_unbounded_regression(name: str) -> None:
    # No sigmoid/tanh head: scaling the head's weights must scale the output freely.
    torch.manual_seed(0)
    model = build_model(name, width=4, depth=2).eval()
    with torch.no_grad():
        for head in model.modules():
            if isinstance(head, nn.Conv2d) and head.out_channels == 1:
                head.weight.mul_(1000.0)
        y = model(torch.rand(1, 1, 16, 16))
    assert y.abs().max() > 1.5


# --- parameter counts ---------------------------------------------------------------


def test_unet_study_size_is_31m() -> None:
    n = _count_on_meta("unet", width=64, depth=4, norm="batch", upsample="transpose")
    assert abs(n - 31.0e6) <= 0.02 * 31.0e6
    assert n == 31_036_481


def test_unetpp_study_size() -> None:
    # Four deep-supervision heads, as in the seed study (which reported 36.6 M; see unetpp.py).
    n = _count_on_meta("unetpp", width=64, depth=4, upsample="bilinear", deep_supervision=True)
    assert n == 33_411_780
    # Without deep supervision only the last 1x1 head (64 weights + 1 bias) exists.
    assert _count_on_meta("unetpp", width=64, depth=4) == n - 3 * 65


@pytest.mark.parametrize(
    "name,depth,expected",
    [("unet", 3, 482_449), ("unet", 4, 1_942_289), ("unetpp", 3, 511_185), ("unetpp", 4, 2_091_393)],
)
def test_small_sizes(name: str, depth: int, expected: int) -> None:
    assert _count_on_meta(name, width=16, depth=depth) == expected


def test_count_parameters_counts_every_element() -> None:
    layer = nn.Conv2d(2, 3, kernel_size=3)
    assert count_parameters(layer) == 2 * 3 * 9 + 3
    assert count_parameters(nn.ReLU()) == 0


# --- structure ----------------------------------------------------------------------


def test_unetpp_nodes_are_densely_connected() -> None:
    depth, width = 4, 4
    model = UNetPlusPlus(width=width, depth=depth)
    n_nodes = sum(len(row) for row in model.nodes)
    assert n_nodes == (depth + 1) * (depth + 2) // 2
    for i, row in enumerate(model.nodes):
        assert len(row) == depth - i + 1
        for j, node in enumerate(row[1:], start=1):
            # j earlier nodes of this level plus the up-sampled node below, each width*2**i.
            assert node[0].in_channels == (j + 1) * width * 2**i
            assert node[0].out_channels == width * 2**i


def _record_io(model: nn.Module) -> tuple[dict[nn.Module, torch.Tensor], dict[nn.Module, torch.Tensor]]:
    """Hook every module to record its (first) input and its output on the next forward."""
    inputs: dict[nn.Module, torch.Tensor] = {}
    outputs: dict[nn.Module, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        inputs[module], outputs[module] = args[0], out

    for m in model.modules():
        m.register_forward_hook(hook)
    return inputs, outputs


def test_unet_skip_wiring() -> None:
    # Each decoder must see [encoder output of its level, up-sampled level below].
    model = UNet(width=4, depth=3).eval()
    inputs, outputs = _record_io(model)
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16))
    encoders = [model.stem, *model.encoders]
    for k, decoder in enumerate(model.decoders):
        below = encoders[k + 1] if k == model.depth - 1 else model.decoders[k + 1]
        assert torch.equal(inputs[model.ups[k]], outputs[below])
        expected = torch.cat([outputs[encoders[k]], outputs[model.ups[k]]], dim=1)
        assert torch.equal(inputs[decoder], expected)


def test_unetpp_dense_wiring() -> None:
    # X[i][j] must see [X[i][0], ..., X[i][j-1], up(X[i+1][j-1])].
    model = UNetPlusPlus(width=4, depth=3).eval()
    inputs, outputs = _record_io(model)
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16))
    for i in range(model.depth):
        for j in range(1, model.depth - i + 1):
            upper = model.ups[i][j - 1]
            assert torch.equal(inputs[upper], outputs[model.nodes[i + 1][j - 1]])
            expected = torch.cat([*(outputs[n] for n in model.nodes[i][:j]), outputs[upper]], dim=1)
            assert torch.equal(inputs[model.nodes[i][j]], expected)
    assert torch.equal(inputs[model.heads[-1]], outputs[model.nodes[0][model.depth]])


@pytest.mark.parametrize(
    "norm,norm_type", [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("none", nn.Identity)]
)
def test_double_conv_layout(norm: str, norm_type: type) -> None:
    block = DoubleConv(2, 4, norm)
    assert [type(m) for m in block] == [nn.Conv2d, norm_type, nn.ReLU] * 2
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in (block[0], block[3])] == [
        (2, 4, (3, 3)),
        (4, 4, (3, 3)),
    ]


def test_upsample_none_means_model_default() -> None:
    unet = build_model("unet", width=4, depth=2, upsample=None)
    assert isinstance(unet.ups[0], nn.ConvTranspose2d)
    unetpp = build_model("unetpp", width=4, depth=2, upsample=None)
    assert isinstance(unetpp.ups[0][0][0], nn.Upsample)
    assert unetpp.ups[0][0][1].out_channels == 4  # 1x1 conv halves 8 -> 4


@pytest.mark.parametrize("channels,groups", [(1, 1), (3, 3), (6, 6), (8, 8), (12, 6), (20, 5), (64, 8)])
def test_group_count_divides(channels: int, groups: int) -> None:
    assert group_count(channels) == groups


def test_norm_layers() -> None:
    group = build_model("unet", width=6, depth=2, norm="group")
    norms = [m for m in group.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 and m.num_groups <= 8 for m in norms)

    bare = build_model("unetpp", width=4, depth=2, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in bare.modules())
    assert all(c.bias is not None for c in bare.modules() if isinstance(c, nn.Conv2d))

    batch = DoubleConv(2, 4, "batch")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in batch) == 2
    assert all(c.bias is None for c in batch if isinstance(c, nn.Conv2d))


# --- deep supervision ---------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_supervision_outputs(depth: int) -> None:
    torch.manual_seed(0)
    # norm="none" so train and eval modes compute the same function.
    model = build_model("unetpp", width=4, depth=depth, norm="none", deep_supervision=True)
    x = torch.randn(2, 1, 16, 16)
    outs = model.train()(x)
    assert isinstance(outs, list) and len(outs) == depth
    assert all(o.shape == x.shape for o in outs)
    assert not torch.equal(outs[0], outs[-1])  # each head reads its own top node
    y = model.eval()(x)
    assert isinstance(y, torch.Tensor)
    assert torch.allclose(y, outs[-1])  # eval gives the last head only


def test_no_deep_supervision_returns_tensor_in_train() -> None:
    model = build_model("unetpp", width=4, depth=2).train()
    assert isinstance(model(torch.randn(2, 1, 16, 16)), torch.Tensor)


@pytest.mark.parametrize(
    "name,deep_supervision", [("unet", False), ("unetpp", False), ("unetpp", True)]
)
def test_every_parameter_gets_a_gradient(name: str, deep_supervision: bool) -> None:
    # DistributedDataParallel fails on parameters that take no part in the loss.
    torch.manual_seed(0)
    model = build_model(name, width=4, depth=3, deep_supervision=deep_supervision).train()
    out = model(torch.randn(2, 1, 16, 16))
    loss = sum(o.mean() for o in out) if isinstance(out, list) else out.mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,options,named",
    [
        ("resnet", {}, "'resnet'"),
        ("UNet", {}, "'UNet'"),
        ("unet", {"width": 0}, "0"),
        ("unet", {"width": -3}, "-3"),
        ("unet", {"width": 2.5}, "2.5"),
        ("unet", {"width": True}, "True"),
        ("unet", {"in_channels": 0}, "0"),
        ("unetpp", {"out_channels": "1"}, "'1'"),
        ("unet", {"depth": 0}, "0"),
        ("unetpp", {"depth": 7}, "7"),
        ("unet", {"norm": "layer"}, "'layer'"),
        ("unetpp", {"upsample": "nearest"}, "'nearest'"),
        ("unet", {"deep_supervision": True}, "deep_supervision"),
        ("unetpp", {"deep_supervision": "yes"}, "'yes'"),
        ("unet", {"dropout": 0.1}, "'dropout'"),
    ],
)
def test_bad_options_raise(name: str, options: dict, named: str) -> None:
    with pytest.raises(BadInput) as info:
        build_model(name, **options)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert named in message
    assert "\n" not in message and message.count(". ") == 0  # one sentence


def test_unknown_model_message() -> None:
    with pytest.raises(BadInput, match=r"^unknown model 'resnet'; choose one of: unet, unetpp$"):
        build_model("resnet")


def test_check_image_size() -> None:
    check_image_size(4, 64)
    check_image_size(1, 2)
    for depth, size in [(4, 100), (3, 20), (2, 0)]:
        with pytest.raises(BadInput) as info:
            check_image_size(depth, size)
        assert str(size) in str(info.value) and str(2**depth) in str(info.value)


# --- determinism and learning -------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_weights(name: str) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(name, width=4, depth=3).state_dict()

    a, b, c = weights(7), weights(7), weights(8)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_model_overfits_one_image(name: str) -> None:
    torch.manual_seed(0)
    # A smooth "clean" image and a fixed noisy copy of it.
    grid = torch.linspace(0, 1, 32)
    clean = (torch.outer(grid, grid) + 0.3 * torch.sin(6 * grid)[None, :]).view(1, 1, 32, 32)
    noisy = clean + 0.1 * torch.randn_like(clean)
    model = build_model(name, width=4, depth=2).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = nn.functional.l1_loss(model(noisy), clean)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_classes_match_registry() -> None:
    assert isinstance(build_model("unet", width=2, depth=1), UNet)
    assert isinstance(build_model("unetpp", width=2, depth=1), UNetPlusPlus)


def test_residual_wrapper_adds_the_input():
    import torch

    from models import build_model
    torch.manual_seed(0)
    plain = build_model("unet", width=4, depth=2, norm="group")
    torch.manual_seed(0)
    residual = build_model("unet", width=4, depth=2, norm="group", residual=True)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(residual(x), x + plain(x))
    torch.manual_seed(0)
    ds = build_model("unetpp", width=4, depth=2, deep_supervision=True, residual=True).train()
    outs = ds(x)
    assert isinstance(outs, list) and len(outs) == 2 and all(o.shape == x.shape for o in outs)
