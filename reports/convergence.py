"""Time to quality: the speedup at equal quality beside the fixed-step one. A column and a
target line under the console's summary table, an HTML section with the validation curves, and
Markdown. Rendering only: every number comes from the `Comparison`'s `convergence` table
(`bench.analysis.convergence.equal_quality`) and its `curves`; matplotlib is imported lazily, so
the console path stays light. A comparison without curves (older records) shows none of this.
"""
from __future__ import annotations

import math

from rich.markup import escape

from reports.text import console, finite, fmt, fmt_ratio, group_title, groups

TITLE = "Time to quality"
AMP = ("bf16", "fp16")  # the seed's "DDP+AMP" is DDP at either AMP precision
METHOD = ("speedup at equal quality = the baseline's training seconds to reach the target ÷ "
          "the configuration's (t interval over repeats, paired by seed where they pair up); "
          "seconds are timed training time, "
          "evaluation pauses excluded; the point where a curve reaches the target is "
          "interpolated between its evaluations")
COLUMN = "speedup at\nequal\nquality"  # the console summary's column, in short lines
SHORT = ("speedup at equal quality = the baseline's seconds to reach the target ÷ the "
         "configuration's (timed training, evaluation pauses excluded); below it, the mean "
         "samples to the target")


def tables(comp):
    """(convergence, curves): each configuration's time to the target and the validation
    curves, both empty where the comparison has none (records without validation)."""
    return comp.convergence, comp.curves


def _norm(value):
    """A key value comparable across tables: NaN and None alike, 2 and 2.0 alike."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            float(value).is_integer():
        return int(value)
    return value


def _key(row, keys) -> tuple:
    return tuple(_norm(row.get(k)) for k in keys)


def _select(frame, row, keys):
    """The rows of `frame` whose `keys` equal `row`'s."""
    if frame.empty:
        return frame
    want = _key(row, keys)
    return frame[[_key(r, keys) == want for _, r in frame.iterrows()]]


def for_group(comp, row):
    """The convergence rows of `row`'s workload group; empty: nothing to show for it."""
    from bench.analysis import GROUP_KEYS
    return _select(tables(comp)[0], row, GROUP_KEYS)


def _config(frame, row):
    """`row`'s configuration in `frame` (one row of the same group), or None."""
    from bench.analysis import CONFIG_KEYS
    sel = _select(frame, row, CONFIG_KEYS)
    return sel.iloc[0] if len(sel) else None


def metric_of(conv):
    """The curve metric (bench.record.curve.Metric) the table's targets are in."""
    from bench.record.curve import METRICS
    name = conv.attrs.get("metric") or (conv["metric"].iloc[0] if "metric" in conv and len(conv)
                                        else "psnr")
    return METRICS[name]


def label(row) -> str:
    return f"{row['config']} ×{int(row['cell.devices'])} {row['cell.precision']}"


def _reached(r) -> tuple[int, int]:
    return int(r["reached_n"]) if finite(r["reached_n"]) else 0, int(r["n"])


def not_reached(r) -> str:
    """'' when every repeat reached the target, else why there is no time to it: "no target",
    "not reached (1/3)"; never a blank that could read as missing data."""
    if not finite(r["target"]):
        return "no target"
    reached, n = _reached(r)
    return "" if n and reached == n else f"not reached ({reached}/{n})"


def _is_base(r, s) -> bool:
    """Whether the convergence row `r` (summary row `s`, or None) is the baseline."""
    flag = r.get("is_baseline")
    if flag is not None and flag == flag:  # NaN: a row merged from where it was missing
        return bool(flag)
    return s is not None and bool(s.get("is_baseline", False))


def speedup_text(r) -> str:
    """The speedup at equal quality with its interval, or why there is none."""
    return not_reached(r) or fmt_ratio(r["speedup_equal_quality"],
                                       r["speedup_equal_quality_ci_low"],
                                       r["speedup_equal_quality_ci_high"])


