"""How much of the seed study's multi-GPU time saving each changed factor accounts for.

The seed's 2-GPU runs changed several factors at once (process model, precision, global batch,
data loader). A `seed-factorial` sweep runs the 2^k cells between the seed's single-GPU corner
and each 2-GPU corner at equal epochs; here the saving of each claim is split among its factors
with the exact Shapley value on log time (the shares sum to the whole saving), beside the
classical 2^k main effects and interactions. Every figure is computed per repeat (repeat r of
every cell) and then given as the mean with a t interval over repeats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.analysis.frame import _column, nominal_train_time, ok_rows
from bench.analysis.stats import CONFIDENCE, mean_ci

BASIS = "equal epochs"
EQUAL_EPOCHS_SPREAD = 1.25  # largest ratio of samples trained between cells still "equal epochs"

# The seed's published savings, 1 − T(2 GPUs)/T(1 GPU) in %, from its 10%-noise timing table
# (Adebayo & Khan, BIBE 2025, arXiv 2511.06006; docs/seed-study.md), e.g.
# U-Net DDP+AMP 1 − 2737/7328.2 = 62.65%, U-Net++ DP 1 − 12003.0/22717.1 = 47.16%.
SEED_SAVING_PCT = {"unet": {"DDP+AMP": 62.65, "DP": 36.34},
                   "unetpp": {"DDP+AMP": 64.67, "DP": 47.16}}
MODEL_NAMES = {"unet": "U-Net", "unetpp": "U-Net++"}

FACTORS = ("process", "precision", "batch", "loader")
LOADED = "workers + pinned"
UNLOADED = "0 workers"
COLUMNS = ["model", "device_type", "claim", "factor", "change", "kind", "unit", "mean",
           "ci_low", "ci_high", "n_repeats", "seed_pct"]


@dataclass(frozen=True)
class Claim:
    """One seed comparison: its base and top corners as (process, precision, batch, loader)."""
    name: str
    base: tuple
    top: tuple
    process_name: str  # what the sentence calls the process factor

    @property
    def switched(self) -> list[int]:
        return [i for i in range(len(FACTORS)) if self.base[i] != self.top[i]]

    def cell(self, mask: int) -> tuple:
        """The cell with the switched factors of bit set in `mask` at their top level."""
        out = list(self.base)
        for bit, i in enumerate(self.switched):
            if mask >> bit & 1:
                out[i] = self.top[i]
        return tuple(out)


SEED_SINGLE = ("single", "fp32", 16, UNLOADED)
CLAIMS = (Claim("DDP+AMP", SEED_SINGLE, ("ddp", "AMP", 64, LOADED), "DDP"),
          Claim("DP", SEED_SINGLE, ("dp", "fp32", 32, UNLOADED), "DataParallel"))


@dataclass
class FactorialResult:
    """Tidy rows (COLUMNS) per model, device type, claim, factor and kind: "total" (saving
    %), "share" (% of the saving, Shapley), "alone" (saving % with only that factor switched),
    "main" and "interaction" (classical 2^k effects as time ratios); notes and sentences."""
    rows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COLUMNS))
    notes: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    basis: str = BASIS

    @property
    def empty(self) -> bool:
        return self.rows.empty and not self.notes


def _key(cell: tuple) -> str:
    return "|".join(map(str, cell))


def describe(cell: tuple) -> str:
    process, precision, batch, loader = cell
    devices = 1 if process == "single" else 2
    return f"{process} ×{devices} {precision}, batch {batch}, {loader}"


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Every record at a level of each factor: model, device type, cell key, repeat, ok, the
    samples it trained (steps × global batch) and its time for those steps."""
    strategy = _column(frame, "cell.strategy", None)
    devices = pd.to_numeric(_column(frame, "cell.devices", 1), errors="coerce")
    process = strategy.where(((strategy == "single") & (devices == 1))
                             | (strategy.isin(["dp", "ddp"]) & (devices == 2)))
    precision = _column(frame, "cell.precision", "fp32").map(
        {"fp32": "fp32", "bf16": "AMP", "fp16": "AMP"})
    batch = pd.to_numeric(_column(frame, "cell.global_batch"), errors="coerce")
    batch = batch.where(_column(frame, "cell.scaling", "strong") != "weak", batch * devices)
    workers = pd.to_numeric(_column(frame, "cell.workers", 0), errors="coerce")
    pinned = _column(frame, "cell.pin_memory", False) == True  # noqa: E712 (None is False)
    loader = pd.Series(np.select([(workers == 0) & ~pinned, (workers > 0) & pinned],
                                 [UNLOADED, LOADED], ""), index=frame.index)
    keep = process.notna() & precision.notna() & batch.isin([16, 32, 64]) & (loader != "")
    rows = frame[keep]
    if rows.empty:
        return pd.DataFrame(columns=["model", "device_type", "key", "repeat", "ok", "items",
                                     "batch", "sample_time"])
    steps = pd.to_numeric(_column(rows, "cell.steps"), errors="coerce")
    warmup = pd.to_numeric(_column(rows, "cell.warmup"), errors="coerce").fillna(0)
    batch = batch[keep].astype(int)
    return pd.DataFrame({
        "model": _column(rows, "cell.model", "?").fillna("?"),
        "device_type": _column(rows, "cell.device_type", "").fillna(""),
        "key": [_key((p, q, b, lo)) for p, q, b, lo in
                zip(process[keep], precision[keep], batch, loader[keep])],
        "repeat": pd.to_numeric(_column(rows, "cell.repeat", 0), errors="coerce").fillna(0),
        "ok": _column(rows, "status", None) == "ok",
        "items": steps * batch, "batch": batch,
        # seconds per sample at the timed step rate (data waits included); scaled to the
        # group's epochs in _times
        "sample_time": nominal_train_time(rows) / ((steps - warmup) * batch),
    })


