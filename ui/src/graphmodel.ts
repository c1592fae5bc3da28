// The graph API's elements turned into what the page draws: names, numbers, health and a
// left-to-right layered layout (each app box a column of its versions).

import type { Graph, GraphEdgeData, GraphNodeData } from "./api";
import { levelFromRates, worst as worstLevel, type Level } from "./health";
import { num } from "./format";

export interface NodeInfo {
  data: GraphNodeData;
  name: string;
  kind: "box" | "app" | "workload" | "service" | "unknown";
  gateway: boolean;
  outside: boolean;
  level: Level;
  httpIn: number;
  httpIn5xx: number;
  httpIn4xx: number;
  httpOut: number;
  tcpIn: number;
  tcpOut: number;
}

export interface EdgeInfo {
  data: GraphEdgeData;
  protocol: string;
  rate: number; // req/s for http, bytes/s for tcp
  errPct: number;
  err5xxPct: number;
  err4xxPct: number;
  responseTime: number; // ms
  mtls: number; // percent
  level: Level;
}

export function nodeName(d: GraphNodeData, graphType: string): string {
  if (d.isBox) return d.app ?? d.namespace;
  switch (d.nodeType) {
    case "app":
      return graphType === "versionedApp" && d.version && d.version !== "latest" && d.version !== "unknown"
        ? `${d.app ?? "?"} ${d.version}`
        : (d.app ?? "?");
    case "workload":
      return d.workload ?? "?";
    case "service":
      return d.service ?? "?";
    case "unknown":
      return "unknown";
    default:
      return d.workload ?? d.app ?? d.service ?? d.id.slice(0, 8);
  }
}

function rates(d: GraphNodeData, proto: string): Record<string, string> {
  return d.traffic?.find((t) => t.protocol === proto)?.rates ?? {};
}

export function nodeInfo(d: GraphNodeData, graphType: string): NodeInfo {
  const http = rates(d, "http");
  const tcp = rates(d, "tcp");
  const httpIn = num(http.httpIn);
  const httpIn5xx = num(http.httpIn5xx);
  const httpIn4xx = num(http.httpIn4xx);
  const kind = d.isBox ? "box" : d.nodeType === "app" || d.nodeType === "workload" || d.nodeType === "service" ? d.nodeType : "unknown";
  return {
    data: d,
    name: nodeName(d, graphType),
    kind,
    gateway: Boolean(d.isGateway),
    outside: Boolean(d.isOutside),
    level: d.isIdle ? "idle" : levelFromRates(httpIn, httpIn5xx, httpIn4xx),
    httpIn,
    httpIn5xx,
    httpIn4xx,
    httpOut: num(http.httpOut),
    tcpIn: num(tcp.tcpIn),
    tcpOut: num(tcp.tcpOut),
  };
}

export function edgeInfo(d: GraphEdgeData): EdgeInfo {
  const t = d.traffic;
  const protocol = t?.protocol ?? "http";
  const r = t?.rates ?? {};
  let e5 = 0;
  let e4 = 0;
  for (const [code, resp] of Object.entries(t?.responses ?? {})) {
    const share = Object.values(resp.flags ?? {}).reduce((a, v) => a + num(v), 0);
    if (code.startsWith("5")) e5 += share;
    else if (code.startsWith("4")) e4 += share;
  }
  const rate = protocol === "tcp" ? num(r.tcp) : num(r.http ?? r.grpc);
  const errPct = r.httpPercentErr !== undefined ? num(r.httpPercentErr) : e5 + e4;
  let level: Level = "idle";
  if (rate > 0 && protocol !== "tcp") {
    level = e5 >= 10 || e4 >= 20 ? "failure" : e5 >= 0.1 || e4 >= 10 ? "degraded" : "healthy";
  } else if (rate > 0) level = "healthy";
  return {
    data: d,
    protocol,
    rate,
    errPct,
    err5xxPct: e5,
    err4xxPct: e4,
    responseTime: num(d.responseTime),
    mtls: num(d.isMTLS),
    level,
  };
}

