"""What `predict` compares: the same processor, the same time basis, the right link."""
import pytest

from bench.analysis.predict import allreduce_time, predict
from bench.errors import BadInput

BATCH, STEPS = 16, 50


def _record(strategy, devices, window_step_s, data_frac=0.0, step_s=None, gpu="NVIDIA H100",
            device_type="cuda"):
    """A record whose window (train time ÷ timed steps), data wait and throughput agree."""
    return {"status": "ok", "cell_id": f"{strategy}{devices}-{gpu}", "fingerprint": "fp",
            "model": {"parameters": 1_000_000},
            "cell": {"model": "unet", "strategy": strategy, "devices": devices,
                     "precision": "fp32", "device_type": device_type, "scaling": "strong",
                     "global_batch": BATCH, "repeat": 0},
            "runtime": {"global_batch": BATCH},
            "env": {"gpus": [gpu] * devices, "cpu": "some CPU"},
            "timing": {"train_time_s": window_step_s * STEPS, "timed_steps": STEPS,
                       "throughput_img_s": BATCH / window_step_s,
                       "data_wait_frac": data_frac, "idle_between_steps_frac": data_frac,
                       "step_time_median_s": step_s or window_step_s * (1 - data_frac)}}


def test_a_cell_that_follows_the_model_exactly_reads_zero_error():
    # An input-bound single GPU: 0.2 s per window step, half of it waiting for data.
    single = _record("single", 1, 0.2, data_frac=0.5)
    # Two ranks as the model has it: compute 0.1/2, data 0.1/2, a ring all-reduce of 4 MB at
    # 1 GB/s and 10 µs, nothing hidden.
    comm = allreduce_time(4e6, 2, 1e9, 10e-6)
    ddp = _record("ddp", 2, 0.05 + 0.05 + comm, data_frac=0.05 / (0.1 + comm))
    out = predict([single, ddp], devices=[2], bandwidth=1.0, latency=10.0, overlap=0.0)
    (row,) = out["families"][0]["rows"]
    assert row["data_s"] == pytest.approx(0.05) and row["compute_s"] == pytest.approx(0.05)
    assert row["measured_efficiency"] == pytest.approx(0.2 / (0.1 + comm) / 2)
    # From the median step (0.1 s, no data) the error would be −3.7%: the links blamed for
    # the data wait.
    assert row["error"] == pytest.approx(0.0, abs=1e-9)
    assert any("data wait" in a for a in out["families"][0]["assumptions"])


def test_processors_are_never_pooled():
    h100, a100 = _record("single", 1, 0.1), _record("single", 1, 0.3, gpu="NVIDIA A100")
    ddp_a100 = _record("ddp", 2, 0.16, gpu="NVIDIA A100")
    out = predict([h100, a100, ddp_a100], devices=[2], bandwidth=100.0, latency=10.0,
                  overlap=0.0)
    families = {f["processor"]: f for f in out["families"]}
    assert set(families) == {"NVIDIA H100", "NVIDIA A100"}
    assert families["NVIDIA H100"]["window_step_s"] == pytest.approx(0.1)
    assert families["NVIDIA A100"]["window_step_s"] == pytest.approx(0.3)
    (h_row,), (a_row,) = families["NVIDIA H100"]["rows"], families["NVIDIA A100"]["rows"]
    # The A100 cell is measured against the A100 single run only (0.3 / 0.16 / 2), not
    # against the pooled mean of both processors.
    assert a_row["measured_efficiency"] == pytest.approx(0.3 / 0.16 / 2)
    assert "measured_efficiency" not in h_row
    assert any("NVIDIA A100" in a and "never pooled" in a
               for a in families["NVIDIA A100"]["assumptions"])


def test_a_one_node_commbench_does_not_stand_for_the_link_between_nodes():
    single = _record("single", 1, 0.1)
    one_node = {"layout": {"world_size": 2, "nodes": 1},
                "results": [{"op": "all_reduce", "bytes": s,
                             "time_s": allreduce_time(s, 2, 50e9, 5e-6)}
                            for s in (1 << 10, 1 << 20, 1 << 24)]}
    with pytest.raises(BadInput, match="intra-node link .1 node.*crosses the inter-node"):
        predict([single], devices=[4], nodes=2, commbench=one_node)
    fam = predict([single], devices=[4], nodes=1, commbench=one_node)["families"][0]
    assert fam["links"]["link"] == "intra-node"
    assert fam["links"]["bandwidth_gbs"] == pytest.approx(50.0)
    two_nodes = {**one_node, "layout": {"world_size": 2, "nodes": 2}}
    fam = predict([single], devices=[4], nodes=2, commbench=two_nodes)["families"][0]
    assert fam["links"]["link"] == "inter-node"
    assert any(a.startswith("inter-node link") for a in fam["assumptions"])
    # Without a measurement the default is stated as an inter-node assumption too.
    fam = predict([_record("single", 1, 0.1, device_type="cpu")], devices=[4],
                  nodes=2)["families"][0]
    assert fam["links"]["link"] == "inter-node" and "between nodes" in fam["links"]["source"]


