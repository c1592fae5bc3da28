// Hash routes (#/graph?namespaces=blog-system): they work whatever path the page is served at.

export interface Route {
  parts: string[];
  params: URLSearchParams;
}

export function current(): Route {
  const raw = location.hash.replace(/^#/, "") || "/overview";
  const [path, query] = raw.split("?", 2);
  const parts = (path ?? "")
    .split("/")
    .filter((p) => p !== "")
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  return { parts, params: new URLSearchParams(query ?? "") };
}

export function href(path: string, params?: Record<string, string | number | undefined | null>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params ?? {})) {
    if (v !== undefined && v !== null && v !== "") u.set(k, String(v));
  }
  const q = u.toString();
  return `#${path}${q ? `?${q}` : ""}`;
}

/** Changes the route; `replace` keeps the history entry (for form state). */
export function go(path: string, params?: Record<string, string | number | undefined | null>, replace = false): void {
  const target = href(path, params);
  if (replace || target === location.hash) {
    // Neither replaceState nor setting the same hash fires hashchange: redraw here.
    if (replace) history.replaceState(null, "", target);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else location.hash = target;
}

/** The namespaces the user last picked, shared by the views. */
export function rememberedNamespaces(): string[] {
  return (sessionStorage.getItem("skein.namespaces") ?? "").split(",").filter(Boolean);
}
export function rememberNamespaces(ns: string[]): void {
  sessionStorage.setItem("skein.namespaces", ns.join(","));
}
