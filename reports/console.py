"""Rich console rendering. Only rendering: every number comes from bench.analysis or a record.

The exports (`reports.export`), the regression gate (`reports.gate`) and the shared formatting
(`reports.text`) live beside this module; the names callers use are re-exported here.
"""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from reports import convergence
from reports.export import EXPORT_FORMATS, export_report
from reports.breakdown import render_console as render_breakdown
from reports.stragglers import render_console as render_stragglers
from reports.factorial import render_console as render_factorial
from reports.gate import OUTCOME_STYLE, render_gate
from reports.text import (QUALITY_UNITS, VERDICT_STYLE, console, finite, fmt, fmt_mean_ci,
                          fmt_p, fmt_ratio, group_title, groups, row_notes, saving_text,
                          sections, verdict_markup)

__all__ = ["EXPORT_FORMATS", "OUTCOME_STYLE", "QUALITY_UNITS", "VERDICT_STYLE", "console",
           "export_report", "fmt", "fmt_mean_ci", "fmt_p", "fmt_ratio", "render_env",
           "render_gate", "render_parity", "render_report", "render_summary", "verdict_markup"]


def render_summary(records: list[dict], results_dir: Path, notes: list[str] = ()) -> None:
    """The end of a `run`: the same analysis as `bench report`, in brief."""
    import pandas as pd

    from bench import analysis
    from bench.record import store

    frame = pd.DataFrame([store.flatten(r) for r in records])
    # brief: no plug-in sections are shown, so none are computed
    render_report(analysis.compare_configs(frame), results_dir, brief=True, notes=list(notes))
    console().print("[dim]full statistics, exports and HTML: python -m bench report "
                    f"{results_dir}[/dim]")


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
            f"[red]beyond tolerance[/red] — {check['reason']}"
        out.print(f"{check['cell_id']}: {verdict}")
        for note in check.get("notes", []):
            out.print(f"[dim]note: {note}[/dim]")
    out.print("parity: " + ("[green]passed[/green]" if report["passed"] else "[red]failed[/red]"))


def _against(text: str, met: bool) -> str:
    """A figure in green where it meets its target, red where not."""
    colour = "green" if met else "red"
    return f"[{colour}]{text}[/{colour}]"


