// Payment inspector: the x402 steps of one job (402 requirements, signed authorization,
// settlement receipt, SIWX message) for teaching how a generation gets paid. The kernel never
// puts keys here, only public data. The card shows a button; the steps open in a modal <dialog>
// (the browser's top layer, sized to the window, JSON wrapped), so an open inspector never widens
// the card or the gallery's columns. The steps are built when first opened, so a gallery of 500
// cards does not pretty-print 500 JSON blobs up front.
//
// Times: the first step's clock time, then each step's offset from it and how long it took; terms
// reused from memory say so (their age is not a duration).

import "../css/inspector.css";
import { button } from "./buttons.js";
import { h, modal } from "./dom.js";

/** "85 ms", "1.2 s" */
export function formatDuration(ms) {
  if (ms == null || !Number.isFinite(Number(ms))) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** "14:03:07.512" in local time. */
export function formatClock(atMs) {
  const d = new Date(atMs);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function createInspector() {
  const open = button("Payment inspector", { class: "ssw-btn ssw-btn--link", testid: "inspector", "aria-haspopup": "dialog", onclick: show });
  const body = h("ol", { class: "ssw-inspector__steps" });
  const close = button("Close", { testid: "inspector-close", onclick: () => hide() });
  const dialog = h("dialog", { class: "ssw-inspector-dialog", testid: "inspector-dialog", "aria-label": "Payment inspector", "data-lm-suppress-shortcuts": "true" },
    h("header", { class: "ssw-inspector__header" }, h("strong", {}, "How this job was paid"), close), body);
  const node = h("div", { class: "ssw-inspector" }, open, dialog);
  let steps = [];
  let built = false;
  const box = modal(dialog);

  function timing(s, t0) {
    if (s.from_memory) return "from memory: no request";
    return [
      s.at_ms != null && t0 != null && s.at_ms !== t0 ? `+${formatDuration(s.at_ms - t0)}` : null,
      s.duration_ms ? `took ${formatDuration(s.duration_ms)}` : null,
    ].filter(Boolean).join(" · ");
  }

  function build() {
    const t0 = steps[0]?.at_ms;
    body.replaceChildren(
      ...steps.map((s, i) => {
        const when = timing(s, t0);
        return h("li", { class: "ssw-inspector__step", testid: "inspector-step" },
          h("div", { class: "ssw-inspector__head" }, h("strong", {}, s.step ?? "step"),
            i === 0 && t0 != null && h("span", { class: "ssw-muted" }, `at ${formatClock(t0)}`),
            when && h("span", { class: "ssw-muted" }, when)),
          s.summary && h("p", {}, s.summary),
          s.data != null && h("pre", { class: "ssw-inspector__json" }, h("code", {}, JSON.stringify(s.data, null, 2))),
        );
      }),
    );
    built = true;
  }

  function show() {
    if (!built) build();
    box.show(close);
  }

  const hide = () => box.hide();

  return {
    node,
    get isOpen() {
      return dialog.open;
    },
    set(list) {
      steps = Array.isArray(list) ? list : [];
      node.hidden = open.hidden = steps.length === 0;
      open.textContent = `Payment inspector (${steps.length} step${steps.length === 1 ? "" : "s"})`;
      built = false;
      if (dialog.open) build(); // keep an open inspector open and current
      else body.replaceChildren();
    },
  };
}
