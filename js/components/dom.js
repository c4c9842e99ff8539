// Tiny DOM helpers: plain DOM keeps bundles small and the views fast.

/**
 * h("button", { class: "ssw-btn", testid: "retry", onclick: fn }, "Retry")
 * - `testid` is shorthand for data-testid (stable hooks for browser tests);
 * - `on<event>` functions become listeners: they live as long as the element;
 * - aria-*, data-*, role and unknown names become attributes, known ones properties.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "testid") el.setAttribute("data-testid", v);
    else if (k === "style") el.style.cssText = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k.startsWith("aria-") || k.startsWith("data-") || k === "role" || !(k in el)) {
      el.setAttribute(k, v === true ? "" : String(v));
    } else el[k] = v;
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c);
  }
}

/** Listen to a model event for as long as the view lives (anywidget passes an AbortSignal). */
export function listen(model, signal, event, fn) {
  model.on(event, fn);
  signal.addEventListener("abort", () => model.off(event, fn), { once: true });
}

/**
 * One AbortController per view, linked to anywidget's `signal` when it gives one (0.11+);
 * `render` also returns `dispose` for older anywidget versions that call a returned cleanup.
 */
export function viewLifetime(signal) {
  const ctrl = new AbortController();
  if (signal) {
    if (signal.aborted) ctrl.abort();
    else signal.addEventListener("abort", () => ctrl.abort(), { once: true });
  }
  return { signal: ctrl.signal, dispose: () => ctrl.abort() };
}

/**
 * Keep plain keystrokes inside the widget. In JupyterLab's command mode, letters and arrows
 * pressed on any focused element of a cell act on the notebook ("A" inserts a cell, "X" cuts
 * it, arrows change the selected cell). JupyterLab 4.1+ listens for keydown in the bubbling
 * phase, so stopping propagation at the widget root is enough; shortcuts with Ctrl, Cmd or Alt
 * (save, command palette) and Tab still reach the host.
 */
export function isolateKeys(root) {
  root.addEventListener("keydown", (e) => {
    if (!e.ctrlKey && !e.metaKey && !e.altKey && e.key !== "Tab") e.stopPropagation();
  });
}

/** Random id for request correlation (crypto.randomUUID needs a secure context). */
export function randomId() {
  if (globalThis.crypto?.randomUUID) {
    try {
      return crypto.randomUUID();
    } catch {
      /* insecure context: fall through */
    }
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Cheap structural comparison of JSON-ish trait values. */
export const sameJSON = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** JSON with object keys sorted: the same value gives the same text whatever the key order. */
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

/** Replace an element's children; hide it when there is nothing to show. */
export function fill(el, ...children) {
  const kids = children.flat().filter((c) => c != null && c !== false && c !== "");
  el.replaceChildren(...kids);
  el.hidden = kids.length === 0;
}

/**
 * A <dialog> shown modally and closed again (Escape, a click on the backdrop, or `hide()`) with
 * the keyboard focus given back to whatever had it: the inspector and the lightbox.
 */
export function modal(dialog) {
  let opener = null;
  const m = {
    show(focusEl) {
      if (!dialog.open) {
        opener = document.activeElement;
        if (typeof dialog.showModal === "function") dialog.showModal();
        else dialog.setAttribute("open", "");
      }
      focusEl?.focus();
    },
    hide() {
      if (!dialog.open) return;
      if (typeof dialog.close === "function") dialog.close();
      else dialog.removeAttribute("open");
      opener?.focus?.();
      opener = null;
    },
  };
  dialog.addEventListener("cancel", (e) => {
    e.preventDefault(); // the native Escape path: close through ours to give the focus back
    m.hide();
  });
  dialog.addEventListener("click", (e) => {
    if (e.target === dialog) m.hide(); // the backdrop, not the content
  });
  return m;
}
