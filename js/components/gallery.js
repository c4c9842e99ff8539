// Gallery: many job cards from one list, keyed by job.key. On every update only the cards
// whose record changed are touched (Map key -> { card, job, json }: a record that is the same
// object as last time is not even compared, see records.js); the DOM order is reconciled
// with moves, never rebuilt. The first render builds all cards in a DocumentFragment and
// inserts it once. Running cards tick from the view's single shared ticker, and only the ones on
// screen (an IntersectionObserver): 500 running cards would otherwise restyle 500 clocks a second.

import "../css/gallery.css";
import { createJobCard } from "./jobcard.js";
import { createLightbox } from "./lightbox.js";
import { h } from "./dom.js";
import { formatUsd, humanize, STATUS_KINDS, statusKind, statusText } from "./format.js";

// One filter per kind of status in the vocabulary (running, waiting, complete, failed, cancelled).
const STATUS_FILTERS = [["", "All statuses"], ...STATUS_KINDS.map((kind) => [kind, humanize(kind)])];

/**
 * @param options { ticker                 the view's shared ticker (ticker.js)
 *                  onAction(type, job)    "retry" | "resume" | "dismiss" | "download"; returns the kernel's reply (a Promise)
 *                  onFilterChange(filter) called with { model, status } when the user changes a filter
 *                  showTotal              show the total-spent figure
 *                  signal                 the view's lifetime (stops watching what is on screen) }
 */
