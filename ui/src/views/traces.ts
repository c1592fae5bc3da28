import { h, fill, message, select, field, clickable } from "../dom";
import { enc, getJSON, qs, type JaegerAnswer, type JaegerSpan, type JaegerTrace } from "../api";
import { scatter } from "../chart";
import { us } from "../format";
import { go, href, type Route } from "../router";
import { kv, loading, pageHeader, showError } from "./common";

const LOOKBACKS: Array<[string, string]> = [
  ["300", "Last 5m"],
  ["900", "Last 15m"],
  ["3600", "Last 1h"],
  ["21600", "Last 6h"],
];

function tag(span: JaegerSpan, key: string): unknown {
  return span.tags?.find((t) => t.key === key)?.value;
}

function isError(span: JaegerSpan): boolean {
  const e = tag(span, "error");
  const code = Number(tag(span, "http.status_code"));
  return e === true || e === "true" || code >= 500;
}

interface Summary {
  id: string;
  root: JaegerSpan;
  service: string;
  start: number;
  duration: number;
  spans: number;
  errors: number;
}

function summarize(t: JaegerTrace): Summary | null {
  if (!t.spans?.length) return null;
  const ids = new Set(t.spans.map((s) => s.spanID));
  const roots = t.spans.filter((s) => !parentOf(s) || !ids.has(parentOf(s) as string));
  const root = roots.sort((a, b) => a.startTime - b.startTime)[0] ?? (t.spans[0] as JaegerSpan);
  const start = Math.min(...t.spans.map((s) => s.startTime));
  const end = Math.max(...t.spans.map((s) => s.startTime + s.duration));
  return {
    id: t.traceID,
    root,
    service: t.processes[root.processID]?.serviceName ?? "?",
    start,
    duration: end - start,
    spans: t.spans.length,
    errors: t.spans.filter(isError).length,
  };
}

function parentOf(s: JaegerSpan): string | undefined {
  return s.references?.find((r) => r.refType === "CHILD_OF")?.spanID ?? s.references?.[0]?.spanID;
}

export function traces(root: HTMLElement, route: Route): void {
  const p = route.params;
  const form = h("form", { class: "toolbar search", "data-testid": "trace-search", "aria-label": "Search traces" });
  const results = h("div", { "data-testid": "trace-results" });
  root.append(pageHeader("Traces"), form, results);
  const svc = select([], "", { "data-testid": "trace-service", name: "service" });
  const op = select([["", "All operations"]], "", { "data-testid": "trace-operation", name: "operation" });
  const minD = h("input", { type: "text", name: "minDuration", placeholder: "e.g. 100ms", value: p.get("minDuration") ?? "", "data-testid": "trace-min-duration", size: 8, pattern: "^\\d+(\\.\\d+)?(us|µs|ms|s)?$" });
  const limit = h("input", { type: "number", name: "limit", min: 1, max: 1500, value: p.get("limit") ?? "20", "data-testid": "trace-limit", style: "width:5em" });
  const look = select(LOOKBACKS, p.get("lookback") ?? "3600", { "data-testid": "trace-lookback", name: "lookback" });
  const btn = h("button", { type: "submit", "data-testid": "trace-find" }, "Find traces");
  form.append(field("Service", svc), field("Operation", op), field("Min duration", minD), field("Limit", limit), field("Lookback", look), btn);

  const loadOps = async (service: string, want: string) => {
    fill(op, h("option", { value: "" }, "All operations"));
    if (!service) return;
    try {
      const ops = await getJSON<JaegerAnswer<string[] | null>>(`/jaeger/api/services/${enc(service)}/operations`);
      for (const o of (ops.data ?? []).slice().sort()) {
        const opt = h("option", { value: o }, o);
        if (o === want) opt.selected = true;
        op.appendChild(opt);
      }
    } catch {
      /* operations only narrow the search */
    }
  };
  svc.addEventListener("change", () => void loadOps(svc.value, ""));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go("/traces", { service: svc.value, operation: op.value, minDuration: minD.value.trim(), limit: limit.value, lookback: look.value });
  });

  void (async () => {
    let services: string[];
    try {
      services = ((await getJSON<JaegerAnswer<string[] | null>>("/jaeger/api/services")).data ?? []).slice().sort();
    } catch (e) {
      showError(results, "The tracing store is not reachable", e);
      return;
    }
    if (services.length === 0) {
      fill(results, message("empty", "The tracing store has no spans yet: send some requests through the ingress.", "traces-empty"));
      return;
    }
    const want = p.get("service") ?? "";
    const service = services.includes(want) ? want : (services.find((s) => s.startsWith("istio-ingressgateway")) ?? (services[0] as string));
    for (const s of services) {
      const o = h("option", { value: s }, s);
      if (s === service) o.selected = true;
      svc.appendChild(o);
    }
    await loadOps(service, p.get("operation") ?? "");
    await search(results, {
      service,
      operation: p.get("operation") ?? "",
      minDuration: p.get("minDuration") ?? "",
      limit: p.get("limit") ?? "20",
      lookback: p.get("lookback") ?? "3600",
    });
  })();
}

