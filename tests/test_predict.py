"""The scaling prediction's cost model (bench/analysis/predict.py): pure functions, no ranks."""
import math

import pytest

from bench.analysis.predict import (allreduce_time, comm_time,
                                    links_from_commbench, predict, predict_step)
from bench.errors import BadInput


def test_ring_allreduce_against_hand_computed():
    # 100 MB over 4 ranks at 10 GB/s busbw, 5 µs latency:
    # 2·3/4 · 1e8/1e10 = 0.015 s; 2·3·5e-6 = 3e-5 s.
    assert allreduce_time(1e8, 4, 1e10, 5e-6) == pytest.approx(0.015 + 3e-5)
    # 2 ranks: 2·1/2 · 1e6/1e9 = 1e-3; 2·1·1e-4 = 2e-4.
    assert allreduce_time(1e6, 2, 1e9, 1e-4) == pytest.approx(1.2e-3)
    assert allreduce_time(1e6, 1, 1e9, 1e-4) == 0.0


def test_tree_allreduce_latency_logarithmic():
    # 2·63/64·1e8/1e10 = 0.0196875; 2·log2(64)·1e-5 = 1.2e-4.
    assert allreduce_time(1e8, 64, 1e10, 1e-5, "tree") == pytest.approx(0.0196875 + 1.2e-4)
    # A bus bandwidth already folds in 2(n−1)/n (nccl-tests): a message timed at T over n
    # ranks has busbw = S/T·2(n−1)/n, and plugging that busbw back in gives T for either
    # algorithm (latency aside). Counting the message twice would give 2T at n = 2.
    for n in (2, 8):
        busbw = 1e6 / 1e-3 * 2 * (n - 1) / n
        for algo in ("ring", "tree"):
            assert allreduce_time(1e6, n, busbw, 0.0, algo) == pytest.approx(1e-3)
    # At many ranks and a small message the tree's latency term beats the ring's.
    assert allreduce_time(1e3, 512, 1e10, 1e-5, "tree") < allreduce_time(1e3, 512, 1e10, 1e-5)
    with pytest.raises(BadInput):
        allreduce_time(1e3, 2, 1e10, 1e-5, "butterfly")


def test_efficiency_is_one_on_one_device():
    for scaling in ("strong", "weak"):
        p = predict_step(0.1, 4e6, 1, 1e9, 1e-5, scaling=scaling)
        assert p.efficiency == pytest.approx(1.0) and p.comm_s == 0.0


def test_strong_scaling_efficiency_falls_with_exposed_comm():
    effs = [predict_step(0.1, 4e7, n, 1e9, 1e-5, overlap=0.0).efficiency
            for n in (1, 2, 4, 8, 64)]
    assert all(a > b for a, b in zip(effs, effs[1:]))
    assert effs[-1] < 0.5


def test_weak_scaling_keeps_compute():
    p = predict_step(0.1, 4e7, 8, 1e9, 1e-5, scaling="weak")
    assert p.compute_s == pytest.approx(0.1)
    assert p.efficiency == pytest.approx(0.1 / (0.1 + p.comm_s))


def test_full_overlap_hides_comm():
    p = predict_step(0.1, 4e7, 8, 1e9, 1e-5, overlap=1.0)
    assert p.exposed_comm_s == 0.0 and p.comm_s > 0
    assert p.efficiency == pytest.approx(1.0)
    with pytest.raises(BadInput):
        predict_step(0.1, 4e7, 8, 1e9, 1e-5, overlap=1.5)


# What the probe measured on 2 gloo CPU ranks, U-Net width 4 depth 2 (7,477 parameters), fp32,
# 2026-12-06: (strategy, runtime.sharding, breakdown.comm_message_bytes_per_step). tests/test_fsdp.py
# measures FSDP and ZeRO-3 afresh.
MEASURED = [
    ("ddp", None, 29_908),
    ("zero3", {"policy": "zero3", "parameters": 7477, "persistent_parameters": 7477,
               "regathered_parameters": 0}, 44_868),
    ("fsdp", {"policy": "per-block", "parameters": 7477, "root_parameters": 657,
              "regathered_parameters": 6820}, 58_532),
]