def decompose(frame: pd.DataFrame, confidence: float = CONFIDENCE) -> FactorialResult:
    """The seed-claim decomposition of every (model, device type) group holding both corners
    of a claim; an empty result when the frame holds no such design."""
    result = FactorialResult()
    needed = ("cell.strategy", "cell.global_batch", "cell.workers", "status")
    if frame.empty or any(c not in frame for c in needed) or ok_rows(frame).empty:
        return result
    cells = _cells(frame)
    present = set(zip(cells["model"], cells["device_type"], cells["key"]))  # any status
    rows = []
    for model, device in sorted({(m, d) for m, d, _ in present}):
        group = None
        for claim in CLAIMS:
            if {(model, device, _key(claim.base)), (model, device, _key(claim.top))} <= present:
                if group is None:
                    group = cells[(cells["model"] == model) & (cells["device_type"] == device)
                                  & cells["ok"]]
                rows += _claim(group, claim, model, device, confidence, result)
    if rows:
        result.rows = pd.DataFrame(rows, columns=COLUMNS)
    return result


def _model_label(model: str, device: str) -> str:
    return f"{MODEL_NAMES.get(model, model)}{f' ({device})' if device else ''}"


def _times(group: pd.DataFrame, claim: Claim, label: str, notes: list[str],
           masks: list[int] | None = None):
    """ln T per cell (row, by mask; default every mask) and repeat (column) over the repeats
    where every cell is ok; None, with a note saying why, where the claim cannot be
    decomposed."""
    if masks is None:
        masks = list(range(2 ** len(claim.switched)))
    keys = [_key(claim.cell(m)) for m in masks]
    used = group[group["key"].isin(keys)]
    missing = [k for k in keys if k not in set(used["key"])]
    if missing:
        more = f" and {len(missing) - 1} more cell(s)" if len(missing) > 1 else ""
        notes.append(f"{label}: not decomposed, the design is incomplete: no ok record of "
                     f"{describe(claim.cell(masks[keys.index(missing[0])]))}{more}.")
        return None
    if used.duplicated(["key", "repeat"]).any():
        notes.append(f"{label}: not decomposed, one cell and repeat has several records (other "
                     "noise levels or workloads in one folder?); report them separately.")
        return None
    items = used["items"].astype(float)
    if items.isna().any():
        notes.append(f"{label}: not decomposed, some records lack cell.steps, so {BASIS} "
                     "cannot be checked.")
        return None
    # At equal epochs each cell drops its own incomplete last batch per epoch, so the samples
    # differ by under one batch per epoch; equal steps would differ by the batch ratio (2-4×).
    if items.max() > EQUAL_EPOCHS_SPREAD * items.min():
        notes.append(f"{label}: not decomposed, the cells are not at {BASIS}: steps × global "
                     f"batch ranges from {items.min():.0f} to {items.max():.0f} samples.")
        return None
    # The response: the time to train the group's largest sample count at each cell's timed
    # rate, so neither the dropped tails nor the warm-up favour a cell.
    used = used.assign(epoch_time=used["sample_time"] * items.max())
    good = used[(used["epoch_time"] > 0) & np.isfinite(used["epoch_time"].astype(float))]
    by_key = {k: dict(zip(g["repeat"], g["epoch_time"])) for k, g in good.groupby("key")}
    repeats = sorted(set.intersection(*(set(by_key.get(k, {})) for k in keys)))
    every = sorted(set(used["repeat"]))
    if not repeats:
        notes.append(f"{label}: not decomposed, no repeat has a training time for all its "
                     f"{len(keys)} cells.")
        return None
    if len(repeats) < len(every):
        left = ", ".join(str(int(r)) for r in every if r not in repeats)
        notes.append(f"{label}: repeat(s) {left} left out, not every cell has a time.")
    return np.log([[float(by_key[k][r]) for r in repeats] for k in keys])


