"""The environment a run happened in, captured into every record (measurement.md item 13)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
              "SLURM_NODEID", "SLURM_PROCID", "SLURM_JOB_PARTITION", "SLURM_RESTART_COUNT")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """HEAD of the checkout bench runs from, with '-dirty' when tracked files changed."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def nvidia_driver() -> str | None:
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else version
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no GPU: the field is simply unknown
        return None


def placement() -> dict:
    """Where and how a cell ran: host, Slurm ids, visible GPUs, command, commit. Cheap and
    torch-free, so even the record of a cell that never started carries it."""
    return {
        "hostname": socket.gethostname(),
        "git_commit": git_commit(),
        "command": sys.argv,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm": {k.lower(): os.environ[k] for k in SLURM_VARS if k in os.environ},
    }


def capture() -> dict:
    """Everything needed to interpret a number later. Imports torch (the caller needs it)."""
    import torch

    from bench.measure.cores import core_facts

    cuda = torch.cuda.is_available()
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda else [],
        "driver": nvidia_driver() if cuda else None,
        "cpu": cpu_model(),
        **core_facts(),
        "torch_threads": torch.get_num_threads(),
        **placement(),
    }
    for module in ("deepspeed", "torchvision", "lpips", "torchmetrics", "numpy"):
        info[module] = _version_of(module)
    return info


def _version_of(dist: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
