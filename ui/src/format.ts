// Numbers and times as the views print them.

export function num(v: string | number | undefined | null): number {
  if (v === undefined || v === null || v === "") return 0;
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) ? n : 0;
}

export function rate(v: number): string {
  if (v === 0) return "0";
  if (v < 0.01) return "<0.01";
  return v.toFixed(2);
}

export function pct(v: number): string {
  if (v === 0) return "0%";
  if (v < 0.1) return "<0.1%";
  return `${v.toFixed(1)}%`;
}

export function ms(v: number): string {
  if (v >= 1000) return `${(v / 1000).toFixed(2)}s`;
  if (v >= 10) return `${v.toFixed(0)}ms`;
  return `${v.toFixed(1)}ms`;
}

/** Microseconds (Jaeger's unit) as a short duration. */
export function us(v: number): string {
  if (v >= 1_000_000) return `${(v / 1_000_000).toFixed(2)}s`;
  if (v >= 1000) return `${(v / 1000).toFixed(2)}ms`;
  return `${v}µs`;
}

export function bytes(v: number): string {
  if (v >= 1 << 20) return `${(v / (1 << 20)).toFixed(1)} MiB`;
  if (v >= 1 << 10) return `${(v / (1 << 10)).toFixed(1)} KiB`;
  return `${v.toFixed(0)} B`;
}

export function clock(d: Date): string {
  return d.toLocaleTimeString(undefined, { hour12: false });
}

export function when(iso: string | undefined): string {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { hour12: false });
}

/** "in 23 h" / "3 min ago" relative to now. */
export function relative(iso: string | undefined): string {
  if (!iso) return "";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return "";
  const d = (t - Date.now()) / 1000;
  const a = Math.abs(d);
  const txt = a < 90 ? `${Math.round(a)} s` : a < 5400 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  return d >= 0 ? `in ${txt}` : `${txt} ago`;
}

export const DURATIONS: Array<[string, string]> = [
  ["60s", "Last 1m"],
  ["300s", "Last 5m"],
  ["600s", "Last 10m"],
  ["1800s", "Last 30m"],
  ["3600s", "Last 1h"],
];

export function durationText(d: string): string {
  return (DURATIONS.find(([v]) => v === d)?.[1] ?? d).replace("Last ", "");
}