def effects(y: np.ndarray) -> dict:
    """Per-repeat decomposition of ln T (rows by mask of k switched factors, columns by
    repeat): L = ln(T_base/T_top), Shapley values φ (k rows, summing to L), each factor's
    saving alone (%), and the classical 2^k effects on ln T by factor subset (a bit mask)."""
    n_cells = y.shape[0]
    k = n_cells.bit_length() - 1
    full = n_cells - 1
    phi = np.zeros((k, y.shape[1]))
    for i in range(k):
        for s in range(n_cells):
            if not s >> i & 1:
                size = bin(s).count("1")
                weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                phi[i] += weight * (y[s] - y[s | 1 << i])  # v(S ∪ i) − v(S), v(S) = y0 − yS
    effect = {}
    for subset in range(1, n_cells):
        signs = np.array([(-1) ** bin(subset & ~m).count("1") for m in range(n_cells)])
        effect[subset] = signs @ y / 2 ** (k - 1)
    return {"L": y[0] - y[full], "phi": phi, "effect": effect,
            "alone": np.array([100 * (1 - np.exp(y[1 << i] - y[0])) for i in range(k)])}


def _claim(group, claim: Claim, model: str, device: str, confidence: float,
           result: FactorialResult) -> list[dict]:
    label = f"{_model_label(model, device)} {claim.name}"
    y, corners = _times(group, claim, label, result.notes), None
    if y is None:  # the seed's runs as it ran them (seed-confounded): the saving, undivided
        corners = _times(group, claim, label, [], [0, 2 ** len(claim.switched) - 1])
        if corners is None:
            return []
        y = corners
    names = [FACTORS[i] for i in claim.switched]
    changes = [f"{claim.base[i]} → {claim.top[i]}" for i in claim.switched]
    seed = SEED_SAVING_PCT.get(model, {}).get(claim.name, math.nan)

    def row(kind, factor, change, values, unit, log=False):
        m = mean_ci(values, confidence)
        stat = [m["mean"], m["ci_low"], m["ci_high"]]
        if log:  # effects on ln T shown as time ratios
            stat = [math.exp(v) if math.isfinite(v) else math.nan for v in stat]
        return dict(zip(COLUMNS, [model, device, claim.name, factor, change, kind, unit, *stat,
                                  m["n"], seed if kind == "total" else math.nan]))

    e = effects(y)
    out = [row("total", "all", f"seed single → seed {claim.name}",
               100 * (1 - np.exp(-e["L"])), "% saving")]
    if corners is not None:
        result.sentences.append(total_sentence(out[0], claim, MODEL_NAMES.get(model, model),
                                               device))
        return out
    for i, (name, change) in enumerate(zip(names, changes)):
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(row("share", name, change, 100 * e["phi"][i] / e["L"], "% of saving"))
    out += [row("alone", n, c, e["alone"][i], "% saving")
            for i, (n, c) in enumerate(zip(names, changes))]
    out += [row("main", n, c, e["effect"][1 << i], "time ratio", log=True)
            for i, (n, c) in enumerate(zip(names, changes))]
    pairs = [s for s in e["effect"] if bin(s).count("1") >= 2]
    if pairs:
        top = max(pairs, key=lambda s: abs(float(np.mean(e["effect"][s]))))
        joined = "×".join(n for i, n in enumerate(names) if top >> i & 1)
        out.append(row("interaction", joined, "largest 2^k interaction", e["effect"][top],
                       "time ratio", log=True))
    result.sentences.append(sentence(out, claim, MODEL_NAMES.get(model, model), device))
    return out


