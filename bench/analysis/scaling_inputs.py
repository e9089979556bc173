"""What a scaling prediction takes from the records beyond a step time: the single-device
repeats pooled into one baseline, the compute n CPU ranks sharing a host's cores have (from the
thread scaling a single-device record measured), and the communication overlap the cells'
attribution probes measured (bench/analysis/predict.py uses them).
"""
from __future__ import annotations

import statistics

from bench.analysis.frame import hardware_of


def strategy_of(cell: dict) -> str | None:
    s = cell.get("strategy")
    if s == "ddp":
        return "ddp"
    if s == "deepspeed":
        return f"zero{int(cell.get('zero_stage') or 0)}"
    if s == "fsdp":
        return "fsdp"
    return None


def pooled(repeats: list[dict]) -> dict:
    """One single-device record standing for its repeats (lowest repeat first): the median of
    their median steps and thread speedups, the mean of their throughputs. One repeat of this
    VM's single-device cell can be 20% off the next."""
    base = dict(sorted(repeats, key=lambda r: r["cell"].get("repeat", 0))[0])
    windows = [window_figures(r) for r in repeats]
    base["timing"] = {**base["timing"],
                      "window_step_s": statistics.median(w for w, _ in windows),
                      "data_wait_step_s": statistics.median(d for _, d in windows),
                      "step_time_median_s": statistics.median(
                          float(r["timing"]["step_time_median_s"]) for r in repeats),
                      "throughput_img_s": statistics.fmean(
                          float(r["timing"]["throughput_img_s"]) for r in repeats)}
    measured = [r["breakdown"]["thread_scaling"] for r in repeats
                if ((r.get("breakdown") or {}).get("thread_scaling") or {}).get("speedup")]
    if measured:
        scaling = {**measured[0], "speedup": statistics.median(m["speedup"] for m in measured)}
        base["breakdown"] = {**(base.get("breakdown") or {}), "thread_scaling": scaling}
    base["repeats_pooled"] = len(repeats)
    return base


def window_figures(record: dict) -> tuple[float, float]:
    """(window time per step, data wait per step) in s: what a measured efficiency is made of
    (throughput = samples per window). A step's own time (`step_time_median_s`) leaves out the
    wait for the next batch, so predicting from it and comparing with throughput would blame
    the links for the data. On a GPU only the device's idle time can be the data's (the host
    waits while queued kernels run). Records without a window keep the median step, no wait."""
    timing = record.get("timing") or {}
    if "window_step_s" in timing:  # already pooled
        return float(timing["window_step_s"]), float(timing.get("data_wait_step_s") or 0.0)
    steps, window = timing.get("timed_steps"), timing.get("train_time_s")
    if not (steps and window):
        return float(timing["step_time_median_s"]), 0.0
    per_step = float(window) / int(steps)
    share = float(timing.get("data_wait_frac") or 0.0)
    if record.get("cell", {}).get("device_type") == "cuda" and \
            timing.get("idle_between_steps_frac") is not None:
        share = min(share, float(timing["idle_between_steps_frac"]))
    return per_step, per_step * min(1.0, share)


def processor_of(record: dict) -> str:
    """The processor model a record's numbers belong to (`frame.hardware_of`, as reports
    name it). A step time measured on one model says nothing about another's."""
    env = record.get("env") or {}
    return hardware_of(record.get("cell", {}).get("device_type"), env.get("gpus"),
                       env.get("cpu"))


