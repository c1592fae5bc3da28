// Small SVG charts drawn by hand: a line chart of time series and a scatter plot.

import { h, s } from "./dom";

export interface Line {
  name: string;
  points: Array<[number, number]>; // [unix seconds, value]
}

const PALETTE = ["#0066cc", "#c9190b", "#3e8635", "#f0ab00", "#6753ac", "#009596", "#8a8d90"];

function ticks(min: number, max: number, n: number): number[] {
  if (max <= min) return [min];
  const step = (max - min) / n;
  return Array.from({ length: n + 1 }, (_, i) => min + i * step);
}

function short(v: number): string {
  if (v === 0) return "0";
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(1)}k`;
  if (Math.abs(v) >= 10) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(1);
  return v.toFixed(2);
}

function hhmm(t: number): string {
  const d = new Date(t * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** A line chart with a title, axes and a legend; `unit` goes after the y values. */
export function lineChart(title: string, lines: Line[], unit: string, testid: string, empty = "No data in this window"): HTMLElement {
  const W = 372;
  const H = 180;
  const L = 44;
  const R = 10;
  const T = 10;
  const B = 24;
  const all = lines.flatMap((l) => l.points);
  const fig = h("figure", { class: "chart", "data-testid": testid });
  fig.appendChild(h("figcaption", null, title));
  if (all.length === 0) {
    fig.appendChild(h("p", { class: "msg msg-empty" }, empty));
    return fig;
  }
  const x0 = Math.min(...all.map((p) => p[0]));
  const x1 = Math.max(...all.map((p) => p[0]), x0 + 1);
  const y1 = Math.max(...all.map((p) => p[1]), 0) || 1;
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - y / y1) * (H - T - B);
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    width: W,
    height: H,
    role: "img",
    "aria-label": `${title}: ${lines.map((l) => `${l.name} up to ${short(Math.max(...l.points.map((p) => p[1]), 0))} ${unit}`).join("; ")}`,
  });
  for (const v of ticks(0, y1, 4)) {
    svg.appendChild(s("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid" }));
    svg.appendChild(s("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end", class: "axis" }, short(v)));
  }
  ticks(x0, x1, 3).forEach((t, i, all) => {
    const anchor = i === 0 ? "start" : i === all.length - 1 ? "end" : "middle";
    svg.appendChild(s("text", { x: sx(t), y: H - 6, "text-anchor": anchor, class: "axis" }, hhmm(t)));
  });
  lines.forEach((l, i) => {
    if (l.points.length === 0) return;
    const d = l.points.map((p, j) => `${j === 0 ? "M" : "L"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(s("path", { d, fill: "none", stroke: PALETTE[i % PALETTE.length], "stroke-width": 2 }));
  });
  fig.appendChild(svg);
  fig.appendChild(
    h(
      "ul",
      { class: "legend" },
      lines.map((l, i) =>
        h("li", null, h("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), `${l.name} (${unit})`),
      ),
    ),
  );
  return fig;
}

export interface Dot {
  x: number; // unix µs
  y: number; // µs
  error: boolean;
  label: string;
  onPick: () => void;
}

/** Durations over time: one focusable circle per trace. */
export function scatter(dots: Dot[], testid: string): SVGSVGElement {
  const W = 900;
  const H = 200;
  const L = 60;
  const R = 16;
  const T = 12;
  const B = 24;
  const x0 = Math.min(...dots.map((d) => d.x));
  const x1 = Math.max(...dots.map((d) => d.x), x0 + 1);
  const y1 = Math.max(...dots.map((d) => d.y), 1);
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - y / y1) * (H - T - B);
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "scatter",
    "data-testid": testid,
    role: "group",
    "aria-label": "Trace durations over time",
  });
  for (const v of ticks(0, y1, 4)) {
    svg.appendChild(s("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid" }));
    svg.appendChild(s("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end", class: "axis" }, `${short(v / 1000)}ms`));
  }
  ticks(x0, x1, 4).forEach((t, i, all) => {
    const d = new Date(t / 1000);
    const anchor = i === 0 ? "start" : i === all.length - 1 ? "end" : "middle";
    svg.appendChild(
      s("text", { x: sx(t), y: H - 6, "text-anchor": anchor, class: "axis" }, d.toLocaleTimeString(undefined, { hour12: false })),
    );
  });
  for (const d of dots) {
    const c = s(
      "circle",
      { cx: sx(d.x), cy: sy(d.y), r: 6, class: d.error ? "dot dot-error" : "dot", tabindex: 0, role: "button", "aria-label": d.label },
      s("title", null, d.label),
    );
    c.addEventListener("click", d.onPick);
    c.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        d.onPick();
      }
    });
    svg.appendChild(c);
  }
  return svg;
}