def test_message_bytes_follow_what_each_strategy_gathers():
    """Predicted bytes handed to collectives per step against measured ones (within 10%), from
    the sharding each record carries; the ZeRO paper's three passes (message P + 2P/n, 59,816
    B here) fit ZeRO-3 on these models no better than FSDP root-only (P + P/n) fits FSDP."""
    from bench.analysis.volume import message_bytes, regathered_share
    grad_bytes = 4 * 7477
    for strategy, sharding, measured in MEASURED:
        share, source = regathered_share(strategy, 7477, sharding)
        assert message_bytes(grad_bytes, 2, strategy, share) == pytest.approx(measured, rel=0.10)
        assert sharding is None or "recorded" in source
    # Hand-computed, 4 ranks, P = 1e8 B, FSDP with 90% of the parameters in blocks:
    # message P + 1.9·P/4 = 1.475e8; wire (2 + 0.9)·3/4·P = 2.175e8.
    from bench.analysis.volume import wire_bytes
    assert message_bytes(1e8, 4, "fsdp", 0.9) == pytest.approx(1.475e8)
    assert wire_bytes(1e8, 4, "fsdp", 0.9) == pytest.approx(2.175e8)
    assert wire_bytes(1e8, 4, "zero2") == wire_bytes(1e8, 4, "ddp") == pytest.approx(1.5e8)
    assert message_bytes(1e8, 4, "zero2") == pytest.approx(1.25e8)
    assert message_bytes(1e8, 1, "fsdp", 1.0) == wire_bytes(1e8, 1, "fsdp", 1.0) == 0.0
    # Without a record: FSDP's default is every parameter in a block; ZeRO-3's, none gathered
    # again below DeepSpeed's default reuse distance (1e9 elements ≥ 2 × the parameters).
    assert regathered_share("fsdp", 7477)[0] == 1.0
    assert regathered_share("zero3", 7477)[0] == 0.0 and regathered_share("zero3", 6e8)[0] == 1.0
    assert comm_time(1e8, 2, 1e10, 1e-5, "fsdp", regathered=0.5) == pytest.approx(
        comm_time(1e8, 2, 1e10, 1e-5, "ddp") + 0.5 * 1e8 / 2 / 1e10 + 1e-5)
    with pytest.raises(BadInput):
        message_bytes(1e8, 2, "zero4")


def _record(strategy, devices, tput, step, fingerprint="fp1", zero=None, status="ok"):
    return {"status": status, "cell_id": f"{strategy}{devices}", "fingerprint": fingerprint,
            "model": {"parameters": 1_000_000},
            "cell": {"model": "unet", "strategy": strategy, "devices": devices,
                     "precision": "fp32", "device_type": "cpu", "scaling": "strong",
                     "zero_stage": zero, "repeat": 0},
            "timing": {"throughput_img_s": tput, "step_time_median_s": step}}


def test_predicted_beside_measured():
    records = [_record("single", 1, 100.0, 0.16), _record("ddp", 2, 160.0, 0.1),
               _record("ddp", 4, 999.0, 0.01, fingerprint="other"),  # another workload
               _record("ddp", 8, 999.0, 0.01, status="failed"), _record("ddp", 4, 1.0, 1.0)]
    records[-1]["cell"]["precision"] = "bf16"  # another precision: not paired
    out = predict(records, devices=[2, 4, 8], bandwidth=1.0, latency=10.0)
    (family,) = out["families"]
    assert family["grad_bytes"] == 4_000_000
    rows = {r["devices"]: r for r in family["rows"]}
    # 2 ranks: compute 0.08, ring 2·1/2·4e6/1e9 = 4e-3 + 2·1e-5 → step 0.08402.
    assert rows[2]["step_s"] == pytest.approx(0.08402)
    assert rows[2]["efficiency"] == pytest.approx(0.08 / 0.08402)
    assert rows[2]["measured_efficiency"] == pytest.approx(0.8)
    assert rows[2]["error"] == pytest.approx((0.08 / 0.08402 - 0.8) / 0.8)
    assert "measured_efficiency" not in rows[4] and "measured_efficiency" not in rows[8]
    assert any("assumed none" in a for a in family["assumptions"])


def test_predict_needs_a_single_device_record():
    with pytest.raises(BadInput):
        predict([_record("ddp", 2, 160.0, 0.1)])


