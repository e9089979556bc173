"""Sweep specs: a workload and a matrix, validated and expanded into cells with stable ids.

A spec is YAML (or a built-in name). It has four top-level keys:

    name: my-sweep                 # the results folder runs/<name>; default: the file's stem
    description: free text
    workload:                      # what every cell trains; any Cell field, plus
      steps: 200                   #   repeats (fresh processes, seeds seed + 1000·r) and
      global_batch: 32             #   device (auto, cpu or cuda)
      width: 64
    matrix:                        # the product that is expanded into cells
      models: [unet, unetpp]
      configurations:              # or the word `study`: the seed study's four, sized to the
        - {strategy: single}       #   hardware (what `python -m bench run` does with no flags)
        - {strategy: ddp, devices: 2, precision: amp}   # amp = fp16 on GPUs, bf16 on CPUs
        - {strategy: deepspeed, devices: 2, zero: 2}
        - {strategy: dp, devices: 2, global_batch: 32, workers: 4}  # and CONFIG_OVERRIDES
      noise: [0.1, 0.2]            # one cell per entry; an entry may itself be a list of σ
      scaling: [strong, weak]

`python -m bench run` with flags builds the same `SweepSpec` (`spec_from_flags` in the CLI), so
one planner (`bench.sweep.plan`) serves both. Everything wrong with a spec is a BadInput
naming the key. Nothing here imports torch.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.config.builtin_specs import BUILTIN
from bench.config.cell import PRECISIONS, SCALING_MODES, Cell
from bench.errors import BadInput

RESOLVED_FORMAT = 1

TOP_KEYS = ("name", "description", "workload", "matrix")
MATRIX_KEYS = ("models", "configurations", "noise", "scaling")
# Workload keys a configuration may set for itself: the seed study's own batch, loader and
# network per configuration (`seed-confounded`); `gpu`'s channels-last and compile variants.
CONFIG_OVERRIDES = ("arch", "global_batch", "workers", "pin_memory", "channels_last", "compile")
CONFIG_KEYS = ("strategy", "devices", "precision", "zero", *CONFIG_OVERRIDES)
# The seed's networks have batch norm and a plain output; a spec or flags that choose them
# get those defaults unless they set the key themselves.
SEED_ARCH_DEFAULTS = {"norm": "batch", "residual": False}
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# Cell fields a matrix (not the workload) decides, or that the harness fills in itself.
_NOT_WORKLOAD = frozenset({"model", "strategy", "devices", "precision", "zero_stage", "repeat",
                           "device_type"})
# Workload keys that are not Cell fields: how many repeats, which device, and `epochs` (when
# set, each cell's steps come from the data: epochs × full global batches per pass).
_EXTRA_WORKLOAD = {"repeats": 1, "device": "auto", "epochs": None}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# The spec key of each `bench run` flag (argparse dest) whose name differs from its key: the
# one table behind "set KEY in the spec instead" and behind spec-worded cell errors.
FLAG_SPEC_KEYS = {"batch": "workload.global_batch", "timeout": "workload.timeout_s",
                  "model": "matrix.models", "noise": "matrix.noise",
                  "strategy": "matrix.configurations.strategy",
                  "precision": "matrix.configurations.precision",
                  "devices": "matrix.configurations.devices",
                  "zero": "matrix.configurations.zero", "until_psnr": "workload.target_psnr"}


def spec_key_of_flag(dest: str) -> str:
    return FLAG_SPEC_KEYS.get(dest, f"workload.{dest}")


def as_spec_keys(message: str) -> str:
    """validate_cell speaks in CLI flags; a spec user needs the key to edit."""
    return re.sub(r"--[a-z][a-z-]*",
                  lambda m: spec_key_of_flag(m.group(0)[2:].replace("-", "_")), message)


def cell_workload(workload: dict) -> dict:
    """The workload keys that are Cell fields."""
    return {k: v for k, v in workload.items() if k not in _EXTRA_WORKLOAD}


@dataclass(frozen=True)
class Configuration:
    strategy: str
    devices: int | None = None  # None: the default for the hardware (1 for single)
    precision: str = "fp32"  # or "amp"
    zero: int | None = None
    overrides: tuple[tuple[str, object], ...] = ()  # (CONFIG_OVERRIDES key, value), sorted

    def to_dict(self) -> dict:
        d = {"strategy": self.strategy, "devices": self.devices, "precision": self.precision}
        if self.zero is not None:
            d["zero"] = self.zero
        return {**d, **dict(self.overrides)}


@dataclass
class SweepSpec:
    """A parsed, type-checked spec; `expand` turns it into cells."""
    name: str
    description: str
    workload: dict  # every workload key, defaults filled in
    models: list[str]
    configurations: list[Configuration] | str  # a list, or "study"
    noise: list[tuple[float, ...]]
    scaling: list[str]
    source: str = ""
    from_flags: bool = False  # given as `bench run` flags: errors keep the flags' words

    @property
    def repeats(self) -> int:
        return self.workload["repeats"]

    @property
    def device(self) -> str:
        return self.workload["device"]

    def to_dict(self) -> dict:
        configs = self.configurations if isinstance(self.configurations, str) \
            else [c.to_dict() for c in self.configurations]
        # noise is a matrix axis here (always spelled out below), so the workload omits it.
        workload = {k: v for k, v in self.workload.items() if k != "noise"}
        return {"name": self.name, "description": self.description, "workload": workload,
                "matrix": {"models": list(self.models), "configurations": configs,
                           "noise": [list(n) for n in self.noise], "scaling": list(self.scaling)}}


@dataclass
class ResolvedSweep:
    """A spec expanded on one kind of hardware: the cells, in index order."""
    spec: SweepSpec
    device_type: str
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)

    def resolved_spec(self) -> dict:
        """The spec with nothing left to the hardware: `study` and `amp` are spelled out, the
        device is fixed. Expanding it again gives exactly these cells."""
        d = self.spec.to_dict()
        d["workload"]["device"] = self.device_type
        configs = []
        for c in self.cells:
            entry = {"strategy": c.strategy, "devices": c.devices, "precision": c.precision}
            if c.zero_stage is not None:
                entry["zero"] = c.zero_stage
            entry.update({k: getattr(c, k) for k in CONFIG_OVERRIDES
                          if getattr(c, k) != self.spec.workload[k]})
            if entry not in configs:
                configs.append(entry)
        d["matrix"]["configurations"] = configs
        return d

    def to_json(self) -> dict:
        return {"format": RESOLVED_FORMAT, "name": self.spec.name, "source": self.spec.source,
                "device_type": self.device_type, "spec": self.resolved_spec(),
                "notes": list(self.notes),
                "cells": [{"index": i, "cell_id": c.cell_id, "cell": c.to_dict()}
                          for i, c in enumerate(self.cells)]}


# --------------------------------------------------------------------------- loading

def load_spec(ref: str) -> SweepSpec:
    """A YAML/JSON file path or a built-in name."""
    path = Path(ref)
    if path.is_file():
        return parse_spec(_read_mapping(path), default_name=path.stem, source=str(path))
    if ref in BUILTIN:
        return parse_spec({"name": ref, **copy.deepcopy(BUILTIN[ref])}, default_name=ref,
                          source=f"builtin:{ref}")
    if path.suffix in (".yaml", ".yml", ".json") or "/" in ref:
        raise BadInput(f"spec file {ref} does not exist")
    raise BadInput(f"unknown spec '{ref}'; give a YAML file or one of the built-in specs: "
                   f"{', '.join(BUILTIN)}")


def _read_mapping(path: Path) -> dict:
    import yaml
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"spec file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML, so spec.json files load here too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadInput(f"spec file {path} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        held = "is empty" if data is None else f"holds {str(data)[:40]!r}"
        raise BadInput(f"spec file {path} {held}; it must be a mapping of {', '.join(TOP_KEYS)}")
    return data


def is_resolved(data: dict) -> bool:
    return isinstance(data, dict) and data.get("format") == RESOLVED_FORMAT and "cells" in data


# --------------------------------------------------------------------------- parsing

def workload_defaults() -> dict:
    """Every workload key with its default: Cell's field defaults plus the extra keys."""
    out = {}
    for f in dataclasses.fields(Cell):
        if f.name not in _NOT_WORKLOAD:
            value = f.default
            out[f.name] = list(value) if isinstance(value, tuple) else value
    out.update(_EXTRA_WORKLOAD)
    return out


