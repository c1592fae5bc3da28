// Unit tests of the page's logic that needs no browser: Kiali's health tolerances, the graph
// model (names, rates, colours) and the left-to-right layout. `npm test` bundles
// src/graphmodel.ts for Node with Vite, then runs this with Node's test runner.
import { test } from "node:test";
import assert from "node:assert/strict";
import { edgeInfo, layered, model, nodeName } from "./.build/graphmodel.js";

const node = (id, d) => ({ data: { id, namespace: "blog-system", nodeType: "app", ...d } });
const edge = (id, source, target, http, responses = { 200: { flags: { "-": "100.0" } } }, extra = {}) => ({
  data: { id, source, target, traffic: { protocol: "http", rates: { http }, responses }, ...extra },
});

test("Kiali's tolerances colour an edge: 5xx degraded from 0.1 %, failing from 10 %; 4xx at 10 % / 20 %", () => {
  const level = (responses) => edgeInfo(edge("e", "a", "b", "1.00", responses).data).level;
  assert.equal(level({ 200: { flags: { "-": "100.0" } } }), "healthy");
  assert.equal(level({ 200: { flags: { "-": "99.95" } }, 503: { flags: { UF: "0.05" } } }), "healthy");
  assert.equal(level({ 200: { flags: { "-": "99.9" } }, 503: { flags: { UF: "0.1" } } }), "degraded");
  assert.equal(level({ 200: { flags: { "-": "90.0" } }, 500: { flags: { "-": "10.0" } } }), "failure");
  assert.equal(level({ 200: { flags: { "-": "91.0" } }, 404: { flags: { "-": "9.0" } } }), "healthy");
  assert.equal(level({ 200: { flags: { "-": "90.0" } }, 404: { flags: { "-": "10.0" } } }), "degraded");
  assert.equal(level({ 200: { flags: { "-": "80.0" } }, 403: { flags: { "-": "20.0" } } }), "failure");
  // Several flags of one code add up.
  assert.equal(level({ 200: { flags: { "-": "90.0" } }, 503: { flags: { UF: "5.0", UO: "5.0" } } }), "failure");
  assert.equal(edgeInfo(edge("e", "a", "b", "0.00").data).level, "idle");
});

test("an edge's numbers: rate, error share, mTLS, response time; TCP in bytes", () => {
  const e = edgeInfo(edge("e", "a", "b", "2.50", { 200: { flags: { "-": "96.0" } }, 503: { flags: { UF: "4.0" } } }, { isMTLS: "100", responseTime: "12.5" }).data);
  assert.equal(e.rate, 2.5);
  assert.equal(e.err5xxPct, 4);
  assert.equal(e.mtls, 100);
  assert.equal(e.responseTime, 12.5);
  const tcp = edgeInfo({ id: "t", source: "a", target: "b", traffic: { protocol: "tcp", rates: { tcp: "1234.5" } } });
  assert.equal(tcp.protocol, "tcp");
  assert.equal(tcp.rate, 1234.5);
  assert.equal(tcp.level, "healthy");
  // A rate that is not a number is no traffic, not NaN.
  assert.equal(edgeInfo(edge("e", "a", "b", "bogus").data).rate, 0);
});

test("node names by graph type: versions in the versioned-app graph, never 'latest'", () => {
  assert.equal(nodeName({ id: "1", namespace: "n", nodeType: "app", app: "web", version: "canary" }, "versionedApp"), "web canary");
  assert.equal(nodeName({ id: "1", namespace: "n", nodeType: "app", app: "web", version: "canary" }, "app"), "web");
  assert.equal(nodeName({ id: "1", namespace: "n", nodeType: "app", app: "istio-ingressgateway", version: "latest" }, "versionedApp"), "istio-ingressgateway");
  assert.equal(nodeName({ id: "1", namespace: "n", nodeType: "workload", workload: "web-stable", app: "web" }, "workload"), "web-stable");
  assert.equal(nodeName({ id: "1", namespace: "n", nodeType: "service", service: "was-service" }, "service"), "was-service");
  assert.equal(nodeName({ id: "b", namespace: "n", nodeType: "box", isBox: "app", app: "web" }, "versionedApp"), "web");
});

function blog() {
  return {
    timestamp: 0,
    duration: 600,
    graphType: "versionedApp",
    elements: {
      nodes: [
        node("gw", { app: "istio-ingressgateway", namespace: "istio-system", isGateway: {}, isRoot: true, traffic: [{ protocol: "http", rates: { httpOut: "3.00" } }] }),
        node("bweb", { nodeType: "box", isBox: "app", app: "web" }),
        node("stable", { parent: "bweb", app: "web", version: "stable", traffic: [{ protocol: "http", rates: { httpIn: "2.00", httpOut: "2.00" } }] }),
        node("canary", { parent: "bweb", app: "web", version: "canary", traffic: [{ protocol: "http", rates: { httpIn: "1.00", httpIn5xx: "0.50", httpOut: "1.00" } }] }),
        node("was", { app: "was", version: "v1", traffic: [{ protocol: "http", rates: { httpIn: "3.00" } }] }),
        node("db", { app: "mysql", traffic: [{ protocol: "tcp", rates: { tcpIn: "100.0" } }] }),
      ],
      edges: [
        edge("e1", "gw", "stable", "2.00"),
        edge("e2", "gw", "canary", "1.00", { 200: { flags: { "-": "50.0" } }, 503: { flags: { "-": "50.0" } } }),
        edge("e3", "stable", "was", "2.00"),
        edge("e4", "canary", "was", "1.00"),
        { data: { id: "e5", source: "was", target: "db", traffic: { protocol: "tcp", rates: { tcp: "100.0" } } } },
      ],
    },
  };
}

test("health: nodes from their inbound 5xx, a box from its worst member, the gateway from what it sends", () => {
  const m = model(blog());
  const lvl = (id) => m.byId.get(id).level;
  assert.equal(lvl("stable"), "healthy");
  assert.equal(lvl("canary"), "failure");
  assert.equal(lvl("bweb"), "failure");
  assert.equal(lvl("was"), "healthy");
  assert.equal(lvl("gw"), "failure", "the gateway sends half of the canary's requests to 503s");
  assert.equal(lvl("db"), "healthy", "a TCP server with bytes arriving");
  assert.equal(m.byId.get("gw").gateway, true);
});

test("layout: callers left of callees, a box's versions in one column, nothing overlapping", () => {
  const m = model(blog());
  const pos = layered(m);
  const x = (id) => pos.get(id).x;
  assert.ok(x("gw") < x("stable"));
  assert.equal(x("stable"), x("canary"), "web's versions share the web box's column");
  assert.ok(x("stable") < x("was"));
  assert.ok(x("was") < x("db"));
  assert.equal(pos.has("bweb"), false, "a box takes its place from its members");
  const spots = [...pos.values()].map((p) => `${p.x},${p.y}`);
  assert.equal(new Set(spots).size, spots.length, "no two nodes at one place");
});

test("layout terminates on a cycle and still places every node", () => {
  const g = {
    timestamp: 0,
    duration: 60,
    graphType: "app",
    elements: {
      nodes: [node("a", { app: "a" }), node("b", { app: "b" }), node("c", { app: "c" })],
      edges: [edge("1", "a", "b", "1"), edge("2", "b", "c", "1"), edge("3", "c", "a", "1"), edge("4", "a", "a", "1")],
    },
  };
  const pos = layered(model(g));
  assert.equal(pos.size, 3);
  for (const p of pos.values()) assert.ok(Number.isFinite(p.x) && Number.isFinite(p.y));
});
