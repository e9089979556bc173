"""The privacy audit as a section of `bench report`: how much of the clean image the noise
hides (protection), how much a model trained on noisy images gives back (recovered), and the
gap, per model, configuration, target and σ.

The core knows nothing of it: `register()` adds `PRIVACY` through `bench.plugins`, and the
report renders it wherever plug-in sections go (after the pairwise tables). Every process that
loads the plug-in imports this module, a cell's rank processes too, so the analysis and the
renderers (pandas, Rich, matplotlib) are imported only when a report is made.
"""
from __future__ import annotations

from bench import plugins
from bench.twosite.audit import STATEMENT, TRAINING_RUN

AUDIT_PARTS = ("protection", "recovered", "gap")
KEYS = ["cell.model", "config", "cell.devices", "cell.precision", "target", "measured_at",
        "clean_data_left_site_one", "sigma"]
COLUMNS = ("model", "config", "target", "σ", "protection PSNR", "recovered PSNR", "gap dB",
           "protection SSIM", "recovered SSIM", "mean of releases PSNR", "n", "measured by")
TEXT_COLUMNS = {"model", "config", "target", "measured by"}  # left-aligned


def _audited_rows(frame):
    """The ok rows with analysis's normalised keys and the record's own `audit.*` columns,
    which analysis does not keep (as plain objects, like the keys)."""
    import pandas as pd

    from bench.analysis import ok_rows, prepare

    rows = prepare(frame).reset_index(drop=True)
    raw = ok_rows(frame).reset_index(drop=True)
    audit = [c for c in raw.columns if c.startswith(("audit.", "two_site."))]
    return pd.concat([rows, raw[audit].astype(object)], axis=1) if audit else rows


def used_two_sites(r) -> bool:
    """Whether a record's cell took part in a two-site set-up: it trained on an obfuscated
    folder (`two_site`), or Site One's `bench evaluate` replaced its audit. Every training run
    scores its model on clean images and so carries an audit; a plain one-site run is not a
    privacy question, and its performance report shows no privacy table."""
    from bench.analysis.frame import is_missing

    if any(k.startswith("two_site.") and not is_missing(v) for k, v in r.items()):
        return True
    measured = r.get("audit.measured_at")
    return isinstance(measured, str) and measured != TRAINING_RUN


def _level_entries(r, levels) -> list[dict]:
    """One entry per audited σ of one record."""
    from bench.analysis import QUALITY_METRICS

    out = []
    for level in levels:
        entry = {"cell.model": r["cell.model"], "config": r["config"],
                 "cell.devices": r["cell.devices"], "cell.precision": r["cell.precision"],
                 "target": r.get("audit.target"), "measured_at": r.get("audit.measured_at"),
                 "clean_data_left_site_one": r.get("audit.clean_data_left_site_one"),
                 "sigma": float(level["sigma"])}
        for part in AUDIT_PARTS:
            for metric in QUALITY_METRICS:
                entry[f"{part}_{metric}"] = (level.get(part) or {}).get(metric)
        averaged = level.get("averaged") or {}
        entry["averaged_realisations"] = averaged.get("realisations")
        entry["averaged_psnr"] = averaged.get("psnr")
        out.append(entry)
    return out


def privacy_table(frame):
    """Per model, configuration, target and σ: what the obfuscation protects (noisy vs clean),
    what the model recovers (output vs clean) and the gap, means over repeats; plus the mean
    of the released realisations where a Site One `bench evaluate` measured it."""
    import pandas as pd

    rows = _audited_rows(frame)
    if "audit.levels" not in rows:
        return pd.DataFrame()
    out = []
    for _, r in rows.iterrows():
        if isinstance(r["audit.levels"], (list, tuple)) and used_two_sites(r):
            out += _level_entries(r, r["audit.levels"])
    if not out:
        return pd.DataFrame()
    long = pd.DataFrame(out)
    values = [c for c in long.columns if c not in KEYS]
    long[values] = long[values].apply(pd.to_numeric, errors="coerce")
    table_ = long.groupby(KEYS, sort=False, dropna=False)[values].mean().reset_index()
    table_["n"] = long.groupby(KEYS, sort=False, dropna=False).size().to_numpy()
    return table_.sort_values(["cell.model", "sigma", "cell.devices", "config", "cell.precision"],
                              kind="stable").reset_index(drop=True)


def privacy_cells(r) -> list[str]:
    """One row of the privacy audit as display text (the console and the HTML report)."""
    from reports.text import fmt

    return [r["cell.model"], f"{r['config']} ×{r['cell.devices']} {r['cell.precision']}",
            r["target"] or "—", f"{r['sigma']:g}", fmt(r["protection_psnr"], ".2f"),
            fmt(r["recovered_psnr"], ".2f"), fmt(r["gap_psnr"], "+.2f"),
            fmt(r["protection_ssim"], ".3f"), fmt(r["recovered_ssim"], ".3f"),
            fmt(r["averaged_psnr"], ".2f"), str(r["n"]), r["measured_at"] or "—"]


def render_console(privacy) -> None:
    """What the noise protects against what a model trained on it gives back."""
    from rich.table import Table

    from reports.text import console

    out = Table(title="privacy audit: obfuscated and denoised test images against the clean "
                      "ones (higher = more of the clean image visible)",
                caption=STATEMENT, caption_justify="left")
    for name in COLUMNS:
        out.add_column(name, justify="left" if name in TEXT_COLUMNS else "right")
    for _, r in privacy.iterrows():
        out.add_row(*privacy_cells(r))
    console().print(out)


def render_html(privacy) -> str:
    """The two-site question: how much of the clean image the noise hides, and how much a model
    trained on noisy images gives back."""
    from reports.markup import esc, table

    rows = [[esc(c) for c in privacy_cells(r)] for _, r in privacy.iterrows()]
    left = {i for i, name in enumerate(COLUMNS) if name in TEXT_COLUMNS}
    return ("<h2>Privacy audit</h2><p>Protection: the obfuscated (noisy) test image against the "
            "clean one. Recovered: the model's output from it. Higher PSNR / SSIM means more of "
            "the clean image is visible.</p>"
            + table(list(COLUMNS), rows, left=left)
            + f"<p class='box'><b>{esc(STATEMENT)}</b></p>")


def render_markdown(privacy) -> str:
    """Nothing: the md export has never carried the audit (nor have csv and json), and the
    exports stay as they were. An empty text adds no part to the export."""
    return ""


PRIVACY = plugins.ReportSection(name="privacy", table=privacy_table, console=render_console,
                                html=render_html, markdown=render_markdown)
