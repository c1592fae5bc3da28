import { h, fill, message, select, field, uid } from "../dom";
import { getJSON, type ApplicationSync, type ConfigObject, type IstioConfig } from "../api";
import { when } from "../format";
import { go, type Route } from "../router";
import { loading, pageHeader, refresher, showError } from "./common";
import { checkList, validity } from "./istio";

export function istioConfig(root: HTMLElement, route: Route): () => void {
  const bar = h("div", { class: "toolbar" });
  const filters = h("div", { class: "toolbar" });
  const top = h("div", { "data-testid": "control-status" });
  const body = h("div", { "data-testid": "istio-config" }, loading());
  root.append(pageHeader("Istio config"), bar, top, filters, body);
  const nsWant = route.params.get("namespace") ?? "";
  const kindWant = route.params.get("kind") ?? "";
  const objWant = route.params.get("object") ?? "";
  let onlyInvalid = route.params.get("invalid") === "1";
  let first = true;

  const load = async () => {
    try {
      const cfg = await getJSON<IstioConfig>("/api/istio/config");
      const rej = cfg.control?.lastRejection;
      fill(
        top,
        rej
          ? h(
              "div",
              { class: "banner banner-error", role: "alert", "data-testid": "last-rejection" },
              h("strong", null, "The control plane refused the last change"),
              rej.at ? ` (${when(rej.at)})` : "",
              ": ",
              h("span", { class: "pre-wrap" }, rej.message),
              h("p", null, `It keeps serving config version ${cfg.control?.version ?? "?"}, the last that validated.`),
            )
          : h("p", { class: "note" }, `Control plane: config version ${cfg.control?.version ?? "?"}, ${cfg.control?.valid === false ? "not valid" : "valid"}.`),
        cfg.application ? applicationBanner(cfg.application) : null,
      );
      const nss = [...new Set(cfg.objects.map((o) => o.namespace ?? ""))].sort();
      if (first) {
        first = false;
        const kinds = [...new Set(cfg.objects.map((o) => o.kind))].sort();
        // Cluster-scoped objects have namespace "": their choice is "-".
        const nsOpts = nss.map((n) => [n || "-", n || "(cluster-scoped)"] as [string, string]);
        const ns = select([["", "All namespaces"], ...nsOpts], nsOpts.some(([v]) => v === nsWant) ? nsWant : "", { "data-testid": "config-namespace" });
        const kind = select([["", "All kinds"], ...kinds.map((k) => [k, k] as [string, string])], kinds.includes(kindWant) ? kindWant : "", { "data-testid": "config-kind" });
        const refilter = () => go("/istio", { namespace: ns.value, kind: kind.value, invalid: onlyInvalid ? "1" : "" }, true);
        ns.addEventListener("change", refilter);
        kind.addEventListener("change", refilter);
        const inv = h("input", { type: "checkbox", id: uid("inv"), "data-testid": "only-invalid" });
        inv.checked = onlyInvalid;
        inv.addEventListener("change", () => {
          onlyInvalid = inv.checked;
          void load();
        });
        fill(filters, field("Namespace", ns), field("Kind", kind), h("span", { class: "check" }, inv, h("label", { for: inv.id }, "Only objects with problems")));
      }
      const shown = cfg.objects
        .filter((o) => !nsWant || (o.namespace || "-") === nsWant)
        .filter((o) => !kindWant || o.kind === kindWant)
        .filter((o) => !onlyInvalid || !o.valid || o.checks.length > 0)
        .sort((a, b) => Number(a.valid) - Number(b.valid) || Number(!isIstio(a)) - Number(!isIstio(b)) || (a.namespace ?? "").localeCompare(b.namespace ?? "") || a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
      if (shown.length === 0) {
        fill(body, message("empty", cfg.objects.length ? "No object matches these filters." : "The control plane has no Istio objects.", "config-empty"));
        return;
      }
      const bad = cfg.objects.filter((o) => !o.valid).length;
      fill(
        body,
        h("p", { class: "note", "data-testid": "config-count" }, `${cfg.objects.length} objects, ${bad} not valid.`),
        shown.map((o) => objectCard(o, objWant === `${o.kind}/${o.name}`)),
      );
      if (objWant) body.querySelector<HTMLElement>("[data-open=true]")?.scrollIntoView({ block: "start" });
    } catch (e) {
      showError(body, "Could not load the Istio config", e);
    }
  };
  const r = refresher(bar, 15_000, load);
  void r.now();
  return r.stop;
}

/** Istio's own kinds (networking, security, telemetry) before Kubernetes'. */
function isIstio(o: ConfigObject): boolean {
  return (o.apiVersion ?? "").includes("istio.io");
}

function objectCard(o: ConfigObject, open: boolean): HTMLElement {
  const src = o.source?.file ? `${o.source.file}${o.source.line ? `:${o.source.line}` : ""}` : "";
  return h(
    "section",
    {
      class: `card config-object${o.valid ? "" : " invalid"}`,
      "data-testid": "config-object",
      "data-kind": o.kind,
      "data-name": o.name,
      "data-namespace": o.namespace ?? "",
      "data-valid": o.valid ? "true" : "false",
      "data-open": open ? "true" : null,
    },
    h(
      "h2",
      null,
      h("span", { class: "kind" }, o.kind),
      " ",
      o.name,
      o.namespace ? h("span", { class: "ns" }, ` · ${o.namespace}`) : null,
    ),
    h(
      "p",
      null,
      validity(o.valid, o.checks),
      o.refused ? h("span", { class: "tag tag-refused", "data-testid": "refused" }, "refused by the control plane") : null,
      o.sync?.status === "OutOfSync"
        ? h("span", { class: "tag tag-refused", "data-testid": "out-of-sync", title: o.sync.message ?? "" }, o.sync.requiresPruning ? "OutOfSync: requires pruning" : `OutOfSync with git${o.sync.git ? ` (${o.sync.git})` : ""}${o.sync.selfHealAt ? `, self-heal ${when(o.sync.selfHealAt)}` : ""}`)
        : null,
      src ? h("span", { class: "src" }, " from ", h("code", { "data-testid": "object-source" }, src)) : null),
    checkList(o.checks),
    o.yaml ? h("details", { open: open ? true : null }, h("summary", null, "YAML"), h("pre", { class: "yaml", tabindex: 0 }, o.yaml)) : null,
  );
}

/** GitOps: the Application's sync status and health, and the commit in force. */
export function applicationBanner(a: ApplicationSync): HTMLElement {
  const rev = a.revision ? `commit ${a.revision.sha.slice(0, 7)} "${a.revision.subject}"` : "no commit synced";
  const drift = a.outOfSync > 0 ? `, ${a.outOfSync} object${a.outOfSync === 1 ? "" : "s"} OutOfSync` : "";
  return h(
    "div",
    { class: `banner${a.sync === "Synced" ? "" : " banner-error"}`, role: "status", "data-testid": "application-sync", "data-sync": a.sync, "data-health": a.health },
    h("strong", null, `Application ${a.name}: ${a.sync}, ${a.health}`),
    ` (${rev} of ${a.repo}${drift}; selfHeal ${a.selfHeal ? "on" : "off"}, prune ${a.prune ? "on" : "off"})`,
    (a.drifted ?? []).length
      ? h(
          "ul",
          { "data-testid": "application-drifted", "aria-label": "Objects OutOfSync with git" },
          (a.drifted ?? []).map((d) =>
            h(
              "li",
              { "data-testid": "drifted-object", "data-kind": d.kind, "data-name": d.name, "data-namespace": d.namespace },
              `${d.kind} ${d.namespace ? `${d.namespace}/` : ""}${d.name}: `,
              d.requiresPruning ? "requires pruning" : d.message ?? "differs from git",
              d.git ? ` (git: ${d.git})` : "",
              d.selfHealAt ? `, self-heal ${when(d.selfHealAt)}` : "",
            ),
          ),
        )
      : null,
    a.conditions.map((c) => h("p", { class: "pre-wrap" }, `${c.type}: ${c.message}`)),
  );
}
