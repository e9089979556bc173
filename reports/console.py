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
    """The end of a `run`: the same analysis as `bench report`, in brief."""
    import pandas as pd

    from bench import analysis
    from bench.record import store

    frame = pd.DataFrame([store.flatten(r) for r in records])
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
            f"[red]diverges[/red] — {check['reason']}"
        out.print(f"{check['cell_id']}: {verdict}")
        for note in check.get("notes", []):
            out.print(f"[dim]note: {note}[/dim]")
    out.print("parity: " + ("[green]passed[/green]" if report["passed"] else "[red]failed[/red]"))


# --- `bench report`: comparison tables ----------------------------------------------------------

VERDICT_STYLE = {"equivalent": ("≈", "green"), "better": ("▲", "green"), "worse": ("▼", "red"),
                 "inconclusive (n too small)": ("?", "yellow"), "baseline": ("", "dim"),
                 "no baseline": ("", "dim")}
QUALITY_UNITS = {"psnr": ("PSNR dB", ".2f", "+.2f"), "ssim": ("SSIM", ".4f", "+.4f"),
                 "lpips": ("LPIPS", ".4f", "+.4f")}


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_mean_ci(mean, low, high, spec: str = ".3g") -> str:
    """`mean ± half-width` when an interval exists, else the mean alone."""
    if not _finite(mean):
        return "—"
    if _finite(low) and _finite(high):
        return f"{format(mean, spec)} ± {format((high - low) / 2, spec)}"
    return format(mean, spec)


def fmt_ratio(value, low=None, high=None) -> str:
    if not _finite(value):
        return "—"
    text = f"{value:.2f}×"
    if _finite(low) and _finite(high):
        text += f" [{low:.2f}–{high:.2f}]"
    return text


def fmt_p(p) -> str:
    if not _finite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def verdict_markup(verdict: str, short: bool = True) -> str:
    mark, style = VERDICT_STYLE.get(verdict, ("", ""))
    text = mark if short else verdict
    return f"[{style}]{text}[/{style}]" if text and style else text


def _group_title(row, what: str) -> str:
    device = f", {row['cell.device_type']}" if row.get("cell.device_type") else ""
    return (f"{what} — {row['cell.model']}, σ {row['noise']}{device}, "
            f"workload {row['fingerprint']}")


def _groups(frame, keys):
    return [g for _, g in frame.groupby(keys, sort=True, dropna=False)] if not frame.empty else []


