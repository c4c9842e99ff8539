// Payment inspector: the x402 steps of one job (402 requirements, signed authorization,
// settlement receipt, SIWX message) for teaching how a generation gets paid. The kernel
// never puts keys here, only public data. The body is built when first opened, so
// a gallery of 500 cards does not pretty-print 500 JSON blobs up front.

import { h } from "./dom.js";

export function createInspector() {
  const summary = h("summary", {}, "Payment inspector");
  const body = h("ol", { class: "ssw-inspector__steps" });
  const node = h("details", { class: "ssw-inspector", testid: "inspector" }, summary, body);
  let steps = [];
  let built = false;

  function build() {
    const t0 = steps[0]?.at_ms;
    body.replaceChildren(
      ...steps.map((s) => {
        const timing = [
          s.at_ms != null && t0 != null ? `+${s.at_ms - t0} ms` : null,
          s.duration_ms != null ? `took ${s.duration_ms} ms` : null,
        ].filter(Boolean).join(" · ");
        return h("li", { class: "ssw-inspector__step", testid: "inspector-step" },
          h("div", { class: "ssw-inspector__head" }, h("strong", {}, s.step ?? "step"), timing && h("span", { class: "ssw-muted" }, timing)),
          s.summary && h("p", {}, s.summary),
          s.data != null && h("pre", { class: "ssw-inspector__json" }, h("code", {}, JSON.stringify(s.data, null, 2))),
        );
      }),
    );
    built = true;
  }

  node.addEventListener("toggle", () => {
    if (node.open && !built) build();
  });

  return {
    node,
    set(list) {
      steps = Array.isArray(list) ? list : [];
      node.hidden = steps.length === 0;
      summary.textContent = `Payment inspector (${steps.length} step${steps.length === 1 ? "" : "s"})`;
      built = false;
      if (node.open) build(); // keep an open inspector open and current
      else body.replaceChildren();
    },
  };
}
