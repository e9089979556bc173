"""`bench predict --html`: each workload's predicted scaling efficiency against devices, one
curve per strategy, with the measured cells as points, and the prediction's table and
assumptions. Rendering only: every number comes from bench.analysis.predict."""
from __future__ import annotations

import time

from reports import plots
from reports.markup import CSS, esc, figure, fmt, table

HEADER = ["strategy", "devices", "compute ms", "data ms", "comm ms", "MiB/step", "measured MiB",
          "exposed ms", "step ms", "img/s", "efficiency", "measured", "error"]


def _pct(x) -> str:
    return fmt(100 * x, ".1f") + "%" if fmt(x) != "—" else "—"


def efficiency_plot(fam: dict):
    import matplotlib.pyplot as plt

    @plots.styled
    def draw():
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for i, strategy in enumerate(dict.fromkeys(r["strategy"] for r in fam["rows"])):
            rows = sorted((r for r in fam["rows"] if r["strategy"] == strategy),
                          key=lambda r: r["devices"])
            colour = f"C{i}"
            ax.plot([r["devices"] for r in rows], [100 * r["efficiency"] for r in rows],
                    "-", color=colour, label=f"{strategy} predicted")
            hits = [r for r in rows if r.get("measured_efficiency") is not None]
            if hits:
                ax.plot([r["devices"] for r in hits],
                        [100 * r["measured_efficiency"] for r in hits], "o", color=colour,
                        markersize=7, label=f"{strategy} measured")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("devices")
        ax.set_ylabel(f"{fam['scaling']} scaling efficiency (%)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{plots.model_name(fam['model'])} · {fam['device_type']} · "
                     f"{fam['parameters']:,} parameters")
        ax.legend(fontsize=8)
        return fig
    return draw()


def render_html(out: dict, source: str) -> str:
    body = [f"<h1>bench predict</h1><p class='muted'>from <code>{esc(source)}</code> · "
            f"generated {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"]
    for fam in out["families"]:
        title = (f"{plots.model_name(fam['model'])} — workload {fam['fingerprint']}, "
                 f"{fam['device_type']} ({fam.get('processor', '?')}): predicted from "
                 f"{fam['baseline_cell']}")
        body.append(f"<h2>{esc(title)}</h2>")
        body.append(figure(efficiency_plot(fam), f"predicted scaling efficiency, {title}",
                           "Lines: the cost model's prediction; points: measured cells of the "
                           "same workload and precision."))
        rows = [[esc(r["strategy"]), str(r["devices"]), fmt(r["compute_s"] * 1e3, ".2f"),
                 fmt(r["data_s"] * 1e3, ".2f"), fmt(r["comm_s"] * 1e3, ".2f"),
                 fmt(r["comm_message_bytes_per_step"] / 2**20, ".2f"),
                 fmt(r["measured_message_bytes_per_step"] / 2**20, ".2f")
                 if r.get("measured_message_bytes_per_step") is not None else "—", fmt(r["exposed_comm_s"] * 1e3, ".2f"),
                 fmt(r["step_s"] * 1e3, ".2f"), fmt(r["throughput_img_s"], ".1f"),
                 _pct(r["efficiency"]), _pct(r.get("measured_efficiency")),
                 fmt(100 * r["error"], "+.1f") + "%" if r.get("error") is not None else "—"]
                for r in fam["rows"]]
        body.append(table(HEADER, rows, left={0}))
        body.append("<p>Assumptions:</p><ul>" + "".join(
            f"<li>{esc(a)}</li>" for a in fam["assumptions"]) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>bench predict</title><style>{CSS}</style></head><body>{''.join(body)}"
            "</body></html>\n")
