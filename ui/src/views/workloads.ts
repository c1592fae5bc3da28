import { h, fill, message } from "../dom";
import { enc, getJSON, qs, type Metrics, type Pod, type Rollout, type RolloutSummary, type Service, type Workload, type WorkloadSummary } from "../api";
import { healthBadge } from "../health";
import { lineChart, type Line } from "../chart";
import { DURATIONS, num, relative, when } from "../format";
import { go, href, rememberNamespaces, rememberedNamespaces, type Route } from "../router";
import { kv, loading, namespaces, nsSelect, pageHeader, showError } from "./common";
import { configTable } from "./istio";
import { select, field } from "../dom";

function pickNs(route: Route, all: string[]): string {
  const want = route.params.get("namespace") ?? rememberedNamespaces()[0];
  if (want && all.includes(want)) return want;
  return all.find((n) => n !== "istio-system") ?? all[0] ?? "";
}

export function workloads(root: HTMLElement, route: Route): void {
  const controls = h("div", { class: "toolbar" });
  const body = h("div", null, loading());
  root.append(pageHeader("Workloads and services"), controls, body);
  void (async () => {
    try {
      const all = (await namespaces()).map((n) => n.name);
      if (all.length === 0) return fill(body, message("empty", "No namespaces yet.", "empty"));
      const ns = pickNs(route, all);
      const app = route.params.get("app");
      fill(controls, nsSelect(all.map((name) => ({ name })), ns, (n) => {
        rememberNamespaces([n]);
        go("/workloads", { namespace: n });
      }));
      const [wl, svcs] = await Promise.all([
        getJSON<WorkloadSummary[]>(`/api/namespaces/${enc(ns)}/workloads`),
        getJSON<Service[]>(`/api/namespaces/${enc(ns)}/services`),
      ]);
      const shown = app ? wl.filter((w) => w.app === app || w.labels?.app === app) : wl;
      fill(
        body,
        h("h2", null, app ? `Workloads of app ${app} in ${ns}` : `Workloads in ${ns}`),
        shown.length === 0
          ? message("empty", `No workloads in ${ns}.`, "workloads-empty")
          : h(
              "table",
              { class: "data", "data-testid": "workloads" },
              h("thead", null, h("tr", null, ["Name", "Kind", "App", "Version", "Pods", "Health", "Rollout"].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                null,
                shown.map((w) =>
                  h(
                    "tr",
                    { "data-testid": "workload-row", "data-name": w.name },
                    h("td", null, h("a", { href: href(`/namespaces/${enc(ns)}/workloads/${enc(w.name)}`) }, w.name)),
                    h("td", null, w.kind ?? ""),
                    h("td", null, w.app ?? w.labels?.app ?? ""),
                    h("td", null, w.version ?? w.labels?.version ?? ""),
                    h("td", null, podsSummary(w.pods ?? [])),
                    h("td", null, healthBadge(w.health)),
                    h("td", { "data-testid": "workload-rollout" }, w.rollout ? rolloutPhase(w.rollout) : ""),
                  ),
                ),
              ),
            ),
        h("h2", null, `Services in ${ns}`),
        svcs.length === 0
          ? message("empty", `No Services in ${ns}.`, "services-empty")
          : h(
              "table",
              { class: "data", "data-testid": "services" },
              h("thead", null, h("tr", null, ["Name", "Cluster IP", "Ports", "Workloads"].map((c) => h("th", { scope: "col" }, c)))),
              h(
                "tbody",
                null,
                svcs.map((s) =>
                  h(
                    "tr",
                    { "data-testid": "service-row", "data-name": s.name },
                    h("td", null, h("a", { href: href(`/namespaces/${enc(ns)}/services/${enc(s.name)}`) }, s.name)),
                    h("td", null, s.clusterIP ?? ""),
                    h("td", null, (s.ports ?? []).map((p) => `${p.name ?? ""} ${p.port ?? ""}`.trim()).join(", ")),
                    h("td", null, (s.workloads ?? []).join(", ")),
                  ),
                ),
              ),
            ),
      );
    } catch (e) {
      showError(body, "Could not load the workloads", e);
    }
  })();
}

/** A Rollout's phase as `skein rollouts get` prints it (icon and word), with its step. */
export function rolloutPhase(r: RolloutSummary): HTMLElement {
  if (r.error) return h("span", { class: "rollout-phase rollout-unknown", "data-testid": "rollout-phase", "data-phase": "", title: r.error }, "• unknown");
  const phase = r.phase ?? "";
  const step = r.currentStepIndex != null && r.stepCount ? `, step ${r.currentStepIndex}/${r.stepCount}` : "";
  const weight = r.setWeight != null && phase !== "Healthy" ? `, weight ${r.setWeight}` : "";
  return h(
    "span",
    { class: `rollout-phase rollout-${phase.toLowerCase() || "unknown"}`, "data-testid": "rollout-phase", "data-phase": phase },
    h("span", { class: `rollout-icon rollout-icon-${phase.toLowerCase() || "unknown"}`, "aria-hidden": "true" }, `${r.icon ?? "•"} `),
    `${phase || "unknown"}${step}${weight}`,
  );
}

/** The Rollout panel: phase, message, steps, weights, revisions and analysis. */
function rolloutPanel(r: Rollout): HTMLElement {
  const sec = h("section", {
    class: "card rollout",
    "aria-labelledby": "rollout-title",
    "data-testid": "rollout-panel",
    "data-phase": r.phase ?? "",
    "data-step": r.currentStepIndex != null ? String(r.currentStepIndex) : "",
    "data-set-weight": String(r.setWeight ?? ""),
    "data-actual-weight": String(r.actualWeight ?? ""),
  });
  sec.append(h("h2", { id: "rollout-title" }, "Rollout"));
  if (r.error) {
    sec.append(message("error", r.error, "rollout-error"));
    return sec;
  }
  const steps = r.steps ?? [];
  sec.append(
    h(
      "p",
      { class: "rollout-status" },
      h("strong", { "data-testid": "rollout-status" }, rolloutPhase(r)),
      r.message ? h("span", { class: "rollout-message", "data-testid": "rollout-message" }, ` — ${r.message}`) : null,
    ),
    kv([
      ["Strategy", r.strategy],
      ["Step", r.currentStepIndex != null ? `${r.currentStepIndex} of ${steps.length}` : "–"],
      [
        "Weights",
        h(
          "span",
          { "data-testid": "rollout-weights" },
          r.canaryRevision != null
            ? `canary (revision ${r.canaryRevision}): set ${r.setWeight ?? 0}%, actual ${r.actualWeight ?? 0}%; stable${r.stableRevision != null ? ` (revision ${r.stableRevision})` : ""}: ${r.stableWeight ?? 100}%`
            : `stable${r.stableRevision != null ? ` (revision ${r.stableRevision})` : ""}: 100%, no update running (no canary)`,
        ),
      ],
      ["Replicas", r.replicas ? `${r.replicas.desired} desired, ${r.replicas.updated} updated, ${r.replicas.ready} ready, ${r.replicas.available} available` : undefined],
    ]),
    h("h3", { id: "rollout-steps-title" }, `Steps (${steps.length})`),
    steps.length === 0
      ? message("empty", "This Rollout has no steps.", "rollout-steps-empty")
      : h(
          "ol",
          { class: "rollout-steps", start: "0", "aria-labelledby": "rollout-steps-title", "data-testid": "rollout-steps" },
          steps.map((s) =>
            h(
              "li",
              { class: `step step-${s.state}`, "data-testid": "rollout-step", "data-state": s.state, "data-index": String(s.index), "aria-current": s.state === "current" ? "step" : null },
              h("span", { class: "step-mark", "aria-hidden": "true" }, s.state === "done" ? "✔" : s.state === "current" ? "▶" : "○"),
              h("span", { class: "step-index", "aria-hidden": "true" }, `${s.index}.`),
              h("code", null, s.text),
              s.state === "done" ? h("span", { class: "sr-only" }, " (done)") : s.state === "current" ? h("span", { class: "sr-only" }, " (current step)") : null,
            ),
          ),
        ),
    h("h3", null, "Revisions"),
    h(
      "table",
      { class: "data", "data-testid": "rollout-revisions" },
      h("thead", null, h("tr", null, ["Revision", "Role", "Hash", "Images", "Pods"].map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        null,
        (r.revisions ?? []).map((v) =>
          h(
            "tr",
            { "data-testid": "rollout-revision", "data-role": v.role, "data-revision": String(v.revision) },
            h("td", null, String(v.revision)),
            h("td", null, v.role),
            h("td", null, h("code", null, v.hash)),
            h("td", null, v.images.join(", ")),
            h("td", null, v.pods.length ? v.pods.map((p) => `${p.ready ? "✔" : "◌"} ${p.name}`).join(", ") : "scaled down"),
          ),
        ),
      ),
    ),
    h("h3", null, "Analysis"),
    (r.analysisRuns ?? []).length === 0
      ? message("empty", "No analysis run yet.", "rollout-analysis-empty")
      : h(
          "table",
          { class: "data", "data-testid": "rollout-analysis" },
          h("caption", { class: "sr-only" }, "Analysis runs and their metrics"),
          h("thead", null, h("tr", null, ["Run", "Metric", "Phase", "Successful", "Failed", "Last value", "Last measured"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            null,
            (r.analysisRuns ?? []).flatMap((a) =>
              (a.metrics.length ? a.metrics : [null]).map((m) => {
                const last = m?.measurements[m.measurements.length - 1];
                return h(
                  "tr",
                  { "data-testid": "rollout-metric", "data-run": a.name, "data-metric": m?.name ?? "", "data-phase": m?.phase ?? "" },
                  h("td", { title: a.message || null }, `${a.icon} ${a.name} (${a.phase}, revision ${a.revision})`),
                  h("td", null, m?.name ?? "–"),
                  h("td", null, m ? `${m.icon} ${m.phase}` : ""),
                  h("td", null, m ? String(m.successful) : ""),
                  h("td", null, m ? String(m.failed) : ""),
                  h("td", { title: m?.message ?? null }, m?.lastValue ?? "–"),
                  h("td", null, last?.startedAt ? h("time", { datetime: last.startedAt, title: when(last.startedAt) }, relative(last.startedAt)) : "–"),
                );
              }),
            ),
          ),
        ),
  );
  return sec;
}

function podsSummary(pods: Pod[]): string {
  const ready = pods.filter((p) => p.ready).length;
  return `${ready}/${pods.length} ready`;
}

function podsTable(pods: Pod[]): HTMLElement {
  if (pods.length === 0) return message("empty", "No pods.", "pods-empty");
  return h(
    "table",
    { class: "data", "data-testid": "pods" },
    h(
      "thead",
      null,
      h("tr", null, ["Pod", "IP", "State", "Proxy and config version", "Synced", "Identity", "Certificate expires"].map((c) => h("th", { scope: "col" }, c))),
    ),
    h(
      "tbody",
      null,
      pods.map((p) => {
        const px = p.proxy;
        return h(
          "tr",
          { "data-testid": "pod-row", "data-name": p.name },
          h("td", null, h("a", { href: href("/logs", { pod: p.name }) , title: "Logs of this pod" }, p.name)),
          h("td", null, p.ip ?? ""),
          h("td", null, `${p.state ?? ""}${p.ready === false ? " (not ready)" : ""}, ${p.restarts ?? 0} restart${p.restarts === 1 ? "" : "s"}`),
          h(
            "td",
            null,
            px
              ? `${px.mode}${px.connected === false ? " (disconnected)" : ""}, config ${px.configVersion ?? "–"}${px.controlVersion ? ` of ${px.controlVersion}` : ""}`
              : "no sidecar",
          ),
          h(
            "td",
            { "data-testid": "pod-synced" },
            px ? (px.synced ? "✔ synced" : "✖ not synced") : "",
            px?.nack ? h("div", { class: "err" }, `refused version ${px.nack.version ?? "?"}: ${px.nack.error ?? ""}`) : null,
          ),
          h("td", null, px?.identity ? h("code", null, px.identity) : p.serviceAccount ? `ServiceAccount ${p.serviceAccount}` : ""),
          h("td", null, px?.certExpiry ? h("time", { datetime: px.certExpiry, title: when(px.certExpiry) }, `${px.certExpiry.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "Z")} (${relative(px.certExpiry)})`) : ""),
        );
      }),
    ),
  );
}

function seriesLines(series: Metrics[string], name: (l: Record<string, string>) => string, scale = 1): Line[] {
  const reporters = new Set((series ?? []).map((s) => s.labels.reporter));
  return (series ?? []).map((s) => ({
    name: reporters.size > 1 && s.labels.reporter ? `${name(s.labels)}, ${s.labels.reporter}` : name(s.labels),
    points: s.datapoints.map(([t, v]) => [t, num(v) * scale] as [number, number]).filter(([, v]) => Number.isFinite(v)),
  }));
}

function metricsCharts(m: Metrics, direction: string): HTMLElement {
  const charts = [
    lineChart("Request rate", seriesLines(m.request_count, (l) => (l.response_code ? `code ${l.response_code}` : "requests")), "req/s", `chart-${direction}-requests`),
    lineChart("Errors", seriesLines(m.request_error_count, (l) => (l.response_code ? `code ${l.response_code}` : "errors")), "req/s", `chart-${direction}-errors`, "No errors in this window"),
    lineChart("Response time", seriesLines(m.request_duration_millis, (l) => (l.quantile && l.quantile !== "avg" ? `p${Math.round(num(l.quantile) * 100)}` : "avg")), "ms", `chart-${direction}-duration`),
  ];
  const tcp = [...(m.tcp_sent ?? []), ...(m.tcp_received ?? [])];
  if (tcp.some((s) => s.datapoints.length > 0)) {
    charts.push(
      lineChart("TCP", [...seriesLines(m.tcp_sent, () => "sent"), ...seriesLines(m.tcp_received, () => "received")], "B/s", `chart-${direction}-tcp`),
    );
  }
  return h("div", { class: "charts" }, charts);
}

function metricsSection(kind: "workloads" | "services", ns: string, name: string, duration: string): HTMLElement {
  const sec = h("section", { class: "metrics", "aria-label": "Metrics" });
  const du = select(DURATIONS, duration, { "data-testid": "metrics-duration" });
  const inb = h("div", { "data-testid": "metrics-inbound" }, loading());
  const outb = h("div", { "data-testid": "metrics-outbound" }, loading());
  const load = (d: string) => {
    const step = Math.max(15, Math.round(parseInt(d, 10) / 40));
    for (const [dir, el] of [["inbound", inb], ["outbound", outb]] as const) {
      fill(el, loading());
      getJSON<Metrics>(`/api/namespaces/${enc(ns)}/${kind}/${enc(name)}/metrics${qs({ direction: dir, duration: d, step: `${step}s` })}`)
        .then((m) => fill(el, metricsCharts(m, dir)))
        .catch((e) => showError(el, `Could not load the ${dir} metrics`, e));
    }
  };
  du.addEventListener("change", () => load(du.value));
  sec.append(
    h("div", { class: "toolbar" }, h("h2", null, "Metrics"), field("Window", du)),
    h("h3", null, "Inbound"),
    inb,
    h("h3", null, "Outbound"),
    outb,
  );
  load(duration);
  return sec;
}

export function workloadPage(root: HTMLElement, route: Route): void {
  const ns = route.parts[1] ?? "";
  const name = route.parts[3] ?? "";
  const body = h("div", { "data-testid": "workload-page", "data-name": name }, loading());
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: href("/workloads", { namespace: ns }) }, `Workloads in ${ns}`), " › ", name),
    pageHeader(`Workload ${name}`),
    body,
  );
  void (async () => {
    try {
      const w = await getJSON<Workload>(`/api/namespaces/${enc(ns)}/workloads/${enc(name)}`);
      const app = w.app ?? w.labels?.app;
      fill(
        body,
        h("div", { class: "summary" }, healthBadge(w.health)),
        kv([
          ["Namespace", w.namespace],
          ["Kind", w.kind],
          ["Replicas", w.workloadStatus ? `${w.workloadStatus.availableReplicas ?? 0} of ${w.workloadStatus.desiredReplicas ?? 0} available, ${w.workloadStatus.syncedProxies ?? 0} proxies synced` : undefined],
          ["Labels", Object.entries(w.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ")],
          ["Services", (w.services ?? []).length ? h("span", null, (w.services ?? []).map((s, i) => [i ? ", " : "", h("a", { href: href(`/namespaces/${enc(ns)}/services/${enc(s)}`) }, s)])) : "–"],
          ["Traces", app ? h("a", { href: href("/traces", { service: `${app}.${ns}` }), "data-testid": "link-traces" }, `Traces of ${app}.${ns}`) : "–"],
          ["Graph", h("a", { href: href("/graph", { namespaces: ns }) }, `Graph of ${ns}`)],
        ]),
        w.rollout ? rolloutPanel(w.rollout) : null,
        h("h2", null, "Pods"),
        podsTable(w.pods ?? []),
        h("h2", null, "Istio config that applies"),
        configTable(w.istioConfig ?? [], "workload-config"),
        h("h2", null, "Canary weights"),
        canaryTable(w),
        metricsSection("workloads", ns, name, route.params.get("duration") ?? "600s"),
      );
    } catch (e) {
      showError(body, `Could not load workload ${name}`, e);
    }
  })();
}

function canaryTable(w: Workload): HTMLElement {
  const rows = (w.canary ?? []).flatMap((c) => [
    ...c.destinations.map((d) =>
      h(
        "tr",
        { "data-testid": "canary-row" },
        h("td", null, c.virtualService),
        h("td", null, c.route ?? ""),
        h("td", null, d.host),
        h("td", null, d.subset ?? ""),
        h("td", null, h("span", { class: "weight" }, h("span", { class: "weight-bar", style: `width:${Math.max(0, Math.min(100, d.weight ?? 100))}px` }), `${d.weight ?? 100}%`)),
      ),
    ),
    ...(c.mirror
      ? [
          h(
            "tr",
            { "data-testid": "canary-mirror" },
            h("td", null, c.virtualService),
            h("td", null, c.route ?? ""),
            h("td", null, c.mirror.host),
            h("td", null, c.mirror.subset ?? ""),
            h("td", null, "mirrored copy of every request"),
          ),
        ]
      : []),
  ]);
  if (rows.length === 0) return message("empty", "No weighted routes send traffic to this workload.", "canary-empty");
  return h(
    "table",
    { class: "data", "data-testid": "canary" },
    h("thead", null, h("tr", null, ["VirtualService", "Route", "Host", "Subset", "Weight"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", null, rows),
  );
}

export function servicePage(root: HTMLElement, route: Route): void {
  const ns = route.parts[1] ?? "";
  const name = route.parts[3] ?? "";
  const body = h("div", { "data-testid": "service-page", "data-name": name }, loading());
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: href("/workloads", { namespace: ns }) }, `Services in ${ns}`), " › ", name),
    pageHeader(`Service ${name}`),
    body,
  );
  void (async () => {
    try {
      const s = await getJSON<Service>(`/api/namespaces/${enc(ns)}/services/${enc(name)}`);
      fill(
        body,
        kv([
          ["Namespace", s.namespace],
          ["Cluster IP", s.clusterIP],
          ["Ports", (s.ports ?? []).map((p) => `${p.name ?? ""} ${p.port ?? ""}/${p.protocol ?? "TCP"}`).join(", ")],
          ["Selector", Object.entries(s.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(", ")],
          ["Endpoints", (s.endpoints ?? []).map((e) => (typeof e === "string" ? e : JSON.stringify(e))).join(", ")],
          ["Workloads", (s.workloads ?? []).length ? h("span", null, (s.workloads ?? []).map((w, i) => [i ? ", " : "", h("a", { href: href(`/namespaces/${enc(ns)}/workloads/${enc(w)}`) }, w)])) : "–"],
        ]),
        h("h2", null, "Istio config that applies"),
        configTable(s.istioConfig ?? [], "service-config"),
        metricsSection("services", ns, name, route.params.get("duration") ?? "600s"),
      );
    } catch (e) {
      showError(body, `Could not load service ${name}`, e);
    }
  })();
}
