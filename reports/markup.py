"""The HTML report's building blocks: its inline stylesheet, escaping, number formatting,
tables and embedded figures. Cells passed to `table` are HTML already: callers escape text."""
from __future__ import annotations

import html
import math

import pandas as pd

from reports import plots

CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1200px; color: #222; font-size: 14px; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin-top: 20px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 12.5px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
tr.base td { background: #f7f7f7; }
.equivalent, .better, .ok, .improved { color: #1a7f37; }
.worse, .FAIL { color: #c62828; font-weight: bold; }
.inconclusive, .soft { color: #a36b00; }
.muted { color: #666; font-size: 12.5px; }
.box { background: #fff8e1; border: 1px solid #f0d68a; padding: 8px 12px; margin: 12px 0; }
.bad { background: #fdecea; border-color: #f5b7b1; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12.5px; }
code { background: #f3f3f3; padding: 0 3px; }
.ci { white-space: nowrap; color: #555; font-size: 11.5px; }
details { margin: 4px 0; }
"""

QUALITY_FORMATS = {"psnr": (".2f", "+.2f"), "ssim": (".4f", "+.4f"), "lpips": (".4f", "+.4f")}


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, spec: str = ".3g") -> str:
    try:
        if value is None or not math.isfinite(float(value)):
            return "—"
    except (TypeError, ValueError):
        return esc(value)
    return format(value, spec)


def mean_ci(mean, low, high, spec: str) -> str:
    if fmt(mean, spec) == "—":
        return "—"
    if fmt(low, spec) != "—" and fmt(high, spec) != "—":
        return f"{format(mean, spec)} ± {format((high - low) / 2, spec)}"
    return format(mean, spec)


def ratio_text(value, low, high) -> str:
    if fmt(value) == "—":
        return "—"
    text = f"{value:.2f}×"
    if fmt(low) != "—" and fmt(high) != "—":
        text += f'<br><span class="ci">[{low:.2f}–{high:.2f}]</span>'
    return text


def p_text(p) -> str:
    if fmt(p) == "—":
        return "—"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


SHORT_VERDICTS = {"equivalent": "≈ equivalent", "better": "▲ better", "worse": "▼ worse",
                  "inconclusive (n too small)": "? n too small",
                  "no verdict (weak scaling: other global batch)": "– weak scaling"}


def verdict_span(verdict, short: bool = False) -> str:
    if not isinstance(verdict, str) or not verdict:
        return "—"
    text = SHORT_VERDICTS.get(verdict, verdict) if short else verdict
    return (f'<span class="{esc(verdict.split(" ")[0])}" title="{esc(verdict)}">'
            f"{esc(text)}</span>")


def table(header: list[str], rows: list[list[str]], left: set[int] = frozenset(),
          row_classes: list[str] | None = None) -> str:
    """Cells are HTML already (callers escape text)."""
    head = "".join(f'<th class="l">{h}</th>' if i in left else f"<th>{h}</th>"
                   for i, h in enumerate(header))
    body = []
    for n, r in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        cells = "".join(f'<td class="l">{c}</td>' if i in left else f"<td>{c}</td>"
                        for i, c in enumerate(r))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(fig, alt: str, caption: str = "") -> str:
    uri = plots.to_data_uri(fig)
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="{uri}">{cap}</figure>'


def group_title(row) -> str:
    device = f", {row['cell.device_type']}" if row.get("cell.device_type") else ""
    return (f"{plots.model_name(row['cell.model'])} — σ {row['noise']}{device}, "
            f"workload {row['fingerprint']}")


def groups(frame: pd.DataFrame, keys: list[str]):
    return [g for _, g in frame.groupby(keys, sort=True, dropna=False)] if not frame.empty else []


def key_of(row, cols) -> dict:
    return {c: row[c] for c in cols}

