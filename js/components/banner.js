// Banner (sandbox notice) and toasts (short messages from the kernel) for one view.

import { button } from "./buttons.js";
import { h, later } from "./dom.js";

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

/** Toasts stay a few seconds in a polite live region; errors stay longer and can be dismissed. */
export function createToasts(signal) {
  const node = h("div", { class: "ssw-toasts", role: "status", "aria-live": "polite", testid: "toasts" });
  return {
    node,
    show(level = "info", text = "") {
      const toast = h("div", { class: `ssw-toast ssw-toast--${level}`, testid: "toast", "data-level": level },
        h("span", {}, text),
        button("×", { class: "ssw-btn ssw-btn--icon", "aria-label": "Dismiss", onclick: () => toast.remove() }),
      );
      node.append(toast);
      later(signal, level === "error" ? 10000 : 5000, () => toast.remove());
      return toast;
    },
  };
}
