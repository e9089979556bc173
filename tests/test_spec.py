"""Sweep specs: validation (one sentence naming the key), matrix expansion, stable cell ids."""
import argparse
import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from bench.config import spec as specs
from bench.sweep import plan as planner
from bench.sweep import spec_files
from bench.config.cell import Cell
from bench.errors import BadInput
from conftest import REPO, run_cli

TINY_WORKLOAD = {"steps": 6, "warmup": 2, "global_batch": 8, "width": 4, "depth": 2,
                 "image_size": 32}


def spec_of(matrix=None, workload=None, **top):
    return {"name": "t", "workload": {**TINY_WORKLOAD, **(workload or {})},
            "matrix": matrix or {"models": ["unet"], "configurations": [{"strategy": "single"}]},
            **top}


def expand(raw, device_type="cpu", gpus=0):
    resolved = planner.expand(specs.parse_spec(raw), device_type, gpus)
    planner.validate(resolved, gpus if device_type == "cpu" else None)
    return resolved


# --------------------------------------------------------------------------- built-ins

def test_paper_is_the_seed_study_corrected():
    resolved = expand(specs.load_spec("paper").to_dict(), "cuda", 2)
    cells = resolved.cells
    # 2 models × 3 σ × 5 configurations × 3 seeds
    assert len(cells) == 90 and len({c.cell_id for c in cells}) == 90
    assert {c.model for c in cells} == {"unet", "unetpp"}
    assert sorted({c.noise for c in cells}) == [(0.1,), (0.2,), (0.3,)]
    assert {c.repeat for c in cells} == {0, 1, 2}
    configs = sorted({(c.strategy, c.devices, c.precision) for c in cells})
    assert configs == [("ddp", 2, "fp16"), ("ddp", 2, "fp32"), ("dp", 2, "fp32"),
                       ("single", 1, "fp16"), ("single", 1, "fp32")]
    for c in cells:  # the study's own networks at one fixed global batch (strong scaling)
        assert (c.arch, c.width, c.depth, c.norm, c.residual) == (
            "seed", 64, 4, "batch", False)
        assert c.to_dict()["arch"] == "seed" and c.cell_id.startswith(f"{c.model}-seed-")
        assert c.global_batch == 32 and c.scaling == "strong" and c.noise_mean == 0.1
    # AMP means bf16 on a CPU machine.
    cpu = planner.expand(specs.load_spec("paper"), "cpu", 0)
    assert {c.precision for c in cpu.cells} == {"fp32", "bf16"}


def test_seed_confounded_runs_the_seeds_three_configurations_as_they_were():
    cells = expand(specs.load_spec("seed-confounded").to_dict(), "cuda", 2).cells
    got = {(c.model, c.strategy, c.devices, c.precision, c.effective_global_batch, c.workers,
            c.pin_memory, c.arch) for c in cells if c.repeat == 0}
    assert got == {(m, *rest) for m in ("unet", "unetpp") for rest in (
        ("single", 1, "fp32", 16, 0, False, "seed"), ("dp", 2, "fp32", 32, 0, False, "seed"),
        ("ddp", 2, "fp16", 64, 4, True, "seed-ddp"))}
    assert all((c.norm, c.residual, c.image_size, c.noise, c.noise_mean)
               == ("batch", False, 256, (0.1,), 0.1) for c in cells)
    assert specs.load_spec("seed-confounded").workload["epochs"] == 2


def test_seed_factorial_crosses_every_level_of_the_four_factors():
    from bench.analysis.factorial import CLAIMS
    cells = [c for c in expand(specs.load_spec("seed-factorial").to_dict(), "cuda", 2).cells
             if c.repeat == 0 and c.model == "unet"]
    levels = {(c.strategy, c.precision, c.global_batch, c.workers, c.pin_memory) for c in cells}
    assert len(cells) == len(levels) == 3 * 2 * 3 * 2
    assert {c.arch for c in cells} == {"seed"}
    loader = {"0 workers": (0, False), "workers + pinned": (4, True)}
    for claim in CLAIMS:  # both corners of every claim the decomposition makes are there
        for corner in (claim.base, claim.top):
            process, precision, batch, load = corner
            assert (process, "fp16" if precision == "AMP" else precision, batch,
                    *loader[load]) in levels


