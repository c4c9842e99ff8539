// Is the kernel side of this widget still there? Two signs, either is enough, and once gone it
// stays gone (a restarted kernel never owns this widget again):
// - ipywidgets marks a model without a live comm (a notebook reopened from saved widget state, a
//   closed comm) with `comm_live = false`, fires "comm_live_update" and puts
//   `jupyter-widgets-disconnected` on the view's element (the model proxy anywidget gives us has
//   no `comm_live`, so we read the class);
// - the kernel connection of the widget manager reports "restarting", "autorestarting" or "dead"
//   (JupyterLab and Notebook 7 do not mark the models on a restart, and the old comm id then
//   reaches a kernel that does not know it: requests would never be answered).
// Then a banner says "Kernel disconnected — re-run this cell", every control is disabled (one
// disabled <fieldset>), and requests waiting for a reply are rejected (requests.js), so no button
// stays busy forever.

import { h, listen } from "./dom.js";

export const OFFLINE_TEXT = "Kernel disconnected — re-run this cell to use this widget again. What it shows is its last saved state.";

const GONE = new Set(["restarting", "autorestarting", "dead"]);

export function createConnection(model, el, signal) {
  const listeners = new Set();
  let kernelGone = false;
  const dead = () => kernelGone || !!el?.closest?.(".jupyter-widgets-disconnected");
  let disconnected = dead();
  const check = () => {
    const now = dead();
    if (now === disconnected || !now) return; // latched: it does not come back
    disconnected = now;
    for (const fn of listeners) fn(now);
  };
  listen(model, signal, "comm_live_update", () => queueMicrotask(check));
  const kernel = model.widget_manager?.kernel;
  if (kernel?.statusChanged?.connect) {
    const onStatus = (_sender, status) => {
      if (!GONE.has(status)) return;
      kernelGone = true;
      check();
    };
    kernel.statusChanged.connect(onStatus);
    signal.addEventListener("abort", () => kernel.statusChanged.disconnect(onStatus), { once: true });
    if (GONE.has(kernel.status)) kernelGone = disconnected = true;
  }
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
