"""FSDP sharded the way its users shard (per block, then the root) and ZeRO-3, on 2 gloo CPU
ranks: what the probe measures each step moves is what `bench predict` derives."""
import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def sweep(strategies_sweep):
    """single, FSDP and ZeRO-3 fp32 of the strategies' shared run (conftest.STRATEGIES_SPEC)."""
    records = {"single": strategies_sweep[("single", "fp32", None)],
               "fsdp": strategies_sweep[("fsdp", "fp32", None)],
               "deepspeed": strategies_sweep[("deepspeed", "fp32", 3)]}
    assert all(r["status"] == "ok" for r in records.values()), \
        [r.get("error") for r in records.values()]
    return records


def test_predicted_message_bytes_match_the_probe(sweep):
    """The bytes each rank hands its collectives per step, as the attribution probe counted
    them, against predict's from the sharding the record carries: within 10%. Root-only FSDP
    (P + P/n) or the ZeRO paper's three passes (P + 2P/n) would both miss FSDP per block."""
    from bench.analysis.predict import predict
    from bench.cli.predict import rebuilt_parameters

    out = predict(list(sweep.values()), devices=[2], strategies=("fsdp", "zero3"),
                  parameters=rebuilt_parameters)
    rows = {r["strategy"]: r for r in out["families"][0]["rows"]}
    params = out["families"][0]["parameters"]
    for strategy, key in (("fsdp", "fsdp"), ("zero3", "deepspeed")):
        measured = sweep[key]["breakdown"]["comm_message_bytes_per_step"]
        predicted = rows[strategy]["comm_message_bytes_per_step"]
        assert predicted == pytest.approx(measured, rel=0.10), (strategy, predicted, measured)
        assert "recorded" in rows[strategy]["regathered_source"]
    # FSDP per block gathers its blocks twice: more than an all-reduce's P + the gather P/n.
    assert sweep["fsdp"]["breakdown"]["comm_message_bytes_per_step"] > 1.6 * 4 * params
    # The wire bytes a ring sends: ZeRO-3 on this model gathers each parameter once (DDP's
    # volume); FSDP gathers the blocks' share r again.
    r = rows["fsdp"]["regathered_share"]
    assert rows["fsdp"]["comm_wire_bytes_per_step"] == pytest.approx((2 + r) / 2 * 4 * params)
    assert rows["zero3"]["comm_wire_bytes_per_step"] == pytest.approx(4 * params)


def test_records_carry_the_sharding_policy(sweep):
    from bench.config.cell import Cell, model_options
    from models import build_model, count_parameters
    from models.blocks import DoubleConv

    cell = Cell.from_dict(sweep["fsdp"]["cell"])
    model = build_model(cell.model, **model_options(cell))
    blocks = [m for m in model.modules() if isinstance(m, DoubleConv)]
    in_blocks = sum(p.numel() for b in blocks for p in b.parameters())
    sharding = sweep["fsdp"]["runtime"]["sharding"]
    assert sharding["policy"] == "per-block" and sharding["unit_class"] == "DoubleConv"
    assert sharding["units"] == len(blocks) + 1 == 6  # stem, 2 encoders, 2 decoders; root
    assert sharding["parameters"] == count_parameters(model)
    assert sharding["root_parameters"] == count_parameters(model) - in_blocks > 0
    assert sharding["regathered_parameters"] == in_blocks
    assert sharding["reshard_after_forward"] == {"blocks": True, "root": False}
    zero3 = sweep["deepspeed"]["runtime"]["sharding"]
    assert zero3["policy"] == "zero3" and zero3["parameters"] == count_parameters(model)
    # every parameter of this tiny model is under DeepSpeed's persistence threshold
    assert zero3["persistent_parameters"] == count_parameters(model)
    assert zero3["regathered_parameters"] == 0
    assert sweep["single"]["runtime"]["sharding"] is None


# One rank (world size 1): FSDP's wrapping is the same whatever the rank count.
WRAP = """
import json, sys, tempfile, torch, torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from bench.config.cell import Cell, model_options
from launchers import get_strategy
from launchers.base import Runtime
from models import build_model
dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0,
                        world_size=1)
out = {}
for name, arch, heads in (("unet", "bench", False), ("unetpp", "bench", False),
                          ("unetpp", "bench", True), ("unet", "seed", False),
                          ("unetpp", "seed", False)):
    seed = {"norm": "batch", "residual": False} if arch == "seed" else {}
    cell = Cell(model=name, arch=arch, strategy="fsdp", devices=1, width=4, depth=2,
                image_size=32, deep_supervision=heads, **seed)
    model = build_model(name, **model_options(cell))
    engine = get_strategy("fsdp").wrap(model, torch.optim.Adam(model.parameters()), cell,
                                       Runtime(0, 1, 0, "cpu", "gloo", 1))
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    # conv blocks: modules holding two Conv2d directly (a list of deep-supervision heads
    # holds convs too, but has no forward: it stays in the root unit)
    blocks = [m for m in model.modules() if not isinstance(m, torch.nn.ModuleList)
              and sum(isinstance(c, torch.nn.Conv2d) for c in m.children()) >= 2]
    model(torch.rand(2, 1, 32, 32))  # the sharded model runs
    out[name + "-" + arch + ("-heads" if heads else "")] = {
        "units": len(units), "root_is_unit": isinstance(model, FSDPModule),
        "blocks_are_units": all(isinstance(b, FSDPModule) for b in blocks),
        "blocks": len(blocks), "sharding": engine.sharding}
dist.destroy_process_group()
print(json.dumps(out))
"""


def test_fsdp_shards_each_block_then_the_root():
    """Each conv block (the bench networks' DoubleConv, the seed networks' Sequential blocks)
    is an FSDP unit of its own, and the root one more; the record's policy counts them."""
    result = subprocess.run([sys.executable, "-c", WRAP], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    expected_blocks = {"unet": 5, "unetpp": 6}  # depth 2: stem + 2 + 2; 6 nested nodes
    for key, got in out.items():
        blocks = expected_blocks[key.split("-")[0]]
        assert got["blocks"] == blocks and got["blocks_are_units"] and got["root_is_unit"], key
        assert got["units"] == blocks + 1 == got["sharding"]["units"], key
        assert got["sharding"]["policy"] == "per-block", key