def samples_text(r) -> str:
    return f"{fmt(r['samples_to_target_mean'], ',.0f')} samples" if not not_reached(r) else ""


def seconds_text(value) -> str:
    if not finite(value):
        return "—"
    return f"{value:,.{2 if value < 10 else 1 if value < 1000 else 0}f}"


def lines(text: str) -> str:
    """A ratio and its interval, or "not reached" and its count, on two short lines."""
    return text.replace(" [", "\n[", 1).replace(" (", "\n(", 1)


def console_cell(conv_g, row) -> str:
    """The summary table's speedup-at-equal-quality cell of `row`: short lines (ratio,
    interval, samples), so that the column stays as narrow as the fixed-step speedup beside it."""
    r = _config(conv_g, row)
    if r is None:
        return "—"  # this configuration has no curve
    text = lines(speedup_text(r))
    return f"{text}\n{samples_text(r)}" if samples_text(r) else f"[yellow]{text}[/yellow]"


def target_lines(conv_g) -> list[str]:
    """One line per distinct target of the group: what it is and where it came from."""
    m = metric_of(conv_g)
    sign = "≥" if m.higher_is_better else "≤"
    out = []
    for target, text in dict.fromkeys(zip(conv_g["target"], conv_g["target_text"])):
        if isinstance(text, str) and text:
            out.append(f"target for equal quality: validation {m.label} {sign} {text}"
                       if finite(target) else f"equal quality: {text}")
    return list(dict.fromkeys(out))


def note_lines(conv_g) -> list[str]:
    """Each configuration's convergence note, but none that repeats the target line (a group
    without a target says why once)."""
    notes = [(label(r), r["convergence_note"]) for _, r in conv_g.iterrows()
             if isinstance(r["convergence_note"], str) and r["convergence_note"]
             and r["convergence_note"] != r["target_text"]]
    # the convergence check's own note already begins with the configuration's name
    return [note if note.startswith(who) else f"{who}: {note}" for who, note in notes]


def seed_claims(conv_g, summary_g, baseline: str) -> list[str]:
    """The seed's "DDP+AMP trades some accuracy for speed" claim, measured where it matters:
    what each DDP AMP configuration saves to reach the same validation quality as the
    baseline (the fixed-step saving beside it, for contrast)."""
    m = metric_of(conv_g)
    out = []
    for _, r in conv_g.iterrows():
        s = _config(summary_g, r)
        if r["cell.strategy"] != "ddp" or r["cell.precision"] not in AMP or _is_base(r, s):
            continue
        if not finite(r["target"]):
            continue  # the target line says why there is none
        head = (f"{r['cell.model']}: the seed's DDP+AMP claim at equal quality "
                f"({m.text(r['target'])}): {label(r)}")
        speedup = r["speedup_equal_quality"]
        if not_reached(r):
            reached, n = _reached(r)
            out.append(f"{head} did not reach it in {n - reached} of {n} repeat(s)")
            continue
        if not finite(speedup):
            out.append(f"{head} reached it, but no speedup could be formed against {baseline}")
            continue
        # 1 − 1/speedup: the time saving the speedup shown means (a monotone map of it)
        saving = 100 * (1 - 1 / speedup)
        ratio = fmt_ratio(speedup, r["speedup_equal_quality_ci_low"],
                          r["speedup_equal_quality_ci_high"])
        # at equal steps, in time: per sample (time_saving_pct) would not be for weak scaling
        fixed = 100 * (1 - 1 / s["speedup_time"]) \
            if s is not None and finite(s.get("speedup_time")) and s["speedup_time"] > 0 else None
        out.append(f"{head} takes {_less(saving)} than {baseline}, {ratio}"
                   + (f" (at equal steps: {_less(fixed)})" if finite(fixed) else ""))
    return out


def _less(saving_pct: float) -> str:
    return f"{abs(saving_pct):.0f}% {'less' if saving_pct >= 0 else 'more'} time"


