import "./style.css";
import { h, fill, message } from "./dom";
import { current, type Route } from "./router";
import { getJSON } from "./api";
import { overview } from "./views/overview";
import { graph } from "./views/graph";
import { workloads, workloadPage, servicePage } from "./views/workloads";
import { istioConfig } from "./views/config";
import { traces, tracePage } from "./views/traces";
import { logs } from "./views/logs";

/** A view draws into `root`; what it returns runs when the user leaves it (timers, charts). */
export type View = (root: HTMLElement, route: Route) => (() => void) | void;

const NAV: Array<[string, string]> = [
  ["overview", "Overview"],
  ["graph", "Graph"],
  ["workloads", "Workloads"],
  ["istio", "Istio config"],
  ["traces", "Traces"],
  ["logs", "Logs"],
];

function pick(route: Route): { view: View; section: string; title: string } {
  const [a, , c] = route.parts;
  switch (a) {
    case undefined:
    case "overview":
      return { view: overview, section: "overview", title: "Overview" };
    case "graph":
      return { view: graph, section: "graph", title: "Graph" };
    case "workloads":
      return { view: workloads, section: "workloads", title: "Workloads and services" };
    case "namespaces":
      if (c === "services") return { view: servicePage, section: "workloads", title: "Service" };
      return { view: workloadPage, section: "workloads", title: "Workload" };
    case "istio":
      return { view: istioConfig, section: "istio", title: "Istio config" };
    case "traces":
      return route.parts[1]
        ? { view: tracePage, section: "traces", title: "Trace" }
        : { view: traces, section: "traces", title: "Traces" };
    case "logs":
      return { view: logs, section: "logs", title: "Logs" };
    default:
      return {
        view: (root) => fill(root, h("h1", null, "Not found"), message("error", `There is no view at ${location.hash}.`)),
        section: "",
        title: "Not found",
      };
  }
}

const nav = document.getElementById("nav") as HTMLElement;
const main = document.getElementById("view") as HTMLElement;
let leave: (() => void) | void = undefined;

function drawNav(section: string): void {
  fill(
    nav,
    h(
      "ul",
      null,
      NAV.map(([id, text]) =>
        h(
          "li",
          null,
          h("a", { href: `#/${id}`, "data-testid": `nav-${id}`, "aria-current": id === section ? "page" : null }, text),
        ),
      ),
    ),
  );
}

function render(): void {
  if (leave) leave();
  leave = undefined;
  const route = current();
  const { view, section, title } = pick(route);
  drawNav(section);
  document.title = `${title} · skein`;
  main.replaceChildren();
  main.dataset.view = section;
  leave = view(main, route);
}

window.addEventListener("hashchange", render);
const skip = document.querySelector("a.skip");
skip?.addEventListener("click", (ev) => {
  ev.preventDefault();
  main.focus();
});
render();

getJSON<{ version?: string }>("/api/status")
  .then((st) => {
    const v = document.getElementById("version");
    if (v && st.version) v.textContent = `v${st.version}`;
  })
  .catch(() => {
    /* the views say when the server is unreachable */
  });