def _pm(r: dict) -> str:
    """The interval as a reader needs it: ± half-width, or that it spans zero."""
    low, high = r["ci_low"], r["ci_high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    if low <= 0 <= high:
        return " (not distinguishable from zero)"
    half = (high - low) / 2
    return f" (±{half:.0f})" if half >= 9.5 else f" (±{half:.2g})"


def total_sentence(total: dict, claim: Claim, model: str, device: str = "") -> str:
    """The saving of a claim measured end to end but not decomposed."""
    return (f"{model}'s {claim.name} run as the seed ran it saves {total['mean']:.1f}%"
            f"{_pm(total)} ({_seed_said(total, device)}); run the seed-factorial spec to split "
            "it among its factors.")


def _seed_said(total: dict, device: str) -> str:
    seed = f"seed: {total['seed_pct']:.2f}%" if math.isfinite(total["seed_pct"]) else "seed: —"
    return f"{device}; {seed}" if device else seed


def sentence(rows: list[dict], claim: Claim, model: str, device: str = "") -> str:
    """A plain sentence of one claim's decomposition (rows as `_claim` makes them)."""
    total = next(r for r in rows if r["kind"] == "total")
    shares = [r for r in rows if r["kind"] == "share"]
    alone = next(r for r in rows if r["kind"] == "alone" and r["factor"] == "process")
    seed = _seed_said(total, device)
    if total["ci_low"] <= 0 <= total["ci_high"]:
        return (f"{model}'s {claim.name} saving of {total['mean']:.1f}% ({seed}) is not "
                f"distinguishable from zero, so its shares say nothing.")

    def name(r):
        return claim.process_name if r["factor"] == "process" else r["factor"]
    first, rest = shares[0], shares[1:]
    others = "; " + ", ".join(f"{name(r)} {r['mean']:.0f}%{_pm(r)}" for r in rest) \
        if rest else ""
    return (f"Of {model}'s {total['mean']:.1f}%{_pm(total)} {claim.name} saving "
            f"({seed}), {name(first)} itself accounts for {first['mean']:.0f}%{_pm(first)}"
            f"{others}. {claim.process_name} alone saves {alone['mean']:.1f}%"
            f"{_pm(alone)}." + (" One repeat: no intervals." if total["n_repeats"] < 2
                                       else ""))
