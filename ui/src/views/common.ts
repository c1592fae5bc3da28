// Pieces the views share: the namespace picker, refresh bar, loading and error handling.

import { h, fill, message, select, field, uid } from "../dom";
import { getJSON, type Namespace, ApiError } from "../api";
import { clock } from "../format";

let nsCache: { at: number; list: Namespace[] } | null = null;

export async function namespaces(): Promise<Namespace[]> {
  if (nsCache && Date.now() - nsCache.at < 10_000) return nsCache.list;
  const list = await getJSON<Namespace[]>("/api/namespaces");
  list.sort((a, b) => a.name.localeCompare(b.name));
  nsCache = { at: Date.now(), list };
  return list;
}

export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Shows `what` went wrong in `el` (a role=alert paragraph). */
export function showError(el: Element, what: string, e: unknown): void {
  fill(el, message("error", `${what}: ${errorText(e)}`, "error"));
}

/** A single-namespace picker; calls `onPick` with the new name. */
export function nsSelect(list: Namespace[], value: string, onPick: (ns: string) => void, label = "Namespace"): HTMLElement {
  const sel = select(
    list.map((n) => [n.name, n.name]),
    value,
    { "data-testid": "namespace-select" },
  );
  sel.addEventListener("change", () => onPick(sel.value));
  return field(label, sel);
}

/** Multi-namespace picker: a fieldset of checkboxes (keyboard and screen-reader friendly). */
export function nsChecks(list: Namespace[], picked: string[], onChange: (ns: string[]) => void): HTMLElement {
  const fs = h("fieldset", { class: "ns-checks", "data-testid": "namespace-checks" }, h("legend", null, "Namespaces"));
  for (const n of list) {
    const id = uid("ns");
    const box = h("input", { type: "checkbox", id, value: n.name, "data-testid": `ns-${n.name}` });
    box.checked = picked.includes(n.name);
    box.addEventListener("change", () => {
      const boxes = Array.from(fs.querySelectorAll<HTMLInputElement>("input[type=checkbox]"));
      onChange(boxes.filter((b) => b.checked).map((b) => b.value));
    });
    fs.appendChild(h("span", { class: "check" }, box, h("label", { for: id }, n.name)));
  }
  return fs;
}

/** "Updated 12:00:01", a Refresh button and an auto-refresh timer; returns a stop function. */
export function refresher(
  bar: HTMLElement,
  everyMs: number,
  load: () => Promise<void>,
): { stop: () => void; now: () => Promise<void> } {
  bar.classList.add("refresh-bar");
  const stamp = h("span", { class: "updated", "data-testid": "last-updated" }, "Loading…");
  const btn = h("button", { type: "button", "data-testid": "refresh" }, "Refresh");
  const auto = h("input", { type: "checkbox", id: uid("auto"), "data-testid": "auto-refresh" });
  auto.checked = true;
  bar.append(
    btn,
    h("span", { class: "check" }, auto, h("label", { for: auto.id }, `Every ${everyMs / 1000} s`)),
    stamp,
  );
  let timer: number | undefined;
  let busy = false;
  let stopped = false;
  const run = async () => {
    if (busy || stopped) return;
    busy = true;
    btn.disabled = true;
    try {
      await load();
      stamp.textContent = `Updated ${clock(new Date())}`;
      stamp.dataset.at = String(Date.now());
    } finally {
      busy = false;
      btn.disabled = false;
    }
  };
  const schedule = () => {
    if (timer !== undefined) window.clearInterval(timer);
    timer = auto.checked ? window.setInterval(() => void run(), everyMs) : undefined;
  };
  btn.addEventListener("click", () => void run());
  auto.addEventListener("change", schedule);
  schedule();
  return {
    stop: () => {
      stopped = true;
      if (timer !== undefined) window.clearInterval(timer);
    },
    now: run,
  };
}

export function pageHeader(title: string, ...extra: Array<Node | string>): HTMLElement {
  return h("div", { class: "page-head" }, h("h1", null, title), ...extra);
}

export function loading(): HTMLElement {
  return message("loading", "Loading…", "loading");
}

export function kv(rows: Array<[string, Node | string | number | undefined | null]>, testid?: string): HTMLElement {
  return h(
    "dl",
    { class: "kv", "data-testid": testid ?? null },
    rows.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v === undefined || v === null || v === "" ? "–" : v)]),
  );
}
