"""The README's two pictures, drawn from a finished `bench run` by the project's own code:

  console-summary.svg   the summary `python -m bench run` prints at its end (Rich, recorded)
  validation-curves.png the HTML report's time-to-quality figure (validation PSNR vs seconds)

Usage: scripts/readme_pictures.py [RUN_DIR] [--out docs/img]
Without RUN_DIR it first runs the default workload (`python -m bench run`) in a temporary folder.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script: bench and reports must import

WIDTH = 160  # the summary table's natural width: narrower truncates its cells with "…"
DPI = 80     # the report draws at 100 dpi; 80 keeps the PNG small and still legible


def default_run(tmp: Path) -> Path:
    """A newcomer's first run, in a folder named like `bench run`'s default runs/<timestamp>."""
    out = tmp / "runs" / time.strftime("%Y%m%d-%H%M%S")
    # bench run exits 1 when a cell failed: its records still make the pictures
    subprocess.run([sys.executable, "-m", "bench", "run", "--out", str(out)], cwd=ROOT)
    return out


def console_svg(run_dir: Path, shown: str, model: str, path: Path) -> None:
    """Record what `bench run` prints at its end (bench.cli.summary.render_summary) to SVG,
    for one model's records only: both models' tables make a picture twice as tall."""
    from bench.record import store
    from bench.sweep.spec_files import SPEC_JSON, read_resolved
    from reports import text
    from reports.console import render_summary

    records = [r for r in store.records(run_dir)[0] if r["cell"]["model"] == model]
    notes = (read_resolved(run_dir / SPEC_JSON) or {}).get("notes", [])
    # Every report module prints to this one cached console: point it at a recorder.
    out = text.console()
    out.file, out.record, out.width = io.StringIO(), True, WIDTH
    render_summary(records, Path(shown), notes)
    out.save_svg(str(path), title=f"python -m bench run  (the end of its output, {model} only)")


def curves_png(run_dir: Path, path: Path) -> str | None:
    """The first workload group's validation curves, as the HTML report draws them; its
    model, or None where the run has no curves."""
    from bench import analysis
    from bench.record import store
    from reports import convergence
    from reports.plots import plt

    comp = analysis.compare_configs(store.load(run_dir))
    model, _, fig = next(convergence.curve_figures(comp), (None, None, None))
    if fig is not None:
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description="Draw the README's console summary (SVG) "
                                     "and validation-curve figure (PNG) from a bench run.")
    parser.add_argument("run_dir", nargs="?", type=Path,
                        help="a finished `bench run` results folder (default: run one now)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img",
                        help="where the pictures go (default docs/img)")
    args = parser.parse_args()

    from bench.record import store

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="readme-pictures-") as tmp:
        if args.run_dir is None:
            run_dir = default_run(Path(tmp))
            shown = str(run_dir.relative_to(tmp))  # the picture shows runs/<timestamp>
        else:
            run_dir, shown = args.run_dir, str(args.run_dir)
        if not run_dir.is_dir() or not store.records(run_dir)[0]:
            print(f"{run_dir} is not a results folder with cell records "
                  "(*/record.json).", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        figure, svg = args.out / "validation-curves.png", args.out / "console-summary.svg"
        model = curves_png(run_dir, figure)
        if model is None:
            print("note: the run has no validation curves; no figure drawn", file=sys.stderr)
        # the summary shows the figure's model; without a figure, the first model
        console_svg(run_dir, shown, model or min(r["cell"]["model"] for r in
                                                 store.records(run_dir)[0]), svg)
        written = [svg] + ([figure] if model else [])
    for path in written:
        print(f"{path}  {path.stat().st_size / 1024:.1f} KB")
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