async function search(
  el: HTMLElement,
  q: { service: string; operation: string; minDuration: string; limit: string; lookback: string },
): Promise<void> {
  fill(el, loading());
  const lookback = Math.max(60, Number(q.lookback) || 3600);
  const end = Date.now() * 1000;
  const start = end - lookback * 1_000_000;
  try {
    const ans = await getJSON<JaegerAnswer<JaegerTrace[] | null>>(
      `/jaeger/api/traces${qs({ service: q.service, operation: q.operation, minDuration: q.minDuration, limit: q.limit, start, end })}`,
    );
    const list = (ans.data ?? []).map(summarize).filter((s): s is Summary => s !== null).sort((a, b) => b.start - a.start);
    if (list.length === 0) {
      fill(el, message("empty", `No traces of ${q.service} match in the last ${Math.round(lookback / 60)} min.`, "traces-none"));
      return;
    }
    const open = (id: string) => go(`/traces/${id}`);
    fill(
      el,
      h("h2", null, `${list.length} traces`),
      scatter(
        list.map((t) => ({
          x: t.start,
          y: t.duration,
          error: t.errors > 0,
          label: `Trace ${t.id.slice(0, 8)}: ${t.root.operationName}, ${us(t.duration)}, ${t.spans} spans${t.errors ? `, ${t.errors} errors` : ""}`,
          onPick: () => open(t.id),
        })),
        "trace-scatter",
      ),
      h(
        "table",
        { class: "data", "data-testid": "trace-list" },
        h("thead", null, h("tr", null, ["Trace", "Root", "Started", "Duration", "Spans", "Errors"].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          null,
          list.map((t) =>
            h(
              "tr",
              { "data-testid": "trace-row", "data-trace": t.id, "data-spans": String(t.spans), "data-start": String(t.start) },
              h("td", null, h("a", { href: href(`/traces/${t.id}`) }, h("code", null, t.id.slice(0, 16)))),
              h("td", null, `${t.service}: ${t.root.operationName}`),
              h("td", null, new Date(t.start / 1000).toLocaleTimeString(undefined, { hour12: false })),
              h("td", null, us(t.duration)),
              h("td", null, String(t.spans)),
              h("td", { class: t.errors ? "err" : "" }, String(t.errors)),
            ),
          ),
        ),
      ),
    );
  } catch (e) {
    showError(el, "Could not search the traces", e);
  }
}

interface Row {
  span: JaegerSpan;
  depth: number;
  self: number;
}

/** Depth-first by parent, children by start time; self time = duration minus children's union. */
function rows(t: JaegerTrace): Row[] {
  const byParent = new Map<string, JaegerSpan[]>();
  const ids = new Set(t.spans.map((s) => s.spanID));
  const roots: JaegerSpan[] = [];
  for (const s of t.spans) {
    const p = parentOf(s);
    if (p && ids.has(p) && p !== s.spanID) byParent.set(p, [...(byParent.get(p) ?? []), s]);
    else roots.push(s);
  }
  const out: Row[] = [];
  const seen = new Set<string>();
  const walk = (s: JaegerSpan, depth: number) => {
    if (seen.has(s.spanID)) return;
    seen.add(s.spanID);
    const kids = (byParent.get(s.spanID) ?? []).sort((a, b) => a.startTime - b.startTime);
    const end = s.startTime + s.duration;
    let covered = 0;
    let cursor = s.startTime;
    for (const k of kids) {
      const a = Math.max(cursor, k.startTime);
      const b = Math.min(end, k.startTime + k.duration);
      if (b > a) {
        covered += b - a;
        cursor = b;
      }
    }
    out.push({ span: s, depth, self: Math.max(0, s.duration - covered) });
    for (const k of kids) walk(k, depth + 1);
  };
  for (const r of roots.sort((a, b) => a.startTime - b.startTime)) walk(r, 0);
  return out;
}

export function tracePage(root: HTMLElement, route: Route): void {
  const id = route.parts[1] ?? "";
  const body = h("div", { "data-testid": "trace-page" }, loading());
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/traces" }, "Traces"), " › ", h("code", null, id.slice(0, 16))),
    pageHeader("Trace"),
    body,
  );
  void (async () => {
    try {
      const ans = await getJSON<JaegerAnswer<JaegerTrace[] | null>>(`/jaeger/api/traces/${enc(id)}`);
      const t = ans.data?.[0];
      if (!t || !t.spans?.length) {
        fill(body, message("empty", `Trace ${id} is not in the tracing store (it keeps the newest traces only).`, "trace-missing"));
        return;
      }
      fill(body, waterfall(t));
    } catch (e) {
      showError(body, `Could not load trace ${id}`, e);
    }
  })();
}

