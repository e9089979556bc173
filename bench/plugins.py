"""Extension points. The core offers them; plug-ins (today `bench.twosite`) fill them.

A plug-in is a module with a `register()` function that calls the `add_*` functions below.
The core never imports a plug-in: the CLI (the composition root) loads the ones it ships, and
the runner writes their names into each cell's job file, so a cell's rank processes load the
same extensions as the command that planned it. Standard library only.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

_loaded: list[str] = []
_sources: dict[str, "Source"] = {}
_targets: dict[str, "Target"] = {}
_record_extras: list[Callable[..., dict]] = []
_after_training: list[Callable[..., None]] = []
_report_sections: list["ReportSection"] = []


def load(names) -> None:
    """Import each plug-in once and let it register its extensions."""
    for name in names:
        if name not in _loaded:
            importlib.import_module(name).register()
            _loaded.append(name)


def loaded() -> list[str]:
    return list(_loaded)


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Source:
    """A data source a plug-in adds: `--data SCHEME:PATH`. What it prepared the core reads
    only through `dataset` (its rows need not be clean images; the core adds no noise to them).

    plan(path, *, image_size, seed, limit, skip_bad, noisy_only) -> the data layer's plan
    (`bench.data.Plan`) for the existing directory `path`, decoding nothing yet;
    dataset(prepared, split, *, target, sigmas, seed, noise_mean, augment) -> a map-style
    dataset of (input, target) tensors, for every target (None: plug-in targets only);
    check(cell, prepared) raises BadInput when the cell cannot train on that data."""
    plan: Callable[..., Any]
    dataset: Callable[..., Any] | None = None
    check: Callable[[Any, Any], None] | None = None


def add_source(scheme: str, planner: Callable[..., Any], *,
               dataset: Callable[..., Any] | None = None,
               check: Callable[[Any, Any], None] | None = None) -> None:
    _sources[scheme] = Source(planner, dataset, check)


def source(scheme: str) -> Source | None:
    return _sources.get(scheme)


def source_schemes() -> list[str]:
    return list(_sources)


@dataclass(frozen=True)
class Target:
    """A training target other than the built-in `clean` (noisy input, clean target).

    dataset(prepared, split, *, sigmas, seed, noise_mean, augment) -> a map-style dataset of
    (input, target) tensors, asked wherever the source has no dataset of its own (a built-in
    source, say); check(cell, prepared) raises BadInput when this target cannot train on that
    data; noisy_only: the data layer must never open a clean image for it."""
    name: str
    dataset: Callable[..., Any]
    check: Callable[[Any, Any], None]
    noisy_only: bool = False


def add_target(target: Target) -> None:
    _targets[target.name] = target


def target(name: str) -> Target | None:
    return _targets.get(name)


def target_names() -> list[str]:
    return ["clean", *_targets]


# --------------------------------------------------------------------------- records

def add_record_extras(fn: Callable[..., dict]) -> None:
    """fn(record, cell=, prepared=, cell_dir=) -> fields merged into an ok record."""
    _record_extras.append(fn)


def record_extras(record: dict, **context) -> dict:
    extra: dict = {}
    for fn in _record_extras:
        extra.update(fn(record, **context))
    return extra


def add_after_training(fn: Callable[..., None]) -> None:
    """fn(job, state_dict, cell_dir): rank 0, after the trained weights are gathered."""
    _after_training.append(fn)


def after_training(job, state_dict, cell_dir) -> None:
    for fn in _after_training:
        fn(job, state_dict, cell_dir)


# --------------------------------------------------------------------------- reports

@dataclass(frozen=True)
class ReportSection:
    """A section of `bench report`: table(frame) -> DataFrame (empty: section left out);
    console(table) prints it; html(table) -> an HTML fragment; markdown(table) -> text."""
    name: str
    table: Callable[[Any], Any]
    console: Callable[[Any], None]
    html: Callable[[Any], str]
    markdown: Callable[[Any], str] | None = None


def add_report_section(section: ReportSection) -> None:
    _report_sections.append(section)


def report_sections() -> list[ReportSection]:
    return list(_report_sections)
