"""`bench commbench`: collective bandwidth over the backend and rank layout a cell uses."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from bench.errors import BadInput

UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000 ** 2, "mb": 1000 ** 2,
         "mib": 1024 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3}


def parse_bytes(text: str, flag: str) -> int:
    """'1024', '1KiB', '4MiB', '1MB' → bytes; BadInput for anything else or not positive."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in UNITS:
        raise BadInput(f"{flag} {text!r} is not a size; give bytes, e.g. 1024, 1KiB or 64MiB")
    value = int(float(m.group(1)) * UNITS[unit])
    if value <= 0:
        raise BadInput(f"{flag} {text!r} is invalid; a message size must be positive")
    return value


def _human(n: int) -> str:
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def validate(args, hosts: list[str]) -> tuple[list[int], str]:
    """(sizes, device type), or BadInput before any work. `hosts`: the multi-node allocation
    the ranks will span ([] on one node)."""
    from bench.worker.commbench import OPS, message_sizes
    lo = parse_bytes(args.min_bytes, "--min-bytes")
    hi = parse_bytes(args.max_bytes, "--max-bytes")
    if lo > hi:
        raise BadInput(f"--min-bytes {args.min_bytes} exceeds --max-bytes {args.max_bytes}")
    unknown = [op for op in args.ops if op not in OPS]
    if unknown:
        raise BadInput(f"unknown op '{unknown[0]}'; choose from {', '.join(OPS)}")
    if args.out is not None and not Path(args.out).parent.is_dir():
        raise BadInput(f"--out {args.out}: its folder does not exist")
    from bench.sweep.hardware import default_device_type, visible_gpus
    device_type = default_device_type(args.device)
    gpus = visible_gpus() * max(1, len(hosts))  # each node of an allocation
    if device_type == "cuda" and args.devices > gpus:
        raise BadInput(f"--devices {args.devices} asks for more GPUs than the {gpus} visible; "
                       "--device cpu runs gloo ranks on the CPU")
    return message_sizes(lo, hi, args.step), device_type


def allocation_nodes(env=None) -> list[str]:
    """The hosts of the multi-node Slurm allocation this command runs in (sbatch, salloc),
    first node first; [] on one node or outside Slurm."""
    import os

    from bench.sweep.nodes import allocation_hosts
    env = os.environ if env is None else env
    if int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1) < 2:
        return []
    return allocation_hosts(env.get("SLURM_JOB_NODELIST"))


def across_nodes(hosts: list[str], devices: int):
    """(srun prefix wrapper, scratch folder) launching the ranks on every node of the
    allocation, one torchrun per node meeting at a c10d rendezvous on the first, as an array
    task's cell does (slurm/templates/array.sbatch); the rendezvous goes in BENCH_RDZV."""
    import os
    import socket
    if devices % len(hosts):
        raise BadInput(f"--devices {devices} does not split evenly over the allocation's "
                       f"{len(hosts)} nodes; give a multiple of {len(hosts)}")
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    job = os.environ.get("SLURM_JOB_ID", "commbench")
    os.environ["BENCH_RDZV"] = f"{hosts[0]}:{port},{len(hosts)},{job}"  # the launcher reads it
    srun = ["srun", f"--nodes={len(hosts)}", f"--ntasks={len(hosts)}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1"]
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        srun.append(f"--cpus-per-task={os.environ['SLURM_CPUS_PER_TASK']}")
    return (lambda argv: [*srun, *argv]), Path.cwd()  # the working folder: every node sees it


def cmd_commbench(args) -> int:
    hosts = allocation_nodes()
    sizes, device_type = validate(args, hosts)
    from bench.sweep.runner import free_port
    from bench.worker.commbench import commbench
    ops = list(dict.fromkeys(args.ops))
    wrap, scratch = across_nodes(hosts, args.devices) if hosts else (None, None)
    figures = commbench(sizes, ops, devices=args.devices, device_type=device_type,
                        iters=args.iters, warmup=args.warmup, port=free_port(), wrap=wrap,
                        scratch=scratch)
    figures["settings"] = {"ops": ops, "sizes": sizes, "iters": args.iters,
                           "warmup": args.warmup, "devices": args.devices,
                           "device": device_type}
    if args.out is not None:
        from bench.measure import envinfo
        from bench.record import store
        record = {"kind": "commbench",
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "environment": envinfo.capture(), **figures}
        try:
            store.write_json(Path(args.out), record)
        except OSError as exc:
            raise BadInput(f"--out {args.out} cannot be written: {exc.strerror or exc}") \
                from None
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        render(figures)
    return 0


def render(figures: dict) -> None:
    from rich.table import Table

    from reports.text import console
    lay = figures["layout"]
    table = Table(title=f"commbench: {lay['backend']}, {lay['world_size']} ranks on "
                        f"{lay['nodes']} node(s), {lay['threads']} thread(s) per rank",
                  caption="size = the whole buffer (nccl-tests); time = median over "
                          "iterations of the slowest rank; busbw = algbw × 2(n−1)/n "
                          "(all_reduce), × (n−1)/n (all_gather, reduce_scatter)",
                  caption_justify="left")
    for name in ("op", "size", "iters", "time", "p10–p90", "algbw GB/s", "busbw GB/s"):
        table.add_column(name, justify="left" if name == "op" else "right")
    for r in figures["results"]:
        spread_us = (f"{r['p10_s'] * 1e6:.1f}–{r['p90_s'] * 1e6:.1f} µs"
                     if r.get("p10_s") is not None else "—")
        table.add_row(r["op"], _human(r["bytes"]), str(r["iters"]), f"{r['time_us']:.1f} µs",
                      spread_us + (" [yellow]![/yellow]" if r.get("unsteady") else ""),
                      f"{r['algbw_gbs']:.4g}", f"{r['busbw_gbs']:.4g}")
    out = console()
    out.print(table)
    unsteady = [f"{r['op']} {_human(r['bytes'])}" for r in figures["results"]
                if r.get("unsteady")]
    if unsteady:
        out.print(f"[yellow]! unsteady: the p10–p90 range exceeds the median at "
                  f"{', '.join(unsteady)}; those medians are noise as much as link (more "
                  "--iters, or a quieter host, would settle them)[/yellow]")
    for line in link_lines(figures):
        out.print(line)
    out.print(f"{len(figures['results'])} measurements in {figures['wall_s']:.1f} s")


def link_lines(figures: dict) -> list[str]:
    """One line per link measured apart: what `bench predict --commbench` takes from it."""
    from bench.analysis.predict import links_from_commbench
    lines = []
    for name, link in (figures.get("links") or {}).items():
        if not any(r["op"] == "all_reduce" for r in link["results"]):
            continue
        fit = links_from_commbench({"layout": {"world_size": link["world_size"]},
                                    "results": link["results"]})
        lines.append(f"{name} link (ranks {', '.join(map(str, link['ranks']))}): bus "
                     f"bandwidth {fit['bandwidth_gbs']:.4g} GB/s, latency "
                     f"{fit['latency_us']:.3g} µs ({fit['source']})")
    return lines
