"""Model registry: build a denoiser by name, with every option checked up front."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.blocks import NORMS, UPSAMPLES, GlobalResidual
from models.seed import SEED_ARCHS, SeedUNet, SeedUNetPlusPlus, build_seed_model
from models.weights import (SeedWeightsError, WeightsError, fit_problem, load_seed_weights,
                            state_dict_of)
from models.unet import UNet
from models.unetpp import UNetPlusPlus

class ModelOptionError(ValueError):
    """A model option is wrong; the message is one sentence naming it and what is allowed.
    (models/ imports nothing of bench: bench turns this into its own BadInput.)"""


MODEL_NAMES = ("unet", "unetpp")
# "bench": this package's configurable networks; "seed" / "seed-ddp": the seed study's own
# notebook / DDP-script networks with its key names (models.seed).
ARCHS = ("bench", *SEED_ARCHS)
MAX_DEPTH = 6
DEFAULT_UPSAMPLE = {"unet": "transpose", "unetpp": "bilinear"}
_OPTIONS = ("in_channels", "out_channels", "width", "depth", "norm", "upsample",
            "deep_supervision", "residual", "arch")
# What the seed networks fix, and why, for the one-sentence refusal of any other value.
_SEED_UPSAMPLE_WHY = {"transpose": "transposed convolution",
                      "bilinear": "bilinear interpolation with align_corners=True"}

__all__ = [
    "ARCHS",
    "MODEL_NAMES",
    "ModelOptionError",
    "SeedUNet",
    "SeedUNetPlusPlus",
    "SeedWeightsError",
    "WeightsError",
    "UNet",
    "UNetPlusPlus",
    "build_model",
    "check_image_size",
    "count_parameters",
    "fit_problem",
    "load_seed_weights",
    "state_dict_of",
]


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `width=True` is a mistake, not a width of 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(key: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise ModelOptionError(f"{key} must be an integer >= 1, got {value!r}")


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ModelOptionError(f"unknown {key} {value!r}; choose one of: {', '.join(allowed)}")


def _check_seed_fixed(name: str, arch: str, options: dict[str, Any]) -> None:
    """The seed networks fix norm, up-sampling, residual and deep supervision: accept only
    their own value (or the option omitted / None), so a config cannot silently differ."""
    norm = options.get("norm", "batch")
    if norm != "batch":
        raise ModelOptionError(f"arch {arch!r} fixes norm to 'batch' (the seed study's "
                               f"BatchNorm), got {norm!r}")
    fixed = DEFAULT_UPSAMPLE[name]
    upsample = options.get("upsample")
    if upsample is not None and upsample != fixed:
        raise ModelOptionError(f"arch {arch!r} fixes upsample to {fixed!r} for model {name!r} "
                               f"(the seed study's {_SEED_UPSAMPLE_WHY[fixed]}), got {upsample!r}")
    residual = options.get("residual", False)
    if residual is not False:
        raise ModelOptionError(f"arch {arch!r} fixes residual to False (the seed study's "
                               f"networks output the image itself), got {residual!r}")
    deep = options.get("deep_supervision")
    if deep is not None and deep is not False:
        raise ModelOptionError(f"arch {arch!r} fixes deep_supervision to False (the seed "
                               f"study trains one head), got {deep!r}")


def build_model(name: str, **options: Any) -> nn.Module:
    """Build model `name` with `options` (in_channels, out_channels, width, depth, norm,
    upsample, deep_supervision, residual, arch); omitted options, and upsample=None, take
    defaults. residual=True wraps the network as input + net(input). arch "bench" (default)
    builds this package's networks; "seed" / "seed-ddp" the seed study's own (models.seed),
    which fix norm, upsample, residual and deep_supervision."""
    _check_choice("model", name, MODEL_NAMES)
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ModelOptionError(
            f"unknown model option {unknown[0]!r}; choose from: {', '.join(_OPTIONS)}"
        )
    arch = options.get("arch", "bench")
    _check_choice("arch", arch, ARCHS)
    in_channels = options.get("in_channels", 1)
    out_channels = options.get("out_channels", 1)
    # The library's own defaults are the seed study's network (depth 4, BatchNorm, plain
    # output). bench never relies on them: bench.config.cell.model_options passes every option.
    width = options.get("width", 16)
    depth = options.get("depth", 4)
    norm = options.get("norm", "batch")
    upsample = options.get("upsample")
    if upsample is None:
        upsample = DEFAULT_UPSAMPLE[name]
    deep_supervision = options.get("deep_supervision", False)

    for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width)):
        _check_positive_int(key, value)
    if not _is_int(depth) or not 1 <= depth <= MAX_DEPTH:
        raise ModelOptionError(f"depth must be an integer from 1 to {MAX_DEPTH}, got {depth!r}")
    if arch != "bench":
        _check_seed_fixed(name, arch, options)
        return build_seed_model(name, arch, in_channels, out_channels, width, depth)
    _check_choice("norm", norm, NORMS)
    _check_choice("upsample", upsample, UPSAMPLES)
    if deep_supervision is None:
        deep_supervision = False
    if not isinstance(deep_supervision, bool):
        raise ModelOptionError(f"deep_supervision must be true or false, got {deep_supervision!r}")
    # A shared config may carry deep_supervision=False for every model; only True is wrong.
    if deep_supervision and name != "unetpp":
        raise ModelOptionError("deep_supervision=True is only valid for model 'unetpp', "
                               f"not {name!r}")

    residual = options.get("residual", False)
    if not isinstance(residual, bool):
        raise ModelOptionError(f"residual must be true or false, got {residual!r}")
    if residual and in_channels != out_channels:
        raise ModelOptionError(f"residual=True needs as many output as input channels, "
                       f"got {in_channels} in and {out_channels} out")

    common = dict(
        in_channels=in_channels,
        out_channels=out_channels,
        width=width,
        depth=depth,
        norm=norm,
        upsample=upsample,
    )
    net = UNet(**common) if name == "unet" else \
        UNetPlusPlus(**common, deep_supervision=deep_supervision)
    return GlobalResidual(net) if residual else net


def check_image_size(depth: int, image_size: int) -> None:
    """Each of the `depth` poolings halves the image, so the size must divide by 2**depth."""
    step = 2**depth
    if not _is_int(image_size) or image_size < 1 or image_size % step:
        raise ModelOptionError(
            f"image size {image_size!r} is not a positive multiple of 2**{depth} = {step}, "
            f"which model depth {depth} needs"
        )


def count_parameters(model: nn.Module) -> int:
    """Total number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
