"""The documentation is checked against the code: every bench command it shows parses with
the CLI's own parser (and a `run` or `parity` command asks for a sweep `bench run` would
accept), every spec it shows is valid, every link resolves, and nothing points
outside the repository. The last tests make sure these checks can fail."""
from pathlib import Path

import pytest

import doccheck

REPO = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "running.md", "sweeps.md", "slurm.md", "reports.md", "performance.md",
         "method.md", "seed-study.md", "two-sites.md", "gpu.md", "troubleshooting.md",
         "developing.md", "results.md")


def listing(failures: list[str]) -> str:
    return "\n" + "\n".join(failures)


# --------------------------------------------------------------------------- the real docs

def test_commands_in_the_docs_parse():
    failures = doccheck.check_commands(REPO, doccheck.doc_files(REPO))
    assert not failures, listing(failures)


def test_specs_in_the_docs_are_valid():
    failures = doccheck.check_specs(REPO, doccheck.doc_files(REPO))
    assert not failures, listing(failures)


def test_shipped_spec_files_load():
    assert list(REPO.glob("benchmarks/*.yaml")), "benchmarks/ ships no spec file to check"
    failures = doccheck.check_spec_files(REPO)
    assert not failures, listing(failures)


def test_links_resolve():
    failures = doccheck.check_links(REPO, doccheck.doc_files(REPO))
    assert not failures, listing(failures)


def test_nothing_points_outside_the_repository():
    hits = doccheck.outside_pointers(REPO)
    assert not hits, listing(hits)


def test_every_page_exists_and_is_linked_from_the_readme():
    """A page is reached from README.md directly or through docs/README.md."""
    index = REPO / "docs" / "README.md"
    reached = doccheck.linked_pages(REPO, REPO / "README.md")
    if index.resolve() in reached:
        reached |= doccheck.linked_pages(REPO, index)
    missing = [f"docs/{p}" for p in PAGES if not (REPO / "docs" / p).is_file()]
    unlinked = [f"docs/{p}" for p in PAGES
                if (REPO / "docs" / p).is_file() and (REPO / "docs" / p).resolve() not in reached]
    assert not missing and not unlinked, f"missing: {missing}; not linked: {unlinked}"


# --------------------------------------------------------------------------- the checker fails

def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def commands_failing(tmp_path: Path, markdown: str) -> list[str]:
    page = write(tmp_path, "README.md", markdown)
    return doccheck.check_commands(tmp_path, [page])


@pytest.mark.parametrize("command, expected", [
    ("python -m bench run --strategy-name ddp", "unrecognized arguments: --strategy-name"),
    ("python -m bench run --devices 0", "--devices"),
    ("python -m bench run no-such-spec", "'no-such-spec' is no built-in spec"),
    ("python -m bench spec FILE", "placeholder 'FILE'"),
    ("python -m bench predict runs/x --devices 2 [--json]", "usage notation '[--json]'"),
    ("python -m bench predict runs/x --devices 2 --bandwidth 10 | --commbench cb.json",
     "usage notation 'A | B'"),
    ("python -m bench evaluate runs/T/<cell>/model.pt", "placeholder <cell>"),
])
def test_a_wrong_command_is_reported(tmp_path, command, expected):
    failures = commands_failing(tmp_path, f"Run:\n```sh\n$ {command}   # a comment\n```\n")
    assert len(failures) == 1 and expected in failures[0], failures
    assert failures[0].startswith("README.md:3: ")


def test_a_correct_command_is_not_reported(tmp_path):
    markdown = ("```console\n"
                "$ python -m bench run --model unet --strategy ddp \\\n"
                "    --devices 2 --precision fp32   # the user's # comment\n"
                "python3 -m bench spec --schema | head -1\n"
                ".venv/bin/python -m bench run quick --help > help.txt\n"
                "```\n"
                "Inline, `python -m bench run paper --force` and `python -m bench\n"
                "report runs/a#b` are commands too; `python -m benchx` is not.\n")
    found = doccheck.commands(tmp_path / "README.md", markdown)
    assert [n for n, _ in found] == [2, 4, 5, 7, 7], found
    assert commands_failing(tmp_path, markdown) == []