export function createGallery({ ticker, onAction = () => {}, onFilterChange = null, showTotal = false, signal } = {}) {
  const suppress = { "data-lm-suppress-shortcuts": "true" }; // arrow keys in a select must not move notebook cells
  const modelSel = h("select", { testid: "filter-model", ...suppress, onchange: changed });
  const statusSel = h("select", { testid: "filter-status", ...suppress, onchange: changed },
    STATUS_FILTERS.map(([value, text]) => h("option", { value }, text)));
  const count = h("span", { class: "ssw-muted", testid: "gallery-count" });
  // Only a standalone gallery shows (and names) its total; the Studio has its own in the header.
  const total = h("span", { class: "ssw-gallery__total", testid: showTotal ? "total-spent" : null, hidden: !showTotal });
  const toolbar = h("div", { class: "ssw-gallery__toolbar" },
    h("label", { class: "ssw-field ssw-field--inline" }, h("span", {}, "Model"), modelSel),
    h("label", { class: "ssw-field ssw-field--inline" }, h("span", {}, "Status"), statusSel),
    count, total,
  );
  const grid = h("div", { class: "ssw-grid", testid: "gallery-grid" });
  const empty = h("p", { class: "ssw-muted ssw-gallery__empty", testid: "gallery-empty" });
  const live = h("div", { class: "ssw-sr-only", "aria-live": "polite", testid: "gallery-live" });
  const lightbox = createLightbox();
  const node = h("section", { class: "ssw-gallery-view", "aria-label": "Jobs" }, toolbar, grid, empty, live, lightbox.node);

  const entries = new Map(); // key -> { card, job, json }
  const running = new Set(); // entries whose elapsed time ticks
  const onscreen = createOnscreen(signal, (entry) => entry.card.running && entry.card.tick(Date.now()));
  let jobs = [];
  let visible = [];
  let filter = { model: "", status: "" };
  let modelOptionsSig = "";
  let stopTicking = null;

  function changed() {
    filter = { model: modelSel.value, status: statusSel.value };
    render();
    onFilterChange?.(filter);
  }

  function handleAction(type, job) {
    if (type === "open") openLightbox(job.key);
    else return onAction(type, job);
  }

  function tick(now) {
    for (const entry of running) if (onscreen.has(entry)) entry.card.tick(now);
  }

  function setJobs(list) {
    const seen = new Set();
    const announcements = [];
    jobs = [];
    for (const job of Array.isArray(list) ? list : []) {
      if (!job || job.key == null || seen.has(job.key)) continue;
      seen.add(job.key);
      jobs.push(job);
      let entry = entries.get(job.key);
      if (!entry) {
        entry = { card: createJobCard(job, { onAction: handleAction }), job, json: JSON.stringify(job) };
        entries.set(job.key, entry);
        onscreen.watch(entry);
      } else if (entry.job !== job) { // a record the kernel did not change keeps its identity: nothing to compare
        const json = JSON.stringify(job);
        entry.job = job;
        if (entry.json !== json) {
          const before = statusKind(entry.card.job.status);
          entry.card.update(job);
          entry.json = json;
          const after = statusKind(job.status);
          if (before === "running" && after !== "running") announcements.push(`${job.label || job.model || "Job"}: ${statusText(job.status)}`);
        }
      }
      if (entry.card.running) running.add(entry);
      else running.delete(entry);
    }
    for (const [key, entry] of entries) {
      if (!seen.has(key)) {
        entries.delete(key);
        running.delete(entry);
        onscreen.forget(entry);
      }
    }
    if (announcements.length) live.textContent = announcements.join(". ");
    if (running.size && !stopTicking) stopTicking = ticker?.add(tick) ?? null;
    else if (!running.size && stopTicking) {
      stopTicking();
      stopTicking = null;
    }
    syncModelOptions();
    render();
  }

  function syncModelOptions() {
    const models = new Map();
    for (const j of jobs) if (j.model && !models.has(j.model)) models.set(j.model, j.label || j.model);
    if (filter.model && !models.has(filter.model)) models.set(filter.model, filter.model);
    const sig = JSON.stringify([...models]);
    if (sig === modelOptionsSig) return;
    modelOptionsSig = sig;
    modelSel.replaceChildren(
      h("option", { value: "" }, "All models"),
      ...[...models].map(([value, label]) => h("option", { value }, label)),
    );
    modelSel.value = filter.model;
  }

  function matches(job) {
    if (filter.model && job.model !== filter.model) return false;
    if (filter.status && statusKind(job.status) !== filter.status) return false;
    return true;
  }

  function render() {
    visible = jobs.filter(matches);
    if (!grid.firstChild) {
      const frag = document.createDocumentFragment();
      for (const job of visible) frag.append(entries.get(job.key).card.node);
      grid.append(frag);
    } else {
      // Walk the wanted order; move only nodes that are out of place, drop the rest.
      let cursor = grid.firstChild;
      for (const job of visible) {
        const el = entries.get(job.key).card.node;
        if (el === cursor) cursor = cursor.nextSibling;
        else grid.insertBefore(el, cursor);
      }
      while (cursor) {
        const nextNode = cursor.nextSibling;
        cursor.remove();
        cursor = nextNode;
      }
    }
    empty.textContent = visible.length ? "" : jobs.length ? "No jobs match these filters." : "No jobs yet.";
    empty.hidden = visible.length > 0;
    count.textContent = visible.length === jobs.length ? `${jobs.length} job${jobs.length === 1 ? "" : "s"}` : `${visible.length} of ${jobs.length} jobs`;
  }

  function images() {
    return visible
      .filter((j) => statusKind(j.status) === "complete" && j.media !== "video" && j.result?.url)
      .map((j) => ({ key: j.key, url: j.result.url, caption: [j.label, j.prompt].filter(Boolean).join(" — ") }));
  }

  function openLightbox(key) {
    const list = images();
    const i = list.findIndex((it) => it.key === key);
    if (i >= 0) lightbox.open(list, i);
  }

  return {
    node,
    setJobs,
    /** Filters from the kernel ({ model, status }; "" = all). */
    setFilter(f) {
      const next = { model: f.model ?? "", status: f.status ?? "" };
      if (next.model === filter.model && next.status === filter.status) return;
      filter = next;
      syncModelOptions();
      modelSel.value = filter.model;
      statusSel.value = filter.status;
      render();
    },
    /** This session's spending; with the ledger shown (`ledgerUsd` not null), apart from it what
     *  the cards shown from the ledger paid in earlier sessions (labelled: never added twice). */
    setTotal(usd, ledgerUsd = null) {
      total.textContent = ledgerUsd == null ? `Total spent: ${formatUsd(usd ?? 0)}`
        : `This session: ${formatUsd(usd ?? 0)} · Paid earlier (shown from the ledger): ${formatUsd(ledgerUsd)}`;
    },
  };
}

/**
 * Which entries' cards are on screen (or within 300 px of it); where IntersectionObserver is
 * missing (jsdom), every card in the document counts. `shown(entry)` runs when one scrolls in.
 */
function createOnscreen(signal, shown) {
  if (typeof IntersectionObserver !== "function") {
    return { has: (entry) => entry.card.node.isConnected, watch() {}, forget() {} };
  }
  const inView = new Set();
  const byNode = new WeakMap();
  const observer = new IntersectionObserver((items) => {
    for (const item of items) {
      const entry = byNode.get(item.target);
      if (!entry) continue;
      if (!item.isIntersecting) inView.delete(entry);
      else if (!inView.has(entry)) {
        inView.add(entry);
        shown(entry);
      }
    }
  }, { rootMargin: "300px" });
  signal?.addEventListener("abort", () => observer.disconnect(), { once: true });
  return {
    has: (entry) => inView.has(entry),
    watch(entry) {
      byNode.set(entry.card.node, entry);
      observer.observe(entry.card.node);
    },
    forget(entry) {
      inView.delete(entry);
      observer.unobserve(entry.card.node);
    },
  };
}
