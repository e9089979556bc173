"""Step-time attribution: the interval arithmetic on hand-made timelines, the profiled probe on
a real engine, the window fractions, the report's table, sentences and stacked bars, and
`bench predict` taking its overlap from them. Real 2-rank cells' breakdowns are checked in
test_strategies.py (one sweep serves both)."""
import json

import pandas as pd
import pytest

from bench.analysis.breakdown import breakdown_table
from bench.measure import attribution as att
from bench.measure.attribution import Span
from test_analysis import record, sweep
from test_report import cli, write_cell

FRACTIONS = att.FRACTIONS


def test_interval_union_and_subtract():
    assert att.union([(5, 7), (0, 2), (1, 3), (7, 8)]) == [(0, 3), (5, 8)]
    assert att.subtract([(0, 10)], [(2, 3), (5, 12)]) == [(0, 2), (3, 5)]
    assert att.length(att.clip([(0, 10), (20, 30)], 5, 25)) == 10


def cpu_step(offset=0.0, comm=(50, 85), numel=1000):
    """One probe step on a CPU rank, µs: forward 0–30, backward 30–90 whose operators run
    31–70 (its node executions span 30–85), gloo's all-reduce on another thread, optimizer
    90–98, step 0–100."""
    o = offset
    return [Span("bench.step", o, o + 100, thread=1),
            Span("bench.forward", o, o + 30, thread=1),
            Span("aten::conv2d", o + 1, o + 29, thread=1),
            Span("bench.backward", o + 30, o + 90, thread=1),
            Span("autograd::engine::evaluate_function: ConvBackward0", o + 30, o + 70, thread=1),
            Span("aten::convolution_backward", o + 31, o + 70, thread=1),
            # a hook's wait for its collective inside a node execution (FSDP's post-backward):
            # the node's span runs on, but no operator of the rank's own runs in it
            Span("autograd::engine::evaluate_function: PostBackward", o + 70, o + 85, thread=1),
            Span("c10d::allreduce_", o + 49, o + 50, thread=1),  # enqueues: not compute
            Span("gloo:all_reduce", o + comm[0], o + comm[1], thread=2, numel=numel),
            Span("bench.optimizer", o + 90, o + 98, thread=1),
            Span("aten::_foreach_add_", o + 90, o + 98, thread=1)]


def test_exposed_communication_is_what_compute_does_not_cover():
    (row,) = att.step_attribution(cpu_step(), itemsize=4)
    # comm 50–85 (35 µs); compute on the main thread covers it up to 70: 15 µs exposed.
    assert row["comm_s"] == pytest.approx(35e-6)
    assert row["comm_exposed_s"] == pytest.approx(15e-6)
    assert row["forward_s"] == pytest.approx(30e-6)
    assert row["backward_s"] == pytest.approx(45e-6)  # 60 µs range less the exposed 15
    assert row["optimizer_s"] == pytest.approx(8e-6)
    assert row["other_s"] == pytest.approx(2e-6)
    assert row["comm_bytes"] == 4000
    summary = att.probe_summary([row], skip=0)
    assert sum(summary["step_shares"].values()) == pytest.approx(1.0)
    assert summary["comm_overlap"] == pytest.approx(1 - 15 / 35)


def test_a_step_without_collectives_has_no_communication():
    spans = [s for s in cpu_step() if not s.name.startswith("gloo")]
    (row,) = att.step_attribution(spans, itemsize=4)
    assert row["comm_s"] == 0 and row["comm_exposed_s"] == 0 and row["comm_bytes"] == 0
    assert att.probe_summary([row], skip=0)["comm_overlap"] is None


def test_gpu_timeline_uses_kernels_and_the_dtype_nccl_names():
    spans = [Span("bench.step", 0, 100, thread=1), Span("bench.backward", 0, 100, thread=1),
             Span("nccl:all_reduce", 10, 11, thread=1, numel=1000),
             Span("sm90_xmma_gemm", 0, 60, on_device=True),
             Span("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", 40, 80, on_device=True)]
    (row,) = att.step_attribution(spans, itemsize=4)
    assert row["comm_s"] == pytest.approx(40e-6)
    assert row["comm_exposed_s"] == pytest.approx(20e-6)  # 60–80: no compute kernel runs
    assert row["comm_bytes"] == 2000  # bf16, from the kernel's name, not the parameters' 4