export interface Model {
  nodes: NodeInfo[];
  edges: EdgeInfo[];
  byId: Map<string, NodeInfo>;
}

export function model(g: Graph): Model {
  const nodes = (g.elements.nodes ?? []).map((n) => nodeInfo(n.data, g.graphType));
  const edges = (g.elements.edges ?? []).map((e) => edgeInfo(e.data));
  const byId = new Map(nodes.map((n) => [n.data.id, n]));
  // A node nobody calls over HTTP (the gateway, a TCP server) is as healthy as its traffic:
  // the requests it sends, or TCP bytes arriving.
  for (const n of nodes) {
    if (n.level !== "none" || n.kind === "box") continue;
    const out = edges.filter((e) => e.data.source === n.data.id && e.protocol !== "tcp" && e.rate > 0);
    if (out.length) n.level = out.map((e) => e.level).reduce((a, b) => worstLevel(a, b));
    else if (n.tcpIn > 0) n.level = "healthy";
  }
  // A box is as healthy as its worst member.
  for (const n of nodes) {
    const p = n.data.parent ? byId.get(n.data.parent) : undefined;
    if (p && (n.level === "failure" || (n.level === "degraded" && p.level !== "failure") || (n.level === "healthy" && (p.level === "none" || p.level === "idle"))))
      p.level = n.level;
  }
  return { nodes, edges, byId };
}

/** Positions for a left-to-right layered drawing: callers before callees, boxes kept whole. */
export function layered(m: Model): Map<string, { x: number; y: number }> {
  const COL = 250;
  const ROW = 95;
  const unitOf = (id: string): string => m.byId.get(id)?.data.parent ?? id;
  const members = new Map<string, NodeInfo[]>();
  for (const n of m.nodes) {
    if (n.kind === "box") continue;
    const u = unitOf(n.data.id);
    members.set(u, [...(members.get(u) ?? []), n]);
  }
  const units = [...members.keys()];
  const links: Array<[string, string]> = [];
  for (const e of m.edges) {
    const a = unitOf(e.data.source);
    const b = unitOf(e.data.target);
    if (a !== b && members.has(a) && members.has(b)) links.push([a, b]);
  }
  const rank = new Map(units.map((u) => [u, 0]));
  const cap = units.length;
  for (let i = 0; i < cap; i += 1) {
    let changed = false;
    for (const [a, b] of links) {
      const want = (rank.get(a) ?? 0) + 1;
      if (want < cap && (rank.get(b) ?? 0) < want) {
        rank.set(b, want);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const cols = new Map<number, string[]>();
  for (const u of units) {
    const r = rank.get(u) ?? 0;
    cols.set(r, [...(cols.get(r) ?? []), u]);
  }
  const ys = new Map<string, number>();
  const pos = new Map<string, { x: number; y: number }>();
  const sortedRanks = [...cols.keys()].sort((a, b) => a - b);
  for (const r of sortedRanks) {
    const col = cols.get(r) ?? [];
    const bary = (u: string): number => {
      const from = links.filter(([, b]) => b === u).map(([a]) => ys.get(a)).filter((y): y is number => y !== undefined);
      return from.length ? from.reduce((a, b) => a + b, 0) / from.length : Number.POSITIVE_INFINITY;
    };
    col.sort((a, b) => bary(a) - bary(b) || a.localeCompare(b));
    const heights = col.map((u) => (members.get(u)?.length ?? 1) * ROW + (m.byId.get(u)?.kind === "box" ? 30 : 0));
    const total = heights.reduce((a, b) => a + b, 0);
    let y = -total / 2;
    col.forEach((u, i) => {
      const mem = (members.get(u) ?? []).slice().sort((a, b) => a.name.localeCompare(b.name));
      const hgt = heights[i] ?? ROW;
      ys.set(u, y + hgt / 2);
      const top = y + (hgt - mem.length * ROW) / 2;
      mem.forEach((n, j) => pos.set(n.data.id, { x: r * COL, y: top + j * ROW + ROW / 2 }));
      y += hgt;
    });
  }
  return pos;
}