def render_console(conv_g, summary_g, baseline: str) -> None:
    """Under a group's summary table: the target and its source, the seed claim at equal
    quality, each configuration's convergence note; nothing for a group without curves."""
    if conv_g.empty:
        return
    out = console()
    for line in target_lines(conv_g):
        out.print(escape(line))
    out.print(f"[dim]{SHORT}[/dim]")
    for line in seed_claims(conv_g, summary_g, baseline):
        out.print(escape(line))
    for line in note_lines(conv_g):
        out.print(f"[dim]note: {escape(line)}[/dim]")


# --- HTML and Markdown -------------------------------------------------------------------------

HEADER = ["configuration", "n", "fixed-step speedup", "speedup at equal quality",
          "seconds to target", "samples to target", "samples vs baseline", "reached",
          "note"]


def row_cells(r, s, ratio=fmt_ratio) -> list[str]:
    """Plain cells of one configuration: `r` its convergence row, `s` its summary row (or
    None); `ratio` formats a ratio with its interval (plain text or HTML)."""
    reached, n = _reached(r)
    fixed = fixed_step(s, ratio)
    equal = not_reached(r) or ratio(r["speedup_equal_quality"],
                                    r["speedup_equal_quality_ci_low"],
                                    r["speedup_equal_quality_ci_high"])
    pct = r.get("samples_vs_baseline_pct")
    return [label(r) + (" (baseline)" if _is_base(r, s) else ""),
            str(n), fixed, equal, seconds_text(r["seconds_to_target_mean"]),
            fmt(r["samples_to_target_mean"], ",.0f"),
            f"{pct:+.0f}%" if finite(pct) else "—", f"{reached} of {n}",
            r["convergence_note"] if isinstance(r["convergence_note"], str) else ""]


def fixed_step(s, ratio=fmt_ratio) -> str:
    """The fixed-step speedup in time, the counterpart of a time to target: the throughput
    ratio (with its interval) where the samples per step are the baseline's; for a weak-scaling
    cell, which trains more samples a step, the ratio of training times at equal steps."""
    if s is None:
        return "—"
    if s.get("scaling") == "weak":
        return f"{fmt(s['speedup_time'], '.2f')}× (time at equal steps)"
    return ratio(s["speedup_throughput"], s["speedup_ci_low"], s["speedup_ci_high"])


def _groups(comp):
    """(convergence rows, summary rows) per workload group that has curves."""
    from bench.analysis import GROUP_KEYS
    conv = tables(comp)[0]
    return [(g, _select(comp.summary, g.iloc[0], GROUP_KEYS)) for g in groups(conv, GROUP_KEYS)]


def markdown(comp, md_table) -> str:
    if tables(comp)[0].empty:
        return ""
    parts = [f"## {TITLE}\n\n{METHOD[0].upper()}{METHOD[1:]}.\n"]
    for conv_g, summary_g in _groups(comp):
        parts.append(f"### {group_title(conv_g.iloc[0], TITLE)}\n\n"
                     + "\n".join(f"{t}." for t in target_lines(conv_g)) + "\n\n"
                     + md_table(HEADER, [row_cells(r, _config(summary_g, r))
                                         for _, r in conv_g.iterrows()]) + "\n")
        parts += [f"{s}.\n" for s in seed_claims(conv_g, summary_g, comp.baseline.label)]
    return "\n".join(parts)


