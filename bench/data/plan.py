"""What a source planner returns: a source resolved without decoding anything, i.e. its cache
identity and how to build it. Built-in planners (``bench.data.sources``) and plug-in ones
(``bench.plugins.Source``) share these types and helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.data.store import ArrayStore
from bench.errors import BadInput

SPLITS = ("train", "val", "test")


@dataclass
class Built:
    """What a source builder produced besides the pixels; ``extra`` joins the sidecar."""

    splits: dict[str, list[int]]
    names: list[str]
    description: str
    skipped: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """A source resolved without decoding anything: its cache identity and how to build it.
    ``kind`` names the cache files and is the scheme of ``source`` (``SCHEME:...``)."""

    kind: str
    source: str
    identity: dict[str, Any]
    build: Callable[[ArrayStore], Built]


def file_stats(files: Sequence[Path], root: Path) -> list[list[Any]]:
    """(relative path, size, mtime) of each file: a changed file changes the cache key."""
    rows = []
    for path in files:
        stat = path.stat()
        rows.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return rows


def existing_dir(text: str) -> Path:
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise BadInput(f"data directory {path} does not exist")
    return path
