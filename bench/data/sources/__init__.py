"""The data sources: a registry keyed by the scheme before ':' in the ``source`` string.

Built-in schemes are registered here; any other scheme is looked up among the plug-ins'
(``bench.plugins.source``). Every planner is called with the keywords ``image_size``,
``seed``, ``limit``, ``skip_bad`` and ``noisy_only`` and takes what it needs; it returns a
``Plan`` without decoding anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from bench import plugins
from bench.data.plan import Plan, existing_dir
from bench.data.sources.chest import plan as chest_plan
from bench.data.sources.folder import plan as folder_plan
from bench.data.sources.nih import plan as nih_plan
from bench.data.sources.synthetic import plan as synthetic_plan
from bench.errors import BadInput


@dataclass(frozen=True)
class Scheme:
    """A built-in source: its planner, how it is written, and what follows its ':'.
    argument: "none" (the scheme alone), "optional" (text, or nothing: None) or "path" (an
    existing directory, required)."""

    plan: Callable[..., Plan]
    usage: str
    argument: str


BUILTIN = {
    "chest-sample": Scheme(chest_plan, "chest-sample", "none"),
    "nih": Scheme(nih_plan, "nih:PATH", "path"),
    "folder": Scheme(folder_plan, "folder:PATH", "path"),
    "synthetic": Scheme(synthetic_plan, "synthetic or synthetic:N", "optional"),
}


def extension(scheme: str) -> plugins.Source | None:
    """The plug-in behind ``scheme``, None for a built-in one (built-ins cannot be replaced)."""
    return None if scheme in BUILTIN else plugins.source(scheme)


def allowed() -> str:
    """The accepted forms, plug-in ones before the synthetic source as the message always had."""
    usages = [scheme.usage for scheme in BUILTIN.values()]
    added = [f"{name}:PATH" for name in plugins.source_schemes() if name not in BUILTIN]
    return ", ".join([*usages[:-1], *added, usages[-1]])


def resolve(source: object, **settings: Any) -> Plan:
    """Resolve ``source`` to its planner's Plan; BadInput lists the allowed forms."""
    if not isinstance(source, str):
        raise BadInput(f"data source {source!r} is not a string; allowed: {allowed()}")
    kind, has_arg, arg = source.strip().partition(":")
    builtin = BUILTIN.get(kind)
    if builtin is not None:
        if builtin.argument == "none" and not has_arg:
            return builtin.plan(None, **settings)
        if builtin.argument == "optional":
            return builtin.plan(arg if has_arg else None, **settings)
        if builtin.argument == "path" and arg:
            return builtin.plan(existing_dir(arg), **settings)
    added = extension(kind)
    if added is not None and arg:
        return added.plan(existing_dir(arg), **settings)
    raise BadInput(f"data source {source!r} is unknown; allowed: {allowed()}")