def curves_figure(curves_g, conv_g, summary_g, title: str):
    """The validation metric against training seconds and against samples, one colour per
    configuration, the target dashed, a marker where each configuration reaches it."""
    from bench.analysis import CONFIG_KEYS
    from reports.plots import plt, styled

    m = metric_of(conv_g)

    @styled
    def draw():
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.6), sharey=True)
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (_, r) in enumerate(conv_g.iterrows()):
            baseline = _is_base(r, _config(summary_g, r))
            colour = "#8c8c8c" if baseline else colours[i % len(colours)]  # grey as elsewhere
            # Every repeat as its own thin line, no mean curve: repeats are evaluated at
            # different seconds, so a mean curve would be a statistic of the report's own
            # making; the spread between repeats is what a reader should see.
            cells = _select(curves_g, r, CONFIG_KEYS)
            for n, (_, c) in enumerate(cells.groupby("cell_id", sort=True)):
                c = c.sort_values("step")
                for ax, x in zip(axes, ("seconds", "samples")):
                    ax.plot(c[x].astype(float), c["value"].astype(float), color=colour,
                            linewidth=1, alpha=0.7,
                            label=" — ".join(filter(None, (label(r), not_reached(r))))
                            if n == 0 else None)
            if not not_reached(r):
                for ax, x in zip(axes, ("seconds_to_target_mean", "samples_to_target_mean")):
                    ax.scatter([r[x]], [r["target"]], color=colour, edgecolors="black", s=55,
                               zorder=5, marker="D")
        targets = [t for t in dict.fromkeys(conv_g["target"]) if finite(t)]
        for ax in axes:
            for t in targets:
                ax.axhline(t, color="grey", linestyle="--", linewidth=1)
        if targets:
            axes[0].plot([], [], color="grey", linestyle="--", label="target")
            axes[0].scatter([], [], color="white", edgecolors="black", marker="D",
                            label="reaches the target (mean over repeats)")
        unit = f" ({m.unit})" if m.unit else ""
        axes[0].set_ylabel(f"validation {m.label}{unit}")
        axes[0].set_xlabel("training seconds (timed; evaluation pauses excluded)")
        axes[1].set_xlabel("training samples")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4),
                       fontsize=8)
        fig.suptitle(title, fontsize=10)
        return fig
    return draw()


def curve_figures(comp):
    """(the group's model, its title, the figure) for each workload group with validation
    curves: the figures the HTML section shows, for a caller that saves them elsewhere
    (scripts/readme_pictures.py)."""
    from bench.analysis import GROUP_KEYS
    from reports.markup import group_title

    for conv_g, summary_g in _groups(comp):
        first = conv_g.iloc[0]
        sel = _select(tables(comp)[1], first, GROUP_KEYS)
        if not sel.empty:
            title = group_title(first)
            yield first["cell.model"], title, curves_figure(sel, conv_g, summary_g, title)


def html_section(comp) -> str:
    conv, curves = tables(comp)
    if conv.empty:
        return ""
    from bench.analysis import GROUP_KEYS
    from reports.markup import esc, figure, group_title, ratio_text, table

    out = [f"<h2>{TITLE}</h2>", f'<p class="muted">{esc(METHOD[0].upper() + METHOD[1:])}. '
           "Fixed-step speedup: the same number of steps, whatever quality they reach.</p>"]
    for conv_g, summary_g in _groups(comp):
        first = conv_g.iloc[0]
        title = group_title(first)
        out.append(f"<h3>{esc(title)}</h3>")
        out.append("".join(f"<p><b>{esc(t)}</b></p>" for t in target_lines(conv_g)))
        rows, classes = [], []
        for _, r in conv_g.iterrows():
            s = _config(summary_g, r)
            cells = row_cells(r, s, ratio=ratio_text)
            # the two ratio cells are HTML already (ratio_text); "not reached" is plain
            rows.append([c if i in (2, 3) else esc(c) for i, c in enumerate(cells)])
            classes.append("base" if _is_base(r, s) else "")
        out.append(table(HEADER, rows, left={0, 8}, row_classes=classes))
        sel = _select(curves, first, GROUP_KEYS)
        if not sel.empty:
            out.append(figure(curves_figure(sel, conv_g, summary_g, title),
                              f"validation curves, {title}",
                              "Thin lines: each repeat's validation curve; dashed: the target; "
                              "◆: where the configuration reaches it (mean seconds and samples "
                              "over repeats)."))
        # the convergence notes are in the table's last column
        out += [f"<p>{esc(s)}.</p>" for s in seed_claims(conv_g, summary_g, comp.baseline.label)]
    return "".join(out)