@pytest.mark.parametrize("command, expected", [
    ("python -m bench run --precision fp64", "unknown precision 'fp64'"),
    ("python -m bench run --strategy ddpx --devices 2", "unknown strategy 'ddpx'"),
    ("python -m bench run --strategy single --devices 2", "--devices 2 applies only to"),
    ("python -m bench run --model unetx --strategy ddp --devices 2", "unetx"),
    ("python -m bench run --scaling medium", "unknown scaling 'medium'"),
    ("python -m bench run --device cpu --strategy ddp --precision fp16", "fp16 needs a CUDA GPU"),
    ("python -m bench run --device tpu", "unknown device 'tpu'"),
    ("python -m bench run quick --steps 5", "--steps cannot be combined with spec quick"),
    ("python -m bench run my-sweep.yaml --precision bf16", "--precision cannot be combined"),
    ("python -m bench parity --strategy ddpx", "unknown strategy 'ddpx'"),
    ("python -m bench run benchmarks/bad.yaml", "spec bad, cell 0"),
])
def test_a_command_whose_sweep_is_refused_is_reported(tmp_path, command, expected):
    write(tmp_path, "benchmarks/bad.yaml",
          "matrix: {models: [unet], configurations: [{strategy: ddpx, devices: 2}]}\n")
    failures = commands_failing(tmp_path, f"```sh\n{command}\n```\n")
    assert len(failures) == 1 and expected in failures[0], failures
    assert failures[0].startswith(f"README.md:2: {command}: "), failures


@pytest.mark.parametrize("command", [
    "python -m bench run --strategy ddp --devices 2 --precision bf16",
    "python -m bench run quick",
    "python -m bench run quick --device cpu --out runs/q",
    "python -m bench run my-sweep.yaml",  # an example file the reader writes first
    "python -m bench run benchmarks/good.yaml",
    "python -m bench run --strategy ddp --precision fp16",  # judged on GPUs
    "python -m bench parity --strategy ddp --devices 2 --device cpu",
])
def test_a_command_whose_sweep_is_valid_is_not_reported(tmp_path, command):
    write(tmp_path, "benchmarks/good.yaml",
          "matrix: {models: [unet], configurations: [{strategy: ddp, devices: 2}]}\n")
    assert commands_failing(tmp_path, f"```sh\n{command}\n```\n") == []


def test_an_inline_command_is_checked(tmp_path):
    failures = commands_failing(tmp_path, "Give\n`python -m bench run --devices 0`.\n")
    assert len(failures) == 1 and failures[0].startswith("README.md:2: "), failures


def test_a_spec_block_with_an_unknown_key_is_reported(tmp_path):
    good = "```yaml\nname: s\nworkload: {steps: 10}\nmatrix: {models: [unet]}\n```\n"
    bad = "```yaml\nworkload: {steps: 10, stepz: 3}\n```\n"
    other = "```yaml\nsomething: else\n```\n"  # not a spec: no matrix or workload
    page = write(tmp_path, "README.md", good + bad + other)
    failures = doccheck.check_specs(tmp_path, [page])
    assert len(failures) == 1 and "README.md:7:" in failures[0], failures
    assert "unknown spec key workload.stepz" in failures[0]


def test_a_shipped_spec_file_with_an_unknown_key_is_reported(tmp_path):
    write(tmp_path, "benchmarks/bad.yaml", "matrix: {modelz: [unet]}\n")
    failures = doccheck.check_spec_files(tmp_path)
    assert len(failures) == 1 and "matrix.modelz" in failures[0], failures


def test_broken_links_and_anchors_are_reported(tmp_path):
    write(tmp_path, "docs/guide.md", "# Guide\n## Running it: `run` (fast)\n## Notes\n## Notes\n")
    write(tmp_path, "bench/x.py", "")
    page = write(tmp_path, "README.md", "\n".join([
        "[ok](docs/guide.md) [ok](docs/guide.md#running-it-run-fast) [ok](#top)",
        "[ok](docs/guide.md#notes-1) ![ok](bench/x.py) [ok](https://example.org/x#y)",
        "[gone](docs/missing.md)", "[bad anchor](docs/guide.md#running)",
        "[outside](../elsewhere.md)", "[dup](docs/guide.md#notes-2)",
        "`[not a link](nowhere.md)`", "# Top"]))
    failures = doccheck.check_links(tmp_path, [page])
    assert [f.split(": ")[0] for f in failures] == [
        "README.md:3", "README.md:4", "README.md:5", "README.md:6"], failures
    assert "no such file" in failures[0] and "#running" in failures[1]
    assert "outside the repository" in failures[2]


@pytest.mark.parametrize("heading, slug", [
    ("Predicting more devices (`predict`)", "predicting-more-devices-predict"),
    ("The seed's claim, taken apart", "the-seeds-claim-taken-apart"),
    ("σ and Über × 2", "σ-and-über--2"),
    ("[Links](x.md) and snake_case", "links-and-snake_case"),
])
def test_github_slug(heading, slug):
    assert doccheck.github_slug(heading) == slug


def test_pointers_outside_the_repository_are_reported(tmp_path):
    write(tmp_path, "README.md", "fine\nas issue #%d showed\n" % 7)
    write(tmp_path, "bench/a.py", "# see ../shared/" + "reference/x.md\n")
    hits = doccheck.outside_pointers(tmp_path)
    assert [h.split(": ")[0] for h in hits] == ["README.md:2", "bench/a.py:1"], hits
