import { h, fill, message, select, field } from "../dom";
import { enc, getJSON, qs, type LogEntry, type Pod, type WorkloadSummary } from "../api";
import { go, type Route } from "../router";
import { loading, namespaces, pageHeader, refresher, showError } from "./common";

const FLAGS: Array<[string, string]> = [
  ["", "Any flag"],
  ["-", "- (none)"],
  ["UF", "UF (connection failure)"],
  ["UH", "UH (no healthy upstream)"],
  ["UO", "UO (overflow, circuit breaker)"],
  ["URX", "URX (retries exhausted)"],
  ["UT", "UT (upstream timeout)"],
  ["UC", "UC (upstream closed)"],
  ["NR", "NR (no route)"],
  ["DI", "DI (fault delay)"],
  ["FI", "FI (fault abort)"],
  ["RL", "RL (rate limited)"],
  ["DC", "DC (client closed)"],
];

export function logs(root: HTMLElement, route: Route): () => void {
  const p = route.params;
  const form = h("form", { class: "toolbar", "aria-label": "Which log" });
  const bar = h("div", { class: "toolbar" });
  const body = h("div", { "data-testid": "logs" }, loading());
  root.append(pageHeader("Logs"), form, bar, body);
  let stop = () => {};
  let destroyed = false;

  void (async () => {
    let all: string[];
    try {
      all = (await namespaces()).map((n) => n.name);
    } catch (e) {
      showError(body, "Could not list the namespaces", e);
      return;
    }
    const pods: Array<Pod & { namespace: string; workload: string }> = [];
    await Promise.all(
      all.map(async (ns) => {
        try {
          const wl = await getJSON<WorkloadSummary[]>(`/api/namespaces/${enc(ns)}/workloads`);
          for (const w of wl) for (const pod of w.pods ?? []) pods.push({ ...pod, namespace: ns, workload: w.name });
        } catch {
          /* a namespace without workloads */
        }
      }),
    );
    if (destroyed) return;
    pods.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
    if (pods.length === 0) {
      fill(body, message("empty", "No pods are running.", "logs-no-pods"));
      return;
    }
    const want = p.get("pod") ?? "";
    const wantWl = p.get("workload") ?? "";
    const wantNs = p.get("namespace") ?? "";
    const pod =
      pods.find((x) => x.name === want) ??
      pods.find((x) => x.workload === wantWl && (!wantNs || x.namespace === wantNs)) ??
      pods.find((x) => x.namespace !== "istio-system" && x.proxy) ??
      (pods[0] as (typeof pods)[number]);
    const podSel = select(pods.map((x) => [x.name, `${x.namespace}/${x.name}`]), pod.name, { "data-testid": "log-pod" });
    const containers = [...(pod.proxy ? ["istio-proxy"] : []), ...(pod.containers ?? []).filter((c) => c !== "istio-proxy")];
    const wantC = p.get("container") ?? "";
    const container = containers.includes(wantC) ? wantC : (containers[0] ?? "istio-proxy");
    const cSel = select(containers.map((c) => [c, c === "istio-proxy" ? "istio-proxy (access log)" : c]), container, { "data-testid": "log-container" });
    const code = h("input", { type: "text", value: p.get("code") ?? "", placeholder: "503 or 5xx", size: 6, "data-testid": "log-code", pattern: "^[1-5]([0-9]{2}|xx)$" });
    const flags = select(FLAGS, p.get("flags") ?? "", { "data-testid": "log-flags" });
    const tail = select([["100", "100"], ["200", "200"], ["500", "500"], ["1000", "1000"]], p.get("tailLines") ?? "200", { "data-testid": "log-tail" });
    const apply = h("button", { type: "submit" }, "Show");
    const params = () => ({ pod: podSel.value, container: cSel.value, code: code.value.trim(), flags: flags.value, tailLines: tail.value });
    podSel.addEventListener("change", () => go("/logs", { pod: podSel.value }, true));
    for (const c of [cSel, flags, tail]) c.addEventListener("change", () => go("/logs", params(), true));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!code.checkValidity()) {
        code.reportValidity();
        return;
      }
      go("/logs", params(), true);
    });
    form.append(field("Pod", podSel), field("Container", cSel), field("Response code", code), field("Response flag", flags), field("Lines", tail), apply);

    const load = async () => {
      try {
        const ans = await getJSON<{ entries: LogEntry[] }>(
          `/api/namespaces/${enc(pod.namespace)}/pods/${enc(pod.name)}/logs${qs({ container, tailLines: tail.value, code: code.value.trim(), flags: flags.value })}`,
        );
        if (destroyed) return;
        // Newest first: the tail of the log is what one looks at.
        const entries = (ans.entries ?? []).slice().reverse();
        if (entries.length === 0) {
          fill(body, message("empty", code.value || flags.value ? "No log lines match these filters." : `${container} of ${pod.name} has written nothing yet.`, "logs-empty"));
          return;
        }
        const access = entries.some((e) => e.accessLog);
        fill(
          body,
          h("p", { class: "note" }, `${entries.length} lines of ${container} in ${pod.name}, newest first.`),
          access
            ? h(
                "table",
                { class: "data logs-table", "data-testid": "access-log" },
                h("thead", null, h("tr", null, ["Time", "Method", "Path", "Code", "Flags", "Duration", "Upstream", "Authority"].map((c) => h("th", { scope: "col" }, c)))),
                h(
                  "tbody",
                  null,
                  entries.map((e) => {
                    const a = e.accessLog;
                    if (!a) return h("tr", { class: "raw" }, h("td", { colspan: 8 }, h("code", null, e.message)));
                    const c = Number(a.response_code ?? 0);
                    return h(
                      "tr",
                      { "data-testid": "log-row", "data-code": a.response_code ?? "", "data-flags": a.response_flags ?? "", class: c >= 500 ? "err" : c >= 400 ? "warn" : "" },
                      h("td", null, (a.timestamp ?? e.timestamp ?? "").replace("T", " ").replace(/\.\d+Z$/, "Z")),
                      h("td", null, a.method ?? ""),
                      h("td", null, h("code", null, a.uri_path ?? "")),
                      h("td", null, a.response_code ?? ""),
                      h("td", null, a.response_flags ?? ""),
                      h("td", null, a.duration && a.duration !== "-" ? `${a.duration} ms` : "–"),
                      h("td", null, h("code", null, a.upstream_cluster ?? "")),
                      h("td", null, a.authority ?? ""),
                    );
                  }),
                ),
              )
            : h("pre", { class: "log", tabindex: 0, "data-testid": "raw-log" }, entries.map((e) => `${e.message}\n`).join("")),
        );
      } catch (e) {
        showError(body, `Could not read the log of ${pod.name}`, e);
      }
    };
    const r = refresher(bar, 5_000, load);
    stop = r.stop;
    await r.now();
  })();

  return () => {
    destroyed = true;
    stop();
  };
}