def profiler_event(name, start, end, device=False, annotation=False, activity=None,
                   shapes=None):
    """One of torch.profiler's own events (FunctionEvent), as kineto fills it in: a host
    op or range on thread 1, or device activity on stream 7."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent
    activity = activity or ("user_annotation" if annotation else "cpu_op")
    return FunctionEvent(id=0, name=name, thread=7 if device else 1, start_us=start,
                         end_us=end, input_shapes=shapes, is_user_annotation=annotation,
                         device_type=DeviceType.CUDA if device else DeviceType.CPU,
                         activity_type=activity)


def test_gpu_annotations_spanning_a_collective_are_not_compute():
    """Kineto mirrors every range on the device (`gpu_user_annotation`): DDP's forward,
    bench's phases, the collective's own record_function. They span the idle gaps between
    kernels, so taken as kernels they would hide the all-reduce; only kernels count (HTA),
    and a memory copy is not compute either. Kernels 0–10 and 90–100 µs, NCCL 40–80 µs:
    all 40 µs exposed."""
    from bench.worker.probe import to_spans
    nccl = "ncclDevKernel_AllReduce_Sum_f32_RING_LL"
    events = [profiler_event("bench.step", 0, 100, annotation=True),
              profiler_event("bench.backward", 0, 100, annotation=True),
              profiler_event("nccl:all_reduce", 20, 21, shapes=[[1000]]),
              profiler_event("sm90_xmma_gemm", 0, 10, device=True, activity="kernel"),
              profiler_event("elementwise_kernel", 90, 100, device=True, activity="kernel"),
              profiler_event(nccl, 40, 80, device=True, activity="kernel"),
              profiler_event("Memcpy DtoD (Device -> Device)", 50, 60, device=True,
                             activity="gpu_memcpy"),
              *(profiler_event(name, start, end, device=True, annotation=True,
                               activity="gpu_user_annotation")
                for name, start, end in (("bench.step", 0, 100), ("bench.backward", 0, 100),
                                         ("DistributedDataParallel.forward", 0, 100),
                                         ("nccl:all_reduce", 21, 85)))]
    spans = to_spans(events)
    assert sorted(s.name for s in spans if s.on_device) == \
        sorted([nccl, "elementwise_kernel", "sm90_xmma_gemm"])
    (row,) = att.step_attribution(spans, itemsize=4)
    assert row["comm_s"] == pytest.approx(40e-6)  # the kernel's, not the annotation's 64
    assert row["comm_exposed_s"] == pytest.approx(40e-6)
    assert row["backward_s"] == pytest.approx(60e-6)  # 100 µs range less the exposed 40
    assert row["comm_bytes"] == 4000  # f32 from the kernel's name, 1000 elements
    summary = att.probe_summary([row], skip=0)
    assert summary["comm_overlap"] == pytest.approx(0.0)
    assert summary["step_shares"]["comm_exposed"] == pytest.approx(0.4)


def test_probe_summary_drops_the_profilers_first_step():
    rows = att.step_attribution(cpu_step(0, (50, 85)) + cpu_step(200, (60, 70)), itemsize=4)
    summary = att.probe_summary(rows, skip=1)
    assert summary["probe_steps"] == 1
    assert summary["comm_overlap"] == pytest.approx(1.0)  # 60–70 lies under compute


def test_window_fractions_sum_to_one_and_include_data_and_gaps():
    probe = att.probe_summary(att.step_attribution(cpu_step(), 4), skip=0)
    out = att.window_breakdown(probe, window_s=10.0, steps_s=8.0, data_wait_s=1.0, method="m")
    assert sum(out[k] for k in FRACTIONS) == pytest.approx(1.0)
    assert out["data"] == pytest.approx(0.1)
    assert out["forward"] == pytest.approx(0.8 * 0.30)
    assert out["comm_exposed"] == pytest.approx(0.8 * 0.15)
    assert out["other"] == pytest.approx(0.1 + 0.8 * 0.02)  # the window's gap + the step's
    # A host wait longer than the time between the steps (a GPU's queued work) is capped.
    capped = att.window_breakdown(probe, window_s=10.0, steps_s=9.5, data_wait_s=3.0,
                                  method="m")
    assert capped["data"] == pytest.approx(0.05)
    assert capped["forward"] == pytest.approx(0.95 * 0.30)
    assert capped["other"] == pytest.approx(0.95 * 0.02)  # the step's own gap, nothing more


def test_probe_on_a_real_engine_profiles_its_three_phases():
    import torch

    from bench.worker.probe import method, run_probe
    from launchers.base import Engine, Precision
    from models import build_model

    torch.manual_seed(0)
    model = build_model("unet", width=4, depth=2)
    engine = Engine(model, torch.optim.Adam(model.parameters()), Precision("fp32", "cpu"))
    x = torch.rand(2, 1, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = run_probe(engine, (x, x), "cpu")
    shares = summary["step_shares"]
    assert summary["probe_steps"] == 3
    assert shares["forward"] > 0 and shares["backward"] > 0 and shares["optimizer"] > 0
    # The phases' ranges follow each other within a step: what falls between them is
    # microseconds of a step of milliseconds. A phase missed or its time taken twice
    # (less exposed communication there is none of) shows here.
    assert shares["other"] < 0.1
    assert shares["comm_exposed"] == 0 and summary["comm_message_bytes_per_step"] == 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # trained
    assert "probe steps after the timed window" in method("cpu")


def with_breakdown(rec, fractions, comm_bytes=0, overlap=None):
    rec["breakdown"] = {**dict(zip(FRACTIONS, fractions)), "comm_message_bytes_per_step": comm_bytes,
                        "comm_overlap": overlap, "method": "test"}
    return rec


def frame_of(records):
    from bench.record import store
    return pd.DataFrame([store.flatten(r) for r in records])


def test_largest_loss_against_ideal_scaling_is_named():
    # single: 100 img/s, all compute. ddp ×2: 150 img/s (ideal 200): 1/150 s per sample of
    # which 30% exposed all-reduce. Ideal 1/200: excess comm 0.3/150 = 2 ms per 1000 samples,
    # compute 0.7/150 − 1/200 = −0.33 ms: communication is the whole loss.
    single = with_breakdown(record(throughput=100.0), (0, 0.4, 0.6, 0, 0, 0))
    ddp = with_breakdown(record(strategy="ddp", devices=2, throughput=150.0),
                         (0, 0.3, 0.4, 0.3, 0, 0), comm_bytes=4 * 2**20, overlap=0.25)
    table = breakdown_table(frame_of([single, ddp]))
    row = table[table["cell.strategy"] == "ddp"].iloc[0]
    assert row["largest_loss"] == "comm_exposed"
    excess = sum(row[f"excess_{p}_s"] for p in ("compute", "comm_exposed", "data", "other"))
    assert excess == pytest.approx(1 / 150 - 1 / 200)
    assert row["excess_comm_exposed_s"] == pytest.approx(0.3 / 150)
    assert "33% slower per sample than ideal" in row["sentence"]
    assert "exposed communication" in row["sentence"] and "4.00 MiB" in row["sentence"]
    base = table[table["cell.strategy"] == "single"].iloc[0]
    assert "baseline" in base["sentence"] and not isinstance(base["largest_loss"], str)


def test_slower_compute_is_named_when_it_is_the_loss():
    single = with_breakdown(record(throughput=100.0), (0, 0.4, 0.6, 0, 0, 0))
    ddp = with_breakdown(record(strategy="ddp", devices=2, throughput=110.0),
                         (0, 0.45, 0.5, 0.05, 0, 0), comm_bytes=1000, overlap=0.5)
    row = breakdown_table(frame_of([single, ddp])).iloc[1]
    assert row["largest_loss"] == "compute" and "slower compute" in row["sentence"]


def test_report_shows_the_breakdown_in_console_html_and_json(tmp_path):
    recs = sweep()
    for r in recs:
        comm = r["cell"]["strategy"] == "ddp"
        with_breakdown(r, (0.02, 0.3, 0.5, 0.1 if comm else 0, 0.05, 0.03 if comm else 0.13),
                       comm_bytes=2**20 if comm else 0, overlap=0.4 if comm else None)
        write_cell(tmp_path, r)
    page = tmp_path / "report.html"
    code, out, err = cli("report", tmp_path, "--html", page)
    assert code == 0, err
    assert "where the timed window goes" in out and "ddp ×2 fp32" in out
    text = page.read_text()
    section = text[text.index("Where the time goes"):]
    assert "data:image/png;base64," in section and "slower per sample" in section
    code, out, err = cli("report", tmp_path, "--format", "json")
    doc = json.loads(out)
    ddp = [r for r in doc["breakdown"] if r["cell.strategy"] == "ddp"]
    assert ddp and ddp[0]["comm_exposed"] == pytest.approx(0.1)


def test_predict_takes_the_measured_overlap(tmp_path):
    from bench.analysis.predict import predict
    single = record(throughput=100.0)
    single["model"] = {"parameters": 10_000_000}
    ddp = with_breakdown(record(strategy="ddp", devices=2, throughput=150.0),
                         (0, 0.3, 0.4, 0.3, 0, 0), comm_bytes=4e7, overlap=0.6)
    kw = dict(devices=[2, 8], bandwidth=1.0, latency=10.0,
              parameters=lambda r: r["model"]["parameters"])
    measured = predict([single, ddp], **kw)["families"][0]
    assumed = predict([single, ddp], overlap=0.0, **kw)["families"][0]
    assert measured["overlap"] == {"ddp": 0.6}
    assert any("measured on this workload's ddp cells" in a for a in measured["assumptions"])
    for m, a in zip(measured["rows"], assumed["rows"]):
        assert m["exposed_comm_s"] == pytest.approx(0.4 * a["exposed_comm_s"])
    no_breakdown = predict([single, record(strategy="ddp", devices=2)], **kw)["families"][0]
    assert no_breakdown["overlap"] == {"ddp": 0.0}
    assert any("assumed none" in a for a in no_breakdown["assumptions"])
    with_overhead = predict([single, ddp], overhead_s=0.005, **kw)["families"][0]
    assert with_overhead["rows"][0]["step_s"] == pytest.approx(
        measured["rows"][0]["step_s"] + 0.005)


def test_predict_html_plot_and_its_refusals(tmp_path):
    for r in sweep():
        r["model"] = {"parameters": 1_000_000}
        if r["cell"]["strategy"] != "dp":
            write_cell(tmp_path / "runs", with_breakdown(r, (0, 0.4, 0.5, 0.1, 0, 0),
                                                          overlap=0.3))
    page = tmp_path / "predict.html"
    code, _, err = cli("predict", tmp_path / "runs", "--devices", "2", "4", "--html", page)
    assert code == 0, err
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1 and "ddp overlap 0.30" in text
    code, _, err = cli("predict", tmp_path / "runs", "--html", tmp_path / "no" / "p.html")
    assert code == 2 and "does not exist" in err
    code, _, err = cli("predict", tmp_path / "runs", "--overhead", "-1")
    assert code == 2 and "--overhead" in err


def test_records_of_before_and_after_the_bytes_rename_are_read_together(tmp_path):
    """A folder with old records (`comm_bytes_per_step`) and new ones
    (`comm_message_bytes_per_step`): each configuration keeps its measured bytes (the store
    reads old records under today's names)."""
    from bench.analysis.breakdown import breakdown_table
    from bench.record import store

    def rec(strategy, devices, name, nbytes):
        return {"status": "ok", "cell_id": f"{strategy}{devices}", "fingerprint": "f",
                "cell": {"model": "unet", "strategy": strategy, "devices": devices,
                         "precision": "fp32", "device_type": "cpu", "noise": [0.1]},
                "timing": {"throughput_img_s": 100.0 * devices, "train_time_s": 1.0},
                "breakdown": {"data": 0.0, "forward": 0.4, "backward": 0.5,
                              "comm_exposed": 0.0, "optimizer": 0.1, "other": 0.0,
                              "comm_overlap": 1.0, name: nbytes}}
    records = [rec("single", 1, "comm_message_bytes_per_step", 0),
               rec("ddp", 2, "comm_bytes_per_step", 4096),
               rec("fsdp", 2, "comm_message_bytes_per_step", 6144)]
    for r in records:
        store.write_json(tmp_path / r["cell_id"] / store.RECORD, r)
    table = breakdown_table(store.load(tmp_path))
    got = dict(zip(table["cell.strategy"], table["comm_message_bytes_per_step"]))
    assert got == {"single": 0, "ddp": 4096, "fsdp": 6144}
