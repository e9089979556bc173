"""Entry of a rank process: read the job, load its plug-ins, train, and turn any failure
into an error file the runner puts in the cell's record."""
from __future__ import annotations

import json
import os
from pathlib import Path

from bench import plugins
from bench.config.cell import Job
from bench.record import store
from bench.record.store import EXIT_PREEMPTED
from bench.worker import checkpoint
from bench.worker.train import train_cell


def run_job(cell_dir: Path) -> int:
    """Entry of a rank process. Returns its exit status; a failure leaves its traceback in
    error-rank<R>.txt so the runner can put it in the cell's record."""
    from launchers import get_strategy

    cell_dir = Path(cell_dir)
    rank = int(os.environ.get("RANK", "0"))
    checkpoint.watch_runner()
    job = None
    try:
        job = Job.from_dict(json.loads((cell_dir / store.JOB).read_text()))
        plugins.load(job.plugins)  # the ones the planning command had: same hooks, same record
        strategy = get_strategy(job.cell.strategy)
        runtime = strategy.init_runtime(job.cell)
        try:
            preempted = train_cell(job, strategy, runtime, cell_dir)
        finally:
            strategy.shutdown()
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the record
        import traceback
        store.write_text(cell_dir / f"error-rank{rank}.txt",
                         f"{describe_error(exc, job)}\n\n{traceback.format_exc()}")
        return 1
    return EXIT_PREEMPTED if preempted else 0


def describe_error(exc: BaseException, job: Job | None = None) -> str:
    """The first line of a failed cell's record: what happened, in the user's terms."""
    import torch
    if isinstance(exc, torch.OutOfMemoryError) and job is not None:
        return (f"out of memory at a per-device batch of {job.cell.per_device_batch} "
                f"({job.cell.model}, width {job.cell.width}, image {job.cell.image_size} px): "
                f"{str(exc).splitlines()[0]}")
    return f"{type(exc).__name__}: {exc}"
