import { h, fill, message } from "../dom";
import { getJSON, qs, type ApplicationSync, type OverviewNs } from "../api";
import { applicationBanner } from "./config";
import { rolloutPhase } from "./workloads";
import { healthBadge } from "../health";
import { pct, rate } from "../format";
import { href } from "../router";
import { loading, pageHeader, refresher, showError } from "./common";
import type { Route } from "../router";

export function overview(root: HTMLElement, route: Route): () => void {
  const duration = route.params.get("duration") ?? "600s";
  const bar = h("div", { class: "toolbar" });
  const body = h("div", { "data-testid": "overview" }, loading());
  root.append(pageHeader("Overview"), bar, body);
  const load = async () => {
    try {
      const ov = await getJSON<{ namespaces: OverviewNs[]; application?: ApplicationSync | null }>(`/api/overview${qs({ duration })}`);
      if (ov.namespaces.length === 0) {
        fill(body, message("empty", "No namespaces: nothing runs in the mesh yet (start one with `skein up DIR`).", "empty"));
        return;
      }
      fill(
        body,
        ov.application ? applicationBanner(ov.application) : null,
        h(
          "div",
          { class: "cards" },
          ov.namespaces.map((n) =>
            h(
              "section",
              { class: "card", "data-testid": "ns-card", "data-namespace": n.name, "aria-labelledby": `ns-${n.name}` },
              h("h2", { id: `ns-${n.name}` }, n.name),
              healthBadge(n.health),
              h(
                "dl",
                { class: "kv" },
                h("dt", null, "Apps"),
                h("dd", null, String(n.apps ?? 0)),
                h("dt", null, "Workloads"),
                h("dd", null, String(n.workloads ?? 0)),
                h("dt", null, "Inbound requests"),
                h("dd", { "data-testid": "ns-rate" }, n.requestRate === null || n.requestRate === undefined ? "–" : `${rate(Math.abs(n.requestRate))} req/s`),
                h("dt", null, "Errors"),
                h("dd", { "data-testid": "ns-errors" }, n.errorRate === null || n.errorRate === undefined ? "–" : pct(Math.abs(n.errorRate))),
                h("dt", null, "mTLS"),
                h("dd", null, n.mtls ? `${n.mtls}%` : "–"),
                ...((n.rollouts ?? []).length
                  ? [
                      h("dt", null, "Rollouts"),
                      h(
                        "dd",
                        { "data-testid": "ns-rollouts" },
                        (n.rollouts ?? []).map((r, i) => [i ? ", " : "", h("a", { href: href(`/namespaces/${encodeURIComponent(r.namespace)}/workloads/${encodeURIComponent(r.name)}`) }, r.name), " ", rolloutPhase(r)]),
                      ),
                    ]
                  : []),
              ),
              h(
                "p",
                { class: "links" },
                h("a", { href: href("/graph", { namespaces: n.name }) }, "Graph"),
                " · ",
                h("a", { href: href("/workloads", { namespace: n.name }) }, "Workloads"),
                " · ",
                h("a", { href: href("/istio", { namespace: n.name }) }, "Istio config"),
              ),
            ),
          ),
        ),
        h("p", { class: "note" }, `Rates over the last ${parseInt(duration, 10) / 60} min, as the servers' proxies report them.`),
      );
    } catch (e) {
      showError(body, "Could not load the overview", e);
    }
  };
  const r = refresher(bar, 15_000, load);
  void r.now();
  return r.stop;
}