def render_selfbench(results: list[dict]) -> None:
    """One row per strategy: bench ÷ bare on static and on real batches, the data's own
    cost, each as the median of paired ratios with their range."""
    def ratio(r: dict) -> str:
        return f"{r['median']:.3f} ({r['min']:.3f}–{r['max']:.3f})"

    table = Table(title="selfbench: seconds per step, bench's loop ÷ a bare PyTorch loop",
                  caption="median of per-repeat ratios (range); harness = bench ÷ bare on the "
                          "same batches, data = bare on bench's batches ÷ bare on one fixed "
                          "random batch", caption_justify="left")
    for name in ("loop", "threads", "bare step", "harness, static", "harness, real",
                 "data", "sampler", "after a probe", "probe cost", "arrival marks"):
        table.add_column(name, justify="left" if name == "loop" else "right")
    for r in results:
        target = r["harness_target"]
        ok = "green" if r["harness_static"]["median"] <= target else "red"
        sampling = "—"
        if r.get("sampling"):
            sampling = (f"{ratio(r['sampling'])} at {r['sample_hz']:g} Hz, "
                        f"{r['sampler_cpu_share']:.2%} CPU" if r["sampler_cpu_share"]
                        is not None else ratio(r["sampling"]))
        bare_ms = 1000 * sorted(r["step_s"]["bare_static"])[len(r["step_s"]["bare_static"]) // 2]
        table.add_row(f"{r['strategy']} ×{r['devices']} {r['model']} w{r['width']} "
                      f"{r['image_size']}² batch {r['global_batch']}", str(r["threads"]),
                      f"{bare_ms:.1f} ms", f"[{ok}]{ratio(r['harness_static'])}[/{ok}]",
                      ratio(r["harness_real"]), ratio(r["data"]), sampling,
                      ratio(r["attribution"]), f"{r['probe_slowdown']['median']:.2f}×",
                      _against(ratio(r["arrivals"]), r["arrivals"]["median"]
                               <= r["arrivals_target"]) if r.get("arrivals") else "—")
    out = console()
    out.print(table)
    out.print("after a probe = harness (bench ÷ bare) without a probe ÷ after one (target ≥ "
              f"{results[0]['attribution_target']:g}); probe cost = the attribution probe's "
              "wall time per profiled step (4 timed + 2 recording shapes; profiler start, trace "
              "and analysis included) ÷ an "
              "unprobed step; it runs after the timed window, outside every timed figure")
    out.print("arrival marks = harness with the straggler timestamps ÷ without them (target "
              f"≤ {results[0].get('arrivals_target', 1.01):g}; DDP: its communication hook "
              "marking the last gradient bucket; one device: the loop's marks alone, which a "
              "single-device cell does not take)")
    out.print(f"target: harness ≤ {results[0]['harness_target']:g} (static batches, "
              f"{results[0]['repeats']} repeats of {results[0]['steps']} steps, "
              f"{results[0]['warmup']} untimed)")


# --- `bench report`: comparison tables ----------------------------------------------------------

def render_report(comp, results_dir: Path | None = None, *, brief: bool = False,
                  notes: list[str] = ()) -> None:
    """The speedup summary per workload group, then (unless brief: the end of a `run`)
    throughput statistics, quality parity, AMP gain, DDP vs DP, the plug-in sections and the
    seed-claim decomposition; notes and failures."""
    from bench.analysis import GROUP_KEYS

    out = console()
    summary = comp.summary
    pct = f"{comp.confidence:.0%}"
    if summary.empty:
        out.print("[yellow]no ok records to compare[/yellow]")
    for g in groups(summary, GROUP_KEYS):
        first = g.iloc[0]
        has_gpu = g["gpu_busy_pct"].notna().any() or g["energy_per_img_j"].notna().any()
        ttq = convergence.for_group(comp, first)  # empty: no curves, no column (older records)
        # Beside the equal-quality column the table is too wide for Rich to shrink evenly
        # without cutting an interval: both speedups come as unwrapped short lines instead.
        narrow = ("speedup", convergence.COLUMN) if not ttq.empty else ()
        table = Table(title=group_title(first, "speedup summary"),
                      caption=f"baseline {comp.baseline.label}; quality on the test split at "
                              f"σ={fmt(first['sigma'], 'g')} (mean, Δ vs baseline, verdict: "
                              "≈ equivalent "
                              f"▲ better ▼ worse ? inconclusive); ± is the {pct} t interval "
                              "over repeats", caption_justify="left")
        for name in ("config", "dev", "prec", "n", "img/s", "train s", "speedup",
                     *((convergence.COLUMN,) if not ttq.empty else ()), "eff.",
                     "saving", *(QUALITY_UNITS[m][0] for m in QUALITY_UNITS),
                     *(("GPU busy %", "J/img") if has_gpu else ("CPU %",)), "MFU"):
            table.add_column(name, justify="left" if name in ("config", "prec") else "right",
                             no_wrap=name in narrow)
        for _, row in g.iterrows():
            quality = []
            for metric, (_, spec, dspec) in QUALITY_UNITS.items():
                mean = row.get(f"{metric}_mean")
                if row.get("is_baseline") or not finite(row.get(f"{metric}_delta")):
                    quality.append(fmt(mean, spec))
                else:
                    quality.append(f"{fmt(mean, spec)} {fmt(row[f'{metric}_delta'], dspec)} "
                                   f"{verdict_markup(row.get(f'{metric}_verdict', ''))}")
            kind = row["efficiency_kind"][:1] if isinstance(row["efficiency_kind"], str) else ""
            speedup = fmt_ratio(row["speedup_throughput"], row["speedup_ci_low"],
                                row["speedup_ci_high"])
            table.add_row(
                row["config"] + (" [dim](base)[/dim]" if row["is_baseline"] else "")
                + (" [red]†other hardware[/red]" if row.get("hardware_differs") is True else ""),
                str(row["cell.devices"]), row["cell.precision"], str(row["n"]),
                fmt_mean_ci(row["throughput_mean"], row["throughput_ci_low"],
                            row["throughput_ci_high"], ".1f"),
                fmt_mean_ci(row["train_time_mean"], row["train_time_ci_low"],
                            row["train_time_ci_high"], ".2f"),
                convergence.lines(speedup) if narrow else speedup,
                *((convergence.console_cell(ttq, row),) if narrow else ()),
                f"{fmt(row['efficiency'], '.0%')} {kind}".strip(),
                saving_text(row),
                *quality,
                *((fmt(row["gpu_busy_pct"], ".0f"), fmt(row["energy_per_img_j"], ".3g"))
                  if has_gpu else (fmt(row["cpu_pct"], ".0f"),)),
                fmt(row["mfu"], ".1%"))
        out.print(table)
        convergence.render_console(ttq, g, comp.baseline.label)
        noisy = [f"{QUALITY_UNITS[m][0]} {fmt(first.get(f'{m}_noisy_mean'), QUALITY_UNITS[m][1])}"
                 for m in QUALITY_UNITS]
        out.print(f"noisy input (what the model must beat): {', '.join(noisy)}")
        out.print("[dim]eff. = throughput speedup over the baseline's strategy and devices at "
                  "the same precision / (devices / its devices) (s strong, w weak scaling); "
                  + ("GPU busy % = share of time a kernel ran" if has_gpu else
                     "CPU % = the cell's processes' CPU time, 100 = one core") + "[/dim]")
        for _, row in g.iterrows():
            for line in row_notes(row):
                out.print(f"[yellow]{line}[/yellow]")
        if not brief:
            _render_throughput_stats(g, pct)
    if not brief:
        _render_quality(comp, pct)
        _render_pairs(comp.amp, "AMP gain (vs fp32, same strategy and devices)", pct)
        _render_pairs(comp.ddp_dp, "DDP vs DataParallel (same devices and precision)", pct)
        _render_sections(comp)
        render_factorial(comp.factorial, comp.confidence)
        render_breakdown(comp.breakdown)
        render_stragglers(comp.stragglers)
    # Messages and paths are text, not markup: a gloo error names "[/path/pair.cc:545]".
    for note in [*comp.notes, *notes]:
        out.print(f"[dim]note: {escape(note)}[/dim]")
    for _, f in comp.failures.iterrows():
        message = f["message"] if isinstance(f["message"], str) and f["message"] else None
        out.print(f"[red]{escape(str(f['cell_id']))}: {f['status']}[/red] — "
                  f"{escape(message or str(f['status']))}")
    for path in comp.unreadable:
        out.print(f"[red]unreadable record:[/red] {escape(str(path))}")
    if results_dir is not None:
        out.print(f"results: {results_dir}")


def _render_throughput_stats(g, pct: str) -> None:
    table = Table(title="throughput across repeats (timed window; global samples / wall time)",
                  title_justify="left")
    for name in ("config", "dev", "prec", "n", "median img/s", f"mean ± {pct} CI", "CV",
                 "step median ms", "data wait", "time-to-train s"):
        table.add_column(name, justify="left" if name in ("config", "prec") else "right")
    for _, row in g.iterrows():
        table.add_row(row["config"], str(row["cell.devices"]), row["cell.precision"],
                      str(row["n"]), fmt(row["throughput_median"], ".1f"),
                      fmt_mean_ci(row["throughput_mean"], row["throughput_ci_low"],
                                  row["throughput_ci_high"], ".1f"),
                      fmt(row["throughput_cv"], ".1%"),
                      fmt(row["step_time_median"] * 1000 if finite(row["step_time_median"])
                          else None, ".1f"),
                      fmt(row["data_wait_frac"], ".1%"),
                      fmt(row["time_to_train_median"], ".1f"))
    console().print(table)


def _render_sections(comp) -> None:
    """Each plug-in section with something to show, where the privacy audit always stood."""
    for section, table in sections(comp):
        section.console(table)


def _render_quality(comp, pct: str) -> None:
    from bench.analysis import GROUP_KEYS

    q = comp.quality
    if q.empty:
        return
    for g in groups(q, GROUP_KEYS):
        first = g.iloc[0]
        table = Table(title=group_title(first, "quality parity vs " + comp.baseline.label),
                      caption=f"margins: PSNR {comp.margins.psnr:g} dB, SSIM "
                              f"{comp.margins.ssim:g}, LPIPS {comp.margins.lpips:g}; "
                              f"equivalent = the {pct} interval of Δ lies within ±margin",
                      caption_justify="left")
        for name in ("σ", "metric", "config", "dev", "prec", "n", f"mean ± {pct} CI",
                     "noisy input", "Δ", f"Δ {pct} CI", "p", "test", "verdict"):
            table.add_column(name, justify="left" if name in ("metric", "config", "prec", "test",
                                                              "verdict") else "right")
        order = g["metric"].map({m: i for i, m in enumerate(QUALITY_UNITS)})
        for _, row in g.assign(_order=order).sort_values(["sigma", "_order"],
                                                         kind="stable").iterrows():
            _, spec, dspec = QUALITY_UNITS[row["metric"]]
            ci = (f"[{fmt(row['delta_ci_low'], dspec)}, {fmt(row['delta_ci_high'], dspec)}]"
                  if finite(row["delta_ci_low"]) else "—")
            table.add_row(f"{row['sigma']:g}", row["metric"], row["config"],
                          str(row["cell.devices"]), row["cell.precision"], str(row["n"]),
                          fmt_mean_ci(row["mean"], row["ci_low"], row["ci_high"], spec),
                          fmt(row["noisy_mean"], spec), fmt(row["delta"], dspec), ci,
                          fmt_p(row["p_value"]), row["test"] or "—",
                          verdict_markup(row["verdict"], short=False))
        console().print(table)


def _render_pairs(pairs, title: str, pct: str) -> None:
    if pairs is None or pairs.empty:
        return
    table = Table(title=title, caption=f"gain = ratio of geometric-mean throughput, {pct} "
                                       "Welch interval on the logs; Δ = B − A, verdict vs "
                                       "the parity margin", caption_justify="left")
    for name in ("model", "σ", "A", "B", "dev", "n", "A img/s", "B img/s", "gain", "p",
                 "ΔPSNR", "ΔSSIM", "ΔLPIPS"):
        table.add_column(name, justify="left" if name in ("model", "A", "B") else "right")
    for _, row in pairs.iterrows():
        deltas = []
        for metric, (_, _, dspec) in QUALITY_UNITS.items():
            if f"{metric}_delta" in row and finite(row[f"{metric}_delta"]):
                deltas.append(f"{fmt(row[f'{metric}_delta'], dspec)} "
                              f"{verdict_markup(row.get(f'{metric}_verdict', ''))}")
            else:
                deltas.append("—")
        table.add_row(row["cell.model"], fmt(row.get("sigma"), "g"),
                      f"{row['a_config']} {row['a_precision']}",
                      f"{row['b_config']} {row['b_precision']}", str(row["b_devices"]),
                      f"{row['n_a']}/{row['n_b']}", fmt(row["a_throughput"], ".1f"),
                      fmt(row["b_throughput"], ".1f"),
                      fmt_ratio(row["gain"], row["gain_ci_low"], row["gain_ci_high"]),
                      fmt_p(row["gain_p_value"]), *deltas)
    console().print(table)
