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
- tree all-reduce (NCCL's double binary tree): t = 2(n−1)/n · bytes/bw + 2 · log2(n) · latency.
  The bandwidth term is the ring's: `bw` is a *bus* bandwidth, which nccl-tests defines for
  every all-reduce algorithm as algbw × 2(n−1)/n, so the algorithm's own traffic pattern is
  already folded into it; only the latency term (logarithmic in n) differs.
- reduce-scatter and all-gather alone: (n−1)/n · bytes/bw + (n−1) · latency each (half a ring
  all-reduce).

Strategies: what each moves per step (bench/analysis/volume.py), P = gradient bytes. DDP,
ZeRO-0/1/2: 2(n−1)/n · P on the wire; ZeRO-3/FSDP: (2 + r)(n−1)/n · P, r the share of the
parameters gathered again in backward, from the sharding the strategy's records carry
(FSDP per block: the blocks' share; ZeRO-3 on these models: 0). Communication time = an
all-reduce of P + a half ring of r · P. A row gives both `comm_wire_bytes_per_step` (ring bytes
each rank sends) and `comm_message_bytes_per_step` (the bytes each rank hands its collectives:
what a record's measured `breakdown.comm_message_bytes_per_step` counts).

Step time, on the basis measured efficiency uses (the timed window ÷ its steps, waits
included): compute (the single-device window step less its data wait; strong scaling: ÷ n, the
global batch split; weak: constant; CPU ranks sharing a host's cores get the capacity of
bench/analysis/scaling_inputs.py instead of n) + data wait (÷ n strong, constant weak) +
exposed communication = comm time × (1 − overlap, measured by the cells' attribution probes
unless given) + a fixed per-step overhead (default 0). Throughput = samples / step;
efficiency = throughput / (n × single-device throughput). Splitting the optimizer step by n
is optimistic (each DDP rank still updates every parameter). Single-device records are pooled
per processor model: a step time on one processor says nothing about another.

Gradient dtype: torch autocast (bf16/fp16 AMP) keeps parameters and so gradients in fp32, so
gradient bytes = parameters × 4 for every precision the harness runs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from bench.analysis.scaling_inputs import (compute_capacity, measured_overlap, placement_of,
                                           pooled, processor_of, shared_cores, sharding_work,
                                           strategy_of, window_figures)
from bench.analysis.volume import (message_bytes, passes, recorded_sharding, regathered_share,
                                   volume_assumption, wire_bytes)
from bench.analysis.links import (DEFAULT_LINKS, links_from_commbench,  # noqa: F401
                                  measured_links, resolve_links, ring_link)
from bench.errors import BadInput

GRAD_BYTES_PER_ELEMENT = {"fp32": 4, "tf32": 4, "bf16": 4, "fp16": 4}

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
        return 2 * (n - 1) / n * nbytes / bandwidth + 2 * math.log2(n) * latency
    raise BadInput(f"all-reduce algorithm '{algo}' is unknown; use ring or tree")


def half_ring_time(nbytes: float, n: int, bandwidth: float, latency: float) -> float:
    """A ring reduce-scatter or all-gather of an `nbytes` buffer."""
    if n <= 1:
        return 0.0
    return (n - 1) / n * nbytes / bandwidth + (n - 1) * latency


def comm_time(grad_bytes: float, n: int, bandwidth: float, latency: float,
              strategy: str = "ddp", algo: str = "ring", regathered: float = 0.0) -> float:
    """Seconds of communication per step for the strategy: the all-reduce volume, plus a
    half ring over the share `regathered` of the parameters that ZeRO-3/FSDP gather again."""
    extra = passes(strategy, regathered) - 2.0
    if n <= 1:
        return 0.0
    t = allreduce_time(grad_bytes, n, bandwidth, latency, algo)
    return t + half_ring_time(extra * grad_bytes, n, bandwidth, latency) if extra > 0 else t


@dataclass
class StepPrediction:
    devices: int
    strategy: str
    scaling: str
    compute_s: float
    data_s: float
    comm_s: float
    exposed_comm_s: float
    step_s: float
    speedup: float          # samples/s against the single device
    efficiency: float


def predict_step(compute_s: float, grad_bytes: float, n: int, bandwidth: float,
                 latency: float, overlap: float = 0.0, strategy: str = "ddp",
                 scaling: str = "strong", overhead_s: float = 0.0,
                 algo: str = "ring", capacity: float | None = None,
                 data_s: float = 0.0, regathered: float = 0.0) -> StepPrediction:
    """One configuration's window time per step. `compute_s` is the single-device window time
    per step less its data wait `data_s` (global batch on one device for strong scaling; the
    per-device batch for weak). The data wait goes with the samples a rank loads: ÷ n under
    strong scaling, unchanged under weak. `capacity`: how many single-device equivalents of
    compute the n ranks have (default n: one device each); CPU ranks on shared hosts have
    fewer, or more (`compute_capacity`)."""
    if not 0.0 <= overlap <= 1.0:
        raise BadInput(f"overlap {overlap} is invalid; it must be in [0, 1]")
    if scaling not in ("strong", "weak"):
        raise BadInput(f"scaling '{scaling}' is invalid; use strong or weak")
    parallel = capacity if capacity else float(n)
    # Strong: the global batch's work spread over the parallel hardware; weak: n × the work.
    compute = compute_s / parallel if scaling == "strong" else compute_s * n / parallel
    data = data_s / n if scaling == "strong" else data_s
    comm = comm_time(grad_bytes, n, bandwidth, latency, strategy, algo, regathered)
    exposed = comm * (1.0 - overlap)
    step = compute + data + exposed + (overhead_s if n > 1 else 0.0)
    # Samples per step: the global batch (strong) or n × the per-device batch (weak).
    samples = 1.0 if scaling == "strong" else float(n)
    speedup = (samples / step) / (1.0 / (compute_s + data_s))
    return StepPrediction(n, strategy, scaling, compute, data, comm, exposed, step, speedup,
                          speedup / n)


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
    return (cell.get("model"), record.get("fingerprint"), cell.get("device_type"),
            processor_of(record))


def _single_rate(single: dict, window_s: float) -> float:
    """The single-device record's samples/s on the prediction's basis: its global batch per
    pooled window step (the repeats' throughputs' mean where the batch is not recorded)."""
    samples = float((single.get("runtime") or {}).get("global_batch")
                    or single["cell"].get("global_batch") or 0)
    return samples / window_s if samples else float(single["timing"]["throughput_img_s"])


def _efficiency(single_rate: float, other: dict) -> float:
    """Measured efficiency: `other`'s throughput (samples per window) against the single
    device's on the same basis."""
    return float(other["timing"]["throughput_img_s"]) / single_rate / int(other["cell"]["devices"])


def predict(records: list[dict], devices=(2, 4, 8, 64), nodes: int | None = None,
            bandwidth: float | None = None, latency: float | None = None,
            commbench: dict | None = None, strategies=("ddp",), overlap: float | None = None,
            algo: str = "ring", overhead_s: float = 0.0,
            shared_host: bool = True, scaling: str | None = None,
            parameters=parameter_count, sharding=None) -> dict:
    """Predictions per workload family (model, fingerprint, device type, processor) that has
    an ok single-device record. `bandwidth` in GB/s, `latency` in µs. Where an ok record of the
    same family has the strategy and device count, it is paired with its measured efficiency
    and the relative error (predicted − measured) / measured. `parameters(record)` gives the
    parameter count of the single-device record's model; `sharding(record)`, if given, FSDP's
    per-block policy on it (`runtime.sharding`'s form), used where no measured FSDP cell
    recorded one. `overlap` None: each strategy's measured `breakdown.comm_overlap`
    (`measured_overlap`)."""
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
        window_s, data_s = window_figures(base)
        compute_s = window_s - data_s
        rate = _single_rate(base, window_s)
        params = int(parameters(base))
        grad_bytes = params * GRAD_BYTES_PER_ELEMENT.get(cell.get("precision", "fp32"), 4)
        links = resolve_links(cell.get("device_type", "cpu"), nodes, bandwidth, latency,
                              commbench)
        scaling_ = scaling or cell.get("scaling", "strong")
        # Measured cells of the same workload and precision (an AMP cell is not what an fp32
        # single-device record predicts).
        measured = [r for r in ok if _family(r) == family and strategy_of(r["cell"])
                    and r["cell"].get("precision") == cell.get("precision")]
        rows, overlaps, shares = [], {}, {}  # shares: strategy → (r, its source), volume.py
        works = {}  # strategy → (a sharding rank's own extra work per step, its source)

        def share_of_single(n: int, on_nodes: int) -> float:  # a rank's part of the single
            # device's compute, on the nodes the measured cell ran on
            capacity = compute_capacity(base, on_nodes, n) if shared_host else None
            return predict_step(compute_s, 0.0, n, 1.0, 0.0, scaling=scaling_,
                                capacity=capacity).compute_s
        for strategy in strategies:
            overlaps[strategy] = (overlap, "given") if overlap is not None \
                else measured_overlap(measured, strategy)
            works[strategy] = sharding_work(measured, strategy, share_of_single)
            shares[strategy] = regathered_share(strategy, params,
                                                recorded_sharding(measured, strategy),
                                                sharding(base) if sharding else None)
            share = shares[strategy][0]
            for n in devices:
                capacity = compute_capacity(base, nodes, int(n)) if shared_host else None
                bw, lat, link = ring_link(links, int(n), nodes)
                p = predict_step(compute_s, grad_bytes, int(n), bw, lat, overlaps[strategy][0],
                                 strategy, scaling_, overhead_s + works[strategy][0], algo,
                                 capacity, data_s, share)
                row = asdict(p)
                row.update(overlap=overlaps[strategy][0], compute_capacity=capacity, link=link,
                           sharding_work_s=works[strategy][0])
                row["throughput_img_s"] = rate * p.speedup
                row.update(regathered_share=share, regathered_source=shares[strategy][1],
                           comm_wire_bytes_per_step=wire_bytes(grad_bytes, int(n), strategy,
                                                               share),
                           comm_message_bytes_per_step=message_bytes(grad_bytes, int(n),
                                                                     strategy, share))
                hits = [r for r in measured if strategy_of(r["cell"]) == strategy
                        and int(r["cell"]["devices"]) == int(n)]
                if hits:
                    m = sum(_efficiency(rate, r) for r in hits) / len(hits)
                    crowded = oversubscribed(hits)
                    row.update(measured_efficiency=m,
                               measured_step_s=sum(window_figures(r)[0]
                                                   for r in hits) / len(hits),
                               # ranks that took turns on cores measured the contention
                               error=None if crowded else (p.efficiency - m) / m,
                               oversubscribed=crowded, measured_cells=[
                                   r.get("cell_id") for r in hits])
                    measured_bytes = [(r.get("breakdown") or {}).get(
                        "comm_message_bytes_per_step") for r in hits]
                    if all(b is not None for b in measured_bytes):
                        row["measured_message_bytes_per_step"] = \
                            sum(measured_bytes) / len(measured_bytes)
                rows.append(row)
        out.append({"model": family[0], "fingerprint": family[1], "device_type": family[2],
                    "processor": family[3], "baseline_cell": base.get("cell_id"),
                    "baseline_repeats": base.get("repeats_pooled", 1),
                    "compute_s": compute_s, "data_s": data_s, "window_step_s": window_s,
                    "parameters": params, "grad_bytes": grad_bytes, "scaling": scaling_,
                    "links": links, "overlap": {k: v[0] for k, v in overlaps.items()},
                    "algo": algo, "overhead_s": overhead_s, "volume": volume_assumption(shares),
                    "rows": rows, "assumptions": crowding(
                        [r for r in singles if _family(r) == family]) + sorted(
                        {r["link"] for r in rows if r["link"].startswith("two-level")}) + [
                        f"measured efficiency not compared with the prediction: {line}"
                        for r in rows for line in r.get("oversubscribed") or []] + [
                        f"{s} sharding work {w * 1e3:.3g} ms per step beyond a rank's share "
                        f"of the single device's compute ({src})"
                        for s, (w, src) in works.items() if s in ("fsdp", "zero3")] + assumptions(
                        links, overlaps, algo, scaling_,
                        shared_cores(base, nodes) if shared_host else None, overhead_s,
                        family[3], data_s, volume_assumption(shares))})
    return {"families": out}


def oversubscribed(records: list[dict]) -> list[str]:
    """The oversubscription sentence of each record whose ranks took turns on cores
    (bench.measure.placement)."""
    return [f"{r.get('cell_id')}: {note}" for r in records
            if (note := placement_of(r).get("note"))]


def crowding(baseline: list[dict]) -> list[str]:
    return [f"the single-device baseline is not trusted: {line}"
            for line in oversubscribed(baseline)]


def assumptions(links: dict, overlaps: dict, algo: str, scaling: str,
                shared: str | None = None, overhead_s: float = 0.0, processor: str = "?",
                data_s: float = 0.0, volume: str = "") -> list[str]:
    return ([shared] if shared else []) + [
        f"processor {processor}: compute from its own single-device record(s); cells on other "
        "processors are predicted and paired apart, never pooled",
        f"{links.get('link', 'intra-node')} link: bus bandwidth {links['bandwidth_gbs']:g} "
        f"GB/s, latency {links['latency_us']:g} µs ({links['source']})",
        f"time per step = the timed window ÷ its steps, as measured efficiency (throughput) "
        f"counts it: compute + data wait ({data_s * 1e3:.3g} ms on one device, "
        + ("÷ n: each rank loads its share of the batch" if scaling == "strong" else
           "constant: each rank loads a full per-device batch") + ") + exposed comm",
        f"{algo} all-reduce: " + ("2(n−1)/n·bytes/bw + 2(n−1)·latency" if algo == "ring" else
                                  "2(n−1)/n·bytes/bw + 2·log2(n)·latency"),
        *([volume] if volume else []),
        *(f"{strategy} overlap {value:.2f}: exposed comm = comm × (1 − overlap) ({source})"
          for strategy, (value, source) in overlaps.items()),
        f"fixed per-step overhead {overhead_s * 1e3:g} ms on more than one device"
        + (" (none assumed)" if overhead_s == 0 else ""),
        f"{scaling} scaling: compute per step = single-device window step less its data wait"
        + (" / capacity (n devices; CPU: see above)" if scaling == "strong"
           else " (constant per rank)"),
        "4 bytes per element in every collective: gradients fp32 (autocast keeps fp32 "
        "parameters and gradients); an FSDP bf16/fp16 policy gathers half-size parameters, "
        "which is not modelled",
    ]
