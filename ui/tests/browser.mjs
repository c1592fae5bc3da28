// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core
// (never a downloaded browser). Run by crates/skein/tests/dashboard_browser.rs on
// `skein up examples/blog-system` with traffic flowing; it can also be run by hand:
//
//   node ui/tests/browser.mjs --url http://DASHBOARD --ingress http://INGRESS \
//     --skein target/debug/skein --state-dir .skein [--out target/dashboard-screenshots]
//
// Every check reads the DOM (the graph's accessible table, data-testid handles), never pixels.
// It fails on any console error or warning and on any uncaught page error. Exit 0 = all passed.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

function args() {
  const out = { out: "target/dashboard-screenshots" };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]?.replace(/^--/, "");
    const v = argv[i + 1];
    if (!k || v === undefined) throw new Error(`bad arguments: ${argv.join(" ")}`);
    out[k.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = v;
  }
  for (const need of ["url", "ingress", "skein", "stateDir"]) {
    if (!out[need]) throw new Error(`missing --${need.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
  }
  return out;
}

const opts = args();
const base = opts.url.replace(/\/$/, "");

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  console.error(
    `error: playwright-core is not installed (${e.message}); install ui/'s packages with ` +
      "`./scripts/build-ui` (npm ci from ui/package-lock.json)",
  );
  process.exit(2);
}
if (!existsSync(CHROMIUM)) {
  console.error(`error: ${CHROMIUM} is missing; install Debian's Chromium with \`apt-get install chromium\` (./scripts/test does)`);
  process.exit(2);
}

const started = Date.now();
const step = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${what}`);

let passed = 0;
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  passed += 1;
  console.log(`  ok: ${what}`);
}

/** Requests through the ingress: the graph's, the workload's and the traces' data. */
async function traffic(n, path = "/api/posts") {
  let ok = 0;
  const one = async () => {
    try {
      const r = await fetch(`${opts.ingress}${path}`);
      await r.arrayBuffer();
      if (r.status < 500) ok += 1;
    } catch {
      /* counted as not ok */
    }
  };
  for (let i = 0; i < n; i += 5) await Promise.all([one(), one(), one(), one(), one()]);
  return ok;
}

const shotsDir = resolve(opts.out);
mkdirSync(shotsDir, { recursive: true });
const shots = [];

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(20_000);
const problems = [];
page.on("console", (m) => {
  if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
});
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("requestfailed", (r) => {
  // A refresh that a route change aborted is not a failure.
  if (!(r.failure()?.errorText ?? "").includes("ERR_ABORTED")) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
});

async function shot(name) {
  const file = join(shotsDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  shots.push(file);
}

async function visit(hash) {
  await page.goto(`${base}/#${hash}`);
}

/** Clicks Refresh until `probe` returns something truthy, or fails with `what`. */
async function refreshUntil(probe, what, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
    await page.waitForTimeout(1500);
    const btn = page.getByTestId("refresh");
    if (await btn.count()) await btn.first().click();
    await page.waitForTimeout(500);
  }
}

const nodesNow = () =>
  page.$$eval("[data-testid=graph-node]", (rows) =>
    rows.map((r) => ({ name: r.dataset.name, kind: r.dataset.kind, app: r.dataset.app, version: r.dataset.version, box: r.dataset.box, gateway: r.dataset.gateway === "true" })),
  );
const edgesNow = () =>
  page.$$eval("[data-testid=graph-edge]", (rows) =>
    rows.map((r) => ({ source: r.dataset.source, target: r.dataset.target, rate: Number(r.dataset.rate), mtls: r.dataset.mtls === "true", text: r.textContent ?? "" })),
  );

