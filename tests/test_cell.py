from bench.config.cell import Cell, workload_fingerprint


def test_cell_id_is_stable_and_distinguishes_every_field():
    a = Cell()
    assert a.cell_id == Cell().cell_id
    assert a.cell_id.startswith("unet-single1-fp32-r0-")
    assert Cell(lr=2e-3).cell_id != a.cell_id
    assert Cell(noise=(0.2,)).cell_id != a.cell_id


def test_round_trip_through_dict():
    cell = Cell(model="unetpp", noise=(0.1, 0.3), zero_stage=2, strategy="deepspeed", devices=2)
    assert Cell.from_dict(cell.to_dict()) == cell


def test_fingerprint_ignores_how_but_not_what():
    base = Cell()
    fp = workload_fingerprint(base, "d1")
    # Execution choices are what a comparison varies: same workload.
    assert workload_fingerprint(base.replace(strategy="ddp", devices=2, precision="bf16"), "d1") == fp
    assert workload_fingerprint(base.replace(repeat=3), "d1") == fp
    # Anything that changes the computed work changes the fingerprint.
    for change in (dict(global_batch=32), dict(steps=61), dict(lr=1e-4), dict(noise=(0.2,)),
                   dict(width=8), dict(seed=1), dict(channels_last=True), dict(norm="batch")):
        assert workload_fingerprint(base.replace(**change), "d1") != fp, change
    assert workload_fingerprint(base, "d2") != fp  # a different split


def test_weak_scaling_keeps_per_device_batch_and_scales_lr():
    weak = Cell(scaling="weak", global_batch=8, devices=4, lr=1e-3, strategy="ddp")
    assert weak.effective_global_batch == 32 and weak.per_device_batch == 8
    assert abs(weak.effective_lr - 4e-3) < 1e-12
    strong = Cell(global_batch=8, devices=4, strategy="ddp")
    assert strong.effective_global_batch == 8 and strong.per_device_batch == 2
    # Weak cells on 1 and 4 devices compare as one workload (same per-device batch).
    assert workload_fingerprint(weak, "d") == workload_fingerprint(weak.replace(devices=1), "d")


def test_repeats_use_different_seeds():
    assert Cell(repeat=0).workload_seed != Cell(repeat=1).workload_seed


def test_model_options_set_every_architecture_option_of_build_model():
    """models/ keeps its own library defaults (it imports nothing of bench); bench never
    relies on them, because model_options passes every option a cell decides."""
    from bench.config.cell import model_options
    from models import _OPTIONS
    assert set(model_options(Cell())) == set(_OPTIONS) - {"in_channels", "out_channels"}
