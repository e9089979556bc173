"""A scaling prediction: step time, throughput and scaling efficiency of data-parallel training
on N devices from one single-device record and an all-reduce cost model.

Cost model (alpha-beta, per collective; `bytes` is the message each rank holds, `bw` the
bus bandwidth in bytes/s, `latency` the per-hop latency in s):

- ring all-reduce = reduce-scatter + all-gather, each n−1 steps moving bytes/n per link:
  t = 2(n−1)/n · bytes/bw + 2(n−1) · latency. Its bandwidth term is optimal for all-reduce
  (Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce algorithms for clusters of
  workstations"; Thakur, Rabenseifner & Gropp 2005, "Optimization of collective communication
  operations in MPICH"). `bw` is the *bus* bandwidth as nccl-tests defines it
  (doc/PERFORMANCE.md: busbw = algbw × 2(n−1)/n for all-reduce), so a measured busbw plugs in
  directly and is comparable across rank counts.
- tree all-reduce (NCCL's double binary tree): t ≈ 2 · bytes/bw + 2 · log2(n) · latency —
  bandwidth term ~ twice the message (reduce up, broadcast down, the two trees each carrying
  half), latency logarithmic in n.
- reduce-scatter and all-gather alone: (n−1)/n · bytes/bw + (n−1) · latency each (half a ring
  all-reduce).

Strategies (volume per step per rank, P = gradient bytes = parameter bytes in fp32):
- `ddp` and DeepSpeed ZeRO stages 0, 1, 2: one all-reduce of P (stage 1/2 do it as a
  reduce-scatter of gradients plus an all-gather of the updated parameters after the step:
  the same 2(n−1)/n · P on the wire).
- ZeRO-3 / FSDP (full sharding): parameters are all-gathered again in forward and in backward,
  gradients reduce-scattered: 3 × (n−1)/n · P, i.e. 1.5× the DDP volume (Rajbhandari et al.
  2020, ZeRO, §7.2.2). Assumes parameter and gradient dtype alike and no prefetch savings.

Step time: compute (strong scaling: the single-device step time / n, the global batch split;
weak: constant; CPU ranks sharing a host's cores get the capacity of
bench/analysis/scaling_inputs.py instead of n) + exposed communication = comm time × (1 −
overlap, measured by the cells' attribution probes unless given) + a fixed per-step overhead
(default 0). Throughput = global batch / step; efficiency = throughput / (n ×
single-device throughput) (strong), = single step / predicted step (weak). With compute taken
from the single-device record's median step, that compute already holds the data wait and
optimizer step; splitting them by n is optimistic for the optimizer (each rank still updates
every parameter in DDP).

Gradient dtype: torch autocast (bf16/fp16 AMP) keeps parameters and so gradients in fp32, so
gradient bytes = parameters × 4 for every precision the harness runs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from bench.analysis.scaling_inputs import (compute_capacity, measured_overlap, pooled,
                                           shared_cores, strategy_of)
from bench.errors import BadInput

GRAD_BYTES_PER_ELEMENT = {"fp32": 4, "tf32": 4, "bf16": 4, "fp16": 4}

# Assumed links when neither overrides nor a commbench result are given (bus bandwidth in
# GB/s = 1e9 B/s, latency in µs). Stated with every prediction.
DEFAULT_LINKS = {
    "cpu": {"bandwidth_gbs": 2.0, "latency_us": 50.0,
            "source": "assumed: gloo over loopback TCP on one host"},
    "cuda": {"bandwidth_gbs": 100.0, "latency_us": 10.0,
             "source": "assumed: NVLink-class intra-node busbw"},
    "cuda-internode": {"bandwidth_gbs": 12.5, "latency_us": 20.0,
                       "source": "assumed: 100 Gb/s InfiniBand per GPU between nodes"},
}

STRATEGIES = ("ddp", "zero0", "zero1", "zero2", "zero3", "fsdp")


def allreduce_time(nbytes: float, n: int, bandwidth: float, latency: float,
                   algo: str = "ring") -> float:
    """Seconds for an all-reduce of `nbytes` over `n` ranks; bandwidth in bytes/s (bus
    bandwidth), latency in s per hop. 0 for one rank."""
    if n < 1:
        raise BadInput(f"ranks {n} is invalid; it must be at least 1")
    if n == 1:
        return 0.0
    if bandwidth <= 0:
        raise BadInput(f"bandwidth {bandwidth} is invalid; it must be positive")
    if algo == "ring":
        return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency
    if algo == "tree":
        return 2 * nbytes / bandwidth + 2 * math.log2(n) * latency
    raise BadInput(f"all-reduce algorithm '{algo}' is unknown; use ring or tree")


def half_ring_time(nbytes: float, n: int, bandwidth: float, latency: float) -> float:
    """A ring reduce-scatter or all-gather of an `nbytes` buffer."""
    if n <= 1:
        return 0.0
    return (n - 1) / n * nbytes / bandwidth + (n - 1) * latency


def comm_volume(grad_bytes: float, n: int, strategy: str = "ddp") -> float:
    """Bytes each rank sends per step (ring): 2(n−1)/n·P for DDP/ZeRO-0/1/2, 3(n−1)/n·P for
    ZeRO-3/FSDP."""
    if n <= 1:
        return 0.0
    return _passes(strategy) * (n - 1) / n * grad_bytes


def _passes(strategy: str) -> int:
    """Half-ring passes over the parameter bytes per step."""
    if strategy in ("ddp", "zero0", "zero1", "zero2"):
        return 2
    if strategy in ("zero3", "fsdp"):
        return 3
    raise BadInput(f"strategy '{strategy}' is unknown to the prediction; use one of "
                   f"{', '.join(STRATEGIES)}")


def comm_time(grad_bytes: float, n: int, bandwidth: float, latency: float,
              strategy: str = "ddp", algo: str = "ring") -> float:
    """Seconds of communication per step for the strategy."""
    if n <= 1:
        return 0.0
    passes = _passes(strategy)
    t = allreduce_time(grad_bytes, n, bandwidth, latency, algo)
    return t if passes == 2 else t + half_ring_time(grad_bytes, n, bandwidth, latency)


@dataclass
class StepPrediction:
    devices: int
    strategy: str
    scaling: str
    compute_s: float
    comm_s: float
    exposed_comm_s: float
    step_s: float
    speedup: float          # samples/s against the single device
    efficiency: float


def predict_step(compute_s: float, grad_bytes: float, n: int, bandwidth: float,
                 latency: float, overlap: float = 0.0, strategy: str = "ddp",
                 scaling: str = "strong", overhead_s: float = 0.0,
                 algo: str = "ring", capacity: float | None = None) -> StepPrediction:
    """One configuration's step. `compute_s` is the single-device step time (global batch on
    one device for strong scaling; the per-device batch for weak). `capacity`: how many
    single-device equivalents of compute the n ranks have (default n: one device each); CPU
    ranks on shared hosts have fewer, or more (`compute_capacity`)."""
    if not 0.0 <= overlap <= 1.0:
        raise BadInput(f"overlap {overlap} is invalid; it must be in [0, 1]")
    if scaling not in ("strong", "weak"):
        raise BadInput(f"scaling '{scaling}' is invalid; use strong or weak")
    parallel = capacity if capacity else float(n)
    # Strong: the global batch's work spread over the parallel hardware; weak: n × the work.
    compute = compute_s / parallel if scaling == "strong" else compute_s * n / parallel
    comm = comm_time(grad_bytes, n, bandwidth, latency, strategy, algo)
    exposed = comm * (1.0 - overlap)
    step = compute + exposed + (overhead_s if n > 1 else 0.0)
    # Samples per step: the global batch (strong) or n × the per-device batch (weak).
    samples = 1.0 if scaling == "strong" else float(n)
    speedup = (samples / step) / (1.0 / compute_s)
    return StepPrediction(n, strategy, scaling, compute, comm, exposed, step, speedup,
                          speedup / n)


# --- links: overrides, a commbench result, or the defaults ------------------------------------

def links_from_commbench(data: dict) -> dict:
    """Bus bandwidth (GB/s) and latency (µs) from a commbench result. Accepted forms:
    - simple: {"bandwidth_gbs": B, "latency_us": L};
    - `bench commbench --json`: {"layout": {"world_size": n, ...}, "results": [{"op":
      "all_reduce", "bytes": S, "time_s": T, "algbw_gbs": .., "busbw_gbs": ..}, ...]}
      (keys `algbw`/`busbw` are read too). A least-squares fit of the ring formula
      t = a + b·S over the all-reduce rows gives bw = 2(n−1)/n / b and latency = a / 2(n−1);
      where the fit is not positive, the largest busbw and the smallest size's time are
      used."""
    if "bandwidth_gbs" in data:
        return {"bandwidth_gbs": float(data["bandwidth_gbs"]),
                "latency_us": float(data.get("latency_us", 0.0)),
                "source": "commbench (simple form)"}
    rows = [r for r in data.get("results", []) if r.get("op", "all_reduce") == "all_reduce"]
    if not rows:
        raise BadInput("the commbench result has no all_reduce rows; give bandwidth_gbs and "
                       "latency_us, or a `bench commbench --json` result")
    n = int(data.get("layout", {}).get("world_size") or data.get("world_size") or 2)
    xs = [float(r["bytes"]) for r in rows]
    ys = [float(r.get("time_s", r.get("time_us", 0) / 1e6)) for r in rows]
    busbw = [float(r.get("busbw_gbs", r.get("busbw", 0.0))) for r in rows]
    a = b = math.nan
    if len(rows) >= 2:
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx > 0:
            b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
            a = my - b * mx
    if b > 0 and a > 0 and n > 1:
        bw, lat, how = 2 * (n - 1) / n / b / 1e9, a / (2 * (n - 1)) * 1e6, "ring fit"
    else:
        bw = max(busbw) if max(busbw) > 0 else max(x / y for x, y in zip(xs, ys)) / 1e9
        lat = ys[xs.index(min(xs))] / max(1, 2 * (n - 1)) * 1e6
        how = "largest busbw, smallest message's time"
    return {"bandwidth_gbs": bw, "latency_us": lat,
            "source": f"commbench ×{n} ({how}, {len(rows)} all-reduce sizes)"}


def resolve_links(device_type: str, nodes: int | None, bandwidth_gbs=None, latency_us=None,
                  commbench: dict | None = None) -> dict:
    if commbench is not None:
        links = links_from_commbench(commbench)
    else:
        key = "cuda-internode" if device_type == "cuda" and nodes and nodes > 1 else \
            ("cuda" if device_type == "cuda" else "cpu")
        links = dict(DEFAULT_LINKS[key])
    if bandwidth_gbs is not None:
        links["bandwidth_gbs"], links["source"] = float(bandwidth_gbs), "given"
    if latency_us is not None:
        links["latency_us"] = float(latency_us)
        links["source"] = "given" if bandwidth_gbs is not None else links["source"] + \
            ", latency given"
    return links


# --- records -----------------------------------------------------------------------------

def parameter_count(record: dict) -> int:
    """Parameter elements of a record's model from its `model.parameters` field. Records
    without one need the model rebuilt from the cell, which analysis may not import: the
    caller passes `parameters=` to `predict` (the CLI rebuilds the model, no weights)."""
    model = record.get("model") or {}
    if isinstance(model, dict) and model.get("parameters"):
        return int(model["parameters"])
    raise BadInput(f"record {record.get('cell_id')} has no model.parameters; pass a "
                   "parameter count")


def _family(record: dict) -> tuple:
    cell = record.get("cell", {})
    return (cell.get("model"), record.get("fingerprint"), cell.get("device_type"))


def _efficiency(single: dict, other: dict) -> float:
    t1 = float(single["timing"]["throughput_img_s"])
    tn = float(other["timing"]["throughput_img_s"])
    return tn / t1 / int(other["cell"]["devices"])


def predict(records: list[dict], devices=(2, 4, 8, 64), nodes: int | None = None,
            bandwidth: float | None = None, latency: float | None = None,
            commbench: dict | None = None, strategies=("ddp",), overlap: float | None = None,
            algo: str = "ring", overhead_s: float = 0.0,
            shared_host: bool = True, scaling: str | None = None,
            parameters=parameter_count) -> dict:
    """Predictions per workload family (model, fingerprint, device type) that has an ok
    single-device fp32 record. `bandwidth` in GB/s, `latency` in µs. Where an ok record of the
    same family has the strategy and device count, it is paired with its measured efficiency
    and the relative error (predicted − measured) / measured. `parameters(record)` gives the
    parameter count of the single-device record's model. `overlap` None: each strategy's
    measured `breakdown.comm_overlap` (`measured_overlap`)."""
    ok = [r for r in records if r.get("status") == "ok"]
    singles = [r for r in ok if r.get("cell", {}).get("strategy") == "single"
               and int(r["cell"].get("devices", 1)) == 1]
    if not singles:
        raise BadInput("no ok single-device record to predict from")
    out = []
    for family in sorted({_family(r) for r in singles}, key=str):
        first = sorted((r for r in singles if _family(r) == family),
                       key=lambda r: (r["cell"].get("precision") != "fp32",
                                      r["cell"].get("repeat", 0)))[0]
        base = pooled([r for r in singles if _family(r) == family
                       and r["cell"].get("precision") == first["cell"].get("precision")])
        cell = base["cell"]
        compute_s = float(base["timing"]["step_time_median_s"])
        params = int(parameters(base))
        grad_bytes = params * GRAD_BYTES_PER_ELEMENT.get(cell.get("precision", "fp32"), 4)
        links = resolve_links(cell.get("device_type", "cpu"), nodes, bandwidth, latency,
                              commbench)
        bw, lat = links["bandwidth_gbs"] * 1e9, links["latency_us"] * 1e-6
        scaling_ = scaling or cell.get("scaling", "strong")
        # Measured cells of the same workload and precision (an AMP cell is not what an fp32
        # single-device record predicts).
        measured = [r for r in ok if _family(r) == family and strategy_of(r["cell"])
                    and r["cell"].get("precision") == cell.get("precision")]
        rows, overlaps = [], {}
        for strategy in strategies:
            overlaps[strategy] = (overlap, "given") if overlap is not None \
                else measured_overlap(measured, strategy)
            for n in devices:
                capacity = compute_capacity(base, nodes, int(n)) if shared_host else None
                p = predict_step(compute_s, grad_bytes, int(n), bw, lat, overlaps[strategy][0],
                                 strategy, scaling_, overhead_s, algo, capacity)
                row = asdict(p)
                row.update(overlap=overlaps[strategy][0], compute_capacity=capacity)
                row["throughput_img_s"] = float(base["timing"]["throughput_img_s"]) * p.speedup
                row["comm_bytes_per_step"] = comm_volume(grad_bytes, int(n), strategy)
                hits = [r for r in measured if strategy_of(r["cell"]) == strategy
                        and int(r["cell"]["devices"]) == int(n)]
                if hits:
                    m = sum(_efficiency(base, r) for r in hits) / len(hits)
                    row.update(measured_efficiency=m,
                               measured_step_s=sum(float(r["timing"]["step_time_median_s"])
                                                   for r in hits) / len(hits),
                               error=(p.efficiency - m) / m, measured_cells=[
                                   r.get("cell_id") for r in hits])
                rows.append(row)
        out.append({"model": family[0], "fingerprint": family[1], "device_type": family[2],
                    "baseline_cell": base.get("cell_id"), "compute_s": compute_s,
                    "parameters": params, "grad_bytes": grad_bytes, "scaling": scaling_,
                    "links": links, "overlap": {k: v[0] for k, v in overlaps.items()},
                    "algo": algo, "overhead_s": overhead_s,
                    "rows": rows, "assumptions": assumptions(
                        links, overlaps, algo, scaling_,
                        shared_cores(base, nodes) if shared_host else None, overhead_s)})
    return {"families": out}


def assumptions(links: dict, overlaps: dict, algo: str, scaling: str,
                shared: str | None = None, overhead_s: float = 0.0) -> list[str]:
    return ([shared] if shared else []) + [
        f"links: bus bandwidth {links['bandwidth_gbs']:g} GB/s, latency "
        f"{links['latency_us']:g} µs ({links['source']})",
        f"{algo} all-reduce: " + ("2(n−1)/n·bytes/bw + 2(n−1)·latency" if algo == "ring" else
                                  "2·bytes/bw + 2·log2(n)·latency"),
        "ZeRO-0/1/2: reduce-scatter + all-gather = the all-reduce volume; ZeRO-3/FSDP: 1.5×",
        *(f"{strategy} overlap {value:.2f}: exposed comm = comm × (1 − overlap) ({source})"
          for strategy, (value, source) in overlaps.items()),
        f"fixed per-step overhead {overhead_s * 1e3:g} ms on more than one device"
        + (" (none assumed)" if overhead_s == 0 else ""),
        f"{scaling} scaling: compute per step = single-device median step"
        + (" / capacity (n devices; CPU: see above)" if scaling == "strong"
           else " (constant per rank)"),
        "gradients fp32 (autocast keeps fp32 parameters and gradients)",
    ]
