"""The interface every parallel strategy implements, and what they share.

A strategy answers two questions: how are its ranks launched (argv), and how are model,
optimizer and precision wrapped for one training step (an Engine). Everything else —
data, timing, evaluation, records — is identical for every strategy and lives in bench/.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

from bench.errors import BadInput
from bench.measure.cores import thread_budget  # allocation, affinity, cgroup quota


# A GPU rank computes on its device; its host threads are OMP_NUM_THREADS' (or torch's).
GPU_THREADS = "not set: a GPU rank computes on its device (OMP_NUM_THREADS or torch's default)"


@dataclass(frozen=True)
class Runtime:
    """Where this rank runs. Built once per rank process by `Strategy.init_runtime`."""
    rank: int
    world_size: int
    local_rank: int
    device: str  # "cpu" or "cuda:N"
    backend: str | None  # "gloo", "nccl" or None when not distributed
    threads: int
    threads_source: str = ""  # where the thread count came from (cores.thread_budget)

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Precision:
    """Autocast and loss scaling for one precision name, shared by every torch strategy."""

    def __init__(self, name: str, device_type: str, autocast: bool = True):
        import torch
        self.name = name
        self.device_type = device_type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
        # Strategies that cast parameters themselves (FSDP's policy) turn autocast off.
        self.use_autocast = autocast and self.dtype is not None
        if device_type == "cuda":
            # fp32 means fp32: PyTorch lets cuDNN use TF32 by default, which would make an
            # "fp32" baseline silently faster and less exact on Ampere and newer.
            tf32 = name == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" and device_type == "cuda" \
            else None

    def autocast(self):
        import torch
        if not self.use_autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def l1_loss(output, target):
    """L1 to the clean target; deep-supervision models return a list of heads: average them."""
    import torch.nn.functional as F
    if isinstance(output, (list, tuple)):
        return sum(F.l1_loss(o.float(), target) for o in output) / len(output)
    return F.l1_loss(output.float(), target)


class Engine:
    """One optimizer step of a wrapped model. Subclasses override what differs."""

    supports_checkpoint = True  # training_state() captures everything a resume needs
    # How a sharding strategy split the parameters (its policy, what each step gathers), for
    # the record's runtime.sharding; None where every rank holds every parameter.
    sharding: dict | None = None
    # bench.measure.arrivals.StepMarks of a multi-rank cell's loop: the engine marks where
    # backward returned (gradients synchronised); None: nothing is marked
    marks = None

    def __init__(self, model, optimizer, precision: Precision):
        self.model = model
        self.optimizer = optimizer
        self.precision = precision
        # fp16 steps GradScaler skipped because of inf/nan gradients: a running count over
        # every step, warm-up included (bench.worker.loop splits it at the timed window)
        self.skipped_steps = 0

    def train_step(self, noisy, clean):
        """One optimizer step: three phases, which the attribution probe (bench.worker.probe)
        calls one by one inside profiler ranges. The timed steps carry no ranges at all."""
        loss = self.forward_loss(noisy, clean)
        self.backward(loss)
        if self.marks is not None:
            self.marks.synced()
        self.optimizer_step()
        return loss.detach()

    def mark_arrivals(self, marks) -> None:
        """Mark each step's synchronisation in `marks` from now on. An engine that can tell
        when its rank's gradients are ready (DDP) marks that too; the others cannot."""
        self.marks = marks

    def forward_loss(self, noisy, clean):
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            return l1_loss(self.model(noisy), clean)

    def backward(self, loss) -> None:
        scaler = self.precision.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()

    def optimizer_step(self) -> None:
        scaler = self.precision.scaler
        if scaler is None:
            self.optimizer.step()
            return
        scale_before = scaler.get_scale()
        scaler.step(self.optimizer)
        scaler.update()
        # A lowered scale means this step's update was skipped. Reading the scale syncs,
        # so it is only done on the fp16 path, where skipped steps must be counted.
        if scaler.get_scale() < scale_before:
            self.skipped_steps += 1

    def unwrapped(self):
        """The plain module (for gradient norms, checkpoints and evaluation), seen through
        torch.compile's and the parallel wrappers' layers."""
        model = getattr(self.model, "_orig_mod", self.model)
        return getattr(model, "module", model)

    def training_state(self) -> dict:
        scaler = self.precision.scaler
        return {"model": self.unwrapped().state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None}

    def load_training_state(self, state: dict) -> None:
        self.unwrapped().load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.precision.scaler is not None and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])

    def full_state_dict(self, runtime: Runtime) -> dict | None:
        """Collective: every rank calls it; rank 0 receives the full fp32 weights on CPU."""
        if not runtime.is_main:
            return None
        return {k: v.detach().float().cpu().clone() for k, v in self.unwrapped().state_dict().items()}

    def grad_norm(self) -> float:
        import torch
        grads = [p.grad.detach().float().norm() for p in self.unwrapped().parameters()
                 if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0


class Strategy:
    name = "base"
    distributed = False  # one process per device, launched by torchrun
    description = ""

    def validate(self, cell, visible_gpus: int) -> None:
        """Raise BadInput for a configuration this strategy cannot run, before any work."""
        validate_common(cell, visible_gpus, self)

    def argv(self, cell, entry: list[str], port: int) -> list[str]:
        """`entry` is the rank program as interpreter arguments: ["-m", "bench.worker", dir]."""
        return [sys.executable, *entry]

    def init_runtime(self, cell) -> Runtime:
        import torch
        threads, source = thread_budget(cell.devices if self.distributed else 1)
        if cell.device_type == "cpu":
            torch.set_num_threads(threads)
        device = "cuda:0" if cell.device_type == "cuda" else "cpu"
        return Runtime(0, 1, 0, device, None, torch.get_num_threads(),
                       source if cell.device_type == "cpu" else GPU_THREADS)

    def wrap(self, model, optimizer, cell, runtime: Runtime) -> Engine:
        return Engine(model, optimizer, Precision(cell.precision, runtime.device_type))

    def notes(self, cell) -> list[str]:
        """What a reader of this cell's numbers must know about how it ran."""
        return []

    def shutdown(self) -> None:
        pass


class DistributedStrategy(Strategy):
    """One process per device, launched by torchrun, joined into one process group."""
    distributed = True

    def argv(self, cell, entry: list[str], port: int) -> list[str]:
        return torchrun_argv(cell, entry, port)

    def init_runtime(self, cell) -> Runtime:
        return init_distributed(cell, cell.timeout_s)

    def shutdown(self) -> None:
        """Ranks leave together: a rank that tears gloo down while rank 0 still evaluates can
        abort the process ("terminate called without an active exception", seen on CPU)."""
        import torch.distributed as dist
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def validate_common(cell, visible_gpus: int, strategy: Strategy) -> None:
    from bench.config.cell import PRECISIONS
    if cell.precision not in PRECISIONS:
        raise BadInput(f"unknown precision '{cell.precision}'; choose one of: {', '.join(PRECISIONS)}")
    if cell.devices < 1:
        raise BadInput(f"--devices {cell.devices} is invalid; it must be at least 1")
    if cell.device_type == "cuda" and cell.devices > visible_gpus:
        raise BadInput(f"--devices {cell.devices} asks for more GPUs than the {visible_gpus} "
                       "visible; give at most that many, or --device cpu for gloo ranks")
    if cell.device_type == "cpu" and cell.precision == "fp16":
        raise BadInput("precision fp16 needs a CUDA GPU; on CPU use bf16 for mixed precision")
    if cell.device_type == "cpu" and cell.precision == "tf32":
        raise BadInput("precision tf32 needs an Ampere-or-newer CUDA GPU; on CPU use fp32")
    if cell.global_batch % cell.devices and cell.scaling == "strong":
        raise BadInput(f"global batch {cell.global_batch} is not divisible by "
                       f"{cell.devices} devices; choose a multiple of {cell.devices}")
    if cell.zero_stage is not None and strategy.name != "deepspeed":
        raise BadInput(f"--zero applies only to --strategy deepspeed, not '{strategy.name}'")


def slurm_rendezvous() -> tuple[str, int, str] | None:
    """(endpoint, nodes, id) of the c10d rendezvous an array task's script exported as
    BENCH_RDZV="host:port,nnodes,rdzv_id"; None outside such a task."""
    rdzv = os.environ.get("BENCH_RDZV", "").strip()
    if not rdzv:
        return None
    try:
        endpoint, nnodes, job_id = rdzv.split(",")
        return endpoint, max(1, int(nnodes)), job_id
    except ValueError:
        raise BadInput(f"BENCH_RDZV={rdzv!r} is malformed; the Slurm script sets it to "
                       "host:port,nodes,id") from None


def torchrun_argv(cell, entry: list[str], port: int) -> list[str]:
    """Standalone single-node rendezvous on a free port chosen by the runner; under Slurm
    the multi-node template passes its own rendezvous arguments instead."""
    rdzv = slurm_rendezvous()
    if rdzv:
        endpoint, nnodes, job_id = rdzv
        nproc = cell.devices // nnodes
        return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
                f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}", f"--rdzv-id={job_id}", *entry]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={cell.devices}", f"--master-port={port}", *entry]


def init_distributed(cell, timeout_s: float) -> Runtime:
    """Join the process group torchrun set up (env:// rendezvous)."""
    import datetime

    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if world != cell.devices:
        raise RuntimeError(f"launched with world size {world} but the cell asks for {cell.devices}")
    if cell.device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device, backend, source = f"cuda:{local_rank}", "nccl", GPU_THREADS
    else:
        # N ranks share the task's cores (its Slurm allocation where that is smaller than its
        # affinity set); oversubscribing threads would measure contention, not DDP.
        threads, source = thread_budget(int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        torch.set_num_threads(threads)
        device, backend = "cpu", "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                            **({"device_id": torch.device(device)} if backend == "nccl" else {}))
    return Runtime(rank, world, local_rank, device, backend, torch.get_num_threads(), source)
