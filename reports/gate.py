"""`bench compare`: the regression gate's table and verdict on the console. Rendering only:
every number comes from a `bench.analysis.gate.GateResult`."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from reports.text import QUALITY_UNITS, console, finite, fmt

OUTCOME_STYLE = {"FAIL": "bold red", "soft": "yellow", "ok": "green", "improved": "cyan"}


def render_gate(result, baseline_dir: Path, new_dir: Path, show_all: bool = False) -> None:
    """What moved between two results folders, and the gate's verdict. Measures that stayed
    within a quarter of their tolerance are counted, not listed, unless `show_all`."""
    out = console()
    tol = result.tolerances
    rows = result.rows
    table = Table(title=f"regression gate: {new_dir} vs {baseline_dir}",
                  caption=f"tolerances: throughput −{tol.throughput_pct:g}%, PSNR −{tol.psnr:g} "
                          f"dB, SSIM −{tol.ssim:g}, LPIPS +{tol.lpips:g}; soft from "
                          f"{tol.soft_fraction:.0%} of a tolerance; "
                          f"{result.confidence:.0%} intervals", caption_justify="left")
    for name in ("model", "config", "dev", "prec", "measure", "n", "baseline", "new", "change",
                 "CI", "test", "outcome", "why"):
        table.add_column(name, justify="left" if name in ("model", "config", "prec", "measure",
                                                          "test", "outcome", "why") else "right")
    quiet = 0
    for _, r in rows.iterrows() if not rows.empty else []:
        moved = finite(r["change"]) and abs(r["change"]) >= 0.25 * abs(r["tolerance"])
        if not (show_all or moved or r["outcome"] != "ok"):
            quiet += 1
            continue
        thr = r["measure"] == "throughput"
        spec = "+.1f" if thr else QUALITY_UNITS[r["measure"]][2]
        unit = "%" if thr else ""
        measure = r["measure"] if thr else f"{r['measure']} σ={r['sigma']:g}"
        ci = (f"[{fmt(r['ci_low'], spec)}, {fmt(r['ci_high'], spec)}]{unit}"
              if finite(r["ci_low"]) else "—")
        style = OUTCOME_STYLE.get(r["outcome"], "")
        table.add_row(r["cell.model"], r["config"], str(r["cell.devices"]), r["cell.precision"],
                      measure, f"{r['n_baseline']}/{r['n_new']}",
                      fmt(r["baseline"], ".1f" if thr else QUALITY_UNITS[r["measure"]][1]),
                      fmt(r["new"], ".1f" if thr else QUALITY_UNITS[r["measure"]][1]),
                      fmt(r["change"], spec) + unit, ci,
                      r["test"].replace("Welch t on log", "Welch log").replace(" vs ", "/"),
                      f"[{style}]{r['outcome']}[/{style}]", r["reason"])
    if table.row_count:
        out.print(table)
    if quiet:
        out.print(f"[dim]{quiet} measure(s) moved less than a quarter of their tolerance"
                  f"{'' if table.row_count else ' (all of them)'}; --all lists them[/dim]")
    for s in result.status_changes:
        style = OUTCOME_STYLE[s["outcome"]]
        out.print(f"[{style}]{s['cell_id']}: {s['baseline']} → {s['new']}[/{style}]")
    for cid in result.workload_changed:
        out.print(f"[yellow]{cid}: workload fingerprint changed — not compared[/yellow]")
    if result.baseline_only:
        out.print(f"[dim]only in baseline: {', '.join(result.baseline_only)}[/dim]")
    if result.new_only:
        out.print(f"[dim]only in new: {', '.join(result.new_only)}[/dim]")
    for role, paths in result.unreadable.items():
        for p in paths:
            out.print(f"[red]unreadable {role} record:[/red] {p}")
    verdict = ("[bold red]FAILED[/bold red]" if result.failed else
               "[yellow]passed with warnings[/yellow]" if result.soft else
               "[green]passed[/green]")
    out.print(f"gate: {verdict} ({result.matched} matched cells)")
