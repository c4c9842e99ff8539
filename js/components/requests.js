// Requests to the kernel, each answered by exactly one reply (the quak pattern over msg:custom):
//   front end -> kernel  { type, request_id, ...fields } (+ binary buffers)
//   kernel -> front end  { type: "reply", request_id, ok: true }
//                      | { type: "reply", request_id, ok: false, error: { type, message, field? } }
// `send` returns a Promise for the reply; every request still pending when the view goes away is
// rejected with a "Closed" error, so nothing waits for an answer that can no longer be shown, and
// with a "Disconnected" error when the kernel goes away (connection.js): a send to a dead comm
// is dropped by ipywidgets without a word, so it would wait forever.

import { listen, randomId } from "./dom.js";

/** The kernel's (or the closed view's) reason a request did not happen. */
export class RequestError extends Error {
  constructor({ type = "Error", message = "", field = null } = {}) {
    super(message);
    this.name = "RequestError";
    this.type = type;
    this.field = field;
  }

  toString() {
    return `${this.type}: ${this.message}`;
  }
}

/** What to show for a failed request: its reason, or nothing when only the view went away. */
export const refusal = (err) => (err?.type === "Closed" ? "" : err?.type === "Disconnected" ? err.message : String(err));

const closed = () => new RequestError({ type: "Closed", message: "The view closed before the kernel answered." });
const offline = () => new RequestError({ type: "Disconnected", message: "Kernel disconnected — re-run this cell." });

export function createRequests(model, signal, connection = null) {
  const pending = new Map(); // request_id -> { resolve, reject }
  const rejectAll = (error) => {
    for (const { reject } of pending.values()) reject(error);
    pending.clear();
  };
  connection?.onChange((disconnected) => disconnected && rejectAll(offline()));

  listen(model, signal, "msg:custom", (msg, buffers) => {
    const waiting = msg?.type === "reply" ? pending.get(msg.request_id) : null;
    if (!waiting) return; // not a reply, or one already settled
    pending.delete(msg.request_id);
    if (msg.ok) waiting.resolve({ ...msg, buffers: buffers ?? [] });
    else waiting.reject(new RequestError(msg.error ?? {}));
  });
  signal.addEventListener("abort", () => rejectAll(closed()), { once: true });

  return {
    /** Send `{ ...content, request_id }`; resolves on `ok: true` (with the reply's `buffers`),
     *  rejects with a RequestError otherwise. */
    send(content, buffers) {
      if (signal.aborted) return Promise.reject(closed());
      if (connection?.disconnected) return Promise.reject(offline());
      const request_id = randomId();
      const reply = new Promise((resolve, reject) => pending.set(request_id, { resolve, reject }));
      model.send({ ...content, request_id }, undefined, buffers);
      return reply;
    },
    /** How many requests wait for their reply. */
    get size() {
      return pending.size;
    },
  };
}