def compute_capacity(record: dict, nodes: int | None = None,
                     n: int | None = None) -> float | None:
    """Single-device equivalents of compute that n ranks of a CPU cell have; None (one
    device per rank) for GPUs. Ranks on a host share its cores: with C = cores × nodes, each
    of n ranks gets t = max(1, C // n) threads (what bench's launcher gives them). Where the
    single-device record measured its thread scaling (`breakdown.thread_scaling`: a step on
    one thread against its T threads, speedup S_T), the speedup at t threads follows Amdahl's
    law fitted to it, S(t) = 1 / ((1 − p) + p/t), and capacity = min(n, C) · S(t) / S_T: above
    n when the single run's threads cost more than they gave. Without that measurement (or
    without n) threads are assumed to scale perfectly: capacity = C ÷ T."""
    if record.get("cell", {}).get("device_type") != "cpu":
        return None
    env, runtime = record.get("env") or {}, record.get("runtime") or {}
    cores = usable_cores(env)
    threads = runtime.get("threads_per_rank") or env.get("torch_threads")
    if not cores or not threads:
        return None
    total = float(cores) * (nodes or 1)
    scaling = (record.get("breakdown") or {}).get("thread_scaling") or {}
    if n is None or not scaling.get("speedup"):
        perfect = max(1.0, total / float(threads))
        return perfect if n is None else min(float(n), perfect)
    speedup_t = amdahl(scaling["speedup"], int(scaling["threads"]),
                       max(1, int(total // n)))
    return min(float(n), total) * speedup_t / scaling["speedup"]


def usable_cores(env: dict) -> int | None:
    """The cores a rank of this record could use: the task's (affinity set, cgroup quota, and
    its Slurm allocation where smaller: `cores.thread_budget`), which a Slurm or container
    limit makes far fewer than the node's `cpu_count`. Records made before bench kept it have
    only the node's count."""
    cores = env.get("usable_cores") or env.get("cpu_count")
    allocated = env.get("allocated_cpus")
    return min(cores, allocated) if cores and allocated else cores


def amdahl(speedup: float, threads: int, t: int) -> float:
    """Speedup at t threads given `speedup` measured at `threads` (Amdahl's law). A measured
    speedup ≤ 1 (threads that do not help) gives no speedup at any count."""
    if threads <= 1 or speedup <= 1.0:
        return 1.0
    parallel = min(1.0, (1.0 - 1.0 / speedup) / (1.0 - 1.0 / threads))
    return 1.0 / ((1.0 - parallel) + parallel / t)


def measured_overlap(measured: list[dict], strategy: str) -> tuple[float, str]:
    """(overlap, where it came from): the mean `breakdown.comm_overlap` of the measured cells
    of this strategy, else of any data-parallel cell of the workload, else 0 (assumed)."""
    def mean_of(records):
        values = [float(r["breakdown"]["comm_overlap"]) for r in records
                  if isinstance(r.get("breakdown"), dict) and not crowded(r)
                  and r["breakdown"].get("comm_overlap") is not None]
        return sum(values) / len(values) if values else None
    own = mean_of([r for r in measured if strategy_of(r["cell"]) == strategy])
    if own is not None:
        return own, f"measured on this workload's {strategy} cells"
    other = mean_of(measured)
    if other is not None:
        return other, "measured on this workload's other data-parallel cells"
    return 0.0, "not measured here: assumed none"


def shared_cores(record: dict, nodes: int | None) -> str | None:
    """The assumption line of `compute_capacity`, or None where ranks do not share cores."""
    if compute_capacity(record, nodes) is None:
        return None
    env = record.get("env") or {}
    cores = (f"{usable_cores(env)} usable cores per node (affinity, cgroup quota and Slurm "
             f"allocation; the node has {env.get('cpu_count')})" if env.get("usable_cores") else
             f"{env.get('cpu_count')} cores per node (the node's count: this record predates "
             "the task's usable cores, so a Slurm or cgroup limit is not seen)")
    scaling = (record.get("breakdown") or {}).get("thread_scaling") or {}
    if scaling.get("speedup"):
        return (f"CPU ranks share the host's cores: {cores}; each gets cores × nodes ÷ n threads; "
                f"the single run measured a {scaling['speedup']:.2f}× speedup on "
                f"{scaling['threads']} threads over one, extrapolated by Amdahl's law")
    return (f"CPU ranks share the host's cores: {cores}; at most cores × nodes ÷ the single run's "
            f"threads = {compute_capacity(record, nodes):g} single-device equivalents "
            "(threads assumed to scale perfectly: the record has no thread_scaling)")


SHARDED = ("fsdp", "zero3")


def placement_of(record: dict) -> dict:
    """Where a cell's ranks ran (bench.measure.placement); {} for records without it."""
    return (record.get("runtime") or {}).get("placement") or {}


def nodes_of(record: dict) -> int:
    """The nodes a cell's ranks ran on (1 for records without a placement)."""
    return max(1, len(placement_of(record).get("nodes") or []))


def crowded(record: dict) -> bool:
    """Its ranks took turns on their cores: its times measure the contention, so nothing is
    taken from them."""
    return bool(placement_of(record).get("oversubscribed"))


def sharding_work(measured: list[dict], strategy: str, share_of_single) -> tuple[float, str]:
    """(seconds per step, where it came from): the work a sharding strategy's rank does that a
    single device never does — gathering shards into whole parameters and back, an optimizer
    over sharded tensors — which no single-device record holds. Its cells' probes measured the
    rank's own compute (forward + backward + optimizer shares of the window); less the share
    of the single device's compute the prediction gives a rank at the cell's n
    and nodes (`share_of_single(n, nodes)`), the mean excess is added to every step on more
    than one device. Oversubscribed cells are left out.
    Replicating strategies (DDP, ZeRO-0/1/2) get none."""
    if strategy not in SHARDED:
        return 0.0, "none (a replicating strategy computes what one device does)"
    excess = []
    for record in measured:
        b = record.get("breakdown") or {}
        if strategy_of(record["cell"]) != strategy or b.get("forward") is None \
                or crowded(record):
            continue
        own = (b["forward"] + b["backward"] + b["optimizer"]) * window_figures(record)[0]
        excess.append(own - share_of_single(int(record["cell"]["devices"]), nodes_of(record)))
    if not excess:
        return 0.0, f"not measured (no {strategy} cell with a probe): none assumed"
    return (max(0.0, statistics.fmean(excess)),
            f"measured by the probes of this workload's {len(excess)} {strategy} cell(s)")