def field_types() -> dict[str, str]:
    """Each workload key's type, as Cell annotates it (`int`, `str | None`, ...)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(Cell) if f.name not in _NOT_WORKLOAD}
    types.update(repeats="int", device="str", epochs="int | None")
    return types


def parse_spec(raw: dict, default_name: str = "sweep", source: str = "") -> SweepSpec:
    if is_resolved(raw):
        raw = raw["spec"]
    _no_unknown(raw, TOP_KEYS, "")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInput(f"spec key name {name!r} is invalid; use letters, digits, '.', '_' or "
                       "'-' (it names the results folder)")
    description = raw.get("description", "") or ""
    if not isinstance(description, str):
        raise BadInput("spec key description must be text")

    workload = _mapping(raw.get("workload"), "workload")
    matrix = _mapping(raw.get("matrix"), "matrix")
    if "matrix" in raw and not matrix:  # written but left empty: a mistake, not "the default"
        raise BadInput("spec key matrix is empty; give models, configurations or noise, or "
                       "leave the key out for the default study matrix")
    types = field_types()
    _no_unknown(workload, tuple(types), "workload.")
    _no_unknown(matrix, MATRIX_KEYS, "matrix.")
    resolved = workload_defaults()
    for key, value in workload.items():
        resolved[key] = _check_type(f"workload.{key}", value, types[key])
    configurations = _configurations(matrix.get("configurations", "study"), types)
    listed = [] if configurations == "study" else configurations
    arches = {resolved["arch"], *(dict(c.overrides).get("arch", resolved["arch"])
                                  for c in listed)}
    implied = seed_arch_defaults(arches, given=set(workload))
    if implied and "bench" in arches:  # the workload is shared: say it, do not impose it
        raise BadInput("spec mixes arch bench with the seed's networks, which need " + ", ".join(
            f"workload.{k}: {v}" for k, v in implied.items()) + "; set them for every cell")
    resolved.update(implied)
    if resolved["repeats"] < 1:
        raise BadInput(f"spec key workload.repeats {resolved['repeats']} is invalid; it must "
                       "be at least 1")
    if resolved["epochs"] is not None and resolved["epochs"] < 1:
        raise BadInput(f"spec key workload.epochs {resolved['epochs']} is invalid; it must be "
                       "at least 1")
    if resolved["device"] not in DEVICE_CHOICES:
        raise BadInput(f"spec key workload.device '{resolved['device']}' is invalid; choose "
                       f"{', '.join(DEVICE_CHOICES)}")
    if resolved["scaling"] not in SCALING_MODES:
        raise BadInput(f"spec key workload.scaling '{resolved['scaling']}' is invalid; choose "
                       "strong or weak")

    models = _string_list(matrix.get("models", ["unet", "unetpp"]), "matrix.models")
    if "noise" in matrix and "noise" in workload:
        raise BadInput("spec key noise is given in both workload and matrix; give it in one")
    if "noise" in matrix:
        noise = _noise_axis(matrix["noise"])
    else:
        noise = [tuple(resolved["noise"])]
    resolved["noise"] = list(noise[0])
    scaling = _string_list(matrix.get("scaling", [resolved["scaling"]]), "matrix.scaling")
    for i, mode in enumerate(scaling):
        if mode not in SCALING_MODES:
            raise BadInput(f"spec key matrix.scaling[{i}] '{mode}' is invalid; choose strong "
                           "or weak")
    if "scaling" in matrix:
        resolved["scaling"] = scaling[0]
    return SweepSpec(name, description, resolved, models, configurations, noise, scaling, source)


def seed_arch_defaults(arches: set[str], given: set[str]) -> dict:
    """What the seed's networks imply for the keys not `given`, if any of `arches` is one."""
    seed = any(a.startswith("seed") for a in arches)
    return {k: v for k, v in SEED_ARCH_DEFAULTS.items() if seed and k not in given}


