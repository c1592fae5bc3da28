#!/usr/bin/env python3
"""Aggregates bench/out/raw.jsonl (written by bench/run) into a markdown report and a JSON file
in bench/results/.

Every figure is the median over the rounds with its spread (min-max, and (max-min)/median in
%). Ratios skein/Envoy are the ratio of the medians, with the range of the per-round ratios
beside it (both pairs are measured in the same round, so a per-round ratio shares that round's
machine load). Latency added over direct is paired by round. The machine's load around every
measurement is summarised in one line."""

import datetime
import json
import os
import platform
import statistics

raw = [json.loads(l) for l in open(os.environ["RAW"]) if l.strip()]
mem = json.loads(os.environ["MEM"])
hwm_rounds = [json.loads(l) for l in open(os.environ["HWM_ROUNDS"]) if l.strip()] if os.path.exists(os.environ.get("HWM_ROUNDS", "")) else []
results_dir = os.environ["RESULTS"]
env = os.environ.get
ALLOCS = env("ALLOCS", "0") == "1"

# (skein pair, Envoy pair, title)
VARIANTS = [
    ("skein", "envoy", "access log off"),
    ("skein-log", "envoy-log", "access log to a file"),
    ("skein-trace", "envoy-trace", "100 % tracing, Zipkin v2 to a sink"),
]

TARGETS = {
    # metric key -> (op, limit)
    "added_p50_us": ("<=", 0.3),
    "added_p99_us": ("<=", 0.3),
    "cpu_client_per_1k_fixed": ("<=", 0.3),
    "cpu_server_per_1k_fixed": ("<=", 0.3),
    "wrk_h1_rps": (">=", 3.0),
    "h2load_h2_rps": (">=", 3.0),
    "tcp_mib_s": (">=", 1.5),
    "cpu_client_per_gib_tcp": ("<=", 0.5),
    "cpu_server_per_gib_tcp": ("<=", 0.5),
}
RSS_TARGET_MIB = 8.0


def rows(kind, scen):
    return sorted((r for r in raw if r["kind"] == kind and r["scenario"] == scen), key=lambda r: r["round"])


