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

const shownViews = new Map(); // static id -> live views showing that widget

/**
 * The kernel writes a static copy of the widget's results in the output after it (static.py:
 * what nbviewer, GitHub or JupyterLab without the widget's state show). While a live view of the
 * widget is on the page, that copy is hidden: one style rule per widget, named by `_static_id`.
 */
export function hideStaticCopy(model, signal) {
  const id = String(model.get("_static_id") ?? "");
  if (!/^[0-9a-f]{1,32}$/.test(id) || typeof document === "undefined") return;
  const count = (shownViews.get(id) ?? 0) + 1;
  shownViews.set(id, count);
  if (count === 1) {
    const style = document.createElement("style");
    style.id = `ssw-static-hide-${id}`;
    style.textContent = `.jp-OutputArea-child:has(.ssw-static-${id}), .ssw-static-${id} { display: none !important; }`;
    document.head.append(style);
  }
  signal.addEventListener("abort", () => {
    const left = (shownViews.get(id) ?? 1) - 1;
    if (left > 0) return shownViews.set(id, left);
    shownViews.delete(id);
    document.getElementById(`ssw-static-hide-${id}`)?.remove();
  }, { once: true });
}