def test_links_from_commbench_forms():
    assert links_from_commbench({"bandwidth_gbs": 3, "latency_us": 7})["bandwidth_gbs"] == 3
    # Rows on the exact ring line for bw 2 GB/s and 40 µs over 2 ranks.
    rows = [{"op": "all_reduce", "bytes": s, "time_s": allreduce_time(s, 2, 2e9, 40e-6)}
            for s in (1024, 1 << 20, 1 << 24)]
    links = links_from_commbench({"layout": {"world_size": 2}, "results": rows})
    assert links["bandwidth_gbs"] == pytest.approx(2.0)
    assert links["latency_us"] == pytest.approx(40.0)
    assert math.isfinite(links["bandwidth_gbs"])


def test_cpu_ranks_sharing_a_host_cannot_speed_compute_up():
    from bench.analysis.scaling_inputs import compute_capacity
    single = _record("single", 1, 100.0, 0.16)
    single.update(env={"cpu_count": 2}, runtime={"threads_per_rank": 2})
    assert compute_capacity(single) == 1.0
    assert compute_capacity(single, nodes=4) == 4.0
    single["cell"]["device_type"] = "cuda"
    assert compute_capacity(single) is None
    # Capacity 1: the compute stays the single step; efficiency ≤ 1/n.
    p = predict_step(0.16, 4e6, 2, 1e9, 1e-5, capacity=1.0)
    assert p.compute_s == pytest.approx(0.16)
    assert p.efficiency == pytest.approx(0.16 / (0.16 + p.comm_s) / 2)


