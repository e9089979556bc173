"""`bench spec`: what a spec expands to on this machine (nothing runs, no folder is written,
the data sources are checked as far as they can be without decoding), or the JSON Schema of
spec files for editors."""
from __future__ import annotations

import json

from bench.errors import BadInput


def cmd_spec(args) -> int:
    if args.schema:
        from bench.config.schema import spec_schema
        print(json.dumps(spec_schema(), indent=2))
        return 0
    if args.spec is None:
        raise BadInput("give a spec (a YAML file or a built-in name) or --schema")
    import yaml

    from bench.config.spec import load_spec
    from bench.sweep import hardware
    from bench.sweep.plan import check_sources, expand, shared_core_notes, validate

    spec = load_spec(args.spec)
    device_type = hardware.default_device_type(args.device if args.device != "auto"
                                               else spec.device)
    gpus = hardware.visible_gpus()
    resolved = expand(spec, device_type, gpus)
    validate(resolved, gpus)
    check_sources(resolved.cells)
    print(yaml.safe_dump(resolved.resolved_spec(), sort_keys=False, allow_unicode=True,
                         width=100), end="")
    print(f"# {len(resolved.cells)} cells on {device_type}:")
    for index, cell in enumerate(resolved.cells):
        print(f"#   {index:4d}  {cell.cell_id}")
    for note in [*resolved.notes, *shared_core_notes(resolved.cells)]:
        print(f"# note: {note}")
    return 0
