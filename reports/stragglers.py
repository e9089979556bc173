"""Who made the other ranks wait (`bench.analysis.stragglers`): a per-rank table, the sentence
of each cell where a rank or a node stands out, and in HTML a strip of each rank's lateness
over the steps. Rendering only; matplotlib is imported lazily."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from bench.record import store

from reports.text import console, fmt

TITLE = "Who made the others wait"
HEADER = ["cell", "rank", "host", "late median ms", "late p90 ms", "last in", "from",
          "others wait"]
NOTE = ("lateness: a rank's arrival at the gradient synchronisation after the earliest rank's "
        "(for FSDP and DeepSpeed: its wait for data over the shortest), per timed step, each "
        "rank's own clock (record stragglers.method); a rank is named only beyond noise: {rule} "
        "(threshold {threshold})")


def _cell(row) -> str:
    return f"{row['model']} {row['config']} ×{row['devices']} {row['precision']} r{row['repeat']}"


def rank_rows(row) -> list[list[str]]:
    out = []
    for r in row["per_rank"]:
        named = r["rank"] == row["slowest_rank"]
        out.append([_cell(row), f"{r['rank']}{' ◀' if named else ''}", str(r["host"]),
                    fmt(1e3 * r["lateness_median_s"], ".3g"),
                    fmt(1e3 * r["lateness_p90_s"], ".3g"), f"{r['last_share']:.0%}",
                    (r["phase"] or "—") if row["measured"] == "arrival"
                    else f"{r['phase'] or '—'} (data only measured)",
                    f"{r['others_wait_share']:.0%}" if r.get("others_wait_share") is not None
                    else "—"])
    return out


def note(table) -> str:
    first = table.iloc[0]
    thresholds = sorted({fmt(1e3 * t, ".3g") for t in table["threshold_s"]})
    rule = first.get("rule") or "arrives after the other ranks' median by the threshold"
    return NOTE.format(rule=rule, threshold=f"{', '.join(thresholds)} ms")


def render_console(table) -> None:
    if table.empty:
        return
    out = console()
    t = Table(title=TITLE.lower() + " (timed steps)")
    for i, h in enumerate(HEADER):
        t.add_column(h, justify="left" if i in (0, 2, 6) else "right")
    for _, row in table.iterrows():
        for cells in rank_rows(row):
            t.add_row(*cells)
    out.print(t)
    sentences = [s for s in table["sentence"] if s]
    for s in sentences:
        out.print(f"  {s}")
    if not sentences:
        out.print("  no rank arrived late beyond noise in any cell.")
    out.print(f"[dim]{note(table)}[/dim]")


def lateness_strip(row, steps_path: Path):
    """Each rank's lateness over the cell's steps (warm-up greyed), one row of colour per
    rank; None where the cell's steps.parquet holds no lateness."""
    import pandas as pd

    from reports import plots
    import matplotlib.pyplot as plt
    import numpy as np

    try:
        steps = pd.read_parquet(steps_path)
    except (OSError, ValueError):
        return None
    columns = [f"lateness_rank{r['rank']}_s" for r in row["per_rank"]]
    if any(c not in steps for c in columns):
        return None

    @plots.styled
    def draw():
        late = 1e3 * steps[columns].to_numpy(float).T
        fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(columns) + 1.3))
        image = ax.imshow(late, aspect="auto", cmap="magma_r", interpolation="nearest",
                          vmin=0, extent=(-0.5, late.shape[1] - 0.5, len(columns) - 0.5, -0.5))
        warm = np.flatnonzero(steps["warmup"].to_numpy(bool))
        for s in warm:
            ax.axvspan(s - 0.5, s + 0.5, color="#dddddd", alpha=0.8, lw=0)
        ax.set_yticks(range(len(columns)), [f"rank {r['rank']}" for r in row["per_rank"]])
        ax.set_xlabel("step (grey: warm-up, not timed)")
        ax.grid(False)
        ax.set_title(_cell(row))
        fig.colorbar(image, ax=ax, label="late (ms)", pad=0.01)
        return fig
    return draw()


def html_section(table) -> str:
    if table.empty:
        return ""
    from reports.markup import esc, figure
    from reports.markup import table as html_table

    out = [f"<h2>{TITLE}</h2>", f'<p class="muted">{esc(note(table))}</p>']
    rows = [[esc(c) for c in cells] for _, row in table.iterrows() for cells in rank_rows(row)]
    out.append(html_table(HEADER, rows, left={0, 2, 6}))
    sentences = [s for s in table["sentence"] if s]
    out += [f"<p>{esc(s)}</p>" for s in sentences] or \
        ["<p>No rank arrived late beyond noise in any cell.</p>"]
    lowest = table.sort_values("repeat").drop_duplicates(["model", "noise", "fingerprint",
                                                          "config", "devices", "precision"])
    for _, row in lowest.iterrows():
        fig = lateness_strip(row, Path(str(row["_dir"])) / store.STEPS) \
            if row.get("_dir") else None
        if fig is not None:
            out.append(figure(fig, f"lateness per rank and step, {_cell(row)}",
                              "Each row is a rank; darker: later at the synchronisation."))
    return "".join(out)


def markdown(table, md_table) -> str:
    if table.empty:
        return ""
    parts = [f"## {TITLE}", note(table),
             md_table(HEADER, [c for _, row in table.iterrows() for c in rank_rows(row)])]
    parts += [s for s in table["sentence"] if s] or ["No rank arrived late beyond noise."]
    return "\n\n".join(parts)
