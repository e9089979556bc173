"""`bench predict RESULTS`: the scaling prediction of bench/analysis/predict.py as a console
table (with the model's assumptions) or JSON."""
from __future__ import annotations

import json
import math
import sys

from bench.errors import BadInput


def cmd_predict(args) -> int:
    from bench.analysis.predict import predict
    from bench.record import store

    if not args.results.is_dir():
        raise BadInput(f"results folder {args.results} does not exist")
    if args.html is not None and not args.html.parent.is_dir():
        raise BadInput(f"--html {args.html}: folder {args.html.parent} does not exist")
    records, _ = store.records(args.results)
    commbench = None
    if args.commbench is not None:
        try:
            commbench = json.loads(args.commbench.read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(f"--commbench {args.commbench} is not readable JSON: {exc}") from None
    out = predict(records, devices=args.devices, nodes=args.nodes, bandwidth=args.bandwidth,
                  latency=args.latency, commbench=commbench, strategies=args.strategy,
                  overlap=args.overlap, algo=args.algo, shared_host=not args.no_shared_host,
                  scaling=args.scaling, parameters=rebuilt_parameters,
                  sharding=rebuilt_sharding,
                  overhead_s=args.overhead / 1e3)
    if args.html is not None:
        from bench.cli.report import _write_output
        from reports.predict import render_html
        _write_output(args.html, render_html(out, str(args.results)))
    if args.json:
        json.dump(out, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    render(out)
    return 0


def rebuilt_parameters(record: dict) -> int:
    """The record's `model.parameters`, else the count of the model rebuilt from its cell
    (architecture only: no weights, no data)."""
    from models import count_parameters

    model = record.get("model") or {}
    if isinstance(model, dict) and model.get("parameters"):
        return int(model["parameters"])
    return count_parameters(_rebuilt_model(record))


def rebuilt_sharding(record: dict) -> dict:
    """FSDP's per-block policy (launchers/fsdp.py) on the record's model: what an FSDP cell of
    this workload would record in `runtime.sharding`."""
    from launchers.fsdp import per_block_policy, shard_units

    model = _rebuilt_model(record)
    return per_block_policy(model, shard_units(model))


def _rebuilt_model(record: dict):
    from bench.config.cell import Cell, model_options
    from models import build_model

    cell = Cell.from_dict(record["cell"])
    return build_model(cell.model, **model_options(cell))


def _mib(nbytes) -> str:
    return "" if nbytes is None else f"{nbytes / 2**20:.2f}"


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def render(out: dict) -> None:
    from rich.table import Table

    from reports.text import console as shared_console

    console = shared_console()  # wide when piped, as `run` and `report` print
    for fam in out["families"]:
        repeats = fam.get("baseline_repeats", 1)
        table = Table(title=f"{fam['model']} · {fam['fingerprint']} · {fam['device_type']} · "
                            f"{fam.get('processor', '?')}: predicted from "
                            + (f"{repeats} repeats of " if repeats > 1 else "")
                            + f"{fam['baseline_cell']} ({fam['parameters']:,} parameters, "
                            f"{fam['grad_bytes'] / 2**20:.2f} MiB gradients, "
                            f"{fam['window_step_s'] * 1e3:.1f} ms/step of which "
                            f"{fam['data_s'] * 1e3:.1f} ms data)")
        for col in ("strategy", "devices", "compute ms", "data ms", "comm ms", "MiB/step",
                    "measured MiB", "exposed ms", "step ms",
                    "img/s", "efficiency", "measured", "error"):
            table.add_column(col, justify="left" if col == "strategy" else "right")
        for r in fam["rows"]:
            table.add_row(r["strategy"], str(r["devices"]), f"{r['compute_s'] * 1e3:.2f}",
                          f"{r['data_s'] * 1e3:.2f}", f"{r['comm_s'] * 1e3:.2f}",
                          _mib(r["comm_message_bytes_per_step"]),
                          _mib(r.get("measured_message_bytes_per_step")),
                          f"{r['exposed_comm_s'] * 1e3:.2f}",
                          f"{r['step_s'] * 1e3:.2f}", f"{r['throughput_img_s']:.1f}",
                          _pct(r["efficiency"]), _pct(r.get("measured_efficiency")),
                          "" if r.get("error") is None else f"{100 * r['error']:+.1f}%")
        console.print(table)
        console.print("Assumptions:")
        for line in fam["assumptions"]:
            console.print(f"  - {line}")
