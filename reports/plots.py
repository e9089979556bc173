"""Figures for the HTML report (matplotlib, Agg backend: no display, nothing fetched).

Each function draws numbers that bench.analysis computed, or raw per-step / per-sample values
read beside the records; none computes a statistic of its own. `to_data_uri` turns a figure
into an embeddable base64 PNG.
"""
from __future__ import annotations

import base64
import functools
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MODEL_NAMES = {"unet": "U-Net", "unetpp": "U-Net++"}
METRIC_NAMES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS (lower is better)"}
# The values each metric can take: an interval reaching past them cannot be read as one.
METRIC_RANGE = {"psnr": (0.0, np.inf), "ssim": (-1.0, 1.0), "lpips": (0.0, np.inf)}
TOO_WIDE = "interval too wide to read: not drawn"
DPI = 100

# Applied while each figure is built, never to matplotlib's global state.
STYLE = {"figure.constrained_layout.use": True, "font.size": 9, "axes.titlesize": 10,
         "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False}


def styled(draw):
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # constrained layout: no second "tight" pass
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def config_name(row) -> str:
    return f"{row['config']} ×{int(row['cell.devices'])} {row['cell.precision']}"


def _half_widths(mean, low, high) -> np.ndarray:
    """Asymmetric error-bar extents (2, n); NaN (no bar drawn) where no interval exists."""
    mean, low, high = (np.asarray(v, dtype=float) for v in (mean, low, high))
    return np.vstack([mean - low, high - mean])


def readable(low, high, lowest: float = 0.0, highest: float = np.inf) -> np.ndarray:
    """Where an interval stays within the values the quantity can take (a time or throughput
    above 0, an SSIM within [−1, 1]). Outside, the t interval of too few repeats says nothing
    a bar could show: it is not drawn (never clipped) and its point is marked hollow."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return ~((low <= lowest) | (high > highest)) | np.isnan(low)


def _readable_errors(mean, low, high, lowest: float = 0.0,
                     highest: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """(error-bar extents, readable): the extents NaN (not drawn) where `readable` says no."""
    ok = readable(low, high, lowest, highest)
    err = _half_widths(mean, low, high)
    err[:, ~ok] = np.nan
    return err, ok


def _mark_too_wide(ax, x, y, ok: np.ndarray, colour="black", marker="o") -> None:
    if (~ok).any():
        ax.scatter(np.asarray(x, dtype=float)[~ok], np.asarray(y, dtype=float)[~ok],
                   facecolors="white", edgecolors=colour, s=40, zorder=4, marker=marker,
                   label=TOO_WIDE)


@styled
def train_time_points(summary: pd.DataFrame, repeats: pd.DataFrame, confidence: float):
    """Training time (timed window, at the nominal timed steps) per configuration: mean over
    repeats (a diamond) with its interval, and every repeat as a dot, on a log axis, where no
    drawn interval can reach below 0 s and equal ratios look equal. Points, not bars: a bar's
    height on a log axis means nothing."""
    labels = [config_name(r) for _, r in summary.iterrows()]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.2))
    x = np.arange(len(labels))
    err, ok = _readable_errors(summary["train_time_mean"], summary["train_time_ci_low"],
                               summary["train_time_ci_high"])
    ax.set_yscale("log")
    for i, (_, row) in enumerate(summary.iterrows()):
        colour = "#8c8c8c" if row["is_baseline"] else "#4c72b0"
        if ok[i]:  # the others are drawn hollow, without their interval, below
            ax.errorbar([i], [row["train_time_mean"]], yerr=err[:, i:i + 1], fmt="D",
                        color=colour, markersize=7, capsize=5, zorder=2)
        values = repeats.loc[repeats["cell_id"].isin(set(row["cell_ids"])),
                             "train_time_nominal_s"]
        spread = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(np.full(len(values), i) + 0.25 + spread[:len(values)], values,
                   color="black", s=10, zorder=3)
    _mark_too_wide(ax, x, summary["train_time_mean"], ok, marker="D")
    if (~ok).any():
        ax.legend(fontsize=8)
    plain = matplotlib.ticker.FormatStrFormatter("%.3g")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel("training time (s, log scale)")
    ax.set_title(f"training time per configuration ({confidence:.0%} CI)")
    return fig


@styled
def speedup_efficiency(summary: pd.DataFrame, confidence: float):
    """Throughput speedup and scaling efficiency against devices, with the ideal lines."""
    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    devices = summary["cell.devices"].astype(int)
    top = max(int(devices.max()), 2)
    ideal = np.arange(1, top + 1)
    ax_s.plot(ideal, ideal, "--", color="grey", label="ideal (linear)")
    ax_e.axhline(1.0, linestyle="--", color="grey", label="ideal (100%)")
    series = summary.groupby(["config", "cell.precision"], sort=False)
    offsets = np.linspace(-0.08, 0.08, max(series.ngroups, 1))
    for offset, ((config, precision), s) in zip(offsets, series):
        s = s.sort_values("cell.devices")
        x = s["cell.devices"].astype(float) + offset
        err = _half_widths(s["speedup_throughput"], s["speedup_ci_low"], s["speedup_ci_high"])
        label = f"{config} {precision}"
        ax_s.errorbar(x, s["speedup_throughput"], yerr=err, marker="o", capsize=3, label=label)
        ax_e.errorbar(x, s["efficiency"], yerr=_half_widths(
            s["efficiency"], s["efficiency_ci_low"], s["efficiency_ci_high"]),
            marker="o", capsize=3, label=label)
    kinds = sorted({str(k) for k in summary["efficiency_kind"].dropna()})
    ax_s.set_title(f"throughput speedup vs devices ({confidence:.0%} CI)")
    ax_e.set_title(f"scaling efficiency ({' / '.join(kinds) or 'strong'} scaling)")
    for ax in (ax_s, ax_e):
        ax.set_xlabel("devices")
        ax.set_xticks(ideal)
    # Ratios (geometric-mean intervals) on log scales: symmetric about 1×, never below 0.
    ax_s.set_yscale("log", base=2)
    ax_e.set_yscale("log", base=2)
    ax_s.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax_s.set_ylabel("speedup vs baseline (×)")
    ax_e.set_ylabel("speedup / devices")
    ax_e.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax_s.legend(fontsize=8, loc="upper left")
    return fig


@styled
def step_time_distributions(steps: pd.DataFrame, order: list[tuple]):
    """Timed step times per configuration (every repeat's steps pooled): box = quartiles,
    whiskers = p10–p90 (the harness's summary percentiles), line = median."""
    data, labels = [], []
    for key, label in order:
        sel = steps
        for col, value in key.items():
            sel = sel[sel[col] == value]
        if len(sel):
            data.append(sel["step_time_s"].to_numpy() * 1000)
            labels.append(label)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.2))
    if data:
        ax.boxplot(data, whis=(10, 90), showfliers=True, widths=0.5,
                   flierprops={"markersize": 3, "alpha": 0.5})
        ax.set_xticks(np.arange(1, len(labels) + 1), labels, rotation=20, ha="right")
    ax.set_ylabel("step time (ms)")
    ax.set_title("step-time distribution (timed steps only; whiskers p10–p90)")
    return fig


@styled
def telemetry_timeline(tele: pd.DataFrame, order: list[tuple]):
    """CPU %, GPU kernel-busy % and board power over time, one line per configuration (its
    lowest repeat); solid while timed, faint during set-up, warm-up and evaluation."""
    panels = [("proc_cpu_pct", "CPU % (process tree; 100 = 1 core)")]
    if tele["sys_cpu_pct_mean"].notna().any():
        panels.append(("sys_cpu_pct_mean", "system CPU % (mean over all cores)"))
    if tele["gpu_busy_pct"].notna().any():
        panels.append(("gpu_busy_pct", "GPU busy % (share of time a kernel ran)"))
    if tele["power_w"].notna().any():
        panels.append(("power_w", "GPU board power (W)"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.0, 2.2 * len(panels) + 0.4),
                             sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, label) in enumerate(order):
        sel = tele
        for col, value in key.items():
            sel = sel[sel[col] == value]
        if sel.empty:
            continue
        sel = sel[sel["cell.repeat"] == sel["cell.repeat"].min()].sort_values("t_rel_s")
        timed = sel["phase"] == "timed"
        colour = colours[i % len(colours)]
        for ax, (col, _) in zip(axes[:, 0], panels):
            ax.plot(sel["t_rel_s"], sel[col], color=colour, alpha=0.25, linewidth=1)
            ax.plot(sel["t_rel_s"].where(timed), sel[col].where(timed), color=colour,
                    linewidth=1.5, label=label)
    for ax, (_, title) in zip(axes[:, 0], panels):
        ax.set_ylabel(title.split(" (")[0])
        ax.set_title(title, loc="left", fontsize=9)
        ax.axvline(0, color="grey", linewidth=0.8, linestyle=":")
    axes[-1, 0].set_xlabel("seconds from the start of the timed window")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 4),
                   fontsize=8)
    return fig


