"""What every record says, whoever writes it: timestamps, and the runtime facts a reader
needs before comparing cells (BatchNorm meeting several devices, fp16 steps skipped)."""
import datetime
import time
from types import SimpleNamespace

from bench.config.cell import Cell
from bench.record import builder
from bench.worker.results import runtime_section


def _when(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text)
    assert moment.utcoffset() == datetime.timedelta(0), text  # UTC, stated
    return moment


def test_every_status_carries_started_and_finished_at():
    cell, launched = Cell(), time.time() - 5
    records = [
        builder.failed_record(cell, "f" * 16, "failed", launched_at=launched, time_to_train_s=5,
                              message="x", exit_code=1, ranks_failed=[], signal=None,
                              traceback="", log_tail="", env={}),
        builder.preempted_record(cell, "f" * 16, launched_at=launched, steps_done=3,
                                 train_time_s=1.0, time_to_train_s=5, checkpoint=None, env={}),
    ]
    for record in records:
        started, finished = _when(record["started_at"]), _when(record["finished_at"])
        assert abs(started.timestamp() - launched) < 1e-3
        assert 4 < (finished - started).total_seconds() < 60
    timed_out = builder.mark_timed_out(dict(records[1]), 30)
    assert timed_out["status"] == "timeout" and _when(timed_out["finished_at"]) >= finished


def _runtime(cell: Cell, world_size: int, skipped: list[int]) -> dict:
    strategy = SimpleNamespace(description="test")
    runtime = SimpleNamespace(world_size=world_size, backend=None, device="cuda:0", threads=1,
                              threads_source="test")
    history = SimpleNamespace(per_rank=[{"skipped_steps": n} for n in skipped])
    return runtime_section(cell, strategy, runtime, history)


def test_batchnorm_on_several_devices_is_flagged_for_data_parallel_too():
    """nn.DataParallel on GPUs normalises each replica's chunk, like DDP's ranks, although it
    runs as one process (world size 1)."""
    dp = Cell(strategy="dp", devices=2, norm="batch", device_type="cuda")
    assert _runtime(dp, 1, [0])["batchnorm_per_rank_stats"] is True
    ddp = dp.replace(strategy="ddp")
    assert _runtime(ddp, 2, [0, 0])["batchnorm_per_rank_stats"] is True
    assert not dp.replace(norm="group").batchnorm_per_device
    assert not dp.replace(device_type="cpu").batchnorm_per_device  # no replicas on a CPU
    assert not Cell(norm="batch").batchnorm_per_device  # one device


def test_fp16_skipped_steps_are_counted_once_not_per_rank():
    """Every rank steps on the same all-reduced gradients: 3 skipped steps on 2 ranks are 3."""
    cell = Cell(strategy="ddp", devices=2, precision="fp16", device_type="cuda")
    assert _runtime(cell, 2, [3, 3])["skipped_steps"] == 3


def test_mfu_divides_by_the_window_not_the_median_step():
    """An input-bound cell: its median step is 0.1 s but the window holds 0.2 s a step.
    TFLOP/s and MFU come from the window; the median step's figures stand beside them."""
    from bench.measure.flops import peak_tflops
    from bench.worker.results import mfu_section
    cell = Cell(strategy="ddp", devices=2, precision="bf16", device_type="cuda")
    timing = {"timed_steps": 10, "train_time_s": 2.0, "step_time_median_s": 0.1}
    env = {"gpus": ["NVIDIA H200", "NVIDIA H200"], "cpu": "AMD EPYC"}
    section = mfu_section(cell, timing, env, flops_per_step=int(4e13))
    assert section["tflops"] == 200.0 and section["tflops_median_step"] == 400.0
    peak = peak_tflops("NVIDIA H200", "bf16")
    assert section["mfu"] == 200.0 / (2 * peak)
    assert section["mfu_median_step"] == 400.0 / (2 * peak)


def test_a_gpu_saturated_cell_is_not_called_input_bound():
    """On CUDA the host waits for the next batch while the GPU still works through queued
    steps: 30% host wait, 1% device idle between steps is not input-bound. On a CPU the host
    wait is the signal."""
    from bench.worker.results import input_bound
    timing = {"data_wait_frac": 0.30, "idle_between_steps_frac": 0.01}
    assert input_bound(timing, "cuda") == {"input_bound": False, "input_bound_frac": 0.01,
                                           "input_bound_signal": "device idle between steps"}
    starved = {"data_wait_frac": 0.30, "idle_between_steps_frac": 0.25}
    assert input_bound(starved, "cuda")["input_bound"] is True
    assert input_bound(timing, "cpu")["input_bound"] is True
    assert input_bound(timing, "cpu")["input_bound_signal"] == "host wait for data"


def test_every_nodes_local_rank_zero_samples_its_node():
    """Rank 2 of a 2-node cell is local rank 0 of the second node: it samples that node (only
    global rank 0 did, so a 2-node cell's energy covered one node)."""
    from bench.config.cell import Job
    from bench.worker.setup import start_telemetry
    job = Job(Cell(strategy="ddp", devices=4, sample_hz=5.0), "f" * 16, "{}", time.time())
    for rank, local_rank, samples in ((0, 0, True), (2, 0, True), (1, 1, False), (3, 1, False)):
        runtime = SimpleNamespace(rank=rank, local_rank=local_rank, is_main=rank == 0)
        sampler = start_telemetry(job, runtime)
        assert (sampler is not None) == samples, (rank, local_rank)
        if sampler is not None:
            sampler.stop()
