// Record lists (a gallery's `jobs`, a comparison's `cells`) come from the kernel in full only when
// a view asks for the whole state; after that each change is a custom message
//   { type: "records", trait, changed: [record], removed: [key], order: [key] | null }
// carrying only the records that changed (`order`: every key, when they moved). Applied once per
// model (anywidget's `initialize`), so every view of it and a saved notebook see the whole list;
// records that did not change keep their identity, so views touch only the cards that did.

import { listen, viewLifetime } from "./dom.js";

/** The list after a change message: changed records replaced or added, removed ones dropped. */
export function applyChanges(list, { changed = [], removed = [], order = null } = {}) {
  const byKey = new Map((Array.isArray(list) ? list : []).map((r) => [r.key, r]));
  const added = [];
  for (const r of changed) {
    if (!byKey.has(r.key)) added.push(r.key);
    byKey.set(r.key, r);
  }
  for (const key of removed) byKey.delete(key);
  const keys = order ?? [...(Array.isArray(list) ? list : []).map((r) => r.key), ...added];
  return keys.filter((k) => byKey.has(k)).map((k) => byKey.get(k));
}

/** anywidget `initialize`: keep the model's record lists up to date from the kernel's changes. */
export function followRecords({ model, signal: outer }) {
  const { signal, dispose } = viewLifetime(outer);
  listen(model, signal, "msg:custom", (msg) => {
    if (msg?.type !== "records" || typeof msg.trait !== "string") return;
    model.set(msg.trait, applyChanges(model.get(msg.trait), msg));
  });
  return dispose;
}
