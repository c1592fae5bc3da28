// Health as Kiali shows it: its default tolerances and its colours.

import { h } from "./dom";
import type { HealthStatus } from "./api";

export type Level = "healthy" | "degraded" | "failure" | "none" | "idle";

/** Kiali's default tolerances: 5xx degraded from 0.1 %, failing from 10 %; 4xx 10 % / 20 %. */
export function levelFromRates(total: number, err5xx: number, err4xx: number): Level {
  if (!(total > 0)) return "none";
  const p5 = (100 * err5xx) / total;
  const p4 = (100 * err4xx) / total;
  if (p5 >= 10 || p4 >= 20) return "failure";
  if (p5 >= 0.1 || p4 >= 10) return "degraded";
  return "healthy";
}

export function levelOf(status: HealthStatus | undefined): Level {
  switch (status) {
    case "Healthy":
      return "healthy";
    case "Degraded":
      return "degraded";
    case "Failure":
      return "failure";
    default:
      return "none";
  }
}

export function worst(a: Level, b: Level): Level {
  const order: Level[] = ["none", "idle", "healthy", "degraded", "failure"];
  return order.indexOf(a) >= order.indexOf(b) ? a : b;
}

export const COLOURS: Record<Level, string> = {
  healthy: "#3e8635",
  degraded: "#f0ab00",
  failure: "#c9190b",
  none: "#6a6e73",
  idle: "#8a8d90",
};

const TEXT: Record<Level, string> = {
  healthy: "Healthy",
  degraded: "Degraded",
  failure: "Failure",
  none: "No health information",
  idle: "Idle",
};

const ICON: Record<Level, string> = {
  healthy: "✔",
  degraded: "!",
  failure: "✖",
  none: "–",
  idle: "–",
};

/** An icon and the word, so colour is never the only signal. */
export function healthBadge(status: HealthStatus | Level | undefined): HTMLElement {
  const lvl: Level =
    status === "healthy" || status === "degraded" || status === "failure" || status === "none" || status === "idle"
      ? status
      : levelOf(status);
  return h(
    "span",
    { class: `health health-${lvl}`, "data-testid": "health", "data-health": TEXT[lvl] },
    h("span", { class: "health-icon", "aria-hidden": "true" }, ICON[lvl]),
    " ",
    TEXT[lvl],
  );
}
