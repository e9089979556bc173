"""Every strategy on 2 CPU ranks (gloo) trains the identical workload and records it."""
import pytest

from bench.record import store
from conftest import run_cli


@pytest.fixture(scope="module")
def sweep(strategies_sweep):
    """conftest.STRATEGIES_SPEC's records (its ZeRO-3 cell is test_fsdp's)."""
    return strategies_sweep


EXPECTED = [("single", "fp32", None), ("dp", "fp32", None), ("ddp", "fp32", None),
            ("ddp", "bf16", None), ("deepspeed", "fp32", 1), ("deepspeed", "bf16", 2),
            ("fsdp", "fp32", None)]


@pytest.mark.parametrize("key", EXPECTED, ids=lambda k: "-".join(map(str, k)))
def test_each_strategy_trains_the_same_workload(sweep, key):
    record = sweep[key]
    assert record["status"] == "ok", record.get("error")
    assert record["fingerprint"] == sweep[("single", "fp32", None)]["fingerprint"]
    assert record["runtime"]["global_batch"] == 8
    assert record["loss"]["last"] < record["loss"]["first"]  # it trained
    strategy = key[0]
    if strategy in ("ddp", "deepspeed", "fsdp"):
        assert record["runtime"]["world_size"] == 2
        assert record["runtime"]["backend"] == "gloo"
        assert record["runtime"]["per_device_batch"] == 4
        # The cores are shared out between the 2 ranks, never oversubscribed.
        from bench.measure.cores import thread_budget
        assert record["runtime"]["threads_per_rank"] == thread_budget(2)[0]
        assert record["runtime"]["threads_source"] == thread_budget(2)[1]
        placement = record["runtime"]["placement"]
        assert [n["ranks"] for n in placement["nodes"]] == [2]
        assert placement["oversubscribed"] is False
        assert len(record["timing"]["peak_mem_mb_per_rank"]) == 2
        # The step that counts is the slowest rank's: never below either rank's own median.
        per_rank = record["timing"]["step_time_median_s_per_rank"]
        assert len(per_rank) == 2 and all(t > 0 for t in per_rank)
        assert record["timing"]["step_time_median_s"] >= max(per_rank) - 1e-12
        # who made the others wait: DDP marks each rank's arrival at its all-reduce; the
        # sharded strategies have no such point and compare data waits only
        stragglers = record["stragglers"]
        assert stragglers["measured"] == ("arrival" if strategy == "ddp" else "data")
        assert [r["rank"] for r in stragglers["per_rank"]] == [0, 1]
    else:
        assert record["runtime"]["world_size"] == 1
        assert record["stragglers"] is None  # one rank waits for nobody


def test_every_fp32_strategy_follows_the_single_device_losses(sweep):
    """Same init, same global batches, GroupNorm: every fp32 strategy (DP, DDP, ZeRO-1, FSDP)
    computes the single-device trajectory, so each step's loss agrees, not only step 0's
    (which equal fingerprints alone could not show: they hold by construction)."""
    import pandas as pd
    losses = {k: pd.read_parquet(f"{r['_dir']}/{store.STEPS}")["loss"].to_numpy()
              for k, r in sweep.items() if k[1] == "fp32"}
    assert {k[0] for k in losses} == {"single", "dp", "ddp", "deepspeed", "fsdp"}
    reference = losses[("single", "fp32", None)]
    assert len(reference) == 6 and len(set(reference.round(6))) > 1  # it moved
    for key, trajectory in losses.items():
        assert trajectory == pytest.approx(reference, rel=1e-4), key


def test_every_strategy_validates_the_gathered_weights(sweep):
    """Validation during training scores the weights each strategy gathers to rank 0 (FSDP's
    and ZeRO's shards put together): every fp32 strategy's curve follows single-device's
    point by point, and the bf16 ones (scored in fp32, trained in bf16) stay near it."""
    curves = {k: r["validation"]["curve"] for k, r in sweep.items()}
    reference = curves[("single", "fp32", None)]
    assert [p["step"] for p in reference] == list(range(7))  # 6 steps: one point a step
    assert reference[-1]["psnr"] != reference[0]["psnr"]  # it moved
    for key, curve in curves.items():
        assert [p["step"] for p in curve] == [p["step"] for p in reference], key
        tolerance = 1e-3 if key[1] == "fp32" else 0.5
        assert [p["psnr"] for p in curve] == pytest.approx(
            [p["psnr"] for p in reference], abs=tolerance), key


