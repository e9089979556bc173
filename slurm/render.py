"""sbatch scripts for a sweep: one job array per resource shape, and an aggregation job.

Standard library only. The caller (bench.cli.sweep) hands over plain cell descriptions and the
options; everything wrong with them is a `SlurmInputError` (a ValueError) with one sentence.

Layout written under `<out>/slurm/`:
    array-<shape>[-part<k>].sbatch   one job array per resource shape (split at MaxArraySize)
    array-<shape>[-part<k>].index    task i → line i+1: "<cell index>\\t<cell id>"
    aggregate.sbatch                 `bench status --summary` after every array (afterany)
    submit.sh                        the same submissions by hand, in order, with dependencies
    logs/                            Slurm's output files
"""
from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize (task ids 0-1000)
DEFAULT_MAX_CONCURRENT = 8
DEFAULT_SIGNAL_S = 120
TIME_MARGIN_S = 600  # start-up, data preparation and evaluation beyond the cell's own timeout
AGGREGATE_TIME = "00:30:00"
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


class SlurmInputError(ValueError):
    """An option or cell that cannot become a valid job script."""


@dataclass(frozen=True)
class CellTask:
    """What the scripts need to know about one cell."""
    index: int
    cell_id: str
    devices: int
    distributed: bool  # one process per device, launched by torchrun (may span nodes)
    workers: int
    timeout_s: float


