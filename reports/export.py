"""`bench report --format`: the comparison as Markdown (every table), CSV (the summary) or
JSON (every table, notes, failures). Rendering only: every number comes from a `Comparison`."""
from __future__ import annotations

import json

from reports import breakdown, convergence, factorial, stragglers
from reports.text import (QUALITY_UNITS, finite, fmt, fmt_mean_ci, fmt_p, fmt_ratio, groups,
                          group_title, saving_text, sections)

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
    if frame is None or frame.empty:
        return []
    # to_json turns NaN into null and numpy scalars into numbers
    return json.loads(frame.to_json(orient="records", double_precision=10))


def export_report(comp, fmt_name: str) -> str:
    """The comparison as Markdown (every table), CSV (the summary table, one row per
    configuration, every statistic) or JSON (every table, notes, failures, unreadable)."""
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
               "factorial": {"basis": comp.factorial.basis,
                             "rows": _json_records(comp.factorial.rows),
                             "notes": list(comp.factorial.notes),
                             "sentences": list(comp.factorial.sentences)},
               "breakdown": _json_records(_plain(comp.breakdown)),
               "failures": _json_records(comp.failures), "notes": list(comp.notes),
               "unreadable": list(comp.unreadable)}
        conv = convergence.tables(comp)[0]
        if not conv.empty:  # records without validation curves: the document as it was
            doc["convergence"] = _json_records(conv)
        if not comp.stragglers.empty:  # multi-rank cells with arrivals marked
            doc["stragglers"] = _json_records(comp.stragglers.drop(columns=["_dir"]))
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
    at = f"σ={comp.sigma:g}" if comp.sigma is not None else "each group's own σ"
    parts = [f"# bench report\n\nBaseline {comp.baseline.label}; quality at {at}; "
             f"± and [..] are {pct} t intervals over repeats.\n"]
    for g in groups(comp.summary, GROUP_KEYS):
        first = g.iloc[0]
        rows = []
        for _, r in g.iterrows():
            quality = []
            for metric, (_, spec, dspec) in QUALITY_UNITS.items():
                text = fmt(r.get(f"{metric}_mean"), spec)
                if not r["is_baseline"] and finite(r.get(f"{metric}_delta")):
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
                         saving_text(r), *quality,
                         fmt(r["energy_per_img_j"], ".3g"), fmt(r["gpu_busy_pct"], ".0f")])
        parts.append(f"## {group_title(first, 'Speedup summary')}\n\n" + _md_table(
            ["config", "devices", "precision", "n", "img/s", "CV", "train s", "speedup",
             "efficiency", "time saving", "PSNR dB (Δ, verdict)", "SSIM (Δ, verdict)",
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
    text = convergence.markdown(comp, _md_table)
    if text:
        parts.append(text)
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
    for text in (factorial.markdown(comp.factorial, comp.confidence, _md_table),
                 breakdown.markdown(comp.breakdown, _md_table),
                 stragglers.markdown(comp.stragglers, _md_table)):
        if text:
            parts.append(text)
    for section, table in sections(comp):
        text = section.markdown(table) if section.markdown else ""
        if text:  # a section with nothing to say in Markdown adds no part
            parts.append(text)
    extra = [f"- note: {n}" for n in comp.notes]
    extra += [f"- {f['cell_id']}: {f['status']} — {f['message']}"
              for _, f in comp.failures.iterrows()]
    extra += [f"- unreadable record: {p}" for p in comp.unreadable]
    if extra:
        parts.append("## Notes\n\n" + "\n".join(extra) + "\n")
    return "\n".join(parts)