@styled
def quality_vs_noise(quality: pd.DataFrame, confidence: float):
    """PSNR / SSIM / LPIPS against σ, one line per configuration, mean over repeats with its
    interval; the noisy input's own score dashed."""
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2))
    for ax, metric in zip(axes, ("psnr", "ssim", "lpips")):
        m = quality[quality["metric"] == metric]
        if m.empty:
            ax.set_visible(False)
            continue
        series = m.groupby(["config", "cell.devices", "cell.precision", "fingerprint"],
                           sort=False)
        multi_fp = m["fingerprint"].nunique() > 1
        # noise levels as evenly spaced categories; configurations side by side within one
        sigmas = np.sort(m["sigma"].unique())
        position = {sigma: i for i, sigma in enumerate(sigmas)}
        offsets = (np.arange(series.ngroups) - (series.ngroups - 1) / 2) * \
            (0.5 / max(series.ngroups, 1))
        for offset, ((config, dev, prec, fp), s) in zip(offsets, series):
            s = s.sort_values("sigma")
            label = f"{config} ×{dev} {prec}" + (f" [{fp[:6]}]" if multi_fp else "")
            err, ok = _readable_errors(s["mean"], s["ci_low"], s["ci_high"],
                                       *METRIC_RANGE[metric])
            x = s["sigma"].map(position) + offset
            line = ax.errorbar(x, s["mean"], yerr=err, marker="o", markersize=4, capsize=3,
                               label=label)
            _mark_too_wide(ax, x, s["mean"], ok, line.lines[0].get_color())
        noisy = m.groupby("sigma")["noisy_mean"].first().sort_index()
        if noisy.notna().any():
            ax.plot(noisy.index.map(position), noisy.to_numpy(), "--", color="grey",
                    marker="x", label="noisy input")
        ax.set_xlabel("noise σ")
        ax.set_title(METRIC_NAMES[metric])
        ax.set_xticks(range(len(sigmas)), [f"{v:g}" for v in sigmas])
        ax.set_xlim(-0.5, len(sigmas) - 0.5)
    # Every panel's entries once: a too-wide interval may show on one metric only.
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels, handles = list(entries), list(entries.values())
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5),
                   fontsize=8)
    fig.suptitle(f"quality on the test split vs noise level (error bars: {confidence:.0%} CI "
                 "over repeats)", fontsize=10)
    return fig


