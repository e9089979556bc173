"""The links a scaling prediction's collectives cross: bus bandwidth and latency, given, taken
from a `bench commbench` result (each link it measured apart: between nodes, within one), or
assumed, and where each figure came from. Across nodes, a ring is priced at two levels.
"""
from __future__ import annotations

import math

from bench.errors import BadInput

# Assumed links when neither overrides nor a commbench result are given (bus bandwidth in
# GB/s = 1e9 B/s, latency in µs). Stated with every prediction.
DEFAULT_LINKS = {
    "cpu": {"bandwidth_gbs": 2.0, "latency_us": 50.0,
            "source": "assumed: gloo over loopback TCP on one host"},
    "cuda": {"bandwidth_gbs": 100.0, "latency_us": 10.0,
             "source": "assumed: NVLink-class intra-node busbw"},
    "cuda-internode": {"bandwidth_gbs": 12.5, "latency_us": 20.0,
                       "source": "assumed: 100 Gb/s InfiniBand per GPU between nodes"},
    "cpu-internode": {"bandwidth_gbs": 1.25, "latency_us": 50.0,
                      "source": "assumed: gloo over 10 Gb/s Ethernet between nodes"},
}


def links_from_commbench(data: dict) -> dict:
    """Bus bandwidth (GB/s) and latency (µs) from a commbench result. Accepted forms:
    - simple: {"bandwidth_gbs": B, "latency_us": L};
    - `bench commbench --json`: {"layout": {"world_size": n, ...}, "results": [{"op":
      "all_reduce", "bytes": S, "time_s": T, "algbw_gbs": .., "busbw_gbs": ..}, ...]}
      (keys `algbw`/`busbw` are read too). A least-squares fit of the ring formula
      t = a + b·S over the all-reduce rows gives bw = 2(n−1)/n / b and latency = a / 2(n−1)
      (the smallest message's time where a ≤ 0); where the slope is not positive, the
      largest message's busbw (the sustained rate, nccl-tests' headline) is used."""
    if "bandwidth_gbs" in data:
        return {"bandwidth_gbs": float(data["bandwidth_gbs"]),
                "latency_us": float(data.get("latency_us", 0.0)),
                "source": "commbench (simple form)"}
    rows = [r for r in data.get("results", []) if r.get("op", "all_reduce") == "all_reduce"]
    if not rows:
        raise BadInput("the commbench result has no all_reduce rows; give bandwidth_gbs and "
                       "latency_us, or a `bench commbench --json` result")
    n = int(data.get("layout", {}).get("world_size") or data.get("world_size") or 2)
    xs = [float(r["bytes"]) for r in rows]
    ys = [float(r.get("time_s", r.get("time_us", 0) / 1e6)) for r in rows]
    busbw = [float(r.get("busbw_gbs", r.get("busbw", 0.0))) for r in rows]
    a = b = math.nan
    if len(rows) >= 2:
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx > 0:
            b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
            a = my - b * mx
    smallest_lat = ys[xs.index(min(xs))] / max(1, 2 * (n - 1)) * 1e6
    if b > 0 and n > 1:  # the slope is the sustained rate, whatever the intercept
        bw = 2 * (n - 1) / n / b / 1e9
        # Small messages faster than the line (a rate limiter's burst, a cache) pull the
        # intercept below zero: the smallest message then prices the latency.
        lat, how = (a / (2 * (n - 1)) * 1e6, "ring fit") if a > 0 else \
            (smallest_lat, "ring fit's slope, smallest message's time")
    else:
        largest = xs.index(max(xs))
        bw = busbw[largest] if busbw[largest] > 0 else xs[largest] / ys[largest] / 1e9
        lat, how = smallest_lat, "largest message's busbw, smallest message's time"
    return {"bandwidth_gbs": bw, "latency_us": lat,
            "source": f"commbench ×{n} ({how}, {len(rows)} all-reduce sizes)"}


