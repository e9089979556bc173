"""A sweep folder's resolved spec: spec.yaml for people, spec.json (the cells by index) for
`bench cell`, Slurm array tasks and `bench status`."""
from __future__ import annotations

import json
from pathlib import Path

from bench.config.cell import Cell
from bench.config.spec import ResolvedSweep, is_resolved
from bench.errors import BadInput
from bench.record import store

SPEC_YAML = "spec.yaml"
SPEC_JSON = "spec.json"


def write_resolved(out: Path, resolved: ResolvedSweep) -> None:
    """spec.yaml (expanding it again gives the same cells) and spec.json."""
    import yaml

    text = yaml.safe_dump(resolved.resolved_spec(), sort_keys=False, allow_unicode=True,
                          width=100)
    header = (f"# resolved from {resolved.spec.source or resolved.spec.name} for "
              f"device {resolved.device_type}; {len(resolved.cells)} cells\n")
    store.write_text(Path(out) / SPEC_YAML, header + text)
    store.write_json(Path(out) / SPEC_JSON, resolved.to_json())


def read_resolved(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if is_resolved(data) else None


def resolved_cells(data: dict) -> list[Cell]:
    """The cells of a resolved spec.json, by index; each id is checked against its fields."""
    cells = []
    for entry in data["cells"]:
        cell = Cell.from_dict(entry["cell"])
        if cell.cell_id != entry["cell_id"]:
            raise BadInput(f"cell {entry['index']} of the resolved spec has id "
                           f"{entry['cell_id']}, but its fields hash to {cell.cell_id} (written "
                           "by another version of bench); give the spec's YAML file or built-in "
                           "name instead of spec.json, or run `bench slurm` on it again")
        cells.append(cell)
    return cells
