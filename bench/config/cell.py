"""A cell: one fully resolved training configuration, and the workload fingerprint.

A cell is frozen and hashable; its id is a readable prefix plus a short hash of every field,
so the same configuration always lands in the same results folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

SCHEMA_VERSION = 1

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
SCALING_MODES = ("strong", "weak")

# Fields that describe *how* the workload is executed, not *what* is computed. Two cells that
# differ only here did the same work and may be compared (docs/method.md, one workload).
EXECUTION_FIELDS = frozenset({
    "strategy", "devices", "precision", "zero_stage", "repeat", "timeout_s", "sample_hz",
    "device_type",
    # Validation during training reads the weights outside the timed window and changes no
    # step; a target only decides which step a figure is read at, unless training stops at it
    # (`workload_fingerprint` then keeps it).
    "eval_every", "target_psnr",
})


# Fields added after the first records: left out of Cell.to_dict() at these defaults, so an
# ordinary cell keeps the id and fingerprint it had before the field existed.
_OMITTED_AT_DEFAULT = {"target": "clean", "arch": "bench", "eval_every": None,
                       "target_psnr": None, "stop_at_target": False}
# Validation points a run gets when the spec does not say (`eval_every` unset), besides the
# initial weights': a handful, enough to interpolate a time to a target between them.
DEFAULT_VALIDATION_POINTS = 6


@dataclass(frozen=True)
class Cell:
    model: str = "unet"
    # "bench" (bench's own networks), "seed" or "seed-ddp" (the seed study's, models.seed)
    arch: str = "bench"
    width: int = 16
    depth: int = 3
    norm: str = "group"
    upsample: str | None = None
    deep_supervision: bool = False
    residual: bool = True
    strategy: str = "single"
    devices: int = 1
    precision: str = "fp32"
    zero_stage: int | None = None
    scaling: str = "strong"
    global_batch: int = 16
    steps: int = 60
    warmup: int = 5
    lr: float = 1e-3
    noise: tuple[float, ...] = (0.1,)
    noise_mean: float = 0.0
    seed: int = 0
    repeat: int = 0
    data: str = "chest-sample"
    image_size: int = 64
    limit: int | None = None
    skip_bad: bool = False
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False
    workers: int = 0
    pin_memory: bool = False
    device_type: str = "cpu"
    timeout_s: float = 1800.0
    sample_hz: float = 2.0
    # "clean" (supervised, the default) or "noise2noise" (pairs of noisy realisations from an
    # obfuscated folder).
    target: str = "clean"
    # Validation during training (bench.worker.validation): every `eval_every` steps, None for
    # DEFAULT_VALIDATION_POINTS over the run, 0 for none. `target_psnr`: the quality a time to
    # target is measured at (None: the report's default, from the baseline); `stop_at_target`
    # ends training at the first validation point that reaches it.
    eval_every: int | None = None
    target_psnr: float | None = None
    stop_at_target: bool = False

    @property
    def validation_every(self) -> int:
        """Steps between validation points; 0 when there is none."""
        if self.eval_every is not None:
            return self.eval_every
        return -(-self.steps // DEFAULT_VALIDATION_POINTS)

    @property
    def quality_target(self) -> tuple[str, float] | None:
        """(metric, value) of the cell's own target; the spec names it per metric."""
        return ("psnr", float(self.target_psnr)) if self.target_psnr is not None else None

    @property
    def workload_seed(self) -> int:
        """Seed of this repeat: init, noise and batch order all derive from it, so repeat r of
        every strategy sees the same workload and repeats differ from each other."""
        return self.seed + 1000 * self.repeat

    @property
    def per_device_batch(self) -> int:
        return self.effective_global_batch // self.devices

    @property
    def effective_global_batch(self) -> int:
        """Strong scaling keeps `global_batch` for any device count; weak scaling reads it as
        the per-device batch, so the global batch grows with the devices."""
        return self.global_batch * self.devices if self.scaling == "weak" else self.global_batch

    @property
    def effective_lr(self) -> float:
        """Weak scaling grows the batch with the devices; the linear LR rule (Goyal et al.
        2017) keeps the per-sample step size. Strong scaling keeps the LR."""
        return self.lr * self.devices if self.scaling == "weak" else self.lr

    @property
    def batchnorm_per_device(self) -> bool:
        """BatchNorm meets more than one device: each DDP/ZeRO/FSDP rank, and each
        DataParallel replica on a GPU (whose running statistics come from device 0's chunk),
        normalises only its share of the batch. DataParallel on a CPU has no replicas."""
        if self.norm != "batch" or self.devices < 2:
            return False
        return not (self.strategy == "dp" and self.device_type != "cuda")

    @property
    def cell_id(self) -> str:
        model = self.model if self.arch == "bench" else f"{self.model}-{self.arch}"
        prefix = f"{model}-{self.strategy}{self.devices}-{self.precision}"
        if self.zero_stage is not None:
            prefix += f"-z{self.zero_stage}"
        if self.target != "clean":
            prefix += "-n2n" if self.target == "noise2noise" else f"-{self.target}"
        return f"{prefix}-r{self.repeat}-{_short_hash(self.to_dict())}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["noise"] = list(self.noise)
        for key, default in _OMITTED_AT_DEFAULT.items():
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "noise" in values:
            values["noise"] = tuple(float(s) for s in values["noise"])
        return cls(**values)

    def replace(self, **changes) -> "Cell":
        return dataclasses.replace(self, **changes)


