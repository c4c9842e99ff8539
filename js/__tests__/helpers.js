// Test helpers: a fake anywidget model and a mount function.
import routes from "../../stablestudio_widgets/catalog/routes.json";

/**
 * The subset of the anywidget model API the widgets use. Like Backbone, `set` fires
 * `change:<name>` synchronously and only when the value changed; `kernelSet` is the same
 * call, named for what it stands for in tests (a trait update from the kernel).
 */
export function fakeModel(initial = {}) {
  const state = structuredClone(initial);
  const handlers = new Map();
  const model = {
    state,
    sent: [],
    saves: 0,
    get: (name) => state[name],
    set(name, value) {
      const changed = JSON.stringify(state[name]) !== JSON.stringify(value);
      state[name] = value;
      if (changed) model.emit(`change:${name}`, value);
    },
    save_changes() {
      model.saves++;
    },
    on(event, fn) {
      if (!handlers.has(event)) handlers.set(event, new Set());
      handlers.get(event).add(fn);
    },
    off(event, fn) {
      handlers.get(event)?.delete(fn);
    },
    send(content, callbacks, buffers) {
      model.sent.push({ content, buffers });
    },
    emit(event, ...args) {
      for (const fn of [...(handlers.get(event) ?? [])]) fn(...args);
    },
    kernelSet(name, value) {
      model.set(name, value);
    },
    /** A custom message from the kernel (model.send on the Python side). */
    kernelSend(content, buffers = []) {
      model.emit("msg:custom", content, buffers);
    },
    listenerCount() {
      let n = 0;
      for (const set of handlers.values()) n += set.size;
      return n;
    },
    messages(type) {
      return model.sent.map((m) => m.content).filter((c) => !type || c.type === type);
    },
  };
  return model;
}

/** Render a widget module into a fresh element, as anywidget 0.11 does (initialize, then render). */
export function mount(widget, model) {
  const el = document.createElement("div");
  document.body.append(el);
  const controller = new AbortController();
  widget.initialize?.({ model, signal: controller.signal });
  widget.render({ model, el, signal: controller.signal });
  const $ = (testid, root = el) => root.querySelector(`[data-testid="${testid}"]`);
  const $$ = (testid, root = el) => [...root.querySelectorAll(`[data-testid="${testid}"]`)];
  return {
    el,
    $,
    $$,
    unmount() {
      controller.abort();
      el.remove();
    },
  };
}

/** The real route table from the repo (a fresh copy per call). */
export function loadCatalog() {
  return structuredClone(routes);
}

let counter = 0;
/** A job record with sensible defaults. */
export function makeJob(overrides = {}) {
  counter++;
  return {
    key: `k${counter}`,
    id: null,
    route: "nano-banana/generate",
    model: "nano-banana",
    label: "Nano Banana",
    media: "image",
    prompt: "a red fox",
    params: { aspectRatio: "1:1" },
    status: "processing",
    detail: "",
    created_at: Date.now(),
    finished_at: null,
    typical_s: 5,
    cost_usd: 0.039,
    receipt: null,
    result: null,
    error: null,
    inspector: [],
    ...overrides,
  };
}

export function completeJob(overrides = {}) {
  return makeJob({
    status: "complete",
    finished_at: Date.now(),
    id: "cmn123",
    result: { url: `http://127.0.0.1:9/x${counter + 1}.png`, thumbnail_url: null, local_path: null },
    ...overrides,
  });
}

export const click = (el) => el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
export const key = (el, k) => el.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true }));
export function choose(select, value) {
  select.value = value;
  select.dispatchEvent(new Event("change", { bubbles: true }));
}

/** Let promise callbacks run: a reply settles a Promise, whose handlers run as microtasks. */
export async function settle() {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

/** The kernel's reply to the latest request of `type`: ok, or ok: false with `error`. */
export async function reply(model, type, error = null) {
  const request = model.messages(type).at(-1);
  model.kernelSend(error ? { type: "reply", request_id: request.request_id, ok: false, error }
    : { type: "reply", request_id: request.request_id, ok: true });
  await settle();
}