function waterfall(t: JaegerTrace): HTMLElement {
  const rs = rows(t);
  const t0 = Math.min(...t.spans.map((s) => s.startTime));
  const t1 = Math.max(...t.spans.map((s) => s.startTime + s.duration));
  const total = Math.max(1, t1 - t0);
  const slowest = rs.reduce((a, b) => (b.self > a.self ? b : a), rs[0] as Row);
  const services = new Set(t.spans.map((s) => t.processes[s.processID]?.serviceName));
  const detail = h("div", { class: "span-detail", "data-testid": "span-detail", "aria-live": "polite" });
  const table = h(
    "div",
    { class: "waterfall", role: "table", "aria-label": "Spans of the trace", "data-testid": "waterfall", "data-spans": String(rs.length) },
    h(
      "div",
      { class: "wf-row wf-head", role: "row" },
      h("span", { role: "columnheader", class: "wf-name" }, "Service: operation"),
      h("span", { role: "columnheader", class: "wf-dur" }, "Duration"),
      h("span", { role: "columnheader", class: "wf-bar-cell" }, `0 – ${us(total)}`),
    ),
  );
  for (const r of rs) {
    const s = r.span;
    const svc = t.processes[s.processID]?.serviceName ?? "?";
    const left = ((s.startTime - t0) / total) * 100;
    const width = Math.max(0.3, (s.duration / total) * 100);
    const isSlow = r === slowest;
    const err = isError(s);
    const kind = String(tag(s, "span.kind") ?? "");
    const row = clickable(
      h(
        "div",
        {
          class: `wf-row${isSlow ? " slowest" : ""}${err ? " error" : ""}`,
          "data-testid": "span-row",
          "data-service": svc,
          "data-operation": s.operationName,
          "data-kind": kind,
          "data-proxy": tag(s, "component") === "proxy" ? "true" : "false",
          "data-depth": String(r.depth),
          "data-slowest": isSlow ? "true" : null,
        },
        h(
          "span",
          { class: "wf-name", style: `padding-left:${r.depth * 14 + 4}px`, title: `${svc}: ${s.operationName}` },
          h("strong", null, svc),
          " ",
          h("span", { class: "kind" }, [kind, tag(s, "component") === "proxy" ? "proxy" : ""].filter(Boolean).join(" · ")),
          " ",
          s.operationName,
          isSlow ? h("span", { class: "slow-tag" }, " slowest self time") : null,
          err ? h("span", { class: "err" }, " error") : null,
        ),
        h("span", { class: "wf-dur" }, us(s.duration)),
        h("span", { class: "wf-bar-cell" }, h("span", { class: "wf-bar", style: `left:${left}%;width:${width}%` })),
      ),
      `Span ${svc} ${s.operationName}, ${us(s.duration)}`,
      () => fill(detail, spanDetail(t, s, r.self)),
    );
    row.setAttribute("role", "row");
    row.removeAttribute("aria-label");
    table.appendChild(row);
  }
  return h(
    "div",
    null,
    kv([
      ["Trace", h("code", null, t.traceID)],
      ["Duration", us(total)],
      ["Spans", String(t.spans.length)],
      ["Services", [...services].join(", ")],
      ["Slowest self time", `${t.processes[slowest.span.processID]?.serviceName ?? "?"}: ${slowest.span.operationName} (${us(slowest.self)} of its own)`],
    ]),
    table,
    detail,
  );
}

function spanDetail(t: JaegerTrace, s: JaegerSpan, self: number): HTMLElement {
  return h(
    "section",
    { class: "card" },
    h("h2", null, `${t.processes[s.processID]?.serviceName ?? "?"}: ${s.operationName}`),
    kv([
      ["Span", h("code", null, s.spanID)],
      ["Parent", parentOf(s) ? h("code", null, parentOf(s) as string) : "root"],
      ["Duration", `${us(s.duration)} (${us(self)} of its own)`],
    ]),
    h(
      "table",
      { class: "data compact" },
      h("caption", null, "Tags"),
      h("tbody", null, (s.tags ?? []).map((tg) => h("tr", null, h("th", { scope: "row" }, tg.key), h("td", null, String(tg.value))))),
    ),
  );
}
