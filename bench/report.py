#!/usr/bin/env python3
"""Aggregates bench/out/raw.jsonl (written by bench/run) into a markdown table and a JSON file
in bench/results/: median (min-max) over the rounds, latency added over direct (paired per
round), CPU per 1000 requests, peak RSS, and the budget lines as ratios from the same run."""

import datetime
import json
import os
import platform
import statistics

raw = [json.loads(l) for l in open(os.environ["RAW"]) if l.strip()]
mem = json.loads(os.environ["MEM"])
results_dir = os.environ["RESULTS"]
SCEN = ["direct", "skein", "envoy"]


def rows(kind, scen):
    return sorted((r for r in raw if r["kind"] == kind and r["scenario"] == scen), key=lambda r: r["round"])


def agg(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def added(kind, scen, field):
    """pair - direct, paired by round."""
    d = {r["round"]: r[field] for r in rows(kind, "direct")}
    return agg([r[field] - d[r["round"]] for r in rows(kind, scen) if r["round"] in d])


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


out = {
    "machine": machine(),
    "params": {
        "rounds": int(os.environ["ROUNDS"]),
        "secs": float(os.environ["SECS"]),
        "rate": float(os.environ["RATE"]),
        "conns": int(os.environ["CONNS"]),
        "envoy_version": os.environ.get("ENVOY_VERSION", ""),
        "skein_commit": os.environ.get("SKEIN_COMMIT", ""),
        "elapsed_s": int(os.environ.get("ELAPSED", "0")),
    },
    "scenarios": {},
    "memory_kib": mem,
    "raw": raw,
}
LAT = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
for s in SCEN:
    e = {}
    fr = rows("fixed_rate", s)
    for f in LAT + ["rate", "errors"]:
        e[f] = agg([r.get(f) for r in fr])
    if s != "direct":
        for f in LAT:
            e["added_" + f] = added("fixed_rate", s, f)
        for side in ("client", "server"):
            e[f"cpu_{side}_ms_per_1k_fixed"] = agg([r.get(f"cpu_{side}_ms_per_1k") for r in fr])
            e[f"cpu_{side}_ms_per_1k_wrk"] = agg([r.get(f"cpu_{side}_ms_per_1k") for r in rows("wrk_h1", s)])
            e[f"cpu_{side}_ms_per_1k_h2"] = agg([r.get(f"cpu_{side}_ms_per_1k") for r in rows("h2load_h2", s)])
            # For "tcp" the figure is CPU ms per 1000 MiB (GiB-ish) moved.
            e[f"cpu_{side}_ms_per_1000mib_tcp"] = agg([r.get(f"cpu_{side}_ms_per_1k") for r in rows("tcp", s) if r.get("ok")])
    e["wrk_h1_rps"] = agg([r["rps"] for r in rows("wrk_h1", s)])
    e["wrk_h1_errors"] = agg([r.get("errors") for r in rows("wrk_h1", s)])
    e["h2load_h2_rps"] = agg([r["rps"] for r in rows("h2load_h2", s)])
    e["tcp_mib_s"] = agg([r["mib_per_s"] for r in rows("tcp", s) if r.get("ok")])
    e["tcp_failures"] = sum(1 for r in rows("tcp", s) if not r.get("ok"))
    out["scenarios"][s] = e

S, E = out["scenarios"]["skein"], out["scenarios"]["envoy"]


def med(x):
    return None if x is None else x["median"]


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


mib = lambda k: k / 1024.0
budget = []


def line(name, value, limit, holds, detail):
    budget.append({"budget": name, "value": value, "limit": limit, "holds": holds, "detail": detail})


for p in ("p50_us", "p99_us"):
    r = ratio(med(S["added_" + p]), med(E["added_" + p]))
    line(f"added latency {p[:-3]} skein/envoy <= 0.5", r, 0.5, r is not None and r <= 0.5,
         f"skein +{med(S['added_' + p]):.0f} µs, envoy +{med(E['added_' + p]):.0f} µs")
for side in ("client", "server"):
    r = ratio(med(S[f"cpu_{side}_ms_per_1k_fixed"]), med(E[f"cpu_{side}_ms_per_1k_fixed"]))
    line(f"CPU per 1000 req, {side} proxy, skein/envoy <= 0.5", r, 0.5, r is not None and r <= 0.5,
         f"skein {med(S[f'cpu_{side}_ms_per_1k_fixed']):.1f} ms, envoy {med(E[f'cpu_{side}_ms_per_1k_fixed']):.1f} ms")
for side in ("client", "server"):
    v = mib(mem[f"skein_{side}_hwm_kib"])
    line(f"peak RSS skein {side} sidecar <= 15 MiB", v, 15.0, v <= 15.0,
         f"skein {v:.1f} MiB, envoy {mib(mem[f'envoy_{side}_hwm_kib']):.1f} MiB")
r = ratio(med(S["wrk_h1_rps"]), med(E["wrk_h1_rps"]))
line("closed-loop HTTP/1.1 req/s skein/envoy >= 1.5", r, 1.5, r is not None and r >= 1.5,
     f"skein {med(S['wrk_h1_rps']):.0f}, envoy {med(E['wrk_h1_rps']):.0f} req/s")
out["budget"] = budget


def fmt(a, scale=1.0, digits=0, plus=False):
    if a is None:
        return "n/a"
    f = lambda v: ("+" if plus and v >= 0 else "") + f"{v / scale:.{digits}f}"
    return f"{f(a['median'])} ({f(a['min'])}–{f(a['max'])})"


m = out["machine"]
p = out["params"]
md = []
md.append(f"Machine: {m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}; {m['date_utc']}. "
          f"skein {p['skein_commit']}, Envoy {p['envoy_version']}. {p['rounds']} interleaved rounds "
          f"(direct, skein, envoy), {p['secs']:.0f} s per measurement; median (min–max).")
md.append("")
md.append("| | direct | skein pair | Envoy pair |")
md.append("|---|---|---|---|")
D = out["scenarios"]["direct"]
for f, label in (("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9")):
    md.append(f"| {label} latency at {p['rate']:.0f} req/s, {p['conns']} conns (µs) | {fmt(D[f])} | {fmt(S[f])} | {fmt(E[f])} |")
for f, label in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")):
    md.append(f"| added over direct, {label} (µs) | – | {fmt(S['added_' + f], plus=True)} | {fmt(E['added_' + f], plus=True)} |")
md.append(f"| fixed-rate errors | {fmt(D['errors'])} | {fmt(S['errors'])} | {fmt(E['errors'])} |")
md.append(f"| closed-loop HTTP/1.1 req/s (wrk, {p['conns']} conns) | {fmt(D['wrk_h1_rps'])} | {fmt(S['wrk_h1_rps'])} | {fmt(E['wrk_h1_rps'])} |")
if any(out["scenarios"][s]["h2load_h2_rps"] for s in SCEN):
    md.append(f"| closed-loop HTTP/2 req/s (h2load, {p['conns']} conns) | {fmt(D['h2load_h2_rps'])} | {fmt(S['h2load_h2_rps'])} | {fmt(E['h2load_h2_rps'])} |")
if any(out["scenarios"][s]["tcp_mib_s"] for s in SCEN):
    md.append(f"| opaque TCP, one connection (MiB/s) | {fmt(D['tcp_mib_s'])} | {fmt(S['tcp_mib_s'])} | {fmt(E['tcp_mib_s'])} |")
for side in ("client", "server"):
    md.append(f"| CPU ms per 1000 req, {side} proxy, at {p['rate']:.0f} req/s | – | {fmt(S[f'cpu_{side}_ms_per_1k_fixed'], digits=1)} | {fmt(E[f'cpu_{side}_ms_per_1k_fixed'], digits=1)} |")
for side in ("client", "server"):
    md.append(f"| CPU ms per 1000 req, {side} proxy, closed loop | – | {fmt(S[f'cpu_{side}_ms_per_1k_wrk'], digits=1)} | {fmt(E[f'cpu_{side}_ms_per_1k_wrk'], digits=1)} |")
if any(out["scenarios"][s]["tcp_mib_s"] for s in SCEN):
    for side in ("client", "server"):
        md.append(f"| CPU ms per GiB of opaque TCP, {side} proxy | – | {fmt(S[f'cpu_{side}_ms_per_1000mib_tcp'])} | {fmt(E[f'cpu_{side}_ms_per_1000mib_tcp'])} |")
for side in ("client", "server"):
    md.append(f"| peak RSS (VmHWM), {side} proxy (MiB) | – | {mib(mem[f'skein_{side}_hwm_kib']):.1f} | {mib(mem[f'envoy_{side}_hwm_kib']):.1f} |")
md.append("")
md.append("| budget | ratio or value | holds |")
md.append("|---|---|---|")
for b in budget:
    v = "n/a" if b["value"] is None else f"{b['value']:.2f}"
    md.append(f"| {b['budget']} | {v} ({b['detail']}) | {'yes' if b['holds'] else '**no**'} |")
md_text = "\n".join(md) + "\n"

stamp = m["date_utc"].replace(":", "").replace("-", "")
os.makedirs(results_dir, exist_ok=True)
for name in (f"bench-{stamp}", "latest"):
    with open(os.path.join(results_dir, name + ".json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(results_dir, name + ".md"), "w") as f:
        f.write(md_text)
print(md_text)