def render_report(comp, results_dir: Path | None = None, *, brief: bool = False,
                  notes: list[str] = ()) -> None:
    """The speedup summary per workload group, then (unless brief: the end of a `run`)
    throughput statistics, quality parity, AMP gain and DDP vs DP; notes and failures."""
    from bench.analysis import GROUP_KEYS

    out = console()
    summary = comp.summary
    pct = f"{comp.confidence:.0%}"
    if summary.empty:
        out.print("[yellow]no ok records to compare[/yellow]")
    for g in _groups(summary, GROUP_KEYS):
        first = g.iloc[0]
        has_gpu = g["gpu_busy_pct"].notna().any() or g["energy_per_img_j"].notna().any()
        table = Table(title=_group_title(first, "speedup summary"),
                      caption=f"baseline {comp.baseline.label}; quality on the test split at "
                              f"σ={comp.sigma} (mean, Δ vs baseline, verdict: ≈ equivalent "
                              f"▲ better ▼ worse ? inconclusive); ± is the {pct} t interval "
                              "over repeats", caption_justify="left")
        for name in ("config", "dev", "prec", "n", "img/s", "train s", "speedup", "eff.",
                     "saving", *(QUALITY_UNITS[m][0] for m in QUALITY_UNITS),
                     *(("GPU busy %", "J/img") if has_gpu else ("CPU %",)), "MFU"):
            table.add_column(name, justify="left" if name in ("config", "prec") else "right")
        for _, row in g.iterrows():
            quality = []
            for metric, (_, spec, dspec) in QUALITY_UNITS.items():
                mean = row.get(f"{metric}_mean")
                if row.get("is_baseline") or not _finite(row.get(f"{metric}_delta")):
                    quality.append(fmt(mean, spec))
                else:
                    quality.append(f"{fmt(mean, spec)} {fmt(row[f'{metric}_delta'], dspec)} "
                                   f"{verdict_markup(row.get(f'{metric}_verdict', ''))}")
            kind = row["efficiency_kind"][:1] if isinstance(row["efficiency_kind"], str) else ""
            table.add_row(
                row["config"] + (" [dim](base)[/dim]" if row["is_baseline"] else ""),
                str(row["cell.devices"]), row["cell.precision"], str(row["n"]),
                fmt_mean_ci(row["throughput_mean"], row["throughput_ci_low"],
                            row["throughput_ci_high"], ".1f"),
                fmt_mean_ci(row["train_time_mean"], row["train_time_ci_low"],
                            row["train_time_ci_high"], ".2f"),
                fmt_ratio(row["speedup_throughput"], row["speedup_ci_low"],
                          row["speedup_ci_high"]),
                f"{fmt(row['efficiency'], '.0%')} {kind}".strip(),
                fmt(row["time_saving_pct"], "+.1f") + ("%" if _finite(row["time_saving_pct"])
                                                       else ""),
                *quality,
                *((fmt(row["gpu_busy_pct"], ".0f"), fmt(row["energy_per_img_j"], ".3g"))
                  if has_gpu else (fmt(row["cpu_pct"], ".0f"),)),
                fmt(row["mfu"], ".1%"))
        out.print(table)
        noisy = [f"{QUALITY_UNITS[m][0]} {fmt(first.get(f'{m}_noisy_mean'), QUALITY_UNITS[m][1])}"
                 for m in QUALITY_UNITS]
        out.print(f"noisy input (what the model must beat): {', '.join(noisy)}")
        out.print("[dim]eff. = throughput speedup / (devices / baseline devices) (s strong, "
                  "w weak scaling); GPU busy % = share of time a kernel ran[/dim]")
        if not brief:
            _render_throughput_stats(g, pct)
    if not brief:
        _render_quality(comp, pct)
        _render_pairs(comp.amp, "AMP gain (vs fp32, same strategy and devices)", pct)
        _render_pairs(comp.ddp_dp, "DDP vs DataParallel (same devices and precision)", pct)
        _render_privacy(comp.privacy)
    for note in [*comp.notes, *notes]:
        out.print(f"[dim]note: {note}[/dim]")
    for _, f in comp.failures.iterrows():
        out.print(f"[red]{f['cell_id']}: {f['status']}[/red] — {f['message'] or f['status']}")
    for path in comp.unreadable:
        out.print(f"[red]unreadable record:[/red] {path}")
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
                      fmt(row["step_time_median"] * 1000 if _finite(row["step_time_median"])
                          else None, ".1f"),
                      fmt(row["data_wait_frac"], ".1%"),
                      fmt(row["time_to_train_median"], ".1f"))
    console().print(table)


PRIVACY_COLUMNS = ("model", "config", "target", "σ", "protection PSNR", "recovered PSNR",
                   "gap dB", "protection SSIM", "recovered SSIM", "mean of releases PSNR",
                   "n", "measured by")
PRIVACY_TEXT_COLUMNS = {"model", "config", "target", "measured by"}  # left-aligned


def privacy_cells(r) -> list[str]:
    """One row of the privacy audit as display text (the console and the HTML report)."""
    return [r["cell.model"], f"{r['config']} ×{r['cell.devices']} {r['cell.precision']}",
            r["target"] or "—", f"{r['sigma']:g}", fmt(r["protection_psnr"], ".2f"),
            fmt(r["recovered_psnr"], ".2f"), fmt(r["gap_psnr"], "+.2f"),
            fmt(r["protection_ssim"], ".3f"), fmt(r["recovered_ssim"], ".3f"),
            fmt(r["averaged_psnr"], ".2f"), str(r["n"]), r["measured_at"] or "—"]