@pytest.mark.parametrize("key", EXPECTED, ids=lambda k: "-".join(map(str, k)))
def test_each_record_says_where_its_window_went(sweep, key):
    """The profiled probe's breakdown (bench.measure.attribution) in every record, laid over
    the window the timing section measured apart: the data its wait (capped at the time
    between steps), the phases the steps' own share, all but the microseconds between the
    phases' ranges; communication exactly where ranks exchange gradients, and DDP's
    all-reduce carrying the fp32 gradients to the byte (GroupNorm: no buffers broadcast).
    The exposed time of a known timeline: test_attribution.py."""
    from bench.config.cell import Cell, model_options
    from models import build_model, count_parameters

    record = sweep[key]
    b, timing = record["breakdown"], record["timing"]
    steps_frac = 1.0 - timing["idle_between_steps_frac"]
    assert b["data"] == pytest.approx(min(timing["data_wait_frac"],
                                          timing["idle_between_steps_frac"]), abs=1e-9)
    phases = b["forward"] + b["backward"] + b["comm_exposed"] + b["optimizer"]
    assert 0.9 * steps_frac <= phases <= steps_frac + 1e-9, (phases, steps_frac)
    assert b["forward"] > 0 and b["backward"] > 0 and "probe steps" in b["method"]
    strategy = key[0]
    if strategy in ("single", "dp"):
        assert b["comm_message_bytes_per_step"] == 0 and b["comm_exposed"] == 0
        assert b["comm_overlap"] is None
        return
    assert b["comm_message_bytes_per_step"] > 0 and b["comm_s_per_step"] > 0
    # the window's exposed share: the steps' share of the ranks' mean exposed share
    per_rank = b["comm_exposed_per_rank"]
    assert len(per_rank) == 2
    assert b["comm_exposed"] == pytest.approx(steps_frac * sum(per_rank) / 2)
    if strategy == "ddp":
        cell = Cell.from_dict(record["cell"])
        param_bytes = 4 * count_parameters(build_model(cell.model, **model_options(cell)))
        assert b["comm_message_bytes_per_step"] == param_bytes


def test_dp_on_cpu_says_it_has_no_replicas(sweep):
    assert any("no device replicas" in n for n in sweep[("dp", "fp32", None)]["notes"])


PARITY = ["--device", "cpu", "--model", "unet", "--width", "4", "--depth", "2", "--image-size", "32",
          "--batch", "8", "--check-steps", "5", "--strategy", "ddp", "--devices", "2"]


def test_parity_of_ddp_and_sharded_strategies_with_group_norm():
    """DDP, ZeRO-2 and FSDP against one single-device fp32 reference. ZeRO-2 and FSDP free or
    shard their gradients; the norm is read their way and must match as closely as DDP's."""
    result = run_cli("parity", *PARITY, "--strategy", "deepspeed", "--zero", "2",
                     "--strategy", "fsdp", "--norm", "group")
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    for strategy in ("ddp", "deepspeed", "fsdp"):
        assert strategy in text
    assert text.count("within tolerance") >= 3 and "parity: passed" in text
    assert "no gradient norm" not in text


