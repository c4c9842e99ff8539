// Gallery widget: one widget, many cards (not a widget per job), keyed by job.key.
//
// Traits:  jobs [job record] newest first, filter_model str ("" = all),
//          filter_status "" | "complete" | "failed" | "running", total_spent_usd number (this session),
//          ledger_total_usd number | null (with the ledger shown: its cards' earlier payments),
//          title str, show_ledger bool (written by the "Show past jobs from the ledger" toggle)
// Requests (each answered by one reply, see components/requests.js): {type:"retry"|"resume", key}
// Filters are applied here, on the full `jobs` list; the kernel only stores the choice.

import "./css/base.css";
import { createShell } from "./components/connection.js";
import { h, isolateKeys, listen } from "./components/dom.js";
import { createGallery } from "./components/gallery.js";
import { cardRequest } from "./components/jobcard.js";
import { followRecords } from "./components/records.js";
import { startView } from "./components/view.js";

function render({ model, el, signal: outer }) {
  const { signal, dispose, ticker, connection, requests } = startView(model, el, outer);
  const save = (values) => {
    for (const [k, v] of Object.entries(values)) model.set(k, v);
    model.save_changes();
  };
  const gallery = createGallery({
    signal,
    ticker,
    showTotal: true,
    onAction: (type, job) => requests.send(cardRequest(type, job)),
    onFilterChange: ({ model: m, status }) => save({ filter_model: m, filter_status: status }),
  });
  const title = h("h3", { class: "ssw-gallery__title", testid: "gallery-title" });
  const ledger = h("input", { type: "checkbox", testid: "show-ledger", onchange: () => save({ show_ledger: ledger.checked }) });
  const root = createShell("ssw-gallery", connection,
    h("header", { class: "ssw-gallery__header" }, title,
      h("label", { class: "ssw-field--check" }, ledger, h("span", {}, "Show past jobs from the ledger"))),
    gallery.node,
  );
  isolateKeys(root);
  el.append(root);

  const syncJobs = () => gallery.setJobs(model.get("jobs") ?? []);
  const syncFilter = () => gallery.setFilter({ model: model.get("filter_model") ?? "", status: model.get("filter_status") ?? "" });
  const syncHeader = () => {
    title.textContent = model.get("title") || "Jobs";
    ledger.checked = !!model.get("show_ledger");
    gallery.setTotal(model.get("total_spent_usd") ?? 0, model.get("ledger_total_usd") ?? null);
  };

  listen(model, signal, "change:jobs", syncJobs);
  listen(model, signal, "change:filter_model", syncFilter);
  listen(model, signal, "change:filter_status", syncFilter);
  for (const name of ["title", "show_ledger", "total_spent_usd", "ledger_total_usd"]) listen(model, signal, `change:${name}`, syncHeader);
  syncFilter();
  syncJobs();
  syncHeader();
  return dispose;
}

export default { initialize: followRecords, render };
