"""Rich console rendering. Only rendering: every number comes from bench.analysis or a record."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from rich.console import Console
from rich.table import Table


@lru_cache(maxsize=1)
def console() -> Console:
    # Piped output (logs, CI, Slurm) would otherwise wrap every table at 80 columns.
    probe = Console()
    return Console(highlight=False, width=None if probe.is_terminal else 160)


def fmt(value, spec: str = ".3g", missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def render_summary(records: list[dict], results_dir: Path, notes: list[str] = ()) -> None:
    import pandas as pd

    from bench import analysis, store

    frame = pd.DataFrame([store.flatten(r) for r in records])
    summary = analysis.add_speedups(analysis.config_summary(frame))
    out = console()
    if not summary.empty:
        sigma = summary.attrs.get("sigma")
        has_gpu = "telemetry.gpu_busy_pct_mean" in summary and \
            summary["telemetry.gpu_busy_pct_mean"].notna().any()
        table = Table(title=f"bench summary — quality on the test split at σ={sigma} "
                            "(model / noisy input)")
        for name in ("model", "config", "dev", "prec", "img/s", "train s", "speedup", "eff.",
                     "PSNR dB", "SSIM", "LPIPS", "GPU busy %" if has_gpu else "CPU %",
                     "J/img" if has_gpu else "MFU"):
            table.add_column(name, justify="left" if name in ("model", "config", "prec") else "right")
        q = f"quality[{sigma}]"
        for _, row in summary.iterrows():
            config = row["cell.strategy"] + (f" z{int(row['cell.zero_stage'])}"
                                             if row["cell.zero_stage"] is not None else "")
            if row["repeats"] > 1:
                config += f" ×{row['repeats']}"
            table.add_row(
                row["cell.model"], config, str(row["cell.devices"]), row["cell.precision"],
                fmt(row.get("timing.throughput_img_s"), ".1f"),
                fmt(row.get("timing.train_time_s"), ".2f"),
                fmt(row.get("speedup_time"), ".2f") + "×",
                fmt(row.get("efficiency"), ".0%"),
                f"{fmt(row.get(q + '.psnr'), '.2f')} / {fmt(row.get(q + '.noisy_psnr'), '.2f')}",
                f"{fmt(row.get(q + '.ssim'), '.3f')} / {fmt(row.get(q + '.noisy_ssim'), '.3f')}",
                f"{fmt(row.get(q + '.lpips'), '.3f')} / {fmt(row.get(q + '.noisy_lpips'), '.3f')}",
                fmt(row.get("telemetry.gpu_busy_pct_mean" if has_gpu else "telemetry.cpu_pct_mean"), ".0f"),
                fmt(row.get("telemetry.energy_per_img_j" if has_gpu else "telemetry.mfu"), ".3g"),
            )
        out.print(table)
        for note in sorted({n for r in records for n in (r.get("notes") or [])}) + list(notes):
            out.print(f"[dim]note: {note}[/dim]")
    for r in records:
        if r.get("status") != "ok":
            message = (r.get("error") or {}).get("message") or r.get("status")
            out.print(f"[red]{r['cell_id']}: {r.get('status')}[/red] — {message}")
    out.print(f"results: {results_dir}")


def render_env(info: dict) -> None:
    table = Table(title="environment", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(key, str(value))
    console().print(table)


def render_parity(report: dict) -> None:
    out = console()
    for check in report["checks"]:
        table = Table(title=f"{check['cell_id']} vs {check['reference_id']} "
                            f"(rtol {check['rtol']:g})")
        for name in ("step", "loss", "ref loss", "rel Δ", "grad norm", "ref grad norm", "rel Δ "):
            table.add_column(name, justify="right")
        for s in check["steps"]:
            table.add_row(str(s["step"]), fmt(s["loss"], ".6g"), fmt(s["ref_loss"], ".6g"),
                          fmt(s["loss_rel"], ".1e"), fmt(s["grad_norm"], ".6g"),
                          fmt(s["ref_grad_norm"], ".6g"), fmt(s["grad_rel"], ".1e"))
        out.print(table)
        verdict = "[green]within tolerance[/green]" if check["passed"] else \
            f"[red]diverges[/red] — {check['reason']}"
        out.print(f"{check['cell_id']}: {verdict}")
        for note in check.get("notes", []):
            out.print(f"[dim]note: {note}[/dim]")
    out.print("parity: " + ("[green]passed[/green]" if report["passed"] else "[red]failed[/red]"))
