import cytoscape from "cytoscape";
import { h, fill, message, select, field } from "../dom";
import { getJSON, qs, type Graph, type HealthEntry } from "../api";
import { COLOURS, healthBadge, levelOf, worst, type Level } from "../health";
import { DURATIONS, bytes, durationText, ms, pct, rate } from "../format";
import { go, href, rememberNamespaces, rememberedNamespaces, type Route } from "../router";
import { edgeInfo, layered, model, type EdgeInfo, type Model, type NodeInfo } from "../graphmodel";
import { kv, loading, namespaces, nsChecks, pageHeader, refresher, showError } from "./common";

const GRAPH_TYPES: Array<[string, string]> = [
  ["app", "App"],
  ["versionedApp", "Versioned app"],
  ["workload", "Workload"],
  ["service", "Service"],
];
const EDGE_LABELS: Array<[string, string]> = [
  ["rps", "Request rate"],
  ["err", "Error %"],
  ["p95", "Response time (p95)"],
  ["none", "No labels"],
];

const PADLOCK =
  '<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true" focusable="false"><rect x="2.5" y="7" width="11" height="8" rx="1.5" fill="#151515"/><path d="M5 7V5a3 3 0 0 1 6 0v2" fill="none" stroke="#151515" stroke-width="1.8"/></svg>';

function edgeLabel(e: EdgeInfo, mode: string): string {
  if (mode === "none") return "";
  if (e.protocol === "tcp") return mode === "rps" ? `${bytes(e.rate)}/s` : "";
  if (mode === "err") return e.errPct > 0 ? pct(e.errPct) : "";
  if (mode === "p95") return e.responseTime > 0 ? ms(e.responseTime) : "";
  return e.rate > 0 ? `${rate(e.rate)} rps` : "";
}

const STYLE: cytoscape.StylesheetJson = [
  {
    selector: "node",
    style: {
      label: "data(label)",
      "font-family": "DejaVu Sans, Helvetica, Arial, sans-serif",
      "font-size": 12,
      "text-valign": "bottom",
      "text-margin-y": 5,
      "text-wrap": "wrap",
      "text-max-width": "140px",
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.85,
      "text-background-padding": "2px",
      "background-color": "#ffffff",
      "border-width": 3,
      "border-color": "data(colour)",
      width: 36,
      height: 36,
      shape: "ellipse",
    },
  },
  { selector: "node[kind = 'app']", style: { shape: "round-rectangle" } },
  { selector: "node[kind = 'service']", style: { shape: "round-triangle" } },
  { selector: "node[kind = 'unknown']", style: { shape: "diamond", "border-style": "dashed" } },
  { selector: "node[?outside]", style: { shape: "round-diamond", "border-style": "dashed", "background-color": "#f0f0f0" } },
  // A gateway is drawn as one even when it lies outside the namespaces picked.
  { selector: "node[?gateway]", style: { shape: "round-hexagon", width: 46, height: 46, "border-style": "solid", "background-color": "#e7f1fa" } },
  {
    selector: "node[kind = 'box']",
    style: {
      shape: "round-rectangle",
      "background-color": "#f5f5f5",
      "background-opacity": 0.6,
      "border-width": 2,
      "border-style": "dashed",
      "text-valign": "top",
      "text-margin-y": -4,
      "font-weight": "bold",
      padding: "14px",
    },
  },
  { selector: "node:selected", style: { "overlay-color": "#0066cc", "overlay-opacity": 0.2, "border-width": 5 } },
  {
    selector: "edge",
    style: {
      width: 2,
      "curve-style": "bezier",
      "line-color": "data(colour)",
      "target-arrow-color": "data(colour)",
      "target-arrow-shape": "triangle",
      "arrow-scale": 1.1,
      label: "data(label)",
      "font-size": 11,
      "text-rotation": "autorotate",
      "text-margin-y": -10,
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.85,
      "text-background-padding": "1px",
    },
  },
  { selector: "edge[protocol = 'tcp']", style: { "line-style": "dashed" } },
  {
    selector: "edge[?skip]",
    style: { "curve-style": "unbundled-bezier", "control-point-distances": "data(bend)", "control-point-weights": 0.5 },
  },
  { selector: "edge:selected", style: { width: 4, "overlay-color": "#0066cc", "overlay-opacity": 0.15 } },
];

