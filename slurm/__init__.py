"""Slurm: sbatch templates (templates/), their rendering (render.py) and submission
(submit.py). Standard library only; bench.cli.sweep drives it (`python -m bench slurm`)."""
