// What every widget's view starts with: its lifetime (anywidget's AbortSignal), one 1 s ticker,
// the kernel connection (connection.js), its static copy hidden while it is live, and requests to
// the kernel with their replies (requests.js).

import { createConnection, hideStaticCopy } from "./connection.js";
import { viewLifetime } from "./dom.js";
import { createRequests } from "./requests.js";
import { createTicker } from "./ticker.js";

/** `{ signal, dispose, ticker, connection, requests }` for one view of `model` rendered in `el`. */
export function startView(model, el, outerSignal) {
  const { signal, dispose } = viewLifetime(outerSignal);
  const ticker = createTicker(signal);
  const connection = createConnection(model, el, signal);
  hideStaticCopy(model, signal);
  const requests = createRequests(model, signal, connection);
  return { signal, dispose, ticker, connection, requests };
}