def measured_links(commbench: dict) -> dict:
    """{link name or None: its figures} from a commbench result: each link it measured apart
    (`links`, from several nodes' ranks), or its one measurement named by `layout.nodes`
    (None where the file does not say)."""
    if commbench.get("links"):
        out = {}
        for name, link in commbench["links"].items():
            figures = links_from_commbench({"layout": {"world_size": link["world_size"]},
                                            "results": link["results"]})
            figures["source"] += f", {name} link measured by ranks " + \
                ", ".join(map(str, link["ranks"]))
            out[name] = figures
        return out
    figures = links_from_commbench(commbench)
    # `bench commbench --json` states its layout; the simple form may say "nodes".
    measured = (commbench.get("layout") or {}).get("nodes", commbench.get("nodes"))
    if measured is None:
        figures["source"] += "; the file does not say which link it measured"
        return {None: figures}
    name = "inter-node" if int(measured) > 1 else "intra-node"
    figures["source"] += f", {name} link"
    return {name: figures}


def resolve_links(device_type: str, nodes: int | None, bandwidth_gbs=None, latency_us=None,
                  commbench: dict | None = None) -> dict:
    """The link the prediction's collectives cross, and where each figure came from. Ranks on
    several nodes cross the link between nodes: a commbench measured within one node does
    not stand for it, and is refused rather than carried over. Across nodes, `intra_node`
    holds the link between a node's own ranks too (measured where the commbench had several
    ranks per node, else assumed): a ring with several ranks per node crosses both."""
    link = "inter-node" if nodes and nodes > 1 else "intra-node"
    device = "cuda" if device_type == "cuda" else "cpu"
    measured = measured_links(commbench) if commbench is not None else {}
    if commbench is not None and link not in measured and None not in measured:
        if bandwidth_gbs is None or latency_us is None:
            other = next(iter(measured))
            raise BadInput(
                f"the commbench result measured the {other} link "
                f"({'2+ nodes' if other == 'inter-node' else '1 node'}), but this prediction "
                f"(--nodes {nodes or 1}) crosses the {link} link; measure that one, or give "
                "its --bandwidth and --latency")
    if commbench is not None and (link in measured or None in measured):
        links = dict(measured.get(link) or measured[None])
    else:
        links = dict(DEFAULT_LINKS[device + ("-internode" if link == "inter-node" else "")])
    links["link"] = link
    if bandwidth_gbs is not None:
        links["bandwidth_gbs"], links["source"] = float(bandwidth_gbs), "given"
    if latency_us is not None:
        links["latency_us"] = float(latency_us)
        links["source"] = "given" if bandwidth_gbs is not None else links["source"] + \
            ", latency given"
    # Across nodes the intra-node link enters too: measured, or the default where the
    # inter-node figures are not the user's (a given --bandwidth is never undercut by it).
    if link == "inter-node" and ("intra-node" in measured or bandwidth_gbs is None):
        links["intra_node"] = dict(measured.get("intra-node") or DEFAULT_LINKS[device])
    return links


def ring_link(links: dict, n: int, nodes: int | None) -> tuple[float, float, str]:
    """(bus bandwidth in B/s, latency in s, how) for a ring of n ranks over `nodes` nodes
    (two levels): one rank per node crosses the inter-node link only; several per node
    chain through both, and every step of a ring waits for its slowest hop, so the ring runs
    at the slower link's bandwidth and the larger latency."""
    bw, lat = links["bandwidth_gbs"], links["latency_us"]
    intra = links.get("intra_node")
    if not intra or not nodes or n <= nodes:
        return bw * 1e9, lat * 1e-6, links.get("link", "intra-node")
    return (min(bw, intra["bandwidth_gbs"]) * 1e9, max(lat, intra["latency_us"]) * 1e-6,
            f"two-level: {n // nodes} ranks per node; the ring crosses the inter-node link "
            f"({bw:g} GB/s) and the intra-node link ({intra['bandwidth_gbs']:g} GB/s, "
            f"{intra['source']}) and runs at the slower")
