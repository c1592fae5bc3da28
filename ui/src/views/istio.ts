// Istio objects and their checks, as the workload, service and config views list them.

import { h } from "../dom";
import type { Check, ConfigRef } from "../api";
import { href } from "../router";

const SEV_ICON: Record<string, string> = { error: "✖", warning: "!", info: "i" };

export function validity(valid: boolean, checks: Check[]): HTMLElement {
  const warn = checks.some((c) => c.severity === "warning");
  const cls = !valid ? "invalid" : warn ? "warning" : "valid";
  const text = !valid ? "Not valid" : warn ? "Valid, with warnings" : "Valid";
  return h(
    "span",
    { class: `validity validity-${cls}`, "data-testid": "validity", "data-valid": valid ? "true" : "false" },
    h("span", { "aria-hidden": "true" }, !valid ? "✖" : warn ? "!" : "✔"),
    " ",
    text,
  );
}

export function checkList(checks: Check[]): HTMLElement | null {
  if (checks.length === 0) return null;
  return h(
    "ul",
    { class: "checks", "data-testid": "checks" },
    checks.map((c) =>
      h(
        "li",
        { class: `check-${c.severity}`, "data-testid": "check", "data-severity": c.severity },
        h("span", { class: "sev", "aria-hidden": "true" }, SEV_ICON[c.severity] ?? "•"),
        h("span", { class: "sr-only" }, `${c.severity}: `),
        c.code ? h("code", null, c.code) : null,
        " ",
        c.message,
        c.source ? h("span", { class: "src" }, " — ", h("code", { "data-testid": "check-source" }, c.source)) : null,
        c.path ? h("span", { class: "src" }, " at ", h("code", null, c.path)) : null,
      ),
    ),
  );
}

export function configTable(refs: ConfigRef[], testid: string): HTMLElement {
  if (refs.length === 0) return h("p", { class: "msg msg-empty", "data-testid": `${testid}-empty` }, "No Istio objects apply here.");
  return h(
    "table",
    { class: "data", "data-testid": testid },
    h("thead", null, h("tr", null, ["Kind", "Name", "Namespace", "Validation"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      null,
      refs.map((r) =>
        h(
          "tr",
          { "data-testid": "config-ref", "data-kind": r.kind, "data-name": r.name },
          h("td", null, r.kind),
          h(
            "td",
            null,
            h("a", { href: href("/istio", { namespace: r.namespace, object: `${r.kind}/${r.name}` }) }, r.name),
            r.source ? h("div", { class: "src" }, h("code", null, r.source)) : null,
          ),
          h("td", null, r.namespace),
          h("td", null, validity(r.valid, r.checks ?? []), checkList(r.checks ?? [])),
        ),
      ),
    ),
  );
}
