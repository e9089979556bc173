"""Results on disk: one folder per cell, every file written atomically, and loading back.

A reader never sees a half-written file: each write goes to a temporary file in the same
folder, is fsynced, then renamed over the target (rename is atomic on POSIX filesystems).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

RECORD = "record.json"
STEPS = "steps.parquet"
TELEMETRY = "telemetry.parquet"
JOB = "job.json"
LOG = "cell.log"
PROGRESS = "progress.json"
CHECKPOINT = "checkpoint.pt"  # written by the worker, discarded by the runner on --force

STATUSES = ("ok", "failed", "diverged", "timeout", "preempted")
# Exit status of a rank process, and of the CLI, when a cell stopped on SIGTERM after saving
# its checkpoint: the caller (Slurm, a wrapper script) knows a re-run resumes it.
EXIT_PREEMPTED = 3


def new_file_mode() -> int:
    """The mode open() gives a new file here: 0o666 less the umask. mkstemp's 0600 would keep
    results from the colleagues a shared project folder is for."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read the umask by setting it, then put it back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """`write(handle)` fills a temporary file beside `path`, which then replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, new_file_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)




def write_json(path: Path, obj: Any) -> None:
    data = json.dumps(_json_safe(obj), indent=2, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


def write_table(path: Path, frame) -> None:
    """Write a pandas DataFrame as parquet, atomically."""
    atomic_write(path, lambda f: frame.to_parquet(f, index=False))


def _json_safe(obj: Any) -> Any:
    # NaN/inf are not JSON; a record says null rather than writing invalid JSON.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _json_safe(obj.item())
    return obj


# Fields renamed since records were first written: (section, old name) → today's name. Every
# reader gets today's names from `read_record`, so no reader keeps an old name's fallback.
RENAMED = {("breakdown", "comm_bytes_per_step"): "comm_message_bytes_per_step"}  # 2026-12-06


def read_record(cell_dir: Path) -> dict | None:
    """The cell's record, or None when it is missing or unreadable (truncated, not JSON);
    fields renamed since it was written are read under today's names."""
    try:
        record = json.loads((Path(cell_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return upgraded(record) if isinstance(record, dict) else None


def upgraded(record: dict) -> dict:
    for (section, old), new in RENAMED.items():
        part = record.get(section)
        if isinstance(part, dict) and old in part:
            part.setdefault(new, part.pop(old))
    return record


def cell_dirs(results_dir: Path) -> Iterator[Path]:
    root = Path(results_dir)
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            if (child / RECORD).exists() or (child / JOB).exists():
                yield child


def records(results_dir: Path) -> tuple[list[dict], list[Path]]:
    """All readable records under a results folder, and the folders whose record is not."""
    good, unreadable = [], []
    for d in cell_dirs(results_dir):
        rec = read_record(d)
        if rec is None:
            unreadable.append(d)
        else:
            rec.setdefault("_dir", str(d))
            good.append(rec)
    return good, unreadable


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested dicts become dotted columns; the quality list becomes `quality[σ].metric`."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if key == "quality" and isinstance(value, list):
            for entry in value:
                sigma = entry.get("sigma")
                for metric, v in entry.items():
                    if metric != "sigma":
                        flat[f"quality[{sigma}].{metric}"] = v
        elif isinstance(value, dict) and key not in ("error",):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load(results_dir: Path):
    """One pandas row per readable record (dotted columns, e.g. `timing.throughput_img_s`).
    Unreadable records are listed in `frame.attrs["unreadable"]`, never raised."""
    import pandas as pd

    good, unreadable = records(results_dir)
    frame = pd.DataFrame([flatten(r) for r in good])
    frame.attrs["unreadable"] = [str(p) for p in unreadable]
    return frame


def load_quality(results_dir: Path):
    """One row per (record, evaluated noise level), with the cell's identity columns."""
    import pandas as pd

    rows = []
    for rec in records(results_dir)[0]:
        base = {k: v for k, v in flatten({k: v for k, v in rec.items() if k != "quality"}).items()}
        for entry in rec.get("quality") or []:
            rows.append({**base, **entry})
    return pd.DataFrame(rows)