interface State {
  namespaces: string[];
  graphType: string;
  duration: string;
  edgeLabels: string;
}

function state(route: Route, all: string[]): State {
  const p = route.params;
  const fromUrl = (p.get("namespaces") ?? "").split(",").filter(Boolean);
  let ns = fromUrl.length ? fromUrl : rememberedNamespaces();
  ns = ns.filter((n) => all.includes(n));
  return {
    namespaces: ns,
    graphType: GRAPH_TYPES.some(([v]) => v === p.get("graphType")) ? (p.get("graphType") as string) : "versionedApp",
    duration: DURATIONS.some(([v]) => v === p.get("duration")) ? (p.get("duration") as string) : "600s",
    edgeLabels: EDGE_LABELS.some(([v]) => v === p.get("edgeLabels")) ? (p.get("edgeLabels") as string) : "rps",
  };
}

function params(s: State): Record<string, string> {
  return { namespaces: s.namespaces.join(","), graphType: s.graphType, duration: s.duration, edgeLabels: s.edgeLabels };
}

export function graph(root: HTMLElement, route: Route): () => void {
  const controls = h("div", { class: "toolbar graph-controls" });
  const bar = h("div", { class: "toolbar" });
  const status = h("div", { class: "graph-status" });
  const canvas = h("div", { class: "cy", "data-testid": "graph-canvas", role: "img", "aria-label": "Service graph (the table below lists the same nodes and edges)" });
  const overlay = h("div", { class: "cy-overlay", "aria-hidden": "true" });
  const panel = h("aside", { class: "side-panel", "data-testid": "side-panel", "aria-label": "Selected node or edge" }, h("p", { class: "hint" }, "Select a node or an edge (click it, or use the table below) to see its numbers."));
  const table = h("div", { class: "graph-table" });
  const legend = h(
    "ul",
    { class: "legend graph-legend", "aria-label": "Legend" },
    h("li", null, h("span", { class: "swatch", style: `background:${COLOURS.healthy}` }), "healthy"),
    h("li", null, h("span", { class: "swatch", style: `background:${COLOURS.degraded}` }), "degraded (5xx ≥ 0.1 % or 4xx ≥ 10 %)"),
    h("li", null, h("span", { class: "swatch", style: `background:${COLOURS.failure}` }), "failure (5xx ≥ 10 % or 4xx ≥ 20 %)"),
    h("li", null, h("span", { class: "swatch", style: `background:${COLOURS.idle}` }), "idle / no data"),
    h("li", null, h("span", { class: "lock" }), "mTLS"),
    h("li", null, "⬡ gateway · ◇ outside / unknown · ▢ app · ○ workload · △ service"),
  );
  const lockItem = legend.querySelector(".lock");
  if (lockItem) lockItem.innerHTML = PADLOCK;
  root.append(
    pageHeader("Graph"),
    controls,
    bar,
    status,
    h("div", { class: "graph-wrap" }, h("div", { class: "cy-box" }, canvas, overlay), panel),
    legend,
    table,
  );

  let cy: cytoscape.Core | null = null;
  let m: Model | null = null;
  let st: State | null = null;
  let selected: string | null = null;
  let stop = () => {};
  let destroyed = false;

  const drawPadlocks = () => {
    if (!cy) return;
    const spans: HTMLElement[] = [];
    cy.edges().forEach((e) => {
      if (!(Number(e.data("mtls")) > 0)) return;
      const p = e.renderedMidpoint();
      const span = h("span", { class: "padlock", style: `left:${p.x - 7}px;top:${p.y + 3}px` });
      span.innerHTML = PADLOCK;
      spans.push(span);
    });
    overlay.replaceChildren(...spans);
  };

  const select_ = (id: string | null) => {
    selected = id;
    if (cy) {
      cy.elements().unselect();
      if (id) cy.getElementById(id).select();
    }
    drawPanel();
    for (const row of table.querySelectorAll<HTMLElement>("[data-el]")) row.classList.toggle("selected", row.dataset.el === id);
  };

  const drawPanel = () => {
    if (!m || !st || !selected) {
      fill(panel, h("p", { class: "hint" }, "Select a node or an edge (click it, or use the table below) to see its numbers."));
      return;
    }
    const n = m.byId.get(selected);
    if (n) return fill(panel, nodePanel(n, st, m));
    const e = m.edges.find((x) => x.data.id === selected);
    if (e) return fill(panel, edgePanel(e, m));
    selected = null;
    drawPanel();
  };

  const build = (g: Graph, s: State) => {
    const next = model(g);
    const pos = layered(next);
    const els: cytoscape.ElementDefinition[] = [
      ...next.nodes.map((n) => ({
        group: "nodes" as const,
        data: {
          id: n.data.id,
          parent: n.data.parent,
          label: n.name + (n.data.isRoot && !n.gateway ? "" : ""),
          kind: n.kind,
          gateway: n.gateway,
          outside: n.outside || n.kind === "unknown",
          colour: COLOURS[n.level],
        },
        position: pos.get(n.data.id),
      })),
      ...next.edges
        .filter((e) => next.byId.has(e.data.source) && next.byId.has(e.data.target))
        .map((e) => ({
          group: "edges" as const,
          data: {
            id: e.data.id,
            source: e.data.source,
            target: e.data.target,
            label: edgeLabel(e, s.edgeLabels),
            colour: e.protocol === "tcp" && e.rate > 0 ? "#0066cc" : COLOURS[e.level],
            mtls: e.mtls,
            protocol: e.protocol,
            // An edge that skips a column or stays in one bends around the nodes between.
            ...(() => {
              const a = pos.get(e.data.source);
              const b = pos.get(e.data.target);
              const skip = a !== undefined && b !== undefined && (Math.abs(b.x - a.x) > 300 || Math.abs(b.x - a.x) < 10);
              // Away from the middle: up for edges in the upper half, down for the lower.
              const bend = a && b && (a.y + b.y) / 2 > 0 ? 70 : -70;
              return { skip, bend: b && a && b.x < a.x ? -bend : bend };
            })(),
          },
        })),
    ];
    const sameShape =
      cy !== null &&
      m !== null &&
      m.nodes.length === next.nodes.length &&
      next.nodes.every((n) => cy?.getElementById(n.data.id).nonempty()) &&
      m.edges.length === next.edges.length &&
      next.edges.every((e) => cy?.getElementById(e.data.id).nonempty());
    m = next;
    if (cy && sameShape) {
      for (const el of els) cy.getElementById(el.data.id as string).data(el.data);
    } else {
      cy?.destroy();
      cy = cytoscape({
        container: canvas,
        elements: els,
        style: STYLE,
        layout: { name: "preset", fit: true, padding: 40 },
        minZoom: 0.3,
        maxZoom: 2.5,
        autoungrabify: true,
        boxSelectionEnabled: false,
        selectionType: "single",
      });
      if (cy.zoom() > 1.4) {
        cy.zoom(1.4);
        cy.center();
      }
      cy.on("tap", "node, edge", (ev) => select_(ev.target.id() as string));
      cy.on("tap", (ev) => {
        if (ev.target === cy) select_(null);
      });
      cy.on("render", drawPadlocks);
    }
    drawPadlocks();
    drawTable(next, s);
    if (selected && !next.byId.has(selected) && !next.edges.some((e) => e.data.id === selected)) selected = null;
    select_(selected);
  };

  const drawTable = (mm: Model, s: State) => {
    const name = (id: string) => mm.byId.get(id)?.name ?? id.slice(0, 8);
    const nodeRows = mm.nodes.map((n) =>
      rowSelects(
        h(
          "tr",
          {
            "data-testid": "graph-node",
            "data-el": n.data.id,
            "data-name": n.name,
            "data-kind": n.kind,
            "data-app": n.data.app ?? "",
            "data-version": n.data.version ?? "",
            "data-workload": n.data.workload ?? "",
            "data-namespace": n.data.namespace,
            "data-box": n.data.parent ? (mm.byId.get(n.data.parent)?.name ?? "") : "",
            "data-gateway": n.gateway ? "true" : null,
          },
          h("td", null, h("button", { type: "button", class: "link", "aria-label": `Select node ${n.name}` }, n.name)),
          h("td", null, n.kind === "box" ? "app box" : n.kind + (n.gateway ? " (gateway)" : n.outside ? " (outside)" : "")),
          h("td", null, n.data.namespace),
          h("td", null, n.data.parent ? (mm.byId.get(n.data.parent)?.name ?? "") : ""),
          h("td", null, n.httpIn > 0 ? `${rate(n.httpIn)} rps` : ""),
          h("td", null, healthBadge(n.level)),
        ),
        () => select_(n.data.id),
      ),
    );
    const edgeRows = mm.edges.map((e) =>
      rowSelects(
        h(
          "tr",
          {
            "data-testid": "graph-edge",
            "data-el": e.data.id,
            "data-source": name(e.data.source),
            "data-target": name(e.data.target),
            "data-protocol": e.protocol,
            "data-rate": String(e.rate),
            "data-mtls": e.mtls > 0 ? "true" : "false",
          },
          h("td", null, h("button", { type: "button", class: "link", "aria-label": `Select edge ${name(e.data.source)} to ${name(e.data.target)}` }, name(e.data.source))),
          h("td", null, name(e.data.target)),
          h("td", null, e.protocol),
          h("td", { "data-testid": "edge-rate" }, e.protocol === "tcp" ? `${bytes(e.rate)}/s` : `${rate(e.rate)} rps`),
          h("td", null, e.protocol === "tcp" ? "" : pct(e.errPct)),
          h("td", null, e.responseTime > 0 ? ms(e.responseTime) : ""),
          h(
            "td",
            { "data-testid": "edge-mtls" },
            e.mtls > 0 ? [h("span", { class: "lock", "aria-hidden": "true" }), `mTLS ${e.mtls}%`] : "plain",
          ),
        ),
        () => select_(e.data.id),
      ),
    );
    const details = table.querySelector("details");
    const open = details ? details.open : true;
    fill(
      table,
      h(
        "details",
        { "data-testid": "graph-table", open: open ? true : null },
        h("summary", null, `Nodes (${mm.nodes.length}) and edges (${mm.edges.length}) as tables`),
        h(
          "table",
          { class: "data", "data-testid": "graph-nodes" },
          h("caption", null, `Nodes, ${s.graphType} graph`),
          h("thead", null, h("tr", null, ["Name", "Type", "Namespace", "In box", "Inbound", "Health"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", null, nodeRows),
        ),
        h(
          "table",
          { class: "data", "data-testid": "graph-edges" },
          h("caption", null, "Edges"),
          h("thead", null, h("tr", null, ["From", "To", "Protocol", "Rate", "Errors", "p95", "Security"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", null, edgeRows),
        ),
      ),
    );
    for (const l of table.querySelectorAll(".lock")) l.innerHTML = PADLOCK;
  };

  const health = async (s: State): Promise<Map<string, Level>> => {
    const type = s.graphType === "service" ? "service" : s.graphType === "workload" || s.graphType === "versionedApp" ? "workload" : "app";
    const out = new Map<string, Level>();
    await Promise.all(
      s.namespaces.map(async (ns) => {
        try {
          const hh = await getJSON<Record<string, HealthEntry>>(`/api/namespaces/${encodeURIComponent(ns)}/health${qs({ type, rateInterval: s.duration })}`);
          for (const [name, e] of Object.entries(hh)) out.set(`${ns}/${name}`, levelOf(e.status?.status));
        } catch {
          /* health is a refinement of the colours; the graph stands without it */
        }
      }),
    );
    return out;
  };

  const load = async () => {
    if (!st) return;
    if (st.namespaces.length === 0) {
      fill(status, message("info", "Pick one or more namespaces to draw their graph.", "pick-namespace"));
      return;
    }
    const s = st;
    try {
      const [g, hl] = await Promise.all([
        getJSON<Graph>(
          `/api/namespaces/graph${qs({ namespaces: s.namespaces.join(","), graphType: s.graphType, duration: s.duration, injectServiceNodes: s.graphType === "service" ? "true" : "false", responseTime: 95, idleEdges: "false" })}`,
        ),
        health(s),
      ]);
      if (destroyed) return;
      // Pods not ready or workload-level failures from the health API darken the colours.
      for (const n of g.elements.nodes) {
        const key = `${n.data.namespace}/${s.graphType === "service" ? (n.data.service ?? "") : (n.data.workload ?? n.data.app ?? "")}`;
        const lvl = hl.get(key);
        if (lvl && lvl !== "none" && lvl !== "healthy") (n.data as { _health?: Level })._health = lvl;
      }
      if (g.elements.nodes.length === 0) {
        fill(status, message("empty", `No traffic in the last ${durationText(s.duration)} in ${s.namespaces.join(", ")}: send some requests, then refresh.`, "graph-empty"));
        cy?.destroy();
        cy = null;
        m = null;
        overlay.replaceChildren();
        fill(table);
        return;
      }
      fill(status);
      build(g, s);
      if (m) {
        const mm: Model = m;
        for (const n of mm.nodes) {
          const extra = (n.data as { _health?: Level })._health;
          if (extra) {
            n.level = worst(n.level, extra);
            cy?.getElementById(n.data.id).data("colour", COLOURS[n.level]);
          }
        }
        drawTable(mm, s);
      }
    } catch (e) {
      showError(status, "Could not load the graph", e);
    }
  };

  void (async () => {
    let all: string[];
    try {
      all = (await namespaces()).map((n) => n.name);
    } catch (e) {
      showError(status, "Could not list the namespaces", e);
      return;
    }
    if (destroyed) return;
    st = state(route, all);
    if (st.namespaces.length === 0) {
      const app = all.filter((n) => n !== "istio-system");
      if (app.length > 0) st.namespaces = [app[0] as string];
    }
    const s = st;
    const setAndGo = () => {
      rememberNamespaces(s.namespaces);
      go("/graph", params(s), true);
    };
    const gt = select(GRAPH_TYPES, s.graphType, { "data-testid": "graph-type" });
    gt.addEventListener("change", () => {
      s.graphType = gt.value;
      setAndGo();
    });
    const du = select(DURATIONS, s.duration, { "data-testid": "graph-duration" });
    du.addEventListener("change", () => {
      s.duration = du.value;
      setAndGo();
    });
    const el = select(EDGE_LABELS, s.edgeLabels, { "data-testid": "edge-labels" });
    el.addEventListener("change", () => {
      s.edgeLabels = el.value;
      history.replaceState(null, "", href("/graph", params(s)));
      if (m && cy) cy.edges().forEach((e) => {
        const info = m?.edges.find((x) => x.data.id === e.id());
        if (info) e.data("label", edgeLabel(info, s.edgeLabels));
      });
    });
    fill(
      controls,
      nsChecks(
        all.map((name) => ({ name })),
        s.namespaces,
        (ns) => {
          s.namespaces = ns;
          setAndGo();
        },
      ),
      field("Graph type", gt),
      field("Window", du),
      field("Edge labels", el),
    );
    rememberNamespaces(s.namespaces);
    fill(status, loading());
    const r = refresher(bar, 12_000, load);
    stop = r.stop;
    await r.now();
  })();

  return () => {
    destroyed = true;
    stop();
    cy?.destroy();
    cy = null;
  };
}

/** A table row whose first cell's button selects it (keyboard); a click anywhere on it too. */
function rowSelects(tr: HTMLTableRowElement, act: () => void): HTMLTableRowElement {
  tr.classList.add("selectable");
  tr.addEventListener("click", act);
  return tr;
}

function flags(d: NodeInfo["data"]): string[] {
  const out: string[] = [];
  if (d.hasVS) out.push("VirtualService");
  if (d.hasCB) out.push("circuit breaker");
  if (d.hasTrafficShifting) out.push("traffic shifting");
  if (d.hasRequestRouting) out.push("request routing");
  if (d.hasMirroring) out.push("mirroring");
  if (d.hasFaultInjection) out.push("fault injection");
  if (d.hasRequestTimeout) out.push("request timeout");
  if (d.hasRetries) out.push("retries");
  if (d.isRoot) out.push("root");
  if (d.isOutOfMesh) out.push("out of mesh");
  if (d.isIdle) out.push("idle");
  return out;
}

function serviceName(n: NodeInfo): string | undefined {
  const app = n.data.app ?? n.data.workload;
  if (!app || app === "unknown") return undefined;
  return `${app}.${n.data.namespace}`;
}

function nodePanel(n: NodeInfo, s: State, m: Model): HTMLElement {
  const d = n.data;
  const links: HTMLElement[] = [];
  if (d.workload && d.workload !== "unknown") {
    links.push(h("a", { href: href(`/namespaces/${encodeURIComponent(d.namespace)}/workloads/${encodeURIComponent(d.workload)}`), "data-testid": "link-workload" }, `Workload ${d.workload}`));
    links.push(h("a", { href: href("/logs", { namespace: d.namespace, workload: d.workload }) }, "Logs"));
  } else if (n.kind === "app" || n.kind === "box") {
    links.push(h("a", { href: href("/workloads", { namespace: d.namespace, app: d.app }), "data-testid": "link-workload" }, `Workloads of ${d.app ?? ""}`));
  }
  if (d.service) links.push(h("a", { href: href(`/namespaces/${encodeURIComponent(d.namespace)}/services/${encodeURIComponent(d.service)}`) }, `Service ${d.service}`));
  const svc = serviceName(n);
  if (svc && n.kind !== "service") links.push(h("a", { href: href("/traces", { service: svc }), "data-testid": "link-traces" }, `Traces of ${svc}`));
  const inbound = m.edges.filter((e) => e.data.target === d.id);
  const outbound = m.edges.filter((e) => e.data.source === d.id);
  return h(
    "div",
    { "data-testid": "node-panel", "data-name": n.name },
    h("h2", null, n.name),
    healthBadge(n.level),
    kv([
      ["Type", n.kind + (n.gateway ? " (gateway)" : "")],
      ["Namespace", d.namespace],
      ["App", d.app],
      ["Version", d.version],
      ["Workload", d.workload],
      ["Service", d.service ?? d.destServices?.map((x) => x.name).join(", ")],
      ["HTTP in", n.httpIn > 0 ? `${rate(n.httpIn)} rps` : "–"],
      ["HTTP in 5xx", n.httpIn > 0 ? pct((100 * n.httpIn5xx) / n.httpIn) : "–"],
      ["HTTP out", n.httpOut > 0 ? `${rate(n.httpOut)} rps` : "–"],
      ["TCP in / out", n.tcpIn || n.tcpOut ? `${bytes(n.tcpIn)}/s / ${bytes(n.tcpOut)}/s` : "–"],
      ["Edges", `${inbound.length} in, ${outbound.length} out`],
      ["Config", flags(d).join(", ") || "–"],
      ["Window", durationText(s.duration)],
    ]),
    h("ul", { class: "links" }, links.map((a) => h("li", null, a))),
  );
}

function edgePanel(e: EdgeInfo, m: Model): HTMLElement {
  const src = m.byId.get(e.data.source);
  const dst = m.byId.get(e.data.target);
  const codes = Object.entries(e.data.traffic?.responses ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const links: HTMLElement[] = [];
  if (dst?.data.workload && dst.data.workload !== "unknown")
    links.push(h("a", { href: href(`/namespaces/${encodeURIComponent(dst.data.namespace)}/workloads/${encodeURIComponent(dst.data.workload)}`), "data-testid": "link-workload" }, `Workload ${dst.data.workload}`));
  const svc = src ? serviceName(src) : undefined;
  if (svc) links.push(h("a", { href: href("/traces", { service: svc }), "data-testid": "link-traces" }, `Traces from ${svc}`));
  const info = edgeInfo(e.data);
  return h(
    "div",
    { "data-testid": "edge-panel" },
    h("h2", null, `${src?.name ?? "?"} → ${dst?.name ?? "?"}`),
    healthBadge(info.level),
    kv([
      ["Protocol", e.protocol],
      [e.protocol === "tcp" ? "Throughput" : "Request rate", e.protocol === "tcp" ? `${bytes(e.rate)}/s` : `${rate(e.rate)} rps`],
      ["Errors", e.protocol === "tcp" ? "–" : `${pct(e.errPct)} (5xx ${pct(e.err5xxPct)}, 4xx ${pct(e.err4xxPct)})`],
      ["Response time (p95)", e.responseTime > 0 ? ms(e.responseTime) : "–"],
      ["Throughput", e.data.throughput ? `${bytes(Number(e.data.throughput))}/s` : "–"],
      ["mTLS", e.mtls > 0 ? `${e.mtls}% of requests` : "none"],
      ["Client identity", e.data.sourcePrincipal],
      ["Server identity", e.data.destPrincipal],
    ]),
    codes.length
      ? h(
          "table",
          { class: "data compact" },
          h("caption", null, "Responses"),
          h("thead", null, h("tr", null, h("th", { scope: "col" }, "Code"), h("th", { scope: "col" }, "Flags"), h("th", { scope: "col" }, "Share"))),
          h(
            "tbody",
            null,
            codes.map(([code, r]) =>
              Object.entries(r.flags ?? {}).map(([flag, share]) => h("tr", null, h("td", null, code), h("td", null, flag), h("td", null, `${share}%`))),
            ),
          ),
        )
      : null,
    h("ul", { class: "links" }, links.map((a) => h("li", null, a))),
  );
}
