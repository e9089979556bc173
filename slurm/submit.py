"""Talking to a real Slurm: its MaxArraySize, and submitting the scripts in order.

Standard library only; every client command runs with the caller's environment (SLURM_CONF
included), without a shell.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SBATCH_TIMEOUT_S = 60


class SubmitError(RuntimeError):
    """sbatch refused a script, or Ctrl-C stopped the submission (`interrupted`); `submitted`
    holds the job ids accepted before it."""

    def __init__(self, message: str, submitted: list[str], interrupted: bool = False):
        super().__init__(message)
        self.submitted = submitted
        self.interrupted = interrupted


def have_sbatch() -> bool:
    return shutil.which("sbatch") is not None


def cluster_max_array_size(timeout_s: float = 20.0) -> int | None:
    """MaxArraySize from `scontrol show config`, or None when it cannot be read."""
    if shutil.which("scontrol") is None:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return parse_max_array_size(out.stdout)


def parse_max_array_size(config_text: str) -> int | None:
    match = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)\s*$", config_text, re.MULTILINE)
    return int(match.group(1)) if match else None


def active_jobs(job_ids: list[str], timeout_s: float = 20.0) -> list[str]:
    """Which of these jobs (arrays included) squeue still lists; [] when it cannot tell."""
    if not job_ids or shutil.which("squeue") is None:
        return []
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return []
    # squeue -j fails ("Invalid job id") once every listed job has left slurmctld's memory.
    return sorted({line.split("_")[0] for line in out.stdout.split()}) if out.returncode == 0 \
        else []


def sbatch(script: Path, dependency: str | None = None) -> str:
    """Submit one script; the job id (an array's master id for arrays)."""
    argv = ["sbatch", "--parsable"]
    if dependency:
        argv.append(f"--dependency={dependency}")
    argv.append(str(script))
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SubmitError(f"sbatch {script.name} did not answer within {SBATCH_TIMEOUT_S} s",
                          []) from None
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise SubmitError(f"sbatch refused {script.name}: {reason}", [])
    return out.stdout.strip().split(";")[0]


@dataclass
class Submitted:
    arrays: list[tuple[str, Path]]  # (array job id, script)
    aggregate: str

    def to_dict(self) -> dict:
        return {"arrays": [{"job_id": j, "script": str(s)} for j, s in self.arrays],
                "aggregate": self.aggregate}


def submit_all(array_scripts: list[Path], aggregate_script: Path) -> Submitted:
    """Every array, then the summary job with an afterany dependency on all of them (it runs
    whether cells succeed or not; an afterok dependency would wait forever after a failure)."""
    arrays: list[tuple[str, Path]] = []
    try:
        for script in array_scripts:
            arrays.append((sbatch(script), script))
        dependency = "afterany:" + ":".join(j for j, _ in arrays) if arrays else None
        aggregate = sbatch(aggregate_script, dependency)
    except SubmitError as exc:
        raise SubmitError(str(exc), [j for j, _ in arrays]) from None
    except KeyboardInterrupt:  # the jobs already queued must not go unmentioned
        raise SubmitError("Ctrl-C (SIGINT) stopped the submission", [j for j, _ in arrays],
                          interrupted=True) from None
    return Submitted(arrays, aggregate)
