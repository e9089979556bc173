"""Where the time goes (`bench.analysis.breakdown`): a console table and an HTML section with
one stacked bar per configuration, and each configuration's sentence. Rendering only; the HTML
part imports matplotlib lazily, so the console path stays light."""
from __future__ import annotations

from rich.table import Table

from reports.text import console, fmt, group_title, groups

FRACTIONS = ("data", "forward", "backward", "comm_exposed", "optimizer", "other")
LABELS = {"data": "data", "forward": "forward", "backward": "backward",
          "comm_exposed": "exposed comm", "optimizer": "optimizer", "other": "other"}
COLOURS = {"data": "#8c8c8c", "forward": "#4c72b0", "backward": "#55a868",
           "comm_exposed": "#c44e52", "optimizer": "#dd8452", "other": "#ccb974"}
GROUP = ["cell.model", "noise", "fingerprint", "cell.device_type"]
HEADER = ["configuration", *(LABELS[f] for f in FRACTIONS), "comm MiB/step", "overlap"]


def _label(row) -> str:
    return f"{row['config']} ×{int(row['cell.devices'])} {row['cell.precision']}"


def row_cells(row) -> list[str]:
    return [_label(row), *(fmt(100 * row[f], ".1f") + "%" for f in FRACTIONS),
            fmt(row["comm_message_bytes_per_step"] / 2**20, ".2f"), fmt(100 * row["comm_overlap"], ".0f")
            + ("%" if fmt(row["comm_overlap"]) != "—" else "")]


def render_console(table) -> None:
    out = console()
    for g in groups(table, GROUP):
        t = Table(title=group_title(g.iloc[0], "where the timed window goes"))
        for i, h in enumerate(HEADER):
            t.add_column(h, justify="left" if i == 0 else "right")
        for _, row in g.iterrows():
            t.add_row(*row_cells(row))
        out.print(t)
        for s in g["sentence"]:
            out.print(f"  {s}")
    if not table.empty:
        out.print(f"[dim]{METHOD_NOTE}[/dim]")


METHOD_NOTE = ("fractions of the timed window, from profiled probe steps after it (record "
               "breakdown.method); exposed comm = communication not hidden behind the rank's "
               "own computation; the sentence compares the time per sample with that of the "
               "baseline's strategy and devices at the same precision × its devices ÷ devices")


def stacked_bars(g, title: str):
    from reports import plots
    import matplotlib.pyplot as plt
    import numpy as np

    @plots.styled
    def draw():
        labels = [_label(r) for _, r in g.iterrows()]
        fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.4))
        y = np.arange(len(labels))[::-1]
        left = np.zeros(len(labels))
        for f in FRACTIONS:
            width = 100 * g[f].to_numpy(float)
            ax.barh(y, width, left=left, color=COLOURS[f], label=LABELS[f], height=0.6)
            left += width
        ax.set_yticks(y, labels)
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of the timed window (%)")
        ax.set_title(title)
        ax.legend(ncol=6, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.25),
                  frameon=False)
        return fig
    return draw()


def html_section(table) -> str:
    if table.empty:
        return ""
    from reports.markup import esc, figure
    from reports.markup import table as html_table

    out = ["<h2>Where the time goes</h2>", f'<p class="muted">{esc(METHOD_NOTE)}</p>']
    for g in groups(table, GROUP):
        title = group_title(g.iloc[0], "timed window")
        out.append(f"<h3>{esc(title)}</h3>")
        out.append(figure(stacked_bars(g, title), f"stacked time breakdown, {title}",
                          "Each bar is one configuration's timed window (mean over repeats)."))
        out.append(html_table(HEADER, [[esc(c) for c in row_cells(r)] for _, r in g.iterrows()],
                              left={0}))
        out.append("".join(f"<p>{esc(s)}</p>" for s in g["sentence"]))
    return "".join(out)


def markdown(table, md_table) -> str:
    if table.empty:
        return ""
    parts = ["## Where the time goes", METHOD_NOTE]
    for g in groups(table, GROUP):
        parts.append(f"### {group_title(g.iloc[0], 'timed window')}")
        parts.append(md_table(HEADER, [row_cells(r) for _, r in g.iterrows()]))
        parts += list(g["sentence"])
    return "\n\n".join(parts)