def model_options(cell: Cell) -> dict:
    """The keyword arguments `models.build_model` takes from a cell: the one place that maps
    a cell's fields to the architecture, for training, planning and loading a saved model."""
    return {"arch": cell.arch, "width": cell.width, "depth": cell.depth, "norm": cell.norm,
            "upsample": cell.upsample, "deep_supervision": cell.deep_supervision,
            "residual": cell.residual}


def workload_fingerprint(cell: Cell, data_digest: str) -> str:
    """Hash of everything that defines the computed workload: split, noise, model config,
    batch, steps, LR rule, base seed and the workload knobs. Strategy, device count and
    precision are excluded: they are what a comparison varies."""
    workload = {k: v for k, v in cell.to_dict().items() if k not in EXECUTION_FIELDS}
    if cell.scaling == "weak":
        # Weak scaling fixes the per-device batch; the global batch grows with the devices.
        workload["global_batch"] = None
        workload["per_device_batch"] = cell.global_batch
    if cell.stop_at_target:  # the target then decides how many steps are trained
        workload["target_psnr"] = cell.target_psnr
    workload["data_digest"] = data_digest
    workload["schema_version"] = SCHEMA_VERSION
    return _short_hash(workload, 16)


def _short_hash(obj: object, n: int = 8) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# The runner's process id and host, in every rank's environment: the ranks on the runner's host
# watch it and stop (checkpoint, `preempted` record) if it dies (bench.worker.main).
RUNNER_PID_ENV = "BENCH_RUNNER_PID"
RUNNER_HOST_ENV = "BENCH_RUNNER_HOST"


@dataclass
class Job:
    """What a rank process needs to run its cell; written by the runner as job.json."""
    cell: Cell
    fingerprint: str
    prepared_data: str  # PreparedData.to_json()
    launch_time: float
    extra: dict = field(default_factory=dict)
    # The plug-ins the planning command had loaded (bench.plugins.loaded()): each rank process
    # loads the same ones, so a cell is trained and recorded as the command that planned it.
    plugins: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"cell": self.cell.to_dict(), "fingerprint": self.fingerprint,
                "prepared_data": self.prepared_data, "launch_time": self.launch_time,
                "extra": self.extra, "plugins": list(self.plugins)}

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        return cls(cell=Cell.from_dict(d["cell"]), fingerprint=d["fingerprint"],
                   prepared_data=d["prepared_data"], launch_time=d["launch_time"],
                   extra=d.get("extra", {}), plugins=list(d.get("plugins", [])))
