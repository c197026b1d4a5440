#!/usr/bin/env python3
"""Range-query latency of Prometheus and fleetmon, side by side, over HTTP on loopback.

    client.py PROM_BASE FLEETMON_BASE START_S END_S RUNS

Each query class runs RUNS times against both (alternating, so both see the same machine
load); the first run of each is a warm-up and is not timed. Prints a markdown table (median
and p90 per side, ratio of medians) and then the agreement check of each class: the same
series, the same timestamps, values within 1e-6 relative. Exits 1 if any class disagrees.
"""

import json
import math
import sys
import time
import urllib.parse
import urllib.request

HOUR = 3600

# (class, query, step in seconds)
QUERIES = [
    ("selector", "cpu_core_usage_ratio", 300),
    ("rate", "rate(network_receive_bytes_total[5m])", 300),
    ("sum by (site)", "sum by (site) (rate(network_receive_bytes_total[5m]))", 300),
    ("topk", "topk(5, cpu_usage_ratio)", 300),
    ("subquery", "max_over_time(rate(network_receive_bytes_total[5m])[30m:1m])", 300),
    ("rollup max 1h", "max_over_time(cpu_usage_ratio[1h])", HOUR),
    ("rollup avg 1h", "avg_over_time(temperature_celsius[1h])", HOUR),
    ("rollup max 6h", "max_over_time(cpu_core_usage_ratio[6h])", HOUR),
    ("rollup max 5m", "max_over_time(cpu_usage_ratio[5m])", 300),
    ("ratio", "rate(network_receive_bytes_total[5m]) / rate(network_receive_packets_total[5m])", 300),
    ("quantile", "quantile(0.9, cpu_core_usage_ratio)", 300),
    (
        "label_replace",
        'label_replace(rate(network_receive_bytes_total[5m]), "port", "$1", "interface", "(.*)")',
        300,
    ),
]


def run(url, query, start, end, step):
    body = urllib.parse.urlencode(
        {"query": query, "start": start, "end": end, "step": step}
    ).encode()
    t = time.perf_counter()
    with urllib.request.urlopen(url, data=body, timeout=300) as r:
        data = r.read()
    ms = (time.perf_counter() - t) * 1000
    doc = json.loads(data)
    if doc.get("status") != "success":
        raise RuntimeError(f"{url} {query}: {doc}")
    return ms, doc["data"]["result"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, math.ceil(p * len(xs)) - 1)]


def close(a, b):
    if a == b:
        return True
    fa, fb = float(a), float(b)
    if math.isnan(fa) and math.isnan(fb):
        return True
    return abs(fa - fb) <= 1e-6 * max(abs(fa), abs(fb)) or abs(fa - fb) <= 1e-9


def compare(prom, ours):
    """None when both answers agree, else what differs."""
    key = lambda s: json.dumps(s["metric"], sort_keys=True)
    p = {key(s): s["values"] for s in prom}
    o = {key(s): s["values"] for s in ours}
    if p.keys() != o.keys():
        return f"series differ: {len(p)} vs {len(o)} (e.g. {sorted(p.keys() ^ o.keys())[:2]})"
    points = 0
    for k in p:
        pv, ov = p[k], o[k]
        if [t for t, _ in pv] != [t for t, _ in ov]:
            return f"{k}: timestamps differ ({len(pv)} vs {len(ov)} points)"
        for (t, a), (_, b) in zip(pv, ov):
            points += 1
            if not close(a, b):
                return f"{k} at {t}: {a} vs {b}"
    return None, len(p), points


def main():
    prom, ours, start, end, runs = sys.argv[1:6]
    runs = int(runs)
    prom_url = prom + "/api/v1/query_range"
    ours_url = ours + "/prometheus/api/v1/query_range"
    rows, checks, failed = [], [], False
    for name, query, step in QUERIES:
        times = {"prom": [], "ours": []}
        answers = {}
        for i in range(runs + 1):
            for side, url in (("prom", prom_url), ("ours", ours_url)):
                ms, result = run(url, query, start, end, step)
                if i > 0:
                    times[side].append(ms)
                answers[side] = result
        pm, om = pct(times["prom"], 0.5), pct(times["ours"], 0.5)
        rows.append(
            f"| {name} | `{query}` | {step}s | {pm:.1f} / {pct(times['prom'], 0.9):.1f} "
            f"| {om:.1f} / {pct(times['ours'], 0.9):.1f} | {om / pm:.2f} |"
        )
        verdict = compare(answers["prom"], answers["ours"])
        if isinstance(verdict, tuple):
            checks.append(f"- {name}: agree ({verdict[1]} series, {verdict[2]} points)")
        else:
            failed = True
            checks.append(f"- {name}: DISAGREE: {verdict}")
    print("| class | query | step | Prometheus ms (median / p90) | fleetmon ms (median / p90) | fleetmon / Prometheus |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("\n".join(checks))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