let failure = null;
try {
  // 1. The overview: blog-system with its health and rate.
  step("overview");
  await page.goto(`${base}/`);
  await page.getByTestId("ns-card").filter({ hasText: "blog-system" }).waitFor();
  const card = page.locator("[data-testid=ns-card][data-namespace=blog-system]");
  check((await card.getByTestId("health").count()) === 1, "the overview shows blog-system's health");
  const nsRate = await refreshUntil(async () => {
    const t = await card.getByTestId("ns-rate").innerText();
    return /^(<)?[0-9.]+ req\/s$/.test(t) && !/^0 req/.test(t) ? t : null;
  }, "blog-system's request rate on the overview");
  check(true, `the overview shows blog-system's request rate (${nsRate})`);
  await shot("overview");

  // 2. The graph: pick blog-system, the versioned-app graph's nodes.
  step("graph (versioned app)");
  await page.getByTestId("nav-graph").click();
  await page.getByTestId("namespace-checks").waitFor();
  for (const box of await page.locator("[data-testid=namespace-checks] input[type=checkbox]").all()) {
    const want = (await box.getAttribute("value")) === "blog-system";
    if ((await box.isChecked()) !== want) {
      await box.setChecked(want);
      await page.getByTestId("namespace-checks").waitFor();
    }
  }
  await page.getByTestId("graph-type").selectOption("versionedApp");
  const versioned = await refreshUntil(async () => {
    const ns = await nodesNow();
    const has = (f) => ns.some(f);
    return has((n) => n.app === "istio-ingressgateway") &&
      has((n) => n.app === "web" && n.version === "latest") &&
      has((n) => n.app === "was")
      ? ns
      : null;
  }, "istio-ingressgateway, web's one revision (latest) and was in the versioned-app graph");
  // web is a Rollout with no update running: one revision, and Istio's canonical revision
  // `latest` (its pods have no version label). Kiali boxes an app only with more than one node.
  check(versioned.filter((n) => n.app === "web" && n.version).length === 1, "web has one version node");
  check(!versioned.some((n) => n.kind === "box" && n.name === "web"), "web's one version is not boxed");
  check(versioned.some((n) => n.app === "istio-ingressgateway" && n.gateway), "istio-ingressgateway is drawn as a gateway");
  check(versioned.some((n) => n.app === "was"), "was is a node");
  check((await page.locator(".cy canvas").count()) > 0, "cytoscape drew the graph on its canvas");
  await shot("graph-versioned-app");

  // 3. The app graph: web -> was with a padlock and a rate that grows with more traffic.
  step("graph (app): the web -> was edge");
  await page.getByTestId("graph-type").selectOption("app");
  const webWas = () => edgesNow().then((es) => es.find((e) => e.source === "web" && e.target === "was" && e.rate > 0));
  const first = await refreshUntil(webWas, "the web -> was edge with traffic");
  check(first.mtls && /mTLS/.test(first.text), "the web -> was edge is mutual TLS in the table");
  check((await page.locator(".cy-overlay .padlock").count()) > 0, "a padlock is drawn on the graph's mTLS edges");
  check(/rps/.test(first.text), `the web -> was edge shows its request rate (${first.rate} rps)`);
  await page.locator("[data-testid=graph-edge][data-source=web][data-target=was]").click();
  await page.getByTestId("edge-panel").waitFor();
  check(/web → was/.test(await page.getByTestId("edge-panel").innerText()), "clicking the edge opens its side panel");
  await shot("graph-app-edge-panel");
  step(`more traffic (the rate was ${first.rate})`);
  const sent = await traffic(150);
  check(sent >= 140, `the extra requests through the ingress succeeded (${sent}/150)`);
  const grown = await refreshUntil(async () => {
    const e = await webWas();
    return e && e.rate > first.rate ? e : null;
  }, `the web -> was rate to grow past ${first.rate}`);
  check(grown.rate > first.rate, `the web -> was rate grew after more traffic (${first.rate} -> ${grown.rate} rps)`);
  check(/Updated \d/.test(await page.getByTestId("last-updated").innerText()), "the graph says when it was last updated");

  // 4. was's workload page: its pods and was-authz.
  step("workload was");
  await page.getByTestId("nav-workloads").click();
  await page.locator("[data-testid=workload-row][data-name=was] a").click();
  await page.getByTestId("workload-page").waitFor();
  await page.locator("[data-testid=config-ref][data-name=was-authz]").waitFor();
  check((await page.locator("[data-testid=config-ref][data-kind=AuthorizationPolicy][data-name=was-authz]").count()) === 1, "was's page lists was-authz");
  const pods = await page.getByTestId("pod-row").count();
  check(pods === 2, `was's page lists its two pods (${pods})`);
  check((await page.getByTestId("pod-synced").first().innerText()).includes("synced"), "a pod's proxy says whether it is synced");
  await page.getByTestId("metrics-inbound").locator("figure").first().waitFor();
  await shot("workload-was");

  // 5. Traces: a gateway trace's waterfall with every hop.
  step("traces");
  await page.getByTestId("nav-traces").click();
  await page.getByTestId("trace-service").selectOption("istio-ingressgateway.istio-system");
  await page.getByTestId("trace-limit").fill("40");
  await page.getByTestId("trace-find").click();
  await page.getByTestId("trace-row").first().waitFor();
  check((await page.locator("[data-testid=trace-scatter] circle").count()) > 0, "the traces are drawn as a scatter of duration over time");
  await shot("traces");
  // The apps export their spans in batches (every few seconds), so the newest traces may
  // still lack theirs: older ones first, and a trace's page is reloaded while it grows.
  const ids = await page.$$eval("[data-testid=trace-row]", (rows) =>
    rows
      .filter((r) => Number(r.dataset.spans) >= 7)
      .map((r) => ({ id: r.dataset.trace, age: Date.now() * 1000 - Number(r.dataset.start) }))
      .sort((a, b) => Number(b.age > 8e6) - Number(a.age > 8e6) || a.age - b.age)
      .map((r) => r.id),
  );
  check(ids.length > 0, "a trace with at least 7 spans is listed");
  const HOPS = [
    ["the gateway's span", (s) => s.service.startsWith("istio-ingressgateway")],
    ["web sidecar (server)", (s) => s.service.startsWith("web") && s.kind === "server" && s.proxy],
    ["web app", (s) => s.service.startsWith("web") && s.kind === "server" && !s.proxy],
    ["web sidecar (client)", (s) => s.service.startsWith("web") && s.kind === "client" && s.proxy],
    ["was sidecar (server)", (s) => s.service.startsWith("was") && s.kind === "server" && s.proxy],
    ["was app", (s) => s.service.startsWith("was") && s.kind === "server" && !s.proxy],
    ["SQL statement", (s) => s.service.startsWith("was") && s.kind === "client" && !s.proxy],
  ];
  let spans = null;
  let last = "";
  for (const id of ids.slice(0, 4)) {
    await page.locator(`[data-testid=trace-row][data-trace="${id}"] a`).click();
    for (let attempt = 0; attempt < 4 && spans === null; attempt += 1) {
      if (attempt > 0) {
        await page.waitForTimeout(2500);
        await page.reload();
      }
      await page.getByTestId("waterfall").waitFor();
      const rows = await page.$$eval("[data-testid=span-row]", (rs) =>
        rs.map((r) => ({ service: r.dataset.service, kind: r.dataset.kind, proxy: r.dataset.proxy === "true", depth: Number(r.dataset.depth), slowest: r.dataset.slowest === "true" })),
      );
      if (HOPS.every(([, f]) => rows.some(f))) spans = rows;
      else last = `${id}: ${rows.map((r) => `${r.service}/${r.kind}${r.proxy ? "/proxy" : ""}`).join(", ")}`;
    }
    if (spans !== null) break;
    await page.goBack();
    await page.getByTestId("trace-row").first().waitFor();
  }
  if (spans === null) console.log(`  the last trace looked at: ${last}`);
  check(spans !== null, "a trace's waterfall holds all 7 hops of a blog request");
  for (const [name, f] of HOPS) check(spans.some(f), `the waterfall has the ${name}`);
  check(spans.length >= 7, `the waterfall has at least 7 spans (${spans.length})`);
  check(Math.max(...spans.map((s) => s.depth)) >= 6, "spans are indented by parent (7 levels deep)");
  check(spans.filter((s) => s.slowest).length === 1, "one span is highlighted as the slowest self time");
  await shot("trace-waterfall");

  // 6. Logs: was's sidecar access log.
  step("logs");
  await visit("/logs?namespace=blog-system&workload=was");
  await page.getByTestId("log-row").first().waitFor();
  check((await page.getByTestId("log-container").inputValue()) === "istio-proxy", "the logs view defaults to the istio-proxy container");
  check((await page.getByTestId("log-row").count()) > 0, "was's sidecar access log is shown");
  await shot("logs-was");

  // 7. A broken policy refused by `skein apply`, shown on the Istio config page.
  step("a broken policy");
  const dir = mkdtempSync(join(tmpdir(), "skein-dashboard-"));
  const broken = join(dir, "broken-authz.yaml");
  writeFileSync(
    broken,
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: was-authz\n  namespace: blog-system\nspec:\n  selector:\n    matchLabels:\n      app: was\n  action: DENY\n",
  );
  let refused = false;
  try {
    execFileSync(opts.skein, ["--state-dir", opts.stateDir, "apply", "-f", broken], { stdio: "pipe" });
  } catch (e) {
    refused = true;
    console.log(`  skein apply said: ${String(e.stderr ?? "").trim().split("\n")[0]}`);
  }
  check(refused, "skein apply refused the broken policy");
  await page.getByTestId("nav-istio").click();
  const rejection = await refreshUntil(async () => {
    const b = page.getByTestId("last-rejection");
    return (await b.count()) ? b.innerText() : null;
  }, "the control plane's last rejection on the Istio config page", 30_000);
  check(/meaningless/.test(rejection), "the Istio config page shows the rejection's validation error");
  check(rejection.includes("broken-authz.yaml"), "the rejection names the file it came from");
  const invalid = page.locator("[data-testid=config-object][data-valid=false]");
  check((await invalid.count()) > 0, "the refused object is listed as not valid");
  check(/meaningless/.test(await invalid.first().innerText()), "the invalid object carries its validation message");
  check((await page.locator("[data-testid=config-object][data-name=was-authz] pre").count()) > 0, "the object's YAML is shown");
  await shot("istio-config");

  // 8. Keyboard: the nav is reachable with Tab and a graph table row opens with Enter.
  step("keyboard");
  await visit("/graph?namespaces=blog-system&graphType=app");
  await page.locator("[data-testid=graph-edge]").first().waitFor();
  await page.locator("[data-testid=graph-edge] button").first().focus();
  await page.keyboard.press("Enter");
  await page.getByTestId("edge-panel").waitFor();
  check(true, "Enter on an edge's button in the table opens its side panel");
  const unlabelled = await page.$$eval("select, input, button", (els) =>
    els.filter((e) => {
      if (e.tagName === "BUTTON") return !(e.textContent ?? "").trim() && !e.getAttribute("aria-label");
      const id = e.id;
      return !(id && document.querySelector(`label[for="${id}"]`)) && !e.getAttribute("aria-label") && !e.closest("label");
    }).map((e) => e.outerHTML.slice(0, 80)),
  );
  check(unlabelled.length === 0, `every control is labelled${unlabelled.length ? `: ${unlabelled.join(", ")}` : ""}`);

  // 9. web's Rollout: Healthy with its 8 steps; `set image` starts an update that pauses at
  // step 1 (weight 0, a canary revision); promoted, it pauses at step 4 (weight 10) with the
  // analysis run's two metrics. Last, as it changes web for everything after it.
  step("rollout web");
  const rollouts = (...a) => {
    const out = execFileSync(opts.skein, ["--state-dir", opts.stateDir, "rollouts", ...a, "-n", "blog-system"], { stdio: "pipe" });
    console.log(`  skein rollouts ${a.join(" ")}: ${String(out).trim().split("\n")[0]}`);
  };
  const panel = page.getByTestId("rollout-panel");
  const panelNow = () =>
    panel.evaluate((el) => ({
      phase: el.dataset.phase,
      step: el.dataset.step,
      setWeight: el.dataset.setWeight,
      actualWeight: el.dataset.actualWeight,
      status: el.querySelector("[data-testid=rollout-status]")?.textContent ?? "",
      steps: [...el.querySelectorAll("[data-testid=rollout-step]")].map((s) => ({ state: s.dataset.state, current: s.getAttribute("aria-current") })),
      roles: [...el.querySelectorAll("[data-testid=rollout-revision]")].map((r) => r.dataset.role),
      metrics: [...el.querySelectorAll("[data-testid=rollout-metric]")].map((m) => m.dataset.metric),
      weights: el.querySelector("[data-testid=rollout-weights]")?.textContent ?? "",
    }));
  /** Reloads web's page until `probe(panel)` holds (the workload page loads once). */
  const reloadUntil = async (probe, what, timeoutMs = 45_000) => {
    const deadline = Date.now() + timeoutMs;
    let last = null;
    for (;;) {
      await panel.waitFor();
      last = await panelNow();
      if (probe(last)) return last;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}; the panel: ${JSON.stringify(last)}`);
      await page.waitForTimeout(1000);
      await page.reload();
    }
  };
  await visit("/workloads?namespace=blog-system");
  const webPhase = page.locator("[data-testid=workload-row][data-name=web] [data-testid=rollout-phase]");
  await webPhase.waitFor();
  check((await webPhase.getAttribute("data-phase")) === "Healthy" && /✔ Healthy/.test(await webPhase.innerText()), "the workloads list shows web's Rollout ✔ Healthy");
  await page.locator("[data-testid=workload-row][data-name=web] a").click();
  const healthy = await reloadUntil((p) => p.phase === "Healthy", "web's Rollout panel Healthy");
  check(/✔\s*Healthy/.test(healthy.status), `the Rollout panel says ✔ Healthy (${healthy.status})`);
  check(healthy.steps.length === 8, `the panel lists web's 8 steps (${healthy.steps.length})`);
  check(healthy.steps.every((s) => s.state === "done") && !healthy.steps.some((s) => s.current), "with no update running every step is done and none is current");
  check(healthy.roles.includes("stable") && !healthy.roles.includes("canary"), `one stable revision, no canary (${healthy.roles.join(", ")})`);
  await panel.scrollIntoViewIfNeeded();
  await shot("rollout-healthy");

  rollouts("set", "image", "web", "web=blog-web:0.2.0");
  const paused = await reloadUntil(
    (p) => p.phase === "Paused" && p.step === "1" && p.roles.includes("canary"),
    "web's Rollout ॥ Paused at step 1 with a canary revision",
  );
  check(/॥\s*Paused/.test(paused.status), `the panel says ॥ Paused (${paused.status})`);
  check(paused.setWeight === "0" && paused.actualWeight === "0", `the update starts at weight 0 (set ${paused.setWeight}, actual ${paused.actualWeight})`);
  check(paused.steps[1].current === "step" && paused.steps.filter((s) => s.current).length === 1, "step 1 is the current step (aria-current), and only it");
  check(paused.steps[0].state === "done" && paused.steps.slice(2).every((s) => s.state === "pending"), "step 0 is done, the later ones pending");
  check(/stable/.test(paused.weights) && /canary/.test(paused.weights), `the weights name stable and canary (${paused.weights})`);
  check((await page.locator("[data-testid=rollout-step][aria-current=step]").innerText()).includes("pause"), "the current step is the pause");
  await page.getByTestId("rollout-steps").scrollIntoViewIfNeeded();
  await shot("rollout-paused-step1");

  rollouts("promote", "web");
  const ten = await reloadUntil(
    (p) => p.phase === "Paused" && p.step === "4" && p.metrics.includes("success-rate") && p.metrics.includes("p99-latency"),
    "web's Rollout ॥ Paused at step 4 with the analysis run's two metrics",
  );
  check(ten.setWeight === "10", `promoted, the canary's weight is 10 (${ten.setWeight})`);
  check(ten.steps.slice(0, 4).every((s) => s.state === "done") && ten.steps[4].current === "step", "steps 0-3 are done, step 4 is current");
  check(ten.metrics.length >= 2, `the analysis table lists success-rate and p99-latency (${ten.metrics.join(", ")})`);
  check((await page.locator("[data-testid=rollout-analysis] th").count()) >= 6, "the analysis table has its column headers");
  await page.getByTestId("rollout-analysis").scrollIntoViewIfNeeded();
  await shot("rollout-step4-analysis");
  const unlabelledHere = await page.$$eval("select, input, button", (els) =>
    els.filter((e) => e.tagName === "BUTTON" ? !(e.textContent ?? "").trim() && !e.getAttribute("aria-label") : !(e.id && document.querySelector(`label[for="${e.id}"]`)) && !e.getAttribute("aria-label") && !e.closest("label")).length,
  );
  check(unlabelledHere === 0, "every control on web's page is labelled");
} catch (e) {
  failure = e;
  try {
    await shot("failure");
  } catch {
    /* the browser is gone */
  }
}

await browser.close();
for (const f of shots) console.log(`screenshot: ${f}`);
if (problems.length) {
  console.error(`the page logged ${problems.length} problem(s):\n  ${problems.join("\n  ")}`);
}
if (failure) {
  console.error(`FAILED: ${failure.message}`);
  process.exit(1);
}
if (problems.length) process.exit(1);
console.log(`${passed} passed, 0 failed`);
