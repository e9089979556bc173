"""`bench commbench`: collective bandwidth over the backend and rank layout a cell uses.

The ranks are launched by the ddp strategy's own argv (torchrun; under Slurm the same
rendezvous a cell's array task gets), join the process group a cell would (gloo on CPU, NCCL
on GPUs) and time all_reduce, all_gather and reduce_scatter on float32 buffers of growing size.

Conventions (those of nccl-tests):
- size: the bytes of the whole buffer. all_reduce reduces `size` bytes on every rank;
  all_gather gathers n chunks of size/n into `size` bytes; reduce_scatter reduces `size`
  bytes into one chunk of size/n per rank.
- time: per iteration, every rank meets at a barrier, runs the collective once (a device
  synchronize on GPUs) and reads its clock; the iteration's time is the max over ranks
  (all_reduce MAX of the ranks' times), the reported time the median over iterations.
- algbw = size / time (GB/s, 1e9 bytes); busbw = algbw × 2(n−1)/n for all_reduce and
  algbw × (n−1)/n for all_gather and reduce_scatter: the bytes each link carries in a ring,
  so busbw is comparable across rank counts and with the hardware's link bandwidth.
- spread: the 10th and 90th percentiles of the iterations' times beside the median; a size
  whose p10–p90 range exceeds its median is `unsteady` (on a shared CPU host, neighbouring
  sizes' medians can then differ several-fold: a jump there is noise, not the link).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

from bench.config.cell import Cell

OPS = ("all_reduce", "all_gather", "reduce_scatter")
KIB, MIB = 1024, 1024 * 1024
DTYPE_BYTES = 4  # float32
# Iterations shrink above this size (iters × SCALE_FROM / size, at least MIN_ITERS), so large
# messages on gloo do not take forever.
SCALE_FROM = 1 * MIB
MIN_ITERS = 5


def bus_factor(op: str, n: int) -> float:
    """busbw ÷ algbw as nccl-tests defines it."""
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    raise ValueError(f"unknown op {op!r}")


def message_sizes(min_bytes: int, max_bytes: int, factor: int = 2) -> list[int]:
    """min_bytes, ×factor, … up to max_bytes (max_bytes itself included)."""
    sizes, s = [], min_bytes
    while s < max_bytes:
        sizes.append(s)
        s *= factor
    sizes.append(max_bytes)
    return sizes


def iterations(size: int, iters: int, warmup: int) -> tuple[int, int]:
    """(timed, warm-up) iterations for one size: fewer for big messages."""
    if size <= SCALE_FROM:
        return iters, warmup
    return max(MIN_ITERS, min(iters, iters * SCALE_FROM // size)), min(warmup, 1)


def element_count(op: str, size: int, n: int) -> int:
    """float32 elements of the whole buffer; a multiple of n for the chunked collectives."""
    count = max(1, size // DTYPE_BYTES)
    if op != "all_reduce":
        count = max(n, count // n * n)
    return count


def _collective(op: str, count: int, n: int, device: str, group=None):
    """A callable running the collective once on pre-allocated buffers."""
    import torch
    import torch.distributed as dist

    if op == "all_reduce":
        buf = torch.ones(count, dtype=torch.float32, device=device)
        return lambda: dist.all_reduce(buf, group=group)
    whole = torch.ones(count, dtype=torch.float32, device=device)
    chunk = torch.ones(count // n, dtype=torch.float32, device=device)
    if op == "all_gather":
        return lambda: dist.all_gather_into_tensor(whole, chunk, group=group)
    return lambda: dist.reduce_scatter_tensor(chunk, whole, group=group)


def time_op(op: str, size: int, iters: int, warmup: int, runtime, group=None,
            n: int | None = None) -> dict:
    """One op at one size on every rank of `group` (n ranks; default: all); the figures
    (identical on every member)."""
    import torch
    import torch.distributed as dist

    n = n or runtime.world_size
    count = element_count(op, size, n)
    run = _collective(op, count, n, runtime.device, group)
    cuda = runtime.device_type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    timed, warm = iterations(count * DTYPE_BYTES, iters, warmup)
    for _ in range(warm):
        run()
    sync()
    times = []
    for _ in range(timed):
        dist.barrier(group=group)
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    # An iteration lasts as long as its slowest rank.
    slowest = torch.tensor(times, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=group)
    slowest = slowest.cpu().tolist()
    t = statistics.median(slowest)
    nbytes = count * DTYPE_BYTES
    algbw = nbytes / t / 1e9
    return {"op": op, "bytes": nbytes, "count": count, "dtype": "float32", "iters": timed,
            "warmup": warm, "time_s": t, "time_us": t * 1e6, "min_time_s": min(slowest),
            **spread(slowest), "algbw_gbs": algbw, "busbw_gbs": algbw * bus_factor(op, n)}


def spread(times: list[float]) -> dict:
    """p10 and p90 of the iterations' times (s), and whether their range exceeds the median
    (`unsteady`). Fewer than 2 iterations have no spread."""
    if len(times) < 2:
        return {"p10_s": None, "p90_s": None, "unsteady": False}
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    p10, p90 = deciles[0], deciles[-1]
    return {"p10_s": p10, "p90_s": p90, "unsteady": p90 - p10 > statistics.median(times)}


def layout(runtime) -> dict:
    local = int(os.environ.get("LOCAL_WORLD_SIZE", runtime.world_size))
    return {"backend": runtime.backend, "world_size": runtime.world_size,
            "nodes": max(1, runtime.world_size // max(1, local)),
            "ranks_per_node": local, "device": runtime.device_type,
            "threads": runtime.threads}


def link_groups(world: int, per_node: int) -> dict[str, list[int]]:
    """The ranks that measure each link apart, where the layout has both (torchrun numbers a
    node's ranks consecutively): one rank per node crosses only the inter-node link; the
    first node's ranks share only the intra-node one."""
    nodes = world // per_node
    if nodes < 2 or per_node < 2:
        return {}
    return {"inter-node": [node * per_node for node in range(nodes)],
            "intra-node": list(range(per_node))}


def measure_links(spec: dict, runtime, per_node: int) -> dict:
    """Every op and size on each link's group alone; the others wait at a barrier. Every rank
    creates every group (torch.distributed requires it) in the same order."""
    import torch.distributed as dist
    out = {}
    for link, ranks in link_groups(runtime.world_size, per_node).items():
        group = dist.new_group(ranks)
        if runtime.rank in ranks:
            out[link] = {"ranks": ranks, "world_size": len(ranks), "results": [
                time_op(op, size, spec["iters"], spec["warmup"], runtime, group, len(ranks))
                for op in spec["ops"] for size in spec["sizes"]]}
        dist.barrier()
    return out


def rank_main(spec: dict) -> None:
    """One torchrun rank: every op at every size, in lockstep, over all ranks and then over
    each link alone (several nodes with several ranks each); rank 0 writes the figures."""
    from launchers import get_strategy

    warnings.filterwarnings("ignore", category=FutureWarning)  # reduce_scatter_tensor's name
    cell = Cell.from_dict(spec["cell"])
    strategy = get_strategy(cell.strategy)
    runtime = strategy.init_runtime(cell)
    try:
        results = [time_op(op, size, spec["iters"], spec["warmup"], runtime)
                   for op in spec["ops"] for size in spec["sizes"]]
        lay = layout(runtime)
        links = measure_links(spec, runtime, lay["ranks_per_node"])
        if runtime.is_main:
            # The whole world's figures name the slowest link its ring crosses.
            links.setdefault("inter-node" if lay["nodes"] > 1 else "intra-node",
                             {"ranks": list(range(runtime.world_size)),
                              "world_size": runtime.world_size, "results": results})
            Path(spec["out"]).write_text(json.dumps({"layout": lay, "results": results,
                                                     "links": links}))
    finally:
        strategy.shutdown()


def commbench(sizes: list[int], ops: list[str], devices: int = 2, device_type: str = "cpu",
              iters: int = 20, warmup: int = 5, port: int = 0,
              timeout_s: float = 1800.0, wrap=None, scratch: Path | None = None) -> dict:
    """torchrun `devices` ranks of this module (the ddp strategy's argv, through `wrap` — an
    srun prefix — across nodes); rank 0's figures: {"layout": {...}, "results": [one dict per
    op and size], "links": {link name: its own group's figures}}. `scratch`: a folder every
    node sees (rank 0 may run on any node), default the system's temporary folder."""
    import tempfile

    from launchers import get_strategy
    from launchers.processes import run_to_end

    cell = Cell(strategy="ddp", devices=devices, device_type=device_type, timeout_s=timeout_s,
                sample_hz=0.0)
    with tempfile.TemporaryDirectory(prefix="bench-commbench-", dir=scratch) as tmp:
        out = Path(tmp) / "figures.json"
        spec = {"cell": cell.to_dict(), "sizes": sizes, "ops": list(ops), "iters": iters,
                "warmup": warmup, "out": str(out)}
        argv = get_strategy("ddp").argv(cell, ["-m", "bench.worker.commbench",
                                               json.dumps(spec)], port)
        argv = wrap(argv) if wrap else argv
        t0 = time.perf_counter()
        # Ranks in a session of their own, ended with this call however it ends (Ctrl-C)
        done = run_to_end(argv, timeout_s=timeout_s)
        wall = time.perf_counter() - t0
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"commbench ranks ×{devices} failed (exit {done.returncode}): "
                               f"{tail[0]}")
        figures = json.loads(out.read_text())
    figures["wall_s"] = wall
    figures["conventions"] = {
        "bytes": "the whole buffer: all_reduce reduces it on every rank; all_gather and "
                 "reduce_scatter move n chunks of bytes/n (nccl-tests' size)",
        "time_s": "median over iterations of the slowest rank's time (barrier, then the "
                  "collective once)",
        "algbw_gbs": "bytes / time_s / 1e9",
        "busbw_gbs": "algbw × 2(n−1)/n for all_reduce, × (n−1)/n for all_gather and "
                     "reduce_scatter (nccl-tests)"}
    return figures


if __name__ == "__main__":
    rank_main(json.loads(sys.argv[1]))