def test_a_cross_node_commbench_does_not_stand_for_one_node():
    single = _record("single", 1, 0.1)
    rows = [{"op": "all_reduce", "bytes": s, "time_s": allreduce_time(s, 2, 1e9, 20e-6)}
            for s in (1 << 10, 1 << 20, 1 << 24)]
    with pytest.raises(BadInput, match="inter-node link"):
        predict([single], devices=[2], commbench={"layout": {"world_size": 2, "nodes": 2},
                                                  "results": rows})
    # Both figures given: the file is not what prices the link.
    fam = predict([single], devices=[2], bandwidth=50.0, latency=5.0,
                  commbench={"layout": {"world_size": 2, "nodes": 2}, "results": rows})
    assert fam["families"][0]["links"]["source"].startswith("given")
    # The simple form without "nodes" is taken, and its source says the link is unstated.
    fam = predict([single], devices=[4], nodes=2,
                  commbench={"bandwidth_gbs": 3.0, "latency_us": 7.0})["families"][0]
    assert "does not say which link" in fam["links"]["source"]
    assert fam["links"]["bandwidth_gbs"] == 3.0


def test_fsdp_volume_follows_the_recorded_or_the_models_policy():
    from bench.cli.predict import rebuilt_sharding
    from bench.config.cell import Cell

    single = _record("single", 1, 0.1, device_type="cpu")
    single["cell"] = {**Cell(model="unet", width=4, depth=2).to_dict(), **{
        k: single["cell"][k] for k in ("device_type", "global_batch", "repeat")}}
    policy = rebuilt_sharding(single)
    assert policy["policy"] == "per-block" and 0 < policy["root_parameters"] < policy["parameters"]
    share = policy["regathered_parameters"] / policy["parameters"]
    # No FSDP cell measured: the per-block policy on the rebuilt model gives r (< 1: the root
    # unit keeps the up-sampling layers and head gathered).
    row = predict([single], devices=[2], strategies=("fsdp",), sharding=rebuilt_sharding,
                  bandwidth=1.0, latency=1.0)["families"][0]["rows"][0]
    assert row["regathered_share"] == pytest.approx(share) and share < 1
    # An FSDP record made before per-block sharding carries no policy: it was root-only, its
    # bytes P + P/n, r = 0 — not compared against a per-block prediction.
    old = {**_record("fsdp", 2, 0.08, device_type="cpu"), "cell": {**single["cell"],
                                                               "strategy": "fsdp", "devices": 2}}
    row = predict([single, old], devices=[2], strategies=("fsdp",), sharding=rebuilt_sharding,
                  bandwidth=1.0, latency=1.0)["families"][0]["rows"][0]
    assert row["regathered_share"] == 0.0 and "root-only" in row["regathered_source"]


