"""The attribution probe: a few profiled training steps after the timed window.

They run after the trained weights were taken for evaluation, on the last batch of the
window, so neither the timed figures nor the evaluated model see them; every rank runs them
(collectives need all ranks). Each phase is a named range followed by a device synchronize,
so on a GPU a phase's range holds its kernels. `bench selfbench`'s probed pass measures that
the steps after a probe run as fast as steps that never saw one, and what the probe costs.
"""
from __future__ import annotations

import logging
import os

from bench.measure import attribution
from bench.measure.timing import synchronize

PROBE_STEPS = 4  # the first warms the profiler up and is not counted
SIZED_STEPS = 2  # a separate session with input shapes, for the collectives' bytes only
PROFILED_STEPS = PROBE_STEPS + SIZED_STEPS  # every step a probe trains, over both sessions
# kineto's activity type of a kernel; the device's other activity is left out: annotations
# (`gpu_user_annotation`: a record_function range, DDP's or FSDP's, mirrored on the device
# and spanning its idle gaps) and memory copies and sets (HTA's "memory", not compute)
KERNEL_ACTIVITY = "kernel"
# kineto writes its own lines to the process's stderr, below Python: levels VERBOSE 0 to ERROR
# 4 (a CPU host's "no GPU"), then USDT 5, a `profiler_start` / `profiler_stop` pair for every
# session (two per probe). 6 silences them all, so neither a terminal (`bench selfbench`) nor
# a cell's log fills with them. kineto reads it once, when the process first profiles; a
# level the user set is kept.
KINETO_LOG_LEVEL = "6"

METHOD = ("torch.profiler on {n} probe steps after the timed window (ranges bench.forward/"
          "backward/optimizer, a device sync after each); communication = {comm}; exposed = "
          "communication not covered by the rank's own compute ({compute}); data and time "
          "between steps from the timed window")


def run_probe(engine, batch, device_type: str, steps: int = PROBE_STEPS) -> dict | None:
    """This rank's probe summary (bench.measure.attribution.probe_summary), None if the
    profiler failed: attribution is a nicety, it never stops a cell."""
    itemsize = parameter_itemsize(engine)
    try:
        timed = profile_steps(engine, batch, device_type, steps)
        # Recording input shapes made DDP's profiled steps 1.1–5× slower on the 2-core VM
        # (without them: within 10% of an unprofiled step), so the shapes that give the
        # collectives' bytes come from a session of their own, whose times are not used.
        sized = profile_steps(engine, batch, device_type, SIZED_STEPS, record_shapes=True)
        rows = attribution.step_attribution(timed, itemsize)
        comm_bytes = attribution.step_attribution(sized, itemsize)[-1]["comm_bytes"]
        return attribution.probe_summary(rows, comm_bytes=comm_bytes)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger(__name__).warning("no step attribution: %s: %s",
                                            type(exc).__name__, exc)
        return None


def thread_scaling(engine, batch, runtime, steps: int = 3) -> dict | None:
    """A CPU rank alone on its host with several threads: a step on one thread against a
    step on all of them, alternated on the same batch (median of `steps` pairs, after one
    warm-up step each). `bench predict` needs it: how much a rank's threads speed a step up
    decides what ranks sharing those cores can gain. None elsewhere."""
    if runtime.device_type != "cpu" or runtime.world_size > 1 or runtime.threads <= 1:
        return None
    import statistics
    import time

    import torch
    noisy, clean = batch
    times: dict[int, list[float]] = {runtime.threads: [], 1: []}
    try:
        for i in range(steps + 1):
            for threads in times:
                torch.set_num_threads(threads)
                start = time.perf_counter()
                engine.train_step(noisy, clean)
                if i:  # the first pair warms each thread count up
                    times[threads].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(runtime.threads)
    many, one = statistics.median(times[runtime.threads]), statistics.median(times[1])
    return {"threads": runtime.threads, "step_s": many, "one_thread_step_s": one,
            "speedup": one / many}


def profile_steps(engine, batch, device_type: str, steps: int,
                  record_shapes: bool = False) -> list[attribution.Span]:
    from torch.profiler import ProfilerActivity, profile, record_function

    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_LOG_LEVEL)
    activities = [ProfilerActivity.CPU]
    if device_type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    noisy, clean = batch
    synchronize(device_type)
    with profile(activities=activities, record_shapes=record_shapes) as prof:
        for _ in range(steps):
            with record_function(attribution.STEP_RANGE):
                with record_function(attribution.PHASE_RANGE["forward"]):
                    loss = engine.forward_loss(noisy, clean)
                    synchronize(device_type)
                with record_function(attribution.PHASE_RANGE["backward"]):
                    engine.backward(loss)
                    synchronize(device_type)
                with record_function(attribution.PHASE_RANGE["optimizer"]):
                    engine.optimizer_step()
                    synchronize(device_type)
    return to_spans(prof.events())


def to_spans(events) -> list[attribution.Span]:
    """The profiler's events (torch's FunctionEvent) as spans: every host event, and of the
    device's only its kernels, as Holistic Trace Analysis counts them. A device annotation
    covers a whole range, idle time included: taken for a kernel it would cover every
    collective inside it as if compute ran beside it."""
    return [to_span(e) for e in events if not on_device(e) or is_kernel(e)]


def on_device(event) -> bool:
    return str(getattr(event, "device_type", "")).endswith("CUDA")


def is_kernel(event) -> bool:
    """A device event that is a kernel: not a user annotation, and (where torch names the
    activity type) of kineto's kernel type."""
    activity = getattr(event, "activity_type", None)
    return not getattr(event, "is_user_annotation", False) and \
        activity in (None, KERNEL_ACTIVITY)


def to_span(event) -> attribution.Span:
    shapes = [s for s in (event.input_shapes or []) if s]
    numel = max((_prod(s) for s in shapes), default=0)
    return attribution.Span(event.name, float(event.time_range.start),
                            float(event.time_range.end), int(event.thread), on_device(event),
                            numel)


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d) if isinstance(d, int) else 1
    return out


def parameter_itemsize(engine) -> int:
    """Bytes per element of the gradients the collectives carry: the parameters' (gloo's
    events carry no dtype; NCCL kernels name theirs and override this on a GPU)."""
    params = list(engine.unwrapped().parameters())
    return params[0].element_size() if params else 4


def method(device_type: str, steps: int = PROBE_STEPS) -> str:
    if device_type == "cuda":
        comm, compute = "NCCL kernel time", "other kernels"
    else:
        comm, compute = "gloo work on its threads", "operators on the rank's main thread"
    return METHOD.format(n=steps - 1, comm=comm, compute=compute)