@dataclass
class SlurmOptions:
    python: str
    workdir: str
    cpu: bool = False
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # default: the longest cell timeout + TIME_MARGIN_S
    gpus_per_node: int | None = None  # devices per node; None: a cell's devices on one node
    cpus_per_task: int | None = None  # default: (1 + loader workers) per device on the node
    constraint: str | None = None
    exclusive: bool = False
    extra: list[str] = field(default_factory=list)  # extra #SBATCH lines (arrays only)
    setup: list[str] = field(default_factory=list)  # shell lines run before bench
    max_concurrent: int | None = DEFAULT_MAX_CONCURRENT
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE
    signal_s: int = DEFAULT_SIGNAL_S
    report_lines: list[str] = field(default_factory=list)  # extra commands of the summary job

    def check(self) -> None:
        for name in ("gpus_per_node", "cpus_per_task", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SlurmInputError(f"--{name.replace('_', '-')} {value} is invalid; it "
                                      "must be at least 1")
        if self.max_array_size < 1:
            raise SlurmInputError(f"--max-array-size {self.max_array_size} is invalid; the "
                                  "cluster must allow job arrays of at least one task")
        if self.time is not None and not _TIME_RE.match(self.time):
            raise SlurmInputError(f"--time '{self.time}' is not a Slurm time limit; use "
                                  "minutes, HH:MM:SS or D-HH:MM:SS")
        if self.signal_s < 1:
            raise SlurmInputError(f"--signal-before {self.signal_s} is invalid; give seconds")
        for line in self.extra:
            if not line.strip().startswith("--"):
                raise SlurmInputError(f"--sbatch '{line}' is not an sbatch option; give it "
                                      "as it follows '#SBATCH ', e.g. --mail-type=END")


@dataclass(frozen=True)
class Shape:
    """The resources one array task holds: cells with the same shape share an array."""
    nodes: int
    gpus_per_node: int  # 0 on a CPU cluster
    cpus_per_task: int

    @property
    def tag(self) -> str:
        if self.gpus_per_node:
            return f"{self.nodes}n{self.gpus_per_node}g{self.cpus_per_task}c"
        return f"{self.nodes}n{self.cpus_per_task}c"


@dataclass
class ArrayJob:
    shape: Shape
    tasks: list[CellTask]
    part: int = 1
    parts: int = 1
    time_limit: str = ""

    @property
    def stem(self) -> str:
        return f"array-{self.shape.tag}" + (f"-part{self.part}" if self.parts > 1 else "")


def shape_of(task: CellTask, options: SlurmOptions) -> Shape:
    per_node = options.gpus_per_node
    nodes = 1
    if per_node is not None and task.devices > per_node:
        if not task.distributed:
            raise SlurmInputError(
                f"cell {task.cell_id} uses {task.devices} devices in one process, but "
                f"--gpus-per-node is {per_node}; it cannot span nodes")
        if task.devices % per_node:
            raise SlurmInputError(
                f"cell {task.cell_id} needs {task.devices} devices, which do not fill whole "
                f"nodes of --gpus-per-node {per_node}")
        nodes = task.devices // per_node
    on_node = task.devices // nodes
    # Per device, not per process: DataParallel (one process) and DDP (one per device) on the
    # same devices get the same CPUs, or the comparison would vary two things at once.
    cpus = options.cpus_per_task or on_node * (1 + max(task.workers, 0))
    return Shape(nodes, 0 if options.cpu else on_node, cpus)


def plan_arrays(tasks: list[CellTask], options: SlurmOptions) -> list[ArrayJob]:
    """Group cells by shape (first-seen order), then split each group into arrays of at most
    `max_array_size` tasks (ids 0..N-1 each, so every array fits under MaxArraySize)."""
    options.check()
    groups: dict[Shape, list[CellTask]] = {}
    for task in tasks:
        groups.setdefault(shape_of(task, options), []).append(task)
    jobs = []
    for shape, group in groups.items():
        chunks = split(group, options.max_array_size)
        for k, chunk in enumerate(chunks, start=1):
            limit = options.time or format_time(max(t.timeout_s for t in chunk) + TIME_MARGIN_S)
            jobs.append(ArrayJob(shape, chunk, k, len(chunks), limit))
    return jobs


def split(items: list, size: int) -> list[list]:
    if size < 1:
        raise SlurmInputError(f"array size {size} is invalid")
    return [items[i:i + size] for i in range(0, len(items), size)]


def format_time(seconds: float) -> str:
    """Whole minutes, rounded up, as D-HH:MM:SS."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"


def render(template: str, values: dict[str, str]) -> str:
    """`{{NAME}}` placeholders (bash's own `$`/`${}` stay untouched); every one must be given."""
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(values))
    if missing:
        raise KeyError(f"template placeholders without a value: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _lines(prefix: str, items: list[str]) -> str:
    return "\n".join(f"{prefix}{item}" for item in items)


def _common_lines(options: SlurmOptions) -> list[str]:
    out = []
    for key in ("partition", "account", "qos"):
        value = getattr(options, key)
        if value:
            out.append(f"--{key}={value}")
    return out


def render_array(job: ArrayJob, *, sweep: str, spec_path: Path, out: Path, index_path: Path,
                 options: SlurmOptions) -> str:
    resources = _common_lines(options)
    if job.shape.gpus_per_node:
        resources.append(f"--gpus-per-node={job.shape.gpus_per_node}")
    if options.constraint:
        resources.append(f"--constraint={options.constraint}")
    if options.exclusive:
        resources.append("--exclusive")
    resources += [line.strip() for line in options.extra]
    n = len(job.tasks)
    throttle = f"%{options.max_concurrent}" if options.max_concurrent else ""
    part = f", part {job.part} of {job.parts}" if job.parts > 1 else ""
    summary = (f"{n} cell{'s' if n != 1 else ''} on {job.shape.nodes} node(s), "
               + (f"{job.shape.gpus_per_node} GPU(s)" if job.shape.gpus_per_node else "CPU only")
               + f" and {job.shape.cpus_per_task} CPU(s) per node{part}")
    return render((TEMPLATES / "array.sbatch").read_text(), {
        "SWEEP": sweep,
        "DESCRIPTION": summary,
        "JOB_NAME": f"bench-{sweep}-{job.shape.tag}" + (f"-p{job.part}" if job.parts > 1 else ""),
        "LAST_TASK": str(n - 1),
        "THROTTLE": throttle,
        "NODES": str(job.shape.nodes),
        "CPUS_PER_TASK": str(job.shape.cpus_per_task),
        "TIME_LIMIT": job.time_limit,
        "WORKDIR": options.workdir,
        "LOG_DIR": str(out / "slurm" / "logs"),
        "SIGNAL_S": str(options.signal_s),
        "RESOURCE_LINES": _lines("#SBATCH ", resources),
        "SETUP_LINES": "\n".join(options.setup),
        "PYTHON": shlex.quote(options.python),
        "SPEC": shlex.quote(str(spec_path)),
        "OUT": shlex.quote(str(out)),
        "INDEX_FILE": shlex.quote(str(index_path)),
        "REPORT_LINES": "\n".join(options.report_lines),
    })


def render_aggregate(*, sweep: str, out: Path, options: SlurmOptions) -> str:
    return render((TEMPLATES / "aggregate.sbatch").read_text(), {
        "SWEEP": sweep,
        "JOB_NAME": f"bench-{sweep}-summary",
        "TIME_LIMIT": AGGREGATE_TIME,
        "WORKDIR": options.workdir,
        "LOG_DIR": str(out / "slurm" / "logs"),
        "RESOURCE_LINES": _lines("#SBATCH ", _common_lines(options)),
        "SETUP_LINES": "\n".join(options.setup),
        "PYTHON": shlex.quote(options.python),
        "OUT": shlex.quote(str(out)),
        "REPORT_LINES": "\n".join(options.report_lines),
    })


def render_submit_sh(array_scripts: list[Path], aggregate_script: Path) -> str:
    lines = ["#!/bin/bash",
             "# Submit the sweep by hand: every array, then the summary job after all of them",
             "# (afterany: it runs even when cells fail). `python -m bench slurm --submit` does",
             "# the same and records the job ids in jobs.json.",
             "set -euo pipefail", "ids=()"]
    for script in array_scripts:
        lines.append(f"ids+=(\"$(sbatch --parsable {shlex.quote(str(script))} | cut -d';' -f1)\")")
    lines += ["echo \"arrays: ${ids[*]}\"",
              "deps=$(IFS=:; echo \"${ids[*]}\")",
              f"sbatch --parsable --dependency=afterany:$deps {shlex.quote(str(aggregate_script))}"]
    return "\n".join(lines) + "\n"


@dataclass
class Written:
    arrays: list[tuple[ArrayJob, Path, Path]]  # job, script, index file
    aggregate: Path
    submit_sh: Path


def write_scripts(out: Path, *, sweep: str, spec_path: Path, jobs: list[ArrayJob],
                  options: SlurmOptions) -> Written:
    """Every script and index file under <out>/slurm/ (files of an earlier, larger plan that
    this one does not rewrite are removed, so the folder always matches jobs)."""
    folder = out / "slurm"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    keep = set()
    arrays = []
    for job in jobs:
        script, index = folder / f"{job.stem}.sbatch", folder / f"{job.stem}.index"
        index.write_text("".join(f"{t.index}\t{t.cell_id}\n" for t in job.tasks))
        script.write_text(render_array(job, sweep=sweep, spec_path=spec_path, out=out,
                                       index_path=index, options=options))
        script.chmod(0o755)
        arrays.append((job, script, index))
        keep |= {script.name, index.name}
    aggregate = folder / "aggregate.sbatch"
    aggregate.write_text(render_aggregate(sweep=sweep, out=out, options=options))
    submit_sh = folder / "submit.sh"
    submit_sh.write_text(render_submit_sh([s for _, s, _ in arrays], aggregate))
    submit_sh.chmod(0o755)
    for stale in folder.glob("array-*"):
        if stale.name not in keep and stale.suffix in (".sbatch", ".index"):
            stale.unlink()
    return Written(arrays, aggregate, submit_sh)
