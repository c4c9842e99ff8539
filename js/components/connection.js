// Is the kernel side of this widget still there? ipywidgets marks a model whose comm is gone
// (kernel restarted or shut down, or a notebook reopened from saved widget state with no kernel)
// with `comm_live = false`, fires "comm_live_update" and puts `jupyter-widgets-disconnected` on the
// view's element. We read that class (the model proxy anywidget gives us has no `comm_live`), and
// then: a banner says "Kernel disconnected — re-run this cell", every control is disabled (one
// disabled <fieldset>), and requests still waiting for a reply are rejected (requests.js), so
// no button stays busy forever.

import { h, listen } from "./dom.js";

export const OFFLINE_TEXT = "Kernel disconnected — re-run this cell to use this widget again. What it shows is its last saved state.";

export function createConnection(model, el, signal) {
  const listeners = new Set();
  const dead = () => !!el?.closest?.(".jupyter-widgets-disconnected");
  let disconnected = dead();
  const check = () => {
    const now = dead();
    if (now === disconnected) return;
    disconnected = now;
    for (const fn of listeners) fn(now);
  };
  listen(model, signal, "comm_live_update", () => queueMicrotask(check));
  if (el && globalThis.MutationObserver) {
    const observer = new MutationObserver(check); // the class can change without an event we see
    observer.observe(el, { attributes: true, attributeFilter: ["class"] });
    signal.addEventListener("abort", () => observer.disconnect(), { once: true });
  }
  return {
    get disconnected() {
      return disconnected;
    },
    /** Call `fn(disconnected)` on every change. */
    onChange(fn) {
      listeners.add(fn);
    },
  };
}

/** A widget's root: the disconnected banner, then its content inside one fieldset that is
 *  disabled (every button, field and select in it) while the kernel is away. */
export function createShell(className, connection, ...children) {
  const banner = h("p", { class: "ssw-banner ssw-banner--offline", role: "alert", testid: "disconnected", hidden: true }, OFFLINE_TEXT);
  const body = h("fieldset", { class: "ssw-body" }, ...children);
  const root = h("div", { class: `ssw ${className}` }, banner, body);
  const apply = (offline) => {
    banner.hidden = !offline;
    body.disabled = offline;
    root.classList.toggle("ssw--offline", offline);
  };
  connection.onChange(apply);
  apply(connection.disconnected);
  return root;
}