def _mapping(value, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"spec key {key} must be a mapping, not {type(value).__name__}")
    return value


def _no_unknown(d: dict, allowed: tuple, prefix: str) -> None:
    for key in d:
        if key not in allowed:
            raise BadInput(f"unknown spec key {prefix}{key}; allowed here: {', '.join(allowed)}")


def _check_type(key: str, value, annotation: str):
    """A YAML value against a Cell field's annotation ('int', 'str | None', ...)."""
    options = [a.strip() for a in annotation.split("|")]
    if value is None:
        if "None" in options:
            return None
        raise BadInput(f"spec key {key} must not be empty")
    base = options[0]
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise BadInput(f"spec key {key} must be true or false, not {value!r}")
    if base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise BadInput(f"spec key {key} must be an integer, not {value!r}")
    if base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise BadInput(f"spec key {key} must be a number, not {value!r}")
    if base == "str":
        if isinstance(value, str):
            return value
        raise BadInput(f"spec key {key} must be text, not {value!r}")
    if base.startswith("tuple[float"):
        return list(_sigmas(value, key))
    return value


def _sigmas(value, key: str) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BadInput(f"spec key {key} is empty; give at least one noise σ")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadInput(f"spec key {key} must hold numbers (noise σ), not {v!r}")
        out.append(float(v))
    return tuple(out)