def _render_privacy(privacy) -> None:
    """What the noise protects against what a model trained on it gives back."""
    from bench.twosite.audit import STATEMENT
    if privacy.empty:
        return
    table = Table(title="privacy audit: obfuscated and denoised test images against the clean "
                        "ones (higher = more of the clean image visible)",
                  caption=STATEMENT, caption_justify="left")
    for name in PRIVACY_COLUMNS:
        table.add_column(name, justify="left" if name in PRIVACY_TEXT_COLUMNS else "right")
    for _, r in privacy.iterrows():
        table.add_row(*privacy_cells(r))
    console().print(table)


def _render_quality(comp, pct: str) -> None:
    from bench.analysis import GROUP_KEYS

    q = comp.quality
    if q.empty:
        return
    for g in _groups(q, GROUP_KEYS):
        first = g.iloc[0]
        table = Table(title=_group_title(first, "quality parity vs " + comp.baseline.label),
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
                  if _finite(row["delta_ci_low"]) else "—")
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
            if f"{metric}_delta" in row and _finite(row[f"{metric}_delta"]):
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


# --- exports -----------------------------------------------------------------------------------

EXPORT_FORMATS = ("md", "csv", "json")
_LIST_COLUMNS = ("repeats", "cell_ids")


def _plain(frame):
    """Tables for export: list cells joined, NaN left to the writer."""
    out = frame.copy()
    for col in _LIST_COLUMNS:
        if col in out:
            out[col] = out[col].map(lambda v: " ".join(map(str, v)) if isinstance(v, list) else v)
    return out


def _json_records(frame) -> list[dict]:
    import json

    if frame is None or frame.empty:
        return []
    # to_json turns NaN into null and numpy scalars into numbers
    return json.loads(frame.to_json(orient="records", double_precision=10))