def test_predict_prints_its_whole_table_into_a_pipe_and_names_the_pooled_repeats(tmp_path):
    """Piped (a log, `| less`), the table kept its columns at 80 characters, cut to '…';
    the header named one cell while the prediction pooled every single-device repeat."""
    import json

    from conftest import run_cli
    repeats = [_record("single", 1, 0.1 + 0.01 * r, device_type="cpu") for r in range(2)]
    for r, rec in enumerate(repeats):
        rec["cell"]["repeat"], rec["cell_id"] = r, f"single1-r{r}"
    for rec in (*repeats, _record("ddp", 2, 0.07, device_type="cpu")):
        (tmp_path / rec["cell_id"]).mkdir()
        (tmp_path / rec["cell_id"] / "record.json").write_text(json.dumps(rec))
    out = run_cli("predict", tmp_path, "--devices", "2", "4", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout and "measured MiB" in out.stdout
    assert "predicted from 2 repeats of single1-r0" in " ".join(out.stdout.split())


def _link(world: int, ranks: list[int], bw: float, latency: float) -> dict:
    return {"world_size": world, "ranks": ranks, "results": [
        {"op": "all_reduce", "bytes": s, "time_s": allreduce_time(s, world, bw, latency)}
        for s in (1 << 10, 1 << 20, 1 << 24)]}


def test_across_nodes_the_ring_runs_at_the_slower_of_the_two_links():
    single = _record("single", 1, 0.1)
    # commbench on 2 nodes × 2 ranks: the link between nodes 1 GB/s, within a node 50 GB/s.
    bench = {"layout": {"world_size": 4, "nodes": 2, "ranks_per_node": 2},
             "results": _link(4, [0, 1, 2, 3], 1e9, 20e-6)["results"],
             "links": {"inter-node": _link(2, [0, 2], 1e9, 20e-6),
                       "intra-node": _link(2, [0, 1], 50e9, 5e-6)}}
    fam = predict([single], devices=[2, 4], nodes=2, commbench=bench)["families"][0]
    assert fam["links"]["link"] == "inter-node"
    assert fam["links"]["bandwidth_gbs"] == pytest.approx(1.0)
    assert fam["links"]["intra_node"]["bandwidth_gbs"] == pytest.approx(50.0)
    assert "inter-node link measured by ranks 0, 2" in fam["links"]["source"]
    two, four = fam["rows"]
    grad = 4_000_000
    # One rank per node: the inter-node link alone.
    assert two["link"] == "inter-node"
    assert two["comm_s"] == pytest.approx(allreduce_time(grad, 2, 1e9, 20e-6))
    # Two per node: both links; the slower bandwidth and the larger latency set the pace.
    assert four["link"].startswith("two-level: 2 ranks per node")
    assert four["comm_s"] == pytest.approx(allreduce_time(grad, 4, 1e9, 20e-6))
    assert any(a.startswith("two-level") for a in fam["assumptions"])
    # A faster link between nodes than within one: the intra-node link bounds the ring.
    fast = {**bench, "links": {"inter-node": _link(2, [0, 2], 100e9, 2e-6),
                               "intra-node": _link(2, [0, 1], 50e9, 5e-6)}}
    row = predict([single], devices=[4], nodes=2, commbench=fast)["families"][0]["rows"][0]
    assert row["comm_s"] == pytest.approx(allreduce_time(grad, 4, 50e9, 5e-6))


def test_an_oversubscribed_measurement_is_not_compared():
    single = _record("single", 1, 0.1, device_type="cpu")
    ddp = _record("ddp", 2, 0.08, device_type="cpu")
    note = "ranks oversubscribed: 2 rank(s) with 4 thread(s) on 2 core(s) of one machine"
    ddp["runtime"]["placement"] = {"oversubscribed": True, "note": note}
    row = predict([single, ddp], devices=[2], bandwidth=1.0, latency=10.0)["families"][0]
    assert row["rows"][0]["measured_efficiency"] > 0 and row["rows"][0]["error"] is None
    assert any(a.startswith("measured efficiency not compared") and note in a
               for a in row["assumptions"])
    single["runtime"]["placement"] = {"oversubscribed": True, "note": note}
    fam = predict([single], devices=[2], bandwidth=1.0, latency=10.0)["families"][0]
    assert fam["assumptions"][0].startswith("the single-device baseline is not trusted")


def test_a_rate_limiters_burst_does_not_lift_the_fitted_bandwidth():
    from bench.analysis.links import links_from_commbench
    # tbf at 1 Gbit/s with a 256 KB burst: messages up to the burst pass at line speed, larger
    # ones at the limit; the fit's intercept goes negative, its slope is still the limit.
    sizes = [64 << 10 << k for k in range(9)]
    rows = [{"op": "all_reduce", "bytes": s, "busbw_gbs": 0.0,
             "time_s": s / 2e9 if s <= 256 << 10 else 256e3 / 2e9 + (s - 256e3) / 0.125e9}
            for s in sizes]
    links = links_from_commbench({"layout": {"world_size": 2}, "results": rows})
    assert links["bandwidth_gbs"] == pytest.approx(0.125, rel=0.05)
    assert links["latency_us"] == pytest.approx(rows[0]["time_s"] / 2 * 1e6)
    assert "slope" in links["source"]


def test_a_sharding_ranks_own_extra_work_comes_from_its_probe():
    single = _record("single", 1, 0.1)
    fsdp = _record("fsdp", 2, 0.12)
    # The FSDP rank computed 0.07 s of its 0.12 s window step: 0.02 s beyond half the single's.
    fsdp["breakdown"] = {"forward": 0.2, "backward": 0.3, "optimizer": 0.0,
                         "comm_overlap": 0.0}
    fsdp["breakdown"]["optimizer"] = 0.07 / 0.12 - 0.5
    fam = predict([single, fsdp], devices=[2], strategies=("ddp", "fsdp"), bandwidth=1.0,
                  latency=10.0)["families"][0]
    ddp_row, fsdp_row = fam["rows"]
    assert ddp_row["sharding_work_s"] == 0.0
    assert fsdp_row["sharding_work_s"] == pytest.approx(0.02)
    assert fsdp_row["step_s"] == pytest.approx(ddp_row["step_s"] - ddp_row["exposed_comm_s"]
                                               + fsdp_row["exposed_comm_s"] + 0.02)
    assert any(a.startswith("fsdp sharding work 20 ms") for a in fam["assumptions"])
