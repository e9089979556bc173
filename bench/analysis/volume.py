"""What a data-parallel strategy moves per step and per rank, in two units.

- *message bytes*: what a rank hands its collectives as input: an all-reduce's or a
  reduce-scatter's whole buffer, an all-gather's own shard (1/n of the gathered buffer). The
  attribution probe measures exactly this (a record's `breakdown.comm_message_bytes_per_step`: each
  collective's largest input × the parameters' element size); gloo runs a reduce-scatter as an
  all-reduce of the same buffer, the same input.
- *wire bytes*: what a rank sends on a ring: 2(n−1)/n · B for an all-reduce of B, (n−1)/n · B
  for a reduce-scatter or an all-gather of a B-byte buffer. The time model prices these.

Per step, P = gradient bytes (parameter elements × 4), r = the share of the parameters
all-gathered a second time, in backward:
- `ddp`, `zero0`: an all-reduce of the gradients: message P, wire 2(n−1)/n · P.
- `zero1`, `zero2`: a reduce-scatter of the gradients and an all-gather of the updated
  parameters after the step: message P + P/n, wire 2(n−1)/n · P.
- `zero3`, `fsdp`: a reduce-scatter of the gradients, an all-gather of every parameter once
  (before its module's forward; DeepSpeed's persistent small parameters after the optimizer
  step instead) and a second one of the share r freed after forward: message P + (1 + r) · P/n,
  wire (2 + r)(n−1)/n · P. Not the 3 passes of the ZeRO paper (Rajbhandari et al. 2020, §7.2.2),
  which assumes every parameter is freed after forward (r = 1).

r is what the strategy recorded (`runtime.sharding`: regathered_parameters / parameters, from
launchers/fsdp.py and launchers/deepspeed.py) when a measured cell of it is at hand (an FSDP
record from before per-block sharding: root-only, r = 0); else
- fsdp: FSDP's per-block policy applied to the rebuilt model, where the caller can rebuild it
  (the root unit, bench's up-sampling layers and head, stays gathered through backward, so
  r < 1), else r = 1, every parameter assumed inside a block;
- zero3: r = 0 while 2 × the parameters fit in DeepSpeed's default stage3_max_reuse_distance
  (1e9 elements: a parameter used again within that many fetched elements is not freed, and
  every backward re-use lies within 2 × the parameters), else r = 1.
Measured on 2 gloo CPU ranks, U-Net width 4 (7,477 parameters, 2026-12-06): DDP 29,908 B
(= 4P), ZeRO-3 44,868 B (all persistent; 1.5 × 4P), FSDP per block 58,532 B (r = 0.912:
58,502 B predicted, the rest FSDP's padding of each shard to a multiple of n rows).
Element size is 4 B throughout: FSDP with a bf16 policy gathers bf16 parameters, which halves
its all-gathers on the wire; that is not modelled.
"""
from __future__ import annotations

from bench.analysis.scaling_inputs import strategy_of
from bench.errors import BadInput

STRATEGIES = ("ddp", "zero0", "zero1", "zero2", "zero3", "fsdp")
GATHERING = ("zero3", "fsdp")  # strategies that all-gather parameters before compute
DS_MAX_REUSE_DISTANCE = 1_000_000_000  # DeepSpeed's default stage3_max_reuse_distance


def _check(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise BadInput(f"strategy '{strategy}' is unknown to the prediction; use one of "
                       f"{', '.join(STRATEGIES)}")


def passes(strategy: str, regathered: float = 0.0) -> float:
    """Half-ring passes over the parameter bytes per step: (n−1)/n · P on the wire each."""
    _check(strategy)
    return 2.0 + (regathered if strategy in GATHERING else 0.0)


def wire_bytes(grad_bytes: float, n: int, strategy: str = "ddp",
               regathered: float = 0.0) -> float:
    """Bytes each rank sends per step on a ring."""
    _check(strategy)
    if n <= 1:
        return 0.0
    return passes(strategy, regathered) * (n - 1) / n * grad_bytes


def message_bytes(grad_bytes: float, n: int, strategy: str = "ddp",
                  regathered: float = 0.0) -> float:
    """Bytes each rank hands its collectives per step: comparable to a record's measured
    `breakdown.comm_message_bytes_per_step`."""
    _check(strategy)
    if n <= 1:
        return 0.0
    if strategy in ("ddp", "zero0"):
        return grad_bytes
    gathers = 1.0 + (regathered if strategy in GATHERING else 0.0)
    return grad_bytes + gathers * grad_bytes / n


def regathered_share(strategy: str, parameters: int, sharding: dict | None = None,
                     model_sharding: dict | None = None) -> tuple[float, str]:
    """(r, where it came from) for `strategy`; `sharding` is a measured record's
    `runtime.sharding`, `model_sharding` FSDP's per-block policy applied to the workload's
    model (what a cell would record), for when no measured cell has one."""
    _check(strategy)
    if strategy not in GATHERING:
        return 0.0, "no parameter gathering before compute"
    if sharding and sharding.get("parameters"):
        share = float(sharding["regathered_parameters"]) / float(sharding["parameters"])
        return share, f"recorded {sharding.get('policy')} sharding"
    if strategy == "fsdp" and model_sharding and model_sharding.get("parameters"):
        share = float(model_sharding["regathered_parameters"]) / model_sharding["parameters"]
        return share, "FSDP's per-block policy on this model (its root unit is kept)"
    if strategy == "fsdp":
        return 1.0, "assumed: FSDP per-block units hold every parameter"
    if 2 * parameters <= DS_MAX_REUSE_DISTANCE:
        return 0.0, "assumed: DeepSpeed's default reuse distance keeps every parameter"
    return 1.0, "assumed: beyond DeepSpeed's default reuse distance, all freed after forward"


def recorded_sharding(records: list[dict], strategy: str) -> dict | None:
    """The `runtime.sharding` of the first record of `strategy` that carries one. FSDP records
    made before bench sharded per block (2026-12-06) carry none: their root-only unit was
    gathered once, r = 0, and their measured bytes are P + P/n."""
    mine = [r for r in records if strategy_of(r.get("cell") or {}) == strategy]
    for record in mine:
        sharding = (record.get("runtime") or {}).get("sharding")
        if sharding:
            return sharding
    if strategy == "fsdp" and mine:
        return {"policy": "root-only (recorded before per-block sharding)", "parameters": 1,
                "regathered_parameters": 0}
    return None


def volume_assumption(shares: dict[str, tuple[float, str]]) -> str:
    """One line for a prediction's assumptions: the volume rule and each strategy's r."""
    text = ("volume per step: DDP/ZeRO-0 all-reduce P; ZeRO-1/2 reduce-scatter P + all-gather "
            "P/n; ZeRO-3/FSDP reduce-scatter P + all-gather (1 + r)·P/n, r = share gathered "
            "again in backward")
    gathering = [f"{s} r = {v:.2f} ({src})" for s, (v, src) in shares.items() if s in GATHERING]
    return text + (": " + "; ".join(gathering) if gathering else "")