@styled
def sample_grid(samples: list[dict]):
    """Test images: noisy input | each model's output | clean target, drawn as one mosaic."""
    first = samples[0]
    columns = [("noisy input", first["noisy"])]
    columns += [(f"{model_name(s['model'])}\n{s['config']} ×{s['devices']} {s['precision']}",
                 s["output"]) for s in samples]
    columns.append(("clean", first["clean"]))
    rows = min(len(first["noisy"]), 4)
    tile = np.asarray(first["noisy"][0]).squeeze().shape
    pad = max(2, tile[0] // 16)
    height, width = rows * (tile[0] + pad) - pad, len(columns) * (tile[1] + pad) - pad
    mosaic = np.ones((height, width))
    for c, (_, images) in enumerate(columns):
        for r in range(rows):
            y, x = r * (tile[0] + pad), c * (tile[1] + pad)
            mosaic[y:y + tile[0], x:x + tile[1]] = np.clip(
                np.asarray(images[r], dtype=float).squeeze(), 0, 1)
    fig, ax = plt.subplots(figsize=(1.7 * len(columns), 1.7 * rows + 0.6))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([(tile[1] + pad) * c + tile[1] / 2 for c in range(len(columns))],
                  [title for title, _ in columns])
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(f"test images at σ={first['sigma']:g}", fontsize=10)
    return fig