def test_configurations_may_set_batch_loader_and_arch_and_round_trip(tmp_path):
    raw = spec_of({"models": ["unet"], "configurations": [
        {"strategy": "single"},
        {"strategy": "ddp", "devices": 2, "global_batch": 16, "workers": 1, "pin_memory": True,
         "arch": "seed-ddp"}]}, {"arch": "seed"})
    resolved = expand(raw)
    single, ddp = resolved.cells
    assert (single.global_batch, single.workers, single.arch) == (8, 0, "seed")
    assert (ddp.global_batch, ddp.workers, ddp.pin_memory, ddp.arch) == (16, 1, True, "seed-ddp")
    # a seed arch implies its batch norm and plain output where the spec does not say
    assert (single.norm, single.residual) == ("batch", False)
    spec_files.write_resolved(tmp_path, resolved)
    again = planner.expand(specs.load_spec(str(tmp_path / "spec.yaml")), "cpu", 0).cells
    assert [c.cell_id for c in again] == [c.cell_id for c in resolved.cells]
    # arch changes the workload: another fingerprint than bench's network
    from bench.config.cell import workload_fingerprint
    assert workload_fingerprint(single, "d") != \
        workload_fingerprint(single.replace(arch="bench", norm="batch", residual=False), "d")


def test_arch_flag_implies_the_seeds_norm_unless_given():
    from bench.cli.parsers import build_parser
    from bench.cli.run import spec_from_flags
    parse = build_parser().parse_args
    spec, _ = spec_from_flags(parse(["run", "--arch", "seed"]), "t", "cpu", 0)
    assert (spec.workload["arch"], spec.workload["norm"], spec.workload["residual"]) == \
        ("seed", "batch", False)
    spec, _ = spec_from_flags(parse(["run"]), "t", "cpu", 0)
    assert (spec.workload["norm"], spec.workload["residual"]) == ("group", True)
    spec, _ = spec_from_flags(parse(["run", "--arch", "seed", "--norm", "group"]), "t", "cpu", 0)
    with pytest.raises(BadInput, match="norm"):
        planner.validate(planner.expand(spec, "cpu", 0), 0)


def test_scaling_covers_1_2_4_8_devices_strong_and_weak():
    cells = expand(specs.load_spec("scaling").to_dict(), "cuda", 8).cells
    assert sorted({(c.scaling, c.devices) for c in cells}) == [
        (mode, n) for mode in ("strong", "weak") for n in (1, 2, 4, 8)]
    for c in cells:
        assert c.effective_global_batch == (32 * c.devices if c.scaling == "weak" else 32)


def test_quick_is_what_run_does_without_flags():
    from bench.cli.parsers import build_parser
    from bench.cli.run import spec_from_flags
    from bench.sweep.hardware import study_configs

    args = build_parser().parse_args(["run"])
    flag_spec, _ = spec_from_flags(args, "quick", "cpu", 0)
    flag_cells = planner.expand(flag_spec, "cpu", 0).cells
    resolved = planner.expand(specs.load_spec("quick"), "cpu", 0)
    assert [c.cell_id for c in resolved.cells] == [c.cell_id for c in flag_cells]
    assert {c.model for c in resolved.cells} == {"unet", "unetpp"}
    assert ("single", 1, "fp32") in {(c.strategy, c.devices, c.precision)
                                     for c in resolved.cells}
    assert resolved.notes == study_configs("cpu", 0)[1]


# --------------------------------------------------------------------------- expansion, ids

def test_matrix_order_and_product():
    raw = spec_of({"models": ["unet", "unetpp"], "noise": [0.1, [0.2, 0.3]],
                   "configurations": [{"strategy": "single"},
                                      {"strategy": "ddp", "devices": 2, "precision": "amp"},
                                      {"strategy": "deepspeed", "devices": 2, "zero": 2}]},
                  {"repeats": 2})
    cells = expand(raw).cells
    assert len(cells) == 2 * 2 * 3 * 2
    # repeats × models × noise × scaling × configurations: repeat 0 of every configuration
    # first (interleaved, so drift is not confounded with configuration), then repeat 1
    assert [c.repeat for c in cells] == [0] * 12 + [1] * 12
    first = cells[:3]
    assert [(c.strategy, c.precision, c.zero_stage) for c in first] == [
        ("single", "fp32", None), ("ddp", "bf16", None), ("deepspeed", "fp32", 2)]
    assert cells[3].noise == (0.2, 0.3) and cells[6].model == "unetpp"
    assert [c.replace(repeat=0) for c in cells[12:]] == cells[:12]