def _string_list(value, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadInput(f"spec key {key} must be a non-empty list")
    for v in value:
        if not isinstance(v, str):
            raise BadInput(f"spec key {key} must hold names, not {v!r}")
    if len(set(value)) != len(value):
        raise BadInput(f"spec key {key} lists a name twice")
    return list(value)


def _noise_axis(value) -> list[tuple[float, ...]]:
    if not isinstance(value, list) or not value:
        raise BadInput("spec key matrix.noise must be a non-empty list of σ (or lists of σ)")
    levels = [_sigmas(v, f"matrix.noise[{i}]") for i, v in enumerate(value)]
    if len(set(levels)) != len(levels):
        raise BadInput("spec key matrix.noise lists a noise level twice")
    return levels


def _configurations(value, types: dict[str, str]) -> list[Configuration] | str:
    if value == "study":
        return "study"
    if not isinstance(value, list) or not value:
        raise BadInput("spec key matrix.configurations must be `study` or a non-empty list of "
                       f"{{{', '.join(CONFIG_KEYS)}}}")
    out = []
    for i, entry in enumerate(value):
        key = f"matrix.configurations[{i}]"
        if isinstance(entry, str):
            entry = {"strategy": entry}
        if not isinstance(entry, dict):
            raise BadInput(f"spec key {key} must be a mapping with a strategy")
        _no_unknown(entry, CONFIG_KEYS, f"{key}.")
        if "strategy" not in entry:
            raise BadInput(f"spec key {key}.strategy is missing")
        strategy = _check_type(f"{key}.strategy", entry["strategy"], "str")
        devices = _check_type(f"{key}.devices", entry.get("devices"), "int | None")
        if devices is not None and devices < 1:
            raise BadInput(f"spec key {key}.devices {devices} is invalid; it must be at least 1")
        precision = _check_type(f"{key}.precision", entry.get("precision", "fp32"), "str")
        if precision not in (*PRECISIONS, "amp"):
            raise BadInput(f"spec key {key}.precision '{precision}' is invalid; choose one of: "
                           f"{', '.join(PRECISIONS)}, amp")
        zero = _check_type(f"{key}.zero", entry.get("zero"), "int | None")
        if zero is not None and strategy != "deepspeed":
            raise BadInput(f"spec key {key}.zero applies only to strategy deepspeed, not "
                           f"'{strategy}'")
        if zero is not None and zero not in (0, 1, 2, 3):
            raise BadInput(f"spec key {key}.zero {zero} is invalid; ZeRO stages are 0-3")
        if strategy == "single" and devices not in (None, 1):
            raise BadInput(f"spec key {key}.devices {devices} is impossible for strategy "
                           "single, which uses one device")
        overrides = tuple(sorted((k, _check_type(f"{key}.{k}", entry[k], types[k]))
                                 for k in CONFIG_OVERRIDES if k in entry))
        out.append(Configuration(strategy, devices, precision, zero, overrides))
    return out
