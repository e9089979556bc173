"""Results folders are data, never code; bad training ends as a status, not a crash."""
import os
import pickle

import pytest
import torch

from bench.worker import checkpoint
from bench.record import store
from conftest import TINY, run_cli


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/bench-pwned",))


def test_checkpoint_loading_refuses_code(tmp_path):
    if os.path.exists("/tmp/bench-pwned"):
        os.remove("/tmp/bench-pwned")
    torch.save({"cell_id": "x", "fingerprint": "y", "evil": Payload()}, tmp_path / "checkpoint.pt")
    # Refused by weights_only=True, never executed; set aside so the cell starts over.
    assert checkpoint.load(tmp_path, "x", "y") is None
    assert not os.path.exists("/tmp/bench-pwned")
    assert not (tmp_path / checkpoint.CHECKPOINT).exists()
    assert (tmp_path / checkpoint.UNREADABLE).exists()
    with pytest.raises(pickle.UnpicklingError):  # what load() caught: the refusal itself
        torch.load(tmp_path / checkpoint.UNREADABLE, weights_only=True)


def test_truncated_checkpoint_means_start_over(tmp_path):
    checkpoint.save(tmp_path, {"cell_id": "x", "fingerprint": "y", "next_step": 3})
    data = (tmp_path / checkpoint.CHECKPOINT).read_bytes()
    (tmp_path / checkpoint.CHECKPOINT).write_bytes(data[: len(data) // 2])
    assert checkpoint.load(tmp_path, "x", "y") is None
    assert not (tmp_path / checkpoint.CHECKPOINT).exists()


def test_checkpoint_of_another_cell_is_ignored(tmp_path):
    checkpoint.save(tmp_path, {"cell_id": "other", "fingerprint": "y", "next_step": 3})
    assert checkpoint.load(tmp_path, "x", "y") is None
    assert checkpoint.load(tmp_path, "other", "y")["next_step"] == 3


def test_non_finite_loss_is_recorded_as_diverged(tmp_path):
    out = tmp_path / "results"
    result = run_cli("run", *TINY, "--model", "unet", "--strategy", "single", "--out", out,
                     "--lr", "1e12", "--steps", "12")
    assert result.returncode == 1
    (record,) = store.records(out)[0]
    assert record["status"] == "diverged"
    assert isinstance(record["diverged_at_step"], int) and record["diverged_at_step"] < 12
    assert f"not finite at step {record['diverged_at_step']}" in record["error"]["message"]


def test_out_of_memory_message_names_the_batch():
    from bench.config.cell import Cell, Job
    from bench.worker.main import describe_error
    job = Job(Cell(global_batch=64, devices=2, strategy="ddp", image_size=256), "fp", "{}", 0.0)
    text = describe_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), job)
    assert text.startswith("out of memory at a per-device batch of 32")


TORCHRUN_REPORT = """bench.worker FAILED
-------------------------------------------------------
Failures:
[1]:
  rank      : {survivor} (local_rank: {survivor})
  exitcode  : {survivor_code} (pid: 11)
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : {killed} (local_rank: {killed})
  exitcode  : -9 (pid: 10)
"""


def test_the_killed_rank_is_the_cause_whichever_torchrun_lists_first():
    from bench.sweep.runner import dead_rank
    killed_first = TORCHRUN_REPORT.format(killed=1, survivor=0, survivor_code=-15)
    assert dead_rank(killed_first) == (1, "SIGKILL")
    # Both deaths seen in one poll: the "root cause" may name the survivor (exit 1).
    swapped = TORCHRUN_REPORT.replace("exitcode  : -9", "exitcode  : 1").replace(
        "exitcode  : {survivor_code}", "exitcode  : -9").format(killed=0, survivor=1,
                                                                 survivor_code=None)
    assert dead_rank(swapped) == (1, "SIGKILL")
    assert dead_rank("Traceback: no torchrun report") is None


def test_rerun_policy_per_status(tmp_path):
    from bench.sweep.runner import should_skip
    for status in ("ok", "failed", "preempted"):
        store.write_json(tmp_path / status / store.RECORD, {"cell_id": status, "status": status})
    assert should_skip(tmp_path / "ok", force=False, retry_failed=True)["status"] == "ok"
    assert should_skip(tmp_path / "failed", force=False, retry_failed=True) is None
    assert should_skip(tmp_path / "failed", force=False, retry_failed=False)["status"] == "failed"
    # A preempted cell did not fail: it resumes whatever the retry policy.
    assert should_skip(tmp_path / "preempted", force=False, retry_failed=False) is None
    # --force starts over: an ok cell reruns and a checkpoint is discarded.
    checkpoint.save(tmp_path / "preempted", {"cell_id": "preempted"})
    assert should_skip(tmp_path / "ok", force=True, retry_failed=True) is None
    assert should_skip(tmp_path / "preempted", force=True, retry_failed=True) is None
    assert not (tmp_path / "preempted" / checkpoint.CHECKPOINT).exists()