def test_ids_are_stable_across_processes_and_key_order():
    raw = spec_of({"models": ["unet"], "noise": [0.1, 0.2],
                   "configurations": [{"strategy": "single"}, {"strategy": "ddp", "devices": 2}]})
    ids = [c.cell_id for c in expand(raw).cells]
    assert len(set(ids)) == len(ids) == 4
    # Key order in the YAML is irrelevant; another interpreter (another hash seed) agrees.
    shuffled = {"matrix": raw["matrix"], "name": "t",
                "workload": dict(reversed(list(raw["workload"].items())))}
    assert [c.cell_id for c in expand(shuffled).cells] == ids
    code = textwrap.dedent(f"""
        import json
        from bench.config import spec
        from bench.sweep.plan import expand
        r = expand(spec.parse_spec(json.loads({json.dumps(json.dumps(raw))})), "cpu", 0)
        print(json.dumps([c.cell_id for c in r.cells]))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    assert json.loads(out.stdout) == ids, out.stderr
    # What is computed is in the id: any workload change gives new ids.
    changed = spec_of(raw["matrix"], {"lr": 2e-3})
    assert not set(c.cell_id for c in expand(changed).cells) & set(ids)


def test_resolved_spec_expands_to_the_same_cells(tmp_path):
    raw = spec_of({"models": ["unet"], "configurations": "study"}, {"device": "cpu"})
    resolved = expand(raw)
    spec_files.write_resolved(tmp_path, resolved)
    again = specs.load_spec(str(tmp_path / "spec.yaml"))
    assert again.configurations != "study" and again.device == "cpu"
    assert [c.cell_id for c in planner.expand(again, "cpu", 0).cells] == \
        [c.cell_id for c in resolved.cells]
    data = spec_files.read_resolved(tmp_path / "spec.json")
    assert [c.cell_id for c in spec_files.resolved_cells(data)] == [c.cell_id for c in resolved.cells]
    assert [e["index"] for e in data["cells"]] == list(range(len(resolved.cells)))
    # A tampered cell no longer matches its id.
    data["cells"][0]["cell"]["lr"] = 0.5
    with pytest.raises(BadInput, match="hash to"):
        spec_files.resolved_cells(data)


def test_spec_file_by_path_and_name_default(tmp_path):
    path = tmp_path / "my-sweep.yaml"
    raw = spec_of()
    del raw["name"]
    path.write_text(yaml.safe_dump(raw))
    assert specs.load_spec(str(path)).name == "my-sweep"
    with pytest.raises(BadInput, match="unknown spec 'nope'"):
        specs.load_spec("nope")
    with pytest.raises(BadInput, match="does not exist"):
        specs.load_spec(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("workload: {steps: [\n")
    with pytest.raises(BadInput, match="not valid YAML at line"):
        specs.load_spec(str(tmp_path / "bad.yaml"))


# --------------------------------------------------------------------------- validation

BAD = [
    ({**spec_of(), "matrixx": {}}, "matrixx"),
    (spec_of(workload={"stepz": 3}), "workload.stepz"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single"}], "seeds": 3}),
     "matrix.seeds"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "ddp", "gpus": 2}]}),
     "matrix.configurations[0].gpus"),
    (spec_of(workload={"steps": "ten"}), "workload.steps must be an integer"),
    (spec_of(workload={"steps": True}), "workload.steps must be an integer"),
    (spec_of(workload={"lr": "fast"}), "workload.lr must be a number"),
    (spec_of(workload={"residual": "yes"}), "workload.residual must be true or false"),
    (spec_of(workload={"repeats": 0}), "workload.repeats 0"),
    (spec_of(workload={"device": "tpu"}), "workload.device 'tpu'"),
    (spec_of(workload={"scaling": "medium"}), "workload.scaling 'medium'"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single"}],
              "scaling": ["weak", "huge"]}), "matrix.scaling[1] 'huge'"),
    (spec_of({"models": [], "configurations": "study"}), "matrix.models"),
    (spec_of({"models": ["unet", "unet"]}), "matrix.models lists a name twice"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single",
                                                      "precision": "fp8"}]}),
     "matrix.configurations[0].precision 'fp8'"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "ddp", "zero": 1}]}),
     "matrix.configurations[0].zero applies only to strategy deepspeed"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "deepspeed", "zero": 5}]}),
     "matrix.configurations[0].zero 5"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single", "devices": 2}]}),
     "matrix.configurations[0].devices 2 is impossible for strategy single"),
    (spec_of({"models": ["unet"], "configurations": [{"devices": 2}]}),
     "matrix.configurations[0].strategy is missing"),
    (spec_of({"models": ["unet"], "configurations": "all"}), "matrix.configurations"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single"}],
              "noise": [0.1, "high"]}), "matrix.noise[1]"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single"}], "noise": [0.1]},
             {"noise": [0.2]}), "noise is given in both workload and matrix"),
    ({**spec_of(), "name": "../escape"}, "spec key name"),
    ({**spec_of(), "workload": [1, 2]}, "spec key workload must be a mapping"),
    # Per-cell checks come from plan.validate_cell, translated to spec keys.
    (spec_of({"models": ["resnet"], "configurations": [{"strategy": "single"}]}),
     "unknown model 'resnet'"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "warp"}]}),
     "unknown strategy 'warp'"),
    (spec_of(workload={"steps": 3, "warmup": 3}), "workload.steps 3 must exceed workload.warmup 3"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "ddp", "devices": 3}]}),
     "not divisible by 3"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single",
                                                      "precision": "fp16"}]}),
     "fp16 needs a CUDA GPU"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single"}],
              "noise": [-0.1]}), "-0.1"),
    (spec_of(workload={"image_size": 30}), "30"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single"},
                                                     {"strategy": "single", "devices": 1}]}),
     "twice"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single", "workers": "4"}]}),
     "matrix.configurations[0].workers must be an integer"),
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single", "lr": 0.1}]}),
     "unknown spec key matrix.configurations[0].lr"),
    (spec_of(workload={"arch": "seed", "norm": "group"}), "norm"),
    (spec_of(workload={"arch": "vit"}), "vit"),
    # the workload is shared: a seed configuration beside bench ones may not change their norm
    (spec_of({"models": ["unet"], "configurations": [{"strategy": "single"},
                                                     {"strategy": "dp", "arch": "seed"}]}),
     "spec mixes arch bench with the seed's networks, which need workload.norm: batch, "
     "workload.residual: False"),
]


@pytest.mark.parametrize("raw,needle", BAD, ids=[n for _, n in BAD])
def test_bad_specs_name_the_key(raw, needle):
    with pytest.raises(BadInput) as info:
        expand(raw)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_validation_speaks_in_spec_keys_not_flags():
    with pytest.raises(BadInput) as info:
        expand(spec_of(workload={"lr": -1.0}))
    assert "--" not in str(info.value) and "workload.lr" in str(info.value)


# --------------------------------------------------------------------------- CLI

def test_run_with_a_bad_spec_exits_2_before_any_folder(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec_of(workload={"stepz": 3})))
    out = tmp_path / "results"
    result = run_cli("run", path, "--out", out)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("bench: error: unknown spec key workload.stepz")
    assert not out.exists()


def test_run_spec_rejects_workload_flags(tmp_path):
    out = tmp_path / "results"
    result = run_cli("run", "quick", "--steps", "5", "--out", out)
    assert result.returncode == 2
    assert "--steps cannot be combined with spec quick; set workload.steps" in result.stderr
    assert not out.exists()


def test_reject_workload_flags_allows_run_options():
    from bench.cli.parsers import build_parser
    from bench.cli.run import reject_workload_flags
    args = build_parser().parse_args(["run", "quick", "--out", "x", "--force", "--device", "cpu"])
    reject_workload_flags(args)  # no error
    args = build_parser().parse_args(["run", "quick", "--strategy", "ddp"])
    with pytest.raises(BadInput, match="matrix.configurations"):
        reject_workload_flags(args)
    assert isinstance(args, argparse.Namespace)


def test_cell_index_out_of_range_and_stale_id(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec_of()))
    result = run_cli("cell", path, "--index", "5", "--out", tmp_path / "o")
    assert result.returncode == 2 and "--index 5 is out of range; spec t has 1 cells (0-0)" \
        in result.stderr
    result = run_cli("cell", path, "--index", "0", "--expect-id", "unet-x", "--out",
                     tmp_path / "o")
    assert result.returncode == 2 and "not --expect-id unet-x" in result.stderr
    assert not (tmp_path / "o").exists()


def test_cell_fields_are_all_workload_keys_or_matrix_axes():
    import dataclasses
    defaults = specs.workload_defaults()
    axes = {"model", "strategy", "devices", "precision", "zero_stage", "repeat", "device_type"}
    for f in dataclasses.fields(Cell):
        assert f.name in defaults or f.name in axes, f.name


# --------------------------------------------------------------------------- schema, `bench spec`

def test_schema_names_exactly_the_keys_the_parser_accepts():
    from bench.config.schema import spec_schema
    schema = spec_schema()
    props = schema["properties"]
    assert set(props) == set(specs.TOP_KEYS)
    assert set(props["matrix"]["properties"]) == set(specs.MATRIX_KEYS)
    assert set(props["workload"]["properties"]) == set(specs.workload_defaults())
    config = props["matrix"]["properties"]["configurations"]["anyOf"][1]["items"]["anyOf"][1]
    assert set(config["properties"]) == set(specs.CONFIG_KEYS)
    assert schema["additionalProperties"] is False


SAMPLE_OF_TYPE = {"integer": 3, "number": 0.5, "string": "x", "boolean": True}


def test_schema_types_agree_with_the_parser():
    """A value of the schema's type passes the parser's type check; one of another type is
    refused by both, so an editor's completion never suggests what bench rejects."""
    from bench.config.schema import spec_schema
    workload = spec_schema()["properties"]["workload"]["properties"]
    for key, prop in workload.items():
        if "anyOf" in prop:  # noise: a σ or a list of σ
            assert specs._check_type(key, [0.1, 0.2], "tuple[float, ...]") == [0.1, 0.2]
            continue
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        annotation = specs.field_types()[key]
        for json_type in types:
            if json_type != "null":
                specs._check_type(key, SAMPLE_OF_TYPE[json_type], annotation)
        wrong = "string" if "boolean" in types else "boolean"  # true is no number either
        with pytest.raises(BadInput, match=key):
            specs._check_type(key, SAMPLE_OF_TYPE[wrong], annotation)


def test_spec_command_lists_the_cells_without_running(tmp_path, capsys, monkeypatch):
    from conftest import run_main
    monkeypatch.chdir(tmp_path)
    result = run_main(capsys, "spec", "quick", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    ids = [c.cell_id for c in planner.expand(specs.load_spec("quick"), "cpu", 0).cells]
    assert f"# {len(ids)} cells on cpu:" in result.stdout
    assert all(cell_id in result.stdout for cell_id in ids)
    assert yaml.safe_load(result.stdout)["name"] == "quick"  # the listing is YAML comments
    assert list(tmp_path.iterdir()) == []  # nothing written
    schema = run_main(capsys, "spec", "--schema")
    assert json.loads(schema.stdout)["title"] == "bench sweep spec"
    assert run_main(capsys, "spec").returncode == 2


def test_gpu_spec_sizes_the_seed_networks_for_one_large_gpu(tmp_path):
    resolved = expand(specs.load_spec("gpu").to_dict(), "cuda", 1)
    cells = resolved.cells
    assert len(cells) == 2 * 2 * 10 * 3 and len({c.cell_id for c in cells}) == len(cells)
    assert {c.model for c in cells} == {"unet", "unetpp"} and {c.repeat for c in cells} == {0, 1, 2}
    for c in cells:  # the seed's networks at its size, on one device, the loader kept busy
        assert (c.arch, c.width, c.depth, c.image_size, c.norm, c.residual) == (
            "seed", 64, 4, 256, "batch", False)
        assert c.devices == 1 and c.device_type == "cuda" and (c.workers, c.pin_memory) == (4, True)
    got = {(c.strategy, c.precision, c.global_batch, c.channels_last, c.compile)
           for c in cells if c.model == "unet" and c.repeat == 0}
    want = {(s, p, b, False, False) for b in (32, 64) for s, p in (
        *(("single", p) for p in ("fp32", "tf32", "bf16", "fp16")),
        ("dp", "fp32"), ("dp", "bf16"), ("ddp", "fp32"), ("ddp", "bf16"))}
    want |= {("single", "bf16", b, True, False) for b in (32, 64)}
    want |= {("single", "bf16", b, False, True) for b in (32, 64)}
    assert got == want
    # channels_last / compile are per-configuration keys now, and survive the resolved spec
    spec_files.write_resolved(tmp_path, resolved)
    again = planner.expand(specs.load_spec(str(tmp_path / "spec.yaml")), "cuda", 1).cells
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]


def test_a_configuration_may_set_channels_last_and_compile():
    raw = spec_of({"models": ["unet"], "configurations": [
        {"strategy": "single"}, {"strategy": "single", "channels_last": True},
        {"strategy": "single", "compile": True}]})
    plain, cl, compiled = expand(raw).cells
    assert (plain.channels_last, plain.compile) == (False, False)
    assert (cl.channels_last, cl.compile) == (True, False)
    assert (compiled.channels_last, compiled.compile) == (False, True)
    with pytest.raises(BadInput, match="channels_last"):
        expand(spec_of({"models": ["unet"], "configurations": [
            {"strategy": "single", "channels_last": "yes"}]}))
