"""One self-contained HTML report: tables, plots as embedded base64 PNGs, inline CSS, no script,
no external font, stylesheet or image, nothing fetched when it is opened.

Rendering only: every statistic comes from bench.analysis (a `Comparison`) and the artefacts
from bench.record.load; the plots draw those numbers or the raw step / telemetry / sample values.
The building blocks (stylesheet, escaping, tables, figures) are in `reports.markup`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from reports import breakdown, convergence, factorial, plots, stragglers
from reports.markup import (CSS, QUALITY_FORMATS, esc, figure, fmt, group_title, groups,
                            key_of, mean_ci, p_text, ratio_text, table, verdict_span)
from reports.text import ROW_NOTES, row_notes, saving_text, sections


# --- sections ----------------------------------------------------------------------------------

def method_section(comp) -> str:
    clocks = ", ".join(comp.clocks) or "unknown"
    warmups = ", ".join(map(str, comp.warmup_steps)) or "unknown"
    pct = f"{comp.confidence:.0%}"
    m = comp.margins
    items = [
        f"<b>Timing method</b>: <code>{esc(clocks)}</code>. <code>cuda-events</code> = per-step "
        "CUDA events resolved after the run, the timed window bounded by a device "
        "synchronize; <code>host-monotonic</code> = a monotonic host clock (CPU runs, where "
        "work is synchronous).",
        f"<b>Warm-up</b>: {esc(warmups)} step(s) per cell ran before the timed window and are "
        "excluded from every time, throughput and step-time distribution.",
        "<b>Throughput</b> = global samples of the timed steps / timed wall time (never a mean of "
        "per-step rates). <b>Training time</b> is that timed window; time-to-train (launch to "
        "record) is reported separately.",
        "<b>GPU busy %</b> is NVML <code>utilization.gpu</code>: the share of each sample period "
        "in which any kernel ran. It is not SM occupancy or saturation. Energy comes from the "
        "NVML total-energy counter where the GPU has one, else from integrated power.",
        f"<b>Statistics</b> are across repeats (fresh processes, seeds differing by repeat), never "
        f"across test images of one run. ± and [..] are {pct} Student-t intervals. Speedups "
        "are ratios of geometric-mean throughput with a Welch interval on the logarithms (timing "
        "noise does not pair up by seed). Quality deltas use a paired t-test by repeat "
        "(repeat r of every configuration used the same seed) when the repeats pair up, else "
        "Welch; the test used is named in each row.",
        f"<b>Parity verdicts</b> against {esc(comp.baseline.label)}: <i>equivalent</i> when the "
        f"whole {pct} interval of Δ lies within ±margin (PSNR {m.psnr:g} dB, SSIM {m.ssim:g}, "
        f"LPIPS {m.lpips:g}); <i>worse</i> / <i>better</i> when it lies wholly on one side of "
        "zero; otherwise <i>inconclusive (n too small)</i> — more repeats would narrow it.",
        "<b>Scaling efficiency</b> = throughput speedup over the baseline's strategy and "
        "devices <i>at the cell's own precision</i> / (devices / its devices); that reference "
        "reads 100%; blank where the device count does not change or no such cell exists (a "
        "bf16 cell measured against fp32 would count the precision's gain as scaling; AMP gain has its own table); "
        "labelled strong (fixed global batch) or weak (fixed per-device batch) from each "
        "cell's scaling mode. A weak-scaling cell trains more samples than its baseline: its "
        "time saving is per sample (1 − 1/speedup). Only cells with the same workload "
        "fingerprint are ever compared.",
    ]
    return "<h2>How this was measured</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def problems_section(comp) -> str:
    parts = []
    if comp.notes:
        parts.append('<div class="box"><b>Notes</b><ul>'
                     + "".join(f"<li>{esc(n)}</li>" for n in comp.notes) + "</ul></div>")
    bad = [f"<li><b>{esc(f['cell_id'])}</b>: {esc(f['status'])} — {esc(f['message'])}</li>"
           for _, f in comp.failures.iterrows()]
    bad += [f"<li>unreadable record: <code>{esc(p)}</code></li>" for p in comp.unreadable]
    if bad:
        parts.append('<div class="box bad"><b>Cells without a usable result</b><ul>'
                     + "".join(bad) + "</ul></div>")
    return "".join(parts)


def summary_rows(g: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    rows, classes = [], []
    for _, r in g.iterrows():
        quality = []
        for metric, (spec, dspec) in QUALITY_FORMATS.items():
            text = fmt(r.get(f"{metric}_mean"), spec)
            if not r["is_baseline"] and fmt(r.get(f"{metric}_delta")) != "—":
                text += (f" ({fmt(r[f'{metric}_delta'], dspec)})<br>"
                         f"{verdict_span(r.get(f'{metric}_verdict'), short=True)}")
            quality.append(text)
        rows.append([esc(r["config"]) + (" <i>(baseline)</i>" if r["is_baseline"] else "")
                     + (" <b>† other hardware</b>" if r.get("hardware_differs") is True else ""),
                     str(r["cell.devices"]), esc(r["cell.precision"]), str(r["n"]),
                     mean_ci(r["throughput_mean"], r["throughput_ci_low"],
                             r["throughput_ci_high"], ".1f"),
                     mean_ci(r["train_time_mean"], r["train_time_ci_low"],
                             r["train_time_ci_high"], ".2f"),
                     ratio_text(r["speedup_throughput"], r["speedup_ci_low"],
                                r["speedup_ci_high"]),
                     f"{fmt(r['efficiency'], '.0%')} {esc(r['efficiency_kind'])}",
                     esc(saving_text(r)),
                     *quality,
                     fmt(r["energy_per_img_j"], ".3g"), fmt(r["gpu_busy_pct"], ".0f"),
                     fmt(r["cpu_pct"], ".0f")])
        classes.append("base" if r["is_baseline"] else "")
    return rows, classes


SUMMARY_HEADER = ["configuration", "devices", "precision", "n", "img/s", "train time s",
                  "speedup", "efficiency", "time saving", "PSNR dB (Δ)", "SSIM (Δ)",
                  "LPIPS (Δ)", "energy J/img", "GPU busy %", "CPU %"]


def group_section(g: pd.DataFrame, rows: pd.DataFrame, steps: pd.DataFrame,
                  tele: pd.DataFrame, comp) -> str:
    from bench.analysis import CONFIG_KEYS, GROUP_KEYS

    first = g.iloc[0]
    pct = f"{comp.confidence:.0%}"
    out = [f"<h2>{esc(group_title(first))}</h2>"]
    body, classes = summary_rows(g)
    out.append(f'<p class="muted">Speedup summary against {esc(comp.baseline.label)}; quality on '
               f"the test split at σ={fmt(first['sigma'], 'g')}; ± and [..] are {pct} intervals "
               "over repeats.</p>")
    out.append(table(SUMMARY_HEADER, body, left={0, 2}, row_classes=classes))
    notes = [line for _, r in g.iterrows()
             for line in row_notes(r, ("variation_note", *ROW_NOTES))]
    if notes:
        out.append('<div class="box">' + "<br>".join(map(esc, notes)) + "</div>")

    stats = [[esc(r["config"]), str(r["cell.devices"]), esc(r["cell.precision"]), str(r["n"]),
              fmt(r["throughput_median"], ".1f"),
              mean_ci(r["throughput_mean"], r["throughput_ci_low"], r["throughput_ci_high"],
                      ".1f"),
              fmt(r["throughput_cv"], ".1%"),
              fmt(r["step_time_median"] * 1000 if fmt(r["step_time_median"]) != "—" else None,
                  ".1f"),
              fmt(r["data_wait_frac"], ".1%"), fmt(r["time_to_train_median"], ".1f"),
              fmt(r["power_mean_w"], ".0f"), fmt(r["mfu"], ".1%")] for _, r in g.iterrows()]
    out.append("<h3>Throughput across repeats</h3>")
    out.append(table(["configuration", "devices", "precision", "n", "median img/s",
                      f"mean ± {pct} CI", "CV", "median step ms", "data-loader wait",
                      "time-to-train s", "GPU power W", "MFU"], stats, left={0, 2}))

    ids = {c for ids_ in g["cell_ids"] for c in ids_}
    out.append(figure(plots.train_time_points(g, rows[rows["cell_id"].isin(ids)], comp.confidence),
                      "training time per configuration",
                      f"Training time = the timed window (warm-up excluded). Bars: mean over "
                      f"repeats; error bars: {pct} interval; dots: individual repeats; grey: "
                      "the baseline."))
    if g["speedup_throughput"].notna().any():
        out.append(figure(plots.speedup_efficiency(g, comp.confidence),
                          "speedup and efficiency vs devices",
                          "Dashed: ideal linear scaling. Error bars: interval of the speedup."))
    order = [(key_of(r, GROUP_KEYS + CONFIG_KEYS), plots.config_name(r)) for _, r in g.iterrows()]
    if not steps.empty:
        out.append(figure(plots.step_time_distributions(steps, order),
                          "step-time distributions",
                          "Each configuration's timed steps, all repeats pooled; the step "
                          "that counts is the slowest rank's."))
    if not tele.empty:
        sel = tele
        for col in GROUP_KEYS:
            sel = sel[sel[col] == first[col]]
        if not sel.empty:
            out.append(figure(plots.telemetry_timeline(sel, order), "telemetry timelines",
                              "Lowest repeat of each configuration; solid = timed window, faint "
                              "= set-up, warm-up and evaluation. GPU busy % is the share of "
                              "time a kernel ran."))
    return "".join(out)


def pairs_section(title: str, pairs: pd.DataFrame, comp) -> str:
    if pairs is None or pairs.empty:
        return ""
    rows = []
    for _, r in pairs.iterrows():
        deltas = []
        for metric, (_, dspec) in QUALITY_FORMATS.items():
            if fmt(r.get(f"{metric}_delta")) == "—":
                deltas.append("—")
                continue
            ci = (f'<br><span class="ci">[{fmt(r.get(f"{metric}_delta_ci_low"), dspec)}, '
                  f'{fmt(r.get(f"{metric}_delta_ci_high"), dspec)}]</span>'
                  if fmt(r.get(f"{metric}_delta_ci_low")) != "—" else "")
            deltas.append(f"{fmt(r[f'{metric}_delta'], dspec)}{ci}<br>"
                          f"{verdict_span(r.get(f'{metric}_verdict'), short=True)}")
        rows.append([esc(plots.model_name(r["cell.model"])), esc(r["fingerprint"]),
                     fmt(r.get("sigma"), "g"), esc(f"{r['a_config']} {r['a_precision']}"),
                     esc(f"{r['b_config']} {r['b_precision']}"), str(r["b_devices"]),
                     f"{r['n_a']}/{r['n_b']}", fmt(r["a_throughput"], ".1f"),
                     fmt(r["b_throughput"], ".1f"),
                     ratio_text(r["gain"], r["gain_ci_low"], r["gain_ci_high"]),
                     p_text(r["gain_p_value"]), fmt(r["time_saving_pct"], "+.1f"), *deltas])
    return (f"<h2>{esc(title)}</h2>" + table(
        ["model", "workload", "σ", "A", "B", "devices", "n A/B", "A img/s", "B img/s",
         f"gain B/A [{comp.confidence:.0%} CI]", "p", "time saving %", "ΔPSNR dB", "ΔSSIM",
         "ΔLPIPS"], rows, left={0, 1, 3, 4})
        + '<p class="muted">Gain = ratio of geometric-mean throughput (Welch interval on the '
          "logs); Δ = B − A with the paired-by-repeat (or Welch) interval and parity verdict."
          "</p>")


def quality_section(comp) -> str:
    from bench.analysis import GROUP_KEYS

    q = comp.quality
    if q.empty:
        return ""
    pct = f"{comp.confidence:.0%}"
    out = ["<h2>Denoising quality</h2>"]
    for model, m in q.groupby("cell.model", sort=True):
        out.append(f"<h3>{esc(plots.model_name(model))}</h3>")
        out.append(figure(plots.quality_vs_noise(m, comp.confidence),
                          f"quality vs noise level, {model}",
                          "Mean over repeats with its interval; grey ×: the noisy input's "
                          "own score (the model must beat it)."))
    for g in groups(q, GROUP_KEYS):
        rows = []
        for _, r in g.iterrows():
            spec, dspec = QUALITY_FORMATS[r["metric"]]
            ci = (f"[{fmt(r['delta_ci_low'], dspec)}, {fmt(r['delta_ci_high'], dspec)}]"
                  if fmt(r["delta_ci_low"]) != "—" else "—")
            rows.append([fmt(r["sigma"], "g"), esc(r["metric"]), esc(r["config"]),
                         str(r["cell.devices"]), esc(r["cell.precision"]), str(r["n"]),
                         mean_ci(r["mean"], r["ci_low"], r["ci_high"], spec),
                         fmt(r["noisy_mean"], spec), fmt(r["delta"], dspec), ci,
                         p_text(r["p_value"]), esc(r["test"] or "—"),
                         verdict_span(r["verdict"])])
        out.append(f"<h3>Parity vs {esc(comp.baseline.label)} — {esc(group_title(g.iloc[0]))}"
                   "</h3>")
        out.append(table(["σ", "metric", "configuration", "devices", "precision", "n",
                          f"mean ± {pct} CI", "noisy input", "Δ", f"Δ {pct} CI", "p", "test",
                          "verdict"], rows, left={1, 2, 4, 11, 12}))
    return "".join(out)


def samples_section(samples: list[dict]) -> str:
    if not samples:
        return ""
    first = samples[0]
    same = all(np.array_equal(s["noisy"], first["noisy"]) and
               np.array_equal(s["clean"], first["clean"]) for s in samples[1:])
    caption = ("The same noisy test images went into every model (identical seeded noise)."
               if same else "Warning: the models' saved noisy inputs differ; the noisy and clean "
                            f"columns show {first['cell_id']}'s.")
    return ("<h2>Sample test images</h2>"
            + figure(plots.sample_grid(samples), "noisy, model outputs and clean test images",
                     caption + " Cells: " + ", ".join(s["cell_id"] for s in samples) + "."))


def environment_section(frame: pd.DataFrame) -> str:
    from bench.record.load import environments

    common, varying = environments(frame)
    if not common and varying.empty:
        return ""
    out = ["<h2>Environment of every run</h2>"]
    if common:
        out.append(f"<h3>Shared by all {len(frame)} records</h3>")
        out.append(table(["key", "value"], [[esc(k), esc(v)] for k, v in common.items()],
                         left={0, 1}))
    if not varying.empty and len(varying.columns) > 1:
        out.append("<h3>Differing between records</h3>")
        out.append(table([esc(c) for c in varying.columns],
                         [[esc(v) for v in row] for row in varying.itertuples(index=False)],
                         left=set(range(len(varying.columns)))))
    return "".join(out)


def render_html(frame: pd.DataFrame, comp, results_dir) -> str:
    """The whole report as one HTML string."""
    from bench import analysis
    from bench.record import load

    rows = analysis.prepare(frame)
    steps = load.step_times(rows, analysis.CELL_KEYS)
    # The timeline figure shows each configuration's lowest repeat: read only those files.
    tele = load.telemetry_timelines(analysis.lowest_repeats(rows), analysis.CELL_KEYS)
    samples = load.sample_images(analysis.sample_cells(frame, comp.baseline))
    ok = int((frame["status"] == "ok").sum()) if "status" in frame else 0
    head = (f"<h1>bench report</h1><p class='muted'>results <code>{esc(results_dir)}</code> · "
            f"{comp.records} record(s), {ok} ok, {len(comp.failures)} "
            f"not ok, {len(comp.unreadable)} unreadable · baseline {esc(comp.baseline.label)} · "
            f"generated {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>")
    body = [head, problems_section(comp), method_section(comp)]
    if comp.summary.empty:
        body.append("<p><b>No ok records to compare.</b></p>")
    for g in groups(comp.summary, analysis.GROUP_KEYS):
        body.append(group_section(g, rows, steps, tele, comp))
    body.append(pairs_section("AMP gain (vs fp32, same strategy and devices)", comp.amp, comp))
    body.append(pairs_section("DDP vs DataParallel (same devices and precision)", comp.ddp_dp,
                              comp))
    body.append(quality_section(comp))
    body.append(convergence.html_section(comp))
    body.append(factorial.html_section(comp.factorial, comp.confidence))
    body.append(breakdown.html_section(comp.breakdown))
    body.append(stragglers.html_section(comp.stragglers))
    body += [section.html(section_table) for section, section_table in sections(comp)]
    body.append(samples_section(samples))
    body.append(environment_section(frame))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>bench report — {esc(Path(str(results_dir)).name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