def agg(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    m = statistics.median(values)
    return {
        "median": m,
        "min": min(values),
        "max": max(values),
        "spread_pct": (100.0 * (max(values) - min(values)) / abs(m)) if m else None,
        "n": len(values),
    }


def per_round(kind, scen, f):
    """{round: value} of f(row) for the rows of kind/scen (f may return None)."""
    out = {}
    for r in rows(kind, scen):
        v = f(r)
        if v is not None:
            out[r["round"]] = v
    return out


def per(field, unit):
    """CPU or allocations per `unit` requests (or per GiB for tcp)."""
    def f(r):
        if field not in r:
            return None
        n = r["mib"] / 1024.0 if r["kind"] == "tcp" else r.get("requests", 0) / unit
        if r["kind"] == "tcp" and not r.get("ok"):
            return None
        return r[field] / n if n else None
    return f


# metric key -> (kind, per-row function)
def metric_fns():
    m = {}
    for p in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us"):
        m[p] = ("fixed_rate", lambda r, p=p: r.get(p))
    m["fixed_errors"] = ("fixed_rate", lambda r: r.get("errors"))
    m["fixed_rate"] = ("fixed_rate", lambda r: r.get("rate"))
    for side in ("client", "server"):
        m[f"cpu_{side}_per_1k_fixed"] = ("fixed_rate", per(f"cpu_{side}_ms", 1000.0))
        m[f"cpu_{side}_per_1k_wrk"] = ("wrk_h1", per(f"cpu_{side}_ms", 1000.0))
        m[f"cpu_{side}_per_1k_h2"] = ("h2load_h2", per(f"cpu_{side}_ms", 1000.0))
        m[f"cpu_{side}_per_gib_tcp"] = ("tcp", per(f"cpu_{side}_ms", None))
        for k, kind in (("fixed", "fixed_rate"), ("wrk", "wrk_h1"), ("h2", "h2load_h2"), ("tcp", "tcp")):
            m[f"allocs_{side}_per_req_{k}"] = (kind, per(f"allocs_{side}", 1.0))
            m[f"alloc_bytes_{side}_per_req_{k}"] = (kind, per(f"alloc_bytes_{side}", 1.0))
        for k, kind in (("fixed", "fixed_rate"), ("wrk", "wrk_h1")):
            m[f"log_lines_{side}_per_req_{k}"] = (
                kind, lambda r, side=side: r[f"log_lines_{side}"] / r["requests"] if f"log_lines_{side}" in r and r.get("requests") else None)
    m["wrk_h1_rps"] = ("wrk_h1", lambda r: r.get("rps"))
    m["wrk_h1_errors"] = ("wrk_h1", lambda r: r.get("errors"))
    m["h2load_h2_rps"] = ("h2load_h2", lambda r: r.get("rps"))
    m["tcp_mib_s"] = ("tcp", lambda r: r.get("mib_per_s") if r.get("ok") else None)
    return m


METRICS = metric_fns()
SCENARIOS = sorted({r["scenario"] for r in raw}, key=lambda s: ["direct", "skein", "envoy", "skein-log", "envoy-log", "skein-trace", "envoy-trace", "skein-blog"].index(s))


def series(scen, key):
    if key.startswith("added_"):
        base = key[len("added_"):]
        d = series("direct", base)
        s = series(scen, base)
        return {r: v - d[r] for r, v in s.items() if r in d}
    kind, f = METRICS[key]
    return per_round(kind, scen, f)


out_scen = {}
for s in SCENARIOS:
    e = {}
    for key in list(METRICS) + ["added_p50_us", "added_p99_us", "added_p999_us"]:
        if s == "direct" and key.startswith("added_"):
            continue
        a = agg(list(series(s, key).values()))
        if a is not None:
            e[key] = a
    e["tcp_failures"] = sum(1 for r in rows("tcp", s) if not r.get("ok"))
    out_scen[s] = e


def ratio(sk, en, key):
    """(ratio of medians, per-round ratio agg)"""
    a, b = out_scen.get(sk, {}).get(key), out_scen.get(en, {}).get(key)
    if a is None or b is None or not b["median"]:
        return None, None
    x, y = series(sk, key), series(en, key)
    pr = agg([x[r] / y[r] for r in x if r in y and y[r]])
    return a["median"] / b["median"], pr


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


def load_summary():
    idle = [r["machine"][w] for r in raw for w in ("before", "after") if "machine" in r]
    during = [r["machine"]["during"] for r in raw if "machine" in r]
    if not during:
        return None
    noisy = [r for r in raw if "machine" in r and r["machine"]["during"]["other_busy_pct"] > 10.0]
    return {
        "measurements": len(during),
        "loadavg1": agg([x["loadavg1"] for x in idle]),
        "idle_window_busy_pct": agg([x["busy_pct"] for x in idle]),
        "other_runnable": agg([x["other_runnable"] for x in idle]),
        "during_busy_pct": agg([x["busy_pct"] for x in during]),
        "during_other_busy_pct": agg([x["other_busy_pct"] for x in during]),
        "noisy_measurements": [f"r{r['round']} {r['scenario']} {r['kind']}" for r in noisy],
    }


out = {
    "machine": machine(),
    "params": {
        "rounds": int(env("ROUNDS")),
        "secs": float(env("SECS")),
        "rate": float(env("RATE")),
        "conns": int(env("CONNS")),
        "tcp_mb": int(env("TCP_MB", "0")),
        "accesslog": env("ACCESSLOG", ""),
        "blog": env("BLOG", ""),
        "allocs": ALLOCS,
        "http": env("HTTP", ""),
        "h2": env("H2", ""),
        "tcp": env("TCP", ""),
        "direct_closed_rounds": int(env("DIRECT_CLOSED_ROUNDS", "1")),
        "blog_config": env("BLOG_CONFIG", ""),
        "envoy_version": env("ENVOY_VERSION", ""),
        "skein_commit": env("SKEIN_COMMIT", ""),
        "elapsed_s": int(env("ELAPSED", "0")),
    },
    "load": load_summary(),
    "scenarios": out_scen,
    "memory_kib": mem,
    "hwm_kib_by_round": hwm_rounds,
    "raw": raw,
}

# ---------------------------------------------------------------- formatting


def num(v, digits):
    return f"{v:.{digits}f}"


def cell(a, digits=0, plus=False):
    if a is None:
        return "–"
    f = lambda v: ("+" if plus and v >= 0 else "") + num(v, digits)
    if a["n"] == 1:
        return f"{f(a['median'])} (1 round)"
    sp = "" if a["spread_pct"] is None else f"; {a['spread_pct']:.0f} %"
    return f"{f(a['median'])} ({f(a['min'])}–{f(a['max'])}{sp})"


def ratio_cell(r, pr):
    if r is None:
        return "–"
    if pr is None or pr["n"] < 2:
        return f"{r:.2f}"
    return f"{r:.2f} ({pr['min']:.2f}–{pr['max']:.2f})"


budget = []


def met(key, r, pr=None):
    """(target, verdict); the verdict says "unsteady" when the per-round ratios fall on both
    sides of the target, i.e. the rounds disagree and the median alone decides."""
    if key not in TARGETS or r is None:
        return "", ""
    op, lim = TARGETS[key]
    ok = r <= lim if op == "<=" else r >= lim
    verdict = "met" if ok else "**missed**"
    if pr is not None and pr["n"] > 1 and pr["min"] < lim < pr["max"]:
        verdict += " (unsteady)"
    return f"{op} {lim:g}×", verdict


m = out["machine"]
p = out["params"]
md = []
features = "mTLS (ISTIO_MUTUAL, SPIFFE SAN checked), STRICT, an ALLOW AuthorizationPolicy on the server, metrics (skein: Istio standard metrics; Envoy: its own stats)"
md.append(
    f"Machine: {m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}; {m['date_utc']}. skein {p['skein_commit']}, "
    f"Envoy {p['envoy_version']}. {p['rounds']} interleaved rounds (pair order rotated each round), {p['secs']:.0f} s per "
    f"measurement, run took {p['elapsed_s']} s. Every pair: {features}. Cells: median (min–max; (max−min)/median); "
    f"skein/Envoy: ratio of the medians (range of the per-round ratios).")
if ALLOCS:
    md.append("")
    md.append("**ALLOCS=1: the skein sidecars run with a counting allocator; their timings here are not for the budget.**")
L = out["load"]
if L:
    def rng(a, d=1):
        return "n/a" if a is None else f"{a['median']:.{d}f} (max {a['max']:.{d}f})"
    md.append("")
    md.append(
        f"Machine load: 1-min loadavg {rng(L['loadavg1'], 2)}; in the {L['measurements']} measurements the machine was "
        f"{rng(L['during_busy_pct'])} % busy (both cores), of which {rng(L['during_other_busy_pct'])} % outside this bench's "
        f"processes; in the idle windows around them {rng(L['idle_window_busy_pct'])} % busy with "
        f"{rng(L['other_runnable'])} other runnable threads. "
        + (f"Measurements with > 10 % of the machine busy elsewhere: {len(L['noisy_measurements'])} "
           f"({', '.join(L['noisy_measurements'][:8])}{', …' if len(L['noisy_measurements']) > 8 else ''})."
           if L["noisy_measurements"] else "No measurement had > 10 % of the machine busy elsewhere."))

rate = f"{p['rate']:.0f} req/s, {p['conns']} conns"
ROWS = [
    # key, label, digits, plus, has_direct
    ("p50_us", f"p50 latency at {rate} (µs)", 0, False, True),
    ("p90_us", "p90 latency (µs)", 0, False, True),
    ("p99_us", "p99 latency (µs)", 0, False, True),
    ("p999_us", "p99.9 latency (µs)", 0, False, True),
    ("added_p50_us", "added over direct, p50 (µs)", 0, True, False),
    ("added_p99_us", "added over direct, p99 (µs)", 0, True, False),
    ("added_p999_us", "added over direct, p99.9 (µs)", 0, True, False),
    ("fixed_errors", "fixed-rate errors", 0, False, True),
    ("cpu_client_per_1k_fixed", f"CPU ms per 1000 req, client proxy, at {p['rate']:.0f} req/s", 1, False, False),
    ("cpu_server_per_1k_fixed", f"CPU ms per 1000 req, server proxy, at {p['rate']:.0f} req/s", 1, False, False),
    ("wrk_h1_rps", f"closed-loop HTTP/1.1 req/s (wrk, {p['conns']} conns)", 0, False, True),
    ("wrk_h1_errors", "closed-loop HTTP/1.1 runs with errors", 0, False, True),
    ("cpu_client_per_1k_wrk", "CPU ms per 1000 req, client proxy, wrk", 1, False, False),
    ("cpu_server_per_1k_wrk", "CPU ms per 1000 req, server proxy, wrk", 1, False, False),
    ("h2load_h2_rps", f"closed-loop HTTP/2 req/s (h2load, {p['conns']} conns)", 0, False, True),
    ("cpu_client_per_1k_h2", "CPU ms per 1000 req, client proxy, h2load", 1, False, False),
    ("cpu_server_per_1k_h2", "CPU ms per 1000 req, server proxy, h2load", 1, False, False),
    ("tcp_mib_s", f"opaque TCP, one connection, {p['tcp_mb']} MiB (MiB/s)", 0, False, True),
    ("cpu_client_per_gib_tcp", "CPU ms per GiB of opaque TCP, client proxy", 0, False, False),
    ("cpu_server_per_gib_tcp", "CPU ms per GiB of opaque TCP, server proxy", 0, False, False),
    ("log_lines_client_per_req_wrk", "access log lines per request, client proxy (wrk)", 3, False, False),
    ("log_lines_server_per_req_wrk", "access log lines per request, server proxy (wrk)", 3, False, False),
]
D = out_scen.get("direct", {})
for sk, en, title in VARIANTS:
    if sk not in out_scen and en not in out_scen:
        continue
    S, E = out_scen.get(sk, {}), out_scen.get(en, {})
    md.append("")
    md.append(f"### {sk} and {en}: {title}")
    md.append("")
    md.append("| metric | direct | skein pair | Envoy pair | skein/Envoy | target | |")
    md.append("|---|---|---|---|---|---|---|")
    for key, label, digits, plus, has_direct in ROWS:
        if key not in S and key not in E:
            continue
        r, pr = ratio(sk, en, key)
        show_ratio = key in TARGETS or key.startswith("cpu_") or key.endswith("_rps") or key == "tcp_mib_s"
        tgt, ok = met(key, r, pr)
        if key in TARGETS:
            budget.append({"variant": title, "metric": key, "ratio": r, "per_round_ratio": pr,
                           "target": tgt, "met": ok.startswith("met"), "unsteady": ok.endswith("(unsteady)"),
                           "skein": S.get(key), "envoy": E.get(key)})
        dcell = cell(D.get(key), digits) if has_direct else "–"
        md.append(f"| {label} | {dcell} | {cell(S.get(key), digits, plus)} | {cell(E.get(key), digits, plus)} | "
                  f"{ratio_cell(r, pr) if show_ratio else '–'} | {tgt} | {ok} |")
    if sk == "skein-trace":
        # What 100 % sampling costs each proxy: CPU per request over the same pair without tracing.
        base = out_scen.get("skein", {}), out_scen.get("envoy", {})
        parts = []
        for name, T, B in (("skein", S, base[0]), ("Envoy", E, base[1])):
            for key, side in (("cpu_client_per_1k_fixed", "client"), ("cpu_server_per_1k_fixed", "server")):
                if T.get(key) and B.get(key):
                    d = T[key]["median"] - B[key]["median"]
                    parts.append(f"{name} {side} {d:+.1f} ms per 1000 req ({d / B[key]['median'] * 100:+.0f} %)")
        spans = env("TRACE_SPANS", "").strip(";").replace(";", ", ")
        md.append("")
        md.append("Added by 100 % tracing at the fixed rate (medians, against the access-log-off pair): "
                  + ("; ".join(parts) if parts else "n/a") + ". Spans the sink accepted over the run (client + server): "
                  + (spans or "n/a") + ".")

# ---------------------------------------------------------------- memory
mib = lambda k: k / 1024.0
md.append("")
md.append("### Peak RSS (VmHWM after every measurement), MiB")
md.append("")
cols = [(s, lbl) for s, lbl in (("skein-blog", "skein, blog config"), ("skein", "skein, bench config"),
                                 ("skein-log", "skein, bench config + access log"), ("envoy", "Envoy"),
                                 ("envoy-log", "Envoy + access log")) if s in mem]
md.append("| sidecar | " + " | ".join(l for _, l in cols) + f" | target | |")
md.append("|---|" + "---|" * len(cols) + "---|---|")
headline = "skein-blog" if "skein-blog" in mem else ("skein" if "skein" in mem else None)
for side in ("client", "server"):
    vals = [mib(mem[s][f"{side}_hwm_kib"]) for s, _ in cols]
    ok = ""
    if headline:
        v = mib(mem[headline][f"{side}_hwm_kib"])
        ok = "met" if v <= RSS_TARGET_MIB else "**missed**"
        budget.append({"variant": headline, "metric": f"peak_rss_{side}_mib", "value": v,
                       "target": f"<= {RSS_TARGET_MIB:g} MiB", "met": ok == "met"})
    md.append(f"| {side} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | ≤ {RSS_TARGET_MIB:g} ({headline}) | {ok} |")
if len(hwm_rounds) > 1:
    first, last = hwm_rounds[0], hwm_rounds[-1]
    grew = [f"{s} {side} {mib(first[s][i]):.1f}→{mib(last[s][i]):.1f}" for s, _ in cols
            for i, side in enumerate(("client", "server")) if last[s][i] > first[s][i] * 1.02]
    md.append("")
    md.append(f"Peak RSS after round 1 against after round {last['round']}: "
              + ("no sidecar's peak grew by more than 2 %." if not grew else "grew: " + ", ".join(grew) + " MiB."))
if p["blog_config"]:
    md.append("")
    md.append(f"Blog config: the control plane's snapshots for the example's web (client) and was (server) pods with "
              f"the bench's services merged in: {p['blog_config'].strip(';')}")

# ---------------------------------------------------------------- allocations
if ALLOCS:
    md.append("")
    md.append("### Allocations per request (counting allocator; allocs incl. reallocs, and bytes asked for)")
    md.append("")
    md.append("| pair | measurement | client allocs/req | client bytes/req | server allocs/req | server bytes/req |")
    md.append("|---|---|---|---|---|---|")
    for s in SCENARIOS:
        if not s.startswith("skein"):
            continue
        for k, label in (("fixed", "fixed rate"), ("wrk", "wrk HTTP/1.1"), ("h2", "h2load HTTP/2"), ("tcp", "opaque TCP, per GiB (not per request)")):
            e = out_scen[s]
            if f"allocs_client_per_req_{k}" not in e:
                continue
            md.append(f"| {s} | {label} | {cell(e[f'allocs_client_per_req_{k}'], 1)} | {cell(e[f'alloc_bytes_client_per_req_{k}'], 0)} | "
                      f"{cell(e[f'allocs_server_per_req_{k}'], 1)} | {cell(e[f'alloc_bytes_server_per_req_{k}'], 0)} |")

out["budget"] = budget
md_text = "\n".join(md) + "\n"

stamp = m["date_utc"].replace(":", "").replace("-", "")
os.makedirs(results_dir, exist_ok=True)
suffix = "-allocs" if ALLOCS else ""
for name in (f"bench-{stamp}{suffix}", f"latest{suffix}"):
    with open(os.path.join(results_dir, name + ".json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(results_dir, name + ".md"), "w") as f:
        f.write(md_text)
print(md_text)
