// Formatting and status classification shared by every widget.

import vocabulary from "../../stablestudio_widgets/vocabulary.json";

/** "$0.039", "$0.13", "$1.60": two decimals unless the price needs more (USDC has 6). */
export function formatUsd(v) {
  if (v == null || !Number.isFinite(Number(v))) return "—";
  const n = Number(v);
  for (const d of [2, 3, 4, 5, 6]) {
    if (Math.abs(n * 10 ** d - Math.round(n * 10 ** d)) < 1e-6) return `$${n.toFixed(d)}`;
  }
  return `$${n.toFixed(6)}`;
}

/** "$0.039" or "$0.13–$0.24" from a catalog [min, max] pair. */
export function formatUsdRange(range) {
  if (!Array.isArray(range) || range.length === 0) return "";
  const [lo, hi = lo] = range;
  return lo === hi ? formatUsd(lo) : `${formatUsd(lo)}–${formatUsd(hi)}`;
}

/** Elapsed time: "12 s", "2 min 05 s". */
export function formatElapsed(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${String(s % 60).padStart(2, "0")} s`;
}

/** Typical duration: "~5 s", "~2 min", or "~1–2 min" from typical_range_s. */
export function formatTypical(typicalS, rangeS) {
  const fmt = (s) => (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);
  if (Array.isArray(rangeS) && rangeS.length === 2) {
    const [lo, hi] = rangeS;
    if (lo >= 90 || hi >= 90) return `~${Math.round(lo / 60)}–${Math.round(hi / 60)} min`;
    return `~${lo}–${hi} s`;
  }
  return typicalS ? `~${fmt(typicalS)}` : "";
}

/** "0x12ab…cdef" */
export function shortHash(hex, head = 6, tail = 4) {
  if (!hex) return "";
  return hex.length <= head + tail + 1 ? hex : `${hex.slice(0, head)}…${hex.slice(-tail)}`;
}

// Job statuses are spelled once, in vocabulary.json (Python's status.py reads the same file).
const STATUSES = new Map(Object.entries(vocabulary.job_status));

/** Every kind a status can have, in the vocabulary's order: running, waiting, complete, failed, cancelled. */
export const STATUS_KINDS = [...new Set([...STATUSES.values()].map((s) => s.kind))];

/** How a card shows a status; statuses the service invents are still running. */
export function statusKind(status) {
  return STATUSES.get(status)?.kind ?? "running";
}

/** A status in words: the vocabulary's label, or an unknown status verbatim. */
export function statusText(status) {
  if (!status) return "unknown";
  return STATUSES.get(status)?.label ?? status;
}

/** "aspectRatio" / "generate_audio" -> "Aspect ratio" / "Generate audio". */
export function humanize(name) {
  const words = name.replace(/([a-z0-9])([A-Z])/g, "$1 $2").replace(/_/g, " ").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