def export_report(comp, fmt_name: str) -> str:
    """The comparison as Markdown (every table), CSV (the summary table, one row per
    configuration, every statistic) or JSON (every table, notes, failures, unreadable)."""
    import json

    if fmt_name == "csv":
        return _plain(comp.summary).to_csv(index=False)
    if fmt_name == "json":
        doc = {"baseline": comp.baseline.label, "sigma": comp.sigma,
               "confidence": comp.confidence,
               "margins": {"psnr": comp.margins.psnr, "ssim": comp.margins.ssim,
                           "lpips": comp.margins.lpips},
               "records": comp.records, "warmup_steps": comp.warmup_steps,
               "clocks": comp.clocks,
               "summary": _json_records(_plain(comp.summary)),
               "quality": _json_records(_plain(comp.quality)),
               "amp_gain": _json_records(comp.amp), "ddp_vs_dp": _json_records(comp.ddp_dp),
               "failures": _json_records(comp.failures), "notes": list(comp.notes),
               "unreadable": list(comp.unreadable)}
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"
    if fmt_name == "md":
        return _markdown(comp)
    raise ValueError(f"unknown export format {fmt_name!r}")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _markdown(comp) -> str:
    from bench.analysis import GROUP_KEYS

    pct = f"{comp.confidence:.0%}"
    parts = [f"# bench report\n\nBaseline {comp.baseline.label}; quality at σ={comp.sigma}; "
             f"± and [..] are {pct} t intervals over repeats.\n"]
    for g in _groups(comp.summary, GROUP_KEYS):
        first = g.iloc[0]
        rows = []
        for _, r in g.iterrows():
            quality = []
            for metric, (_, spec, dspec) in QUALITY_UNITS.items():
                text = fmt(r.get(f"{metric}_mean"), spec)
                if not r["is_baseline"] and _finite(r.get(f"{metric}_delta")):
                    text += f" ({fmt(r[f'{metric}_delta'], dspec)}, {r[f'{metric}_verdict']})"
                quality.append(text)
            rows.append([r["config"] + (" (baseline)" if r["is_baseline"] else ""),
                         r["cell.devices"], r["cell.precision"], r["n"],
                         fmt_mean_ci(r["throughput_mean"], r["throughput_ci_low"],
                                     r["throughput_ci_high"], ".1f"),
                         fmt(r["throughput_cv"], ".1%"),
                         fmt_mean_ci(r["train_time_mean"], r["train_time_ci_low"],
                                     r["train_time_ci_high"], ".2f"),
                         fmt_ratio(r["speedup_throughput"], r["speedup_ci_low"],
                                   r["speedup_ci_high"]),
                         f"{fmt(r['efficiency'], '.0%')} ({r['efficiency_kind']})",
                         fmt(r["time_saving_pct"], "+.1f"), *quality,
                         fmt(r["energy_per_img_j"], ".3g"), fmt(r["gpu_busy_pct"], ".0f")])
        parts.append(f"## {_group_title(first, 'Speedup summary')}\n\n" + _md_table(
            ["config", "devices", "precision", "n", "img/s", "CV", "train s", "speedup",
             "efficiency", "time saving %", "PSNR dB (Δ, verdict)", "SSIM (Δ, verdict)",
             "LPIPS (Δ, verdict)", "J/img", "GPU busy %"], rows) + "\n")
    if not comp.quality.empty:
        rows = []
        for _, r in comp.quality.iterrows():
            _, spec, dspec = QUALITY_UNITS[r["metric"]]
            rows.append([r["cell.model"], r["fingerprint"], f"{r['sigma']:g}", r["metric"],
                         r["config"], r["cell.devices"], r["cell.precision"], r["n"],
                         fmt_mean_ci(r["mean"], r["ci_low"], r["ci_high"], spec),
                         fmt(r["delta"], dspec),
                         f"[{fmt(r['delta_ci_low'], dspec)}, {fmt(r['delta_ci_high'], dspec)}]",
                         fmt_p(r["p_value"]), r["test"] or "—", r["verdict"]])
        parts.append(f"## Quality parity vs {comp.baseline.label}\n\nMargins: PSNR "
                     f"{comp.margins.psnr:g} dB, SSIM {comp.margins.ssim:g}, LPIPS "
                     f"{comp.margins.lpips:g}.\n\n" + _md_table(
                         ["model", "workload", "σ", "metric", "config", "devices", "precision",
                          "n", "mean", "Δ", f"Δ {pct} CI", "p", "test", "verdict"], rows) + "\n")
    for title, pairs in (("AMP gain", comp.amp), ("DDP vs DataParallel", comp.ddp_dp)):
        if pairs is None or pairs.empty:
            continue
        rows = [[r["cell.model"], fmt(r.get("sigma"), "g"),
                 f"{r['a_config']} {r['a_precision']}", f"{r['b_config']} {r['b_precision']}",
                 r["b_devices"], f"{r['n_a']}/{r['n_b']}",
                 fmt_ratio(r["gain"], r["gain_ci_low"], r["gain_ci_high"]),
                 fmt_p(r["gain_p_value"]),
                 *(f"{fmt(r.get(f'{m}_delta'), QUALITY_UNITS[m][2])} "
                   f"({r.get(f'{m}_verdict', '—')})" for m in QUALITY_UNITS)]
                for _, r in pairs.iterrows()]
        parts.append(f"## {title}\n\n" + _md_table(
            ["model", "σ", "A", "B", "devices", "n", "gain B/A", "p", "ΔPSNR", "ΔSSIM",
             "ΔLPIPS"], rows) + "\n")
    extra = [f"- note: {n}" for n in comp.notes]
    extra += [f"- {f['cell_id']}: {f['status']} — {f['message']}"
              for _, f in comp.failures.iterrows()]
    extra += [f"- unreadable record: {p}" for p in comp.unreadable]
    if extra:
        parts.append("## Notes\n\n" + "\n".join(extra) + "\n")
    return "\n".join(parts)


# --- `bench compare`: the regression gate -------------------------------------------------------

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
        moved = _finite(r["change"]) and abs(r["change"]) >= 0.25 * abs(r["tolerance"])
        if not (show_all or moved or r["outcome"] != "ok"):
            quiet += 1
            continue
        thr = r["measure"] == "throughput"
        spec = "+.1f" if thr else QUALITY_UNITS[r["measure"]][2]
        unit = "%" if thr else ""
        measure = r["measure"] if thr else f"{r['measure']} σ={r['sigma']:g}"
        ci = (f"[{fmt(r['ci_low'], spec)}, {fmt(r['ci_high'], spec)}]{unit}"
              if _finite(r["ci_low"]) else "—")
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