def test_deepspeed_does_not_clip_what_no_other_strategy_clips():
    """DeepSpeed clips the gradient norm to 1.0 by default. Here the norms are 2.9, 2.2, 1.3
    (the width-4 model elsewhere stays under 1, where clipping does nothing); Adam's first
    update ignores the gradient's scale, so a clipped run parts from the reference at step 2
    (rel. Δ 6.9e-3 before the fix)."""
    result = run_cli("parity", "--device", "cpu", "--model", "unet", "--width", "16",
                     "--image-size", "64", "--batch", "16", "--check-steps", "3",
                     "--strategy", "deepspeed", "--zero", "0", "--devices", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    import re
    rows = [line.split("│") for line in result.stdout.splitlines()
            if re.match(r"^│\s+\d+ │", line)]
    ref_norms = [float(cells[6]) for cells in rows]
    assert len(ref_norms) == 3 and min(ref_norms[:2]) > 1.0  # clipping would have acted
    assert "within tolerance" in result.stdout


def test_deepspeed_config_turns_clipping_off():
    from bench.config.cell import Cell
    from launchers import get_strategy
    config = get_strategy("deepspeed").config(Cell(strategy="deepspeed", devices=2))
    assert config["gradient_clipping"] == 0.0


def test_parity_detects_batchnorm_per_rank_statistics():
    """The check can fail: BatchNorm on 2 ranks normalises each half-batch separately."""
    result = run_cli("parity", *PARITY, "--norm", "batch")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "beyond tolerance" in result.stdout and "per rank" in result.stdout


@pytest.mark.parametrize("strategy", ["dp", "ddp", "deepspeed", "fsdp"])
def test_more_gpus_than_visible_is_refused_before_launch(strategy):
    # The check every strategy runs on the visible-GPU count it is given (no GPU needed).
    from bench.config.cell import Cell
    from bench.errors import BadInput
    from launchers import get_strategy
    cell = Cell(strategy=strategy, devices=4, device_type="cuda", global_batch=16,
                zero_stage=1 if strategy == "deepspeed" else None)
    with pytest.raises(BadInput, match="--devices 4 asks for more GPUs than the 2 visible"):
        get_strategy(strategy).validate(cell, 2)
    get_strategy(strategy).validate(cell, 4)  # enough GPUs: accepted


def _cpu_rank():
    from launchers.base import Runtime
    return Runtime(rank=0, world_size=2, local_rank=0, device="cpu", backend="gloo", threads=1)


def test_fsdp_shards_a_cpu_cell_on_a_cpu_mesh(monkeypatch):
    """fully_shard's default mesh is the host's accelerator: on a GPU node it would move a
    --device cpu cell onto a GPU. The strategy gives it the cell's own device instead."""
    import torch
    import torch.distributed.device_mesh as device_mesh
    import torch.distributed.fsdp as fsdp
    from bench.config.cell import Cell
    from launchers import get_strategy
    seen = {}
    monkeypatch.setattr(device_mesh, "init_device_mesh",
                        lambda device_type, shape: ("mesh", device_type, shape))
    monkeypatch.setattr(fsdp, "fully_shard", lambda model, **kw: seen.update(kw))
    model = torch.nn.Linear(2, 2)
    get_strategy("fsdp").wrap(model, torch.optim.Adam(model.parameters()),
                              Cell(strategy="fsdp", devices=2), _cpu_rank())
    assert seen["mesh"] == ("mesh", "cpu", (2,))


def test_deepspeed_runs_a_cpu_cell_on_its_cpu_accelerator(monkeypatch):
    """DeepSpeed picks CUDA wherever a GPU is visible, once, at import; a CPU cell names its
    accelerator before that (and overrides one the environment names)."""
    import os
    import sys
    import types

    import torch
    from bench.config.cell import Cell
    from launchers import get_strategy
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    seen = {}

    def initialize(**kw):
        seen["accelerator"] = os.environ.get("DS_ACCELERATOR")
        return types.SimpleNamespace(optimizer=kw["optimizer"]), None, None, None
    monkeypatch.setitem(sys.modules, "deepspeed", types.SimpleNamespace(initialize=initialize))
    model = torch.nn.Linear(2, 2)
    get_strategy("deepspeed").wrap(model, torch.optim.Adam(model.parameters()),
                                   Cell(strategy="deepspeed", devices=2, zero_stage=1),
                                   _cpu_rank())
    assert seen["accelerator"] == "cpu"
