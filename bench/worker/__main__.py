"""Rank process entry: `python -m bench.worker CELL_DIR` (started by the runner or torchrun)."""
import sys

from bench.worker.main import run_job

if __name__ == "__main__":
    sys.exit(run_job(sys.argv[1]))