def test_predict_command_json_and_table(tmp_path, capsys):
    import json

    from bench.cli import main
    for rec in (_record("single", 1, 100.0, 0.16), _record("ddp", 2, 160.0, 0.1)):
        d = tmp_path / rec["cell_id"]
        d.mkdir()
        (d / "record.json").write_text(json.dumps(rec))
    bench_file = tmp_path / "links.json"
    bench_file.write_text(json.dumps({"bandwidth_gbs": 1.0, "latency_us": 10.0}))
    assert main(["predict", str(tmp_path), "--devices", "2", "4", "--commbench",
                 str(bench_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["families"][0]["rows"]
    assert [r["devices"] for r in rows] == [2, 4]
    assert rows[0]["step_s"] == pytest.approx(0.08402)
    assert main(["predict", str(tmp_path), "--devices", "2", "--strategy", "ddp", "zero3",
                 "--bandwidth", "1", "--latency", "10"]) == 0
    text = capsys.readouterr().out
    assert "Assumptions" in text and "zero3" in text
    assert main(["predict", str(tmp_path / "missing")]) != 0


def test_links_from_commbench_fallback_and_refusal():
    # Times that fall with size: no positive ring fit; the largest busbw is taken.
    rows = [{"op": "all_reduce", "bytes": 1024, "time_s": 1e-3, "busbw_gbs": 0.001},
            {"op": "all_reduce", "bytes": 1 << 20, "time_s": 5e-4, "busbw_gbs": 2.1},
            {"op": "all_gather", "bytes": 1 << 20, "time_s": 9.0, "busbw_gbs": 9.0}]
    links = links_from_commbench({"layout": {"world_size": 2}, "results": rows})
    assert links["bandwidth_gbs"] == pytest.approx(2.1)
    assert links["latency_us"] == pytest.approx(1e-3 / 2 * 1e6)
    with pytest.raises(BadInput):
        links_from_commbench({"results": [rows[2]]})


def test_predict_tree_and_zero3_rows():
    records = [_record("single", 1, 100.0, 0.16), _record("deepspeed", 2, 150.0, 0.1, zero=3)]
    out = predict(records, devices=[2, 64], bandwidth=1.0, latency=10.0,
                  strategies=("ddp", "zero3"), algo="tree")
    rows = {(r["strategy"], r["devices"]): r for r in out["families"][0]["rows"]}
    assert rows[("zero3", 2)]["measured_efficiency"] == pytest.approx(0.75)
    assert "measured_efficiency" not in rows[("ddp", 2)]
    # No sharding recorded, 1e6 parameters: ZeRO-3 gathers each once (DDP's wire volume).
    assert rows[("zero3", 64)]["comm_s"] == pytest.approx(rows[("ddp", 64)]["comm_s"])
    assert rows[("zero3", 2)]["comm_message_bytes_per_step"] == pytest.approx(6e6)
    assert rows[("ddp", 64)]["comm_s"] == pytest.approx(allreduce_time(4e6, 64, 1e9, 1e-5,
                                                                       "tree"))


def test_parameters_rebuilt_from_the_cell_when_the_record_has_none():
    from bench.analysis.predict import parameter_count
    from bench.cli.predict import rebuilt_parameters
    from models import build_model, count_parameters
    rec = _record("single", 1, 100.0, 0.16)
    assert rebuilt_parameters(rec) == parameter_count(rec) == 1_000_000
    del rec["model"]
    with pytest.raises(BadInput):
        parameter_count(rec)
    from bench.config.cell import Cell
    rec["cell"] = Cell(model="unet", width=8, depth=2).to_dict()
    assert rebuilt_parameters(rec) == count_parameters(build_model("unet", width=8, depth=2))


def test_measured_thread_scaling_sets_what_ranks_sharing_cores_gain():
    from bench.analysis.scaling_inputs import amdahl, compute_capacity
    single = _record("single", 1, 100.0, 0.16)
    single.update(env={"cpu_count": 2}, runtime={"threads_per_rank": 2})
    # Two threads that gave nothing: two 1-thread ranks are two single devices' worth.
    single["breakdown"] = {"thread_scaling": {"threads": 2, "speedup": 1.0}}
    assert compute_capacity(single, n=2) == pytest.approx(2.0)
    assert compute_capacity(single, n=4) == pytest.approx(2.0)  # only 2 cores to share
    # Perfect thread scaling: the ranks share what the single run already used.
    single["breakdown"]["thread_scaling"]["speedup"] = 2.0
    assert compute_capacity(single, n=2) == pytest.approx(1.0)
    # 1.5× on 2 threads (Amdahl p = 2/3): 1-thread ranks give 2 / 1.5 equivalents.
    single["breakdown"]["thread_scaling"]["speedup"] = 1.5
    assert compute_capacity(single, n=2) == pytest.approx(2 / 1.5)
    assert amdahl(1.5, 2, 2) == pytest.approx(1.5) and amdahl(3.0, 4, 1) == 1.0
    assert amdahl(0.8, 2, 1) == 1.0  # threads that slowed it down: no speedup anywhere
    # Without the measurement, threads are assumed to scale perfectly, as before.
    del single["breakdown"]
    assert compute_capacity(single, n=2) == pytest.approx(1.0)


def test_thread_scaling_is_measured_on_a_real_engine():
    import torch

    from bench.worker.probe import thread_scaling
    from launchers.base import Engine, Precision, Runtime
    from models import build_model

    before = torch.get_num_threads()
    torch.manual_seed(0)
    model = build_model("unet", width=4, depth=2)
    engine = Engine(model, torch.optim.Adam(model.parameters()), Precision("fp32", "cpu"))
    x = torch.rand(2, 1, 32, 32)
    out = thread_scaling(engine, (x, x), Runtime(0, 1, 0, "cpu", None, 2), steps=2)
    assert out["threads"] == 2 and out["step_s"] > 0 and out["one_thread_step_s"] > 0
    assert out["speedup"] == pytest.approx(out["one_thread_step_s"] / out["step_s"])
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)
    # Ranks of a distributed cell, and single-threaded ones, have nothing to compare.
    assert thread_scaling(engine, (x, x), Runtime(0, 2, 0, "cpu", "gloo", 2)) is None
    assert thread_scaling(engine, (x, x), Runtime(0, 1, 0, "cpu", None, 1)) is None


def test_the_single_device_repeats_are_pooled():
    from bench.analysis.scaling_inputs import pooled
    repeats = [_record("single", 1, tput, step) for tput, step in
               ((100.0, 0.16), (80.0, 0.20), (120.0, 0.14))]
    for r, rep in zip(repeats, (2, 0, 1)):
        r["cell"]["repeat"] = rep
    repeats[2]["breakdown"] = {"thread_scaling": {"threads": 2, "speedup": 1.6}}
    base = pooled(repeats)
    assert base["cell"]["repeat"] == 0 and base["repeats_pooled"] == 3
    assert base["timing"]["step_time_median_s"] == pytest.approx(0.16)
    assert base["timing"]["throughput_img_s"] == pytest.approx(100.0)
    # the one repeat that measured its threads speaks for all (the lowest had none)
    assert base["breakdown"]["thread_scaling"] == {"threads": 2, "speedup": 1.6}
    assert "breakdown" not in repeats[1]  # the records themselves are left as they were
