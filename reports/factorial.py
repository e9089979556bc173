"""The seed-claim decomposition (`bench.analysis.factorial`) as a console table, an HTML section
with a chart of the factor shares, and Markdown. Rendering only: every number comes from a
`FactorialResult`. The HTML part imports matplotlib lazily, so the console path stays light."""
from __future__ import annotations

from rich.table import Table

from reports.text import console, finite, fmt, fmt_mean_ci, fmt_ratio

TITLE = "seed claim decomposition"
HEADER = ["factor", "change", "share of saving", "saving", "2^k effect (time ×)"]


def _claims(result):
    """(model, device type, claim, its rows) in the order the analysis produced them."""
    rows = result.rows
    if rows.empty:
        return []
    keys = list(dict.fromkeys(zip(rows["model"], rows["device_type"], rows["claim"])))
    return [(m, d, c, rows[(rows["model"] == m) & (rows["device_type"] == d)
                           & (rows["claim"] == c)]) for m, d, c in keys]


def _pct(r, spec: str = ".1f") -> str:
    text = fmt_mean_ci(r["mean"], r["ci_low"], r["ci_high"], spec)
    return f"{text}%" if finite(r["mean"]) else text


def table_rows(rows) -> list[list[str]]:
    """Plain-text cells (console and Markdown): a row per factor, the largest interaction and
    the total with the seed's figure beside the measured one."""
    by = {(r["kind"], r["factor"]): r for _, r in rows.iterrows()}
    out = []
    for _, s in rows[rows["kind"] == "share"].iterrows():
        alone, main = by[("alone", s["factor"])], by[("main", s["factor"])]
        out.append([s["factor"], s["change"], _pct(s), _pct(alone),
                    fmt_ratio(main["mean"], main["ci_low"], main["ci_high"])])
    for _, r in rows[rows["kind"] == "interaction"].iterrows():
        out.append([r["factor"], r["change"], "—", "—",
                    fmt_ratio(r["mean"], r["ci_low"], r["ci_high"])])
    total = rows[rows["kind"] == "total"].iloc[0]
    seed = f" (seed: {total['seed_pct']:.2f}%)" if finite(total["seed_pct"]) else ""
    out.append(["total", total["change"], "100%", _pct(total) + seed, "—"])
    return out


def _title(model: str, device: str, claim: str) -> str:
    from bench.analysis.factorial import MODEL_NAMES
    return f"{MODEL_NAMES.get(model, model)}{f' ({device})' if device else ''}: {claim}"


def _caption(result, confidence: float, n: int) -> str:
    return (f"basis: {result.basis}, {n} repeat(s); share = the factor's Shapley value of "
            "ln(T base / T top) (shares sum to 100%); saving = 1 − T/T(seed single) with only "
            "that factor switched; 2^k effect = T(high)/T(low) averaged over the other factors; "
            f"± is the {confidence:.0%} t interval over repeats")


def render_console(result, confidence: float) -> None:
    """The tables, sentences and notes; nothing when the frame held no factorial design."""
    if result.empty:
        return
    out = console()
    for model, device, claim, rows in _claims(result):
        table = Table(title=f"{TITLE} — {_title(model, device, claim)}",
                      caption=_caption(result, confidence, int(rows["n_repeats"].max())),
                      caption_justify="left")
        for i, name in enumerate(HEADER):
            table.add_column(name, justify="left" if i < 2 else "right")
        for cells in table_rows(rows):
            table.add_row(*cells)
        out.print(table)
    for text in result.sentences:
        out.print(text)
    for note in result.notes:
        out.print(f"[dim]note: {note}[/dim]")


def markdown(result, confidence: float, md_table) -> str:
    if result.empty:
        return ""
    parts = ["## Seed claim decomposition\n"]
    for model, device, claim, rows in _claims(result):
        parts.append(f"### {_title(model, device, claim)}\n\n"
                     f"{_caption(result, confidence, int(rows['n_repeats'].max()))}.\n\n"
                     + md_table(HEADER, table_rows(rows)) + "\n")
    parts += [f"{s}\n" for s in result.sentences]
    parts += [f"- note: {n}" for n in result.notes]
    return "\n".join(parts) + "\n"


def share_chart(rows, title: str, confidence: float):
    """Horizontal bars: each factor's share of the saving with its interval."""
    import numpy as np

    from reports.plots import plt, styled

    @styled
    def draw():
        shares = rows[rows["kind"] == "share"]
        labels = [f"{f}\n{c}" for f, c in zip(shares["factor"], shares["change"])]
        mean = shares["mean"].to_numpy(float)
        err = np.vstack([mean - shares["ci_low"].to_numpy(float),
                         shares["ci_high"].to_numpy(float) - mean])
        fig, ax = plt.subplots(figsize=(6.5, 0.55 * len(labels) + 1.2))
        y = np.arange(len(labels))[::-1]
        ax.barh(y, mean, xerr=err, color="#4c72b0", capsize=4, height=0.6)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yticks(y, labels)
        ax.set_xlabel(f"share of the saving (%), error bars: {confidence:.0%} CI")
        ax.set_title(title)
        return fig
    return draw()


def html_section(result, confidence: float) -> str:
    if result.empty:
        return ""
    from reports.markup import esc, figure, table

    out = ["<h2>Seed claim decomposition</h2>",
           '<p class="muted">How much of each 2-GPU saving the seed study reported comes from '
           f"each factor it changed at once, measured at {esc(result.basis)} (each cell's "
           "time per sample over the same samples).</p>"]
    for model, device, claim, rows in _claims(result):
        title = _title(model, device, claim)
        total = rows[rows["kind"] == "total"].iloc[0]
        out.append(f"<h3>{esc(title)}</h3>")
        out.append(table(HEADER, [[esc(c) for c in cells] for cells in table_rows(rows)],
                         left={0, 1}))
        out.append(f'<p class="muted">{esc(_caption(result, confidence, total["n_repeats"]))}'
                   "</p>")
        if not (rows["kind"] == "share").any():  # the seed's runs alone: nothing to chart
            continue
        seed = f", seed {total['seed_pct']:.2f}%" if finite(total["seed_pct"]) else ""
        out.append(figure(share_chart(rows, f"{title}: {fmt(total['mean'], '.1f')}% saving"
                                            f"{seed}", confidence),
                          f"factor shares of the saving, {title}",
                          "Each factor's exact Shapley share of ln(T base / T top)."))
    if result.sentences:
        out.append("".join(f"<p>{esc(s)}</p>" for s in result.sentences))
    if result.notes:
        out.append('<div class="box">' + "<br>".join(esc(n) for n in result.notes) + "</div>")
    return "".join(out)
