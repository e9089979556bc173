"""`bench compare`: the regression gate's table and verdict on the console. Rendering only:
every number comes from a `bench.analysis.gate.GateResult`."""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from reports.text import QUALITY_UNITS, console, finite, fmt

OUTCOME_STYLE = {"FAIL": "bold red", "soft": "yellow", "ok": "green", "improved": "cyan",
                 "inconclusive": "bold magenta"}


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
                          f"{result.confidence:.0%} intervals; MDE: the smallest worsening the "
                          f"test detects with {result.power:.0%} power", caption_justify="left")
    for name in ("model", "config", "dev", "prec", "measure", "n", "baseline", "new", "change",
                 "CI", "MDE", "test", "outcome", "why"):
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
        reason = r["reason"]
        if thr and r.get("slowdown") and r["change"] < 0 and moved:
            reason = f"{reason}; {r['slowdown']}" if reason else r["slowdown"]
        table.add_row(r["cell.model"], r["config"], str(r["cell.devices"]), r["cell.precision"],
                      measure, f"{r['n_baseline']}/{r['n_new']}",
                      fmt(r["baseline"], ".1f" if thr else QUALITY_UNITS[r["measure"]][1]),
                      fmt(r["new"], ".1f" if thr else QUALITY_UNITS[r["measure"]][1]),
                      fmt(r["change"], spec) + unit, ci,
                      fmt(r["mde"], ".1f" if thr else QUALITY_UNITS[r["measure"]][1]) + unit,
                      # the n column holds the counts the test's name repeats
                      r["test"].replace("Welch t on log", "Welch log").split(" (n=")[0],
                      f"[{style}]{r['outcome']}[/{style}]", escape(reason))
    if table.row_count:
        out.print(table)
    if quiet:
        out.print(f"[dim]{quiet} measure(s) moved less than a quarter of their tolerance"
                  f"{'' if table.row_count else ' (all of them)'}; --all lists them[/dim]")
    for s in result.status_changes:
        style = OUTCOME_STYLE[s["outcome"]]
        out.print(f"[{style}]{s['cell_id']}: {s['baseline']} → {s['new']}[/{style}]")
    why = result.unmatched_why
    for cid in result.workload_changed:
        detail = f" ({escape(why[cid])})" if cid in why else ""
        out.print(f"[yellow]{cid}: workload fingerprint changed{detail} — not compared[/yellow]")
    if result.baseline_only:
        out.print(f"[dim]only in baseline: {', '.join(result.baseline_only)}[/dim]")
        reasons: dict = {}
        for cid in result.baseline_only:
            if cid in why:
                reasons.setdefault(why[cid], []).append(cid)
        for text, cids in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            out.print(f"[yellow]no match in new for {len(cids)} baseline cell(s), the workload "
                      f"differs: {escape(text)}[/yellow]", soft_wrap=True)
    if result.env_changes:
        out.print("[yellow]environment differs between baseline and new:[/yellow]")
        for e in result.env_changes:
            out.print(f"  {escape(e['field'])}: {escape(e['baseline'])} → {escape(e['new'])} "
                      f"({e['cells']} of {e['of']} matched cells)", soft_wrap=True)
    if result.new_only:
        out.print(f"[dim]only in new: {', '.join(result.new_only)}[/dim]")
    for role, paths in result.unreadable.items():
        for p in paths:
            out.print(f"[red]unreadable {role} record:[/red] {p}")
    verdict = ("[bold red]FAILED[/bold red]" if result.failed else
               "[bold magenta]INCONCLUSIVE[/bold magenta]" if result.inconclusive else
               "[yellow]passed with warnings[/yellow]" if result.soft else
               "[green]passed[/green]")
    out.print(f"gate: {verdict} ({result.matched} matched cells){_power_note(result)}",
              soft_wrap=True)


def _power_note(result) -> str:
    """Why an inconclusive gate did not pass, in one clause: the measure that needs the most
    repeats, its MDE against its tolerance, and those repeats."""
    if result.failed or not result.inconclusive:
        return ""
    rows = result.rows[result.rows["outcome"] == "inconclusive"]
    worst = rows.sort_values("repeats_needed", na_position="first").iloc[-1]
    thr = worst["measure"] == "throughput"
    spec, unit = (".1f", "%") if thr else (QUALITY_UNITS[worst["measure"]][1], "")
    what = (f"{worst['measure']}" + ("" if thr else f" σ={worst['sigma']:g}")
            + f" of {worst['cell.model']} {worst['config']} ×{worst['cell.devices']} "
              f"{worst['cell.precision']}")
    if not finite(worst["mde"]):  # one repeat on a side: no noise estimate, so no MDE
        return (f": {len(rows)} measure(s) cannot be judged — {what} has one repeat on a "
                "side, so neither its noise nor the smallest worsening it could detect is "
                f"known; run at least 2 repeats per side (exit {result.exit_code})")
    need = (f"{int(worst['repeats_needed'])} repeats per side would be needed"
            if finite(worst["repeats_needed"]) else "no practical number of repeats would do")
    return (f": too few repeats to detect the tolerance in {len(rows)} measure(s) — {what} "
            f"detects only a worsening of {fmt(worst['mde'], spec)}{unit} against a tolerance "
            f"of {abs(worst['tolerance']):g}{unit}, and {need} at this noise "
            f"(exit {result.exit_code})")
