"""What the console, the exports and the gate share: the Rich console, number formatting and
the plug-in report sections to show. Rendering only; no statistics here."""
from __future__ import annotations

import math
from functools import lru_cache

from rich.console import Console

from bench import plugins


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A reader that stopped early: bench.cli.main ends every command the same way
        (Rich's own answer would exit 1, which `run` and `compare` mean as a failure)."""
        raise BrokenPipeError


@lru_cache(maxsize=1)
def console() -> Console:
    # Piped output (logs, CI, Slurm) would otherwise wrap every table at 80 columns.
    probe = Console()
    return _Console(highlight=False, width=None if probe.is_terminal else 160)


def fmt(value, spec: str = ".3g", missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


VERDICT_STYLE = {"equivalent": ("≈", "green"), "better": ("▲", "green"), "worse": ("▼", "red"),
                 "inconclusive (n too small)": ("?", "yellow"), "baseline": ("", "dim"),
                 "no baseline": ("", "dim"),
                 "no verdict (weak scaling: other global batch)": ("–", "dim")}
QUALITY_UNITS = {"psnr": ("PSNR dB", ".2f", "+.2f"), "ssim": ("SSIM", ".4f", "+.4f"),
                 "lpips": ("LPIPS", ".4f", "+.4f")}


def finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_mean_ci(mean, low, high, spec: str = ".3g") -> str:
    """`mean ± half-width` when an interval exists, else the mean alone."""
    if not finite(mean):
        return "—"
    if finite(low) and finite(high):
        return f"{format(mean, spec)} ± {format((high - low) / 2, spec)}"
    return format(mean, spec)


def fmt_ratio(value, low=None, high=None) -> str:
    if not finite(value):
        return "—"
    text = f"{value:.2f}×"
    if finite(low) and finite(high):
        text += f" [{low:.2f}–{high:.2f}]"
    return text


def saving_text(row) -> str:
    """The time saving, saying "per sample" where a weak-scaling cell trained more samples
    than its baseline (its whole-run time would compare different work)."""
    if not finite(row.get("time_saving_pct")):
        return "—"
    basis = " per sample" if row.get("saving_basis") == "per sample" else ""
    return f"{row['time_saving_pct']:+.1f}%{basis}"


ROW_NOTES = ("input_note", "interval_note", "efficiency_note")


def row_notes(row, keys=ROW_NOTES) -> list[str]:
    """What a reader of one summary row must know: a model worse than its noisy input, an
    interval wider than the effect, an efficiency left blank and why (the run-to-run spread,
    `variation_note`, is among the console's closing notes already)."""
    label = f"{row['config']} ×{row['cell.devices']} {row['cell.precision']}"
    return [f"{label}: {row[key]}" for key in keys if row.get(key)]


def fmt_p(p) -> str:
    if not finite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def verdict_markup(verdict: str, short: bool = True) -> str:
    mark, style = VERDICT_STYLE.get(verdict, ("", ""))
    text = mark if short else verdict
    return f"[{style}]{text}[/{style}]" if text and style else text


def group_title(row, what: str) -> str:
    device = f", {row['cell.device_type']}" if row.get("cell.device_type") else ""
    return (f"{what} — {row['cell.model']}, σ {row['noise']}{device}, "
            f"workload {row['fingerprint']}")


def groups(frame, keys):
    return [g for _, g in frame.groupby(keys, sort=True, dropna=False)] if not frame.empty else []


def sections(comp) -> list[tuple[plugins.ReportSection, object]]:
    """The registered report sections that have something to show, each with its table from
    the comparison, in registration order. A section whose table is missing (the comparison
    was computed without it) or empty is left out."""
    out = []
    for section in plugins.report_sections():
        table = comp.sections.get(section.name)
        if table is not None and not table.empty:
            out.append((section, table))
    return out
