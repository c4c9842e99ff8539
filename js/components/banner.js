// The banner (the sandbox notice) of a view.

import { h } from "./dom.js";

export function createBanner(testid, kind = "info") {
  const node = h("div", { class: `ssw-banner ssw-banner--${kind}`, role: "note", testid, hidden: true });
  return {
    node,
    set(text, visible = !!text) {
      node.textContent = text || "";
      node.hidden = !visible;
    },
  };
}
