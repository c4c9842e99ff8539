// Compare widget: prompt × model grid with blind pairwise voting or 1–5 ratings.
//
// Traits (see js/README.md):
//   prompts [str], models [str], transpose bool (rows = models), blind bool, revealed bool,
//   vote_mode "pairwise" | "rating", repeats int,
//   columns [{col, label}] in display order (blind: "Model A"… already shuffled by the kernel),
//   cells   [{key, row, col, prompt_index, repeat, label, job}] (job masked while blind),
//   state   "quoting" | "ready" | "running" | "done",
//   quote   {status, total_usd, per_cell_usd: {key: usd}, message},
//   votes   [{prompt_index, a, b, choice}], ratings {key: 1..5},
//   summary [{model, label, wins, losses, ties, both_bad, votes, win_rate, mean_rating, cost_usd, cost_per_win}]
//   run_error str: why a run() from code did not start (shown beside Run; no request waits for it)
// Requests, each answered by one reply (components/requests.js); a refusal is shown where the
// user acted: {type:"run", total_usd} (the total Run consents to) and {type:"reveal"} beside the header's buttons,
//   {type:"vote", prompt_index, a, b, choice: "a"|"b"|"tie"|"both_bad"} in the prompt's vote panel,
//   {type:"rate", key, rating} under the cell's stars, {type:"retry"|"resume", key} on the cell's card
//   (key = the cell key).
// While blind and unrevealed, per-cell prices, receipts and the payment inspector are hidden:
// prices differ by model and would give the answer away.

import "./css/base.css";
import "./css/compare.css";
import { button } from "./components/buttons.js";
import { createShell } from "./components/connection.js";
import { fill, h, isolateKeys, listen } from "./components/dom.js";
import { formatUsd, statusKind } from "./components/format.js";
import { cardRequest, createJobCard } from "./components/jobcard.js";
import { createLightbox } from "./components/lightbox.js";
import { followRecords } from "./components/records.js";
import { refusal } from "./components/requests.js";
import { startView } from "./components/view.js";

// The pair is shown Left and Right (the cells keep their own names, "Model A"…, so a vote never
// reads "A = Model B"); the kernel's choices stay "a" (left) and "b" (right).
const CHOICES = [
  ["a", "Left better", "vote-a"],
  ["b", "Right better", "vote-b"],
  ["tie", "Tie", "vote-tie"],
  ["both_bad", "Both bad", "vote-both-bad"],
];

const pairId = (pi, a, b) => `${pi}|${[a, b].sort().join("|")}`;

function render({ model, el, signal: outer }) {
  const { signal, dispose, ticker, connection, requests } = startView(model, el, outer);
  const get = (name) => model.get(name);
  const complete = (c) => statusKind(c.job?.status) === "complete";

  const entries = new Map(); // cell key -> { wrap, body, stars, rateError, card, json }
  const running = new Set();
  const localVotes = new Set(); // pairs voted here, before the kernel's `votes` echo arrives
  const voteErrors = new Map(); // prompt index -> why the kernel refused its last vote
  let layoutSig = "";
  let votingSig = "";
  let stopTicking = null;
  let runClicked = false; // Run pressed, its reply not here yet: one click, one batch of payments
  let revealClicked = false;
  let requestError = ""; // why the kernel refused the Run or Reveal pressed here

  const info = h("span", { class: "ssw-muted", testid: "compare-info" });
  const total = h("strong", { testid: "compare-total", "aria-live": "polite" });
  const run = button("Run", { class: "ssw-btn ssw-btn--primary", testid: "compare-run", onclick: onRun });
  const reveal = button("Reveal models", { testid: "reveal", onclick: onReveal });
  const headerError = h("p", { class: "ssw-action-error", role: "alert", testid: "compare-error", hidden: true });
  const stateText = h("p", { class: "ssw-muted", testid: "compare-state", "aria-live": "polite" });
  const table = h("table", { class: "ssw-compare__grid", testid: "compare-grid" });
  const voting = h("section", { class: "ssw-compare__voting", testid: "voting", "aria-label": "Voting" });
  const summary = h("section", { class: "ssw-compare__summary", "aria-label": "Results" });
  const lightbox = createLightbox();
  const root = createShell("ssw-compare", connection,
    h("header", { class: "ssw-compare__header" }, h("strong", {}, "Compare"), info, total, run, reveal, headerError),
    stateText,
    h("div", { class: "ssw-compare__scroll" }, table),
    voting, summary, lightbox.node,
  );
  isolateKeys(root);
  el.append(root);

  const cells = () => (get("cells") ?? []).filter((c) => c && c.key != null);
  const masked = () => !!get("blind") && !get("revealed");
  const columns = () => {
    const cols = get("columns") ?? [];
    if (cols.length) return cols;
    return [...new Set(cells().map((c) => c.col))].map((col) => ({ col, label: String(col) }));
  };
  const cellName = (c) => (c.repeat ? `${c.label} #${c.repeat + 1}` : c.label);
  const colOrder = () => new Map(columns().map((c, i) => [c.col, i]));

  // --- cells ---
  function syncCells() {
    const list = cells();
    const seen = new Set();
    const ratings = get("ratings") ?? {};
    const perCell = get("quote")?.per_cell_usd ?? {};
    const opts = [get("vote_mode"), masked()];
    for (const cell of list) {
      seen.add(cell.key);
      let entry = entries.get(cell.key);
      if (!entry) {
        const body = h("div", { class: "ssw-cell__body" });
        const stars = h("div", { class: "ssw-stars", role: "group", "aria-label": "Rating" });
        const rateError = h("p", { class: "ssw-action-error", role: "alert", testid: "rate-error", hidden: true });
        entry = { wrap: h("div", { class: "ssw-cell", testid: "compare-cell", "data-key": cell.key }, body, stars, rateError), body, stars, rateError, card: null, json: "" };
        entries.set(cell.key, entry);
      }
      const json = JSON.stringify([cell, opts, ratings[cell.key], perCell[cell.key]]);
      if (json !== entry.json) {
        entry.json = json;
        updateCell(entry, cell, ratings[cell.key], perCell[cell.key]);
      }
      if (entry.card?.running) running.add(entry);
      else running.delete(entry);
    }
    for (const [key, entry] of entries) {
      if (!seen.has(key)) {
        entries.delete(key);
        running.delete(entry);
      }
    }
    if (running.size && !stopTicking) stopTicking = ticker.add((now) => running.forEach((e) => e.card.tick(now)));
    else if (!running.size && stopTicking) {
      stopTicking();
      stopTicking = null;
    }
  }

  function updateCell(entry, cell, rating, price) {
    const options = { title: cellName(cell), hideCost: masked() };
    if (cell.job) {
      if (!entry.card) {
        entry.card = createJobCard(cell.job, {
          ...options,
          compact: true,
          onAction: (type) => (type === "open" ? openLightbox(cell.key) : requests.send(cardRequest(type, cell.job, cell.key))),
        });
        entry.body.replaceChildren(entry.card.node);
      } else entry.card.update(cell.job, options);
    } else {
      entry.card = null;
      entry.body.replaceChildren(h("div", { class: "ssw-cell__empty" },
        h("strong", {}, cellName(cell)),
        h("span", { class: "ssw-muted" }, masked() || price == null ? "not run yet" : `not run yet · ${formatUsd(price)}`)));
    }
    const rate = get("vote_mode") === "rating" && complete(cell);
    entry.stars.hidden = !rate;
    entry.stars.replaceChildren(...(!rate ? [] : [1, 2, 3, 4, 5].map((n) => button(rating >= n ? "★" : "☆", {
      class: "ssw-btn ssw-btn--star",
      testid: `rate-${n}`,
      "aria-label": `Rate ${n} of 5`,
      "aria-pressed": rating === n ? "true" : "false",
      onclick: () => {
        fill(entry.rateError);
        requests.send({ type: "rate", key: cell.key, rating: n }).catch((err) => fill(entry.rateError, refusal(err)));
      },
    }))));
  }

  // --- grid layout: rebuilt only when rows/columns change; cell nodes are moved, not recreated ---
  function syncLayout() {
    const list = cells();
    const cols = columns();
    const prompts = get("prompts") ?? [];
    const transpose = !!get("transpose");
    const rows = [...new Set(list.map((c) => c.row))].sort((a, b) => (a > b ? 1 : a < b ? -1 : 0));
    const rowLabel = (row) => {
      const c = list.find((x) => x.row === row);
      if (transpose) return c?.label ?? String(row);
      return prompts[c?.prompt_index ?? row] ?? `Prompt ${Number(row) + 1}`;
    };
    const sig = JSON.stringify([transpose, cols, rows.map(rowLabel), list.map((c) => [c.key, c.row, c.col, c.repeat])]);
    if (sig === layoutSig) return;
    layoutSig = sig;
    table.replaceChildren(
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, transpose ? "Model" : "Prompt"),
        cols.map((c) => h("th", { scope: "col", testid: "compare-col" }, c.label)))),
      h("tbody", {}, rows.map((row) => h("tr", { testid: "compare-row" },
        h("th", { scope: "row", class: "ssw-compare__rowhead", title: rowLabel(row) }, rowLabel(row)),
        cols.map((c) => h("td", {}, list
          .filter((x) => x.row === row && x.col === c.col)
          .sort((x, y) => (x.repeat ?? 0) - (y.repeat ?? 0))
          .map((x) => entries.get(x.key).wrap)))))),
    );
  }

  // --- pairwise voting ---
  function isVoted(pi, a, b) {
    const id = pairId(pi, a, b);
    return localVotes.has(id) || (get("votes") ?? []).some((v) => pairId(v.prompt_index, v.a, v.b) === id);
  }

  function promptPairs(pi) {
    const order = colOrder();
    const done = cells()
      .filter((c) => c.prompt_index === pi && complete(c))
      .sort((x, y) => (order.get(x.col) ?? 0) - (order.get(y.col) ?? 0) || (x.repeat ?? 0) - (y.repeat ?? 0));
    const pairs = [];
    for (let i = 0; i < done.length; i++) {
      for (let j = i + 1; j < done.length; j++) if (done[i].label !== done[j].label) pairs.push([done[i], done[j]]);
    }
    return pairs;
  }

  function syncVoting() {
    // After a blind reveal, further votes would not be blind: the panel goes away.
    const pairwise = get("vote_mode") !== "rating" && !(get("blind") && get("revealed"));
    const prompts = get("prompts") ?? [];
    const indices = [...new Set(cells().map((c) => c.prompt_index))].sort((a, b) => a - b);
    const panels = pairwise ? indices.map((pi) => {
      const pairs = promptPairs(pi);
      const current = pairs.find(([a, b]) => !isVoted(pi, a.key, b.key));
      return { pi, pairs, current, voted: pairs.filter(([a, b]) => isVoted(pi, a.key, b.key)).length };
    }).filter((p) => p.pairs.length) : [];
    const sig = JSON.stringify(panels.map((p) => [p.pi, p.voted, p.pairs.length, p.current?.map((c) => [c.key, c.label, c.job?.result]), voteErrors.get(p.pi)]));
    if (sig === votingSig) return;
    votingSig = sig;
    voting.hidden = panels.length === 0;
    voting.replaceChildren(
      panels.length ? h("h4", {}, "Which is better?") : "",
      ...panels.map((p) => votePanel(p, prompts[p.pi])),
    );
  }

  function votePanel({ pi, pairs, current, voted }, promptText) {
    const head = h("p", { class: "ssw-vote__prompt" }, h("strong", {}, `Prompt ${pi + 1}: `), promptText ?? "");
    const refused = voteErrors.get(pi) && h("p", { class: "ssw-action-error", role: "alert", testid: "vote-error" }, voteErrors.get(pi));
    if (!current) {
      return h("div", { class: "ssw-vote", testid: "vote-panel", "data-prompt-index": pi }, head,
        h("p", { class: "ssw-muted" }, `All ${pairs.length} pair${pairs.length === 1 ? "" : "s"} voted.`));
    }
    const [a, b] = current;
    const vote = (choice) => {
      const pair = pairId(pi, a.key, b.key);
      localVotes.add(pair); // shown as voted at once; a refusal puts the pair back
      voteErrors.delete(pi);
      requests.send({ type: "vote", prompt_index: pi, a: a.key, b: b.key, choice }).catch((err) => {
        localVotes.delete(pair);
        if (refusal(err)) voteErrors.set(pi, refusal(err));
        syncVoting();
        syncHeader();
      });
      syncVoting();
      syncHeader();
    };
    return h("div", { class: "ssw-vote", testid: "vote-panel", "data-prompt-index": pi }, head,
      abView(a, b),
      h("p", { class: "ssw-muted", testid: "pair-names" }, `Left: ${cellName(a)} · Right: ${cellName(b)} · pair ${voted + 1} of ${pairs.length}`),
      h("div", { class: "ssw-row" }, CHOICES.map(([choice, text, testid]) => button(text, { testid, onclick: () => vote(choice) }))),
      refused,
    );
  }

  /** Two images stacked: the left one covers the right one up to the handle, which follows a drag
   *  on the picture itself (or the range input below it, for the keyboard). */
  function abView(a, b) {
    const urlA = a.job?.result?.url;
    const urlB = b.job?.result?.url;
    if (a.job?.media === "video" || b.job?.media === "video" || !urlA || !urlB) {
      const media = (c) => (c.job?.media === "video"
        ? h("video", { src: c.job.result?.url, controls: true, muted: true, playsinline: true, preload: "metadata", poster: c.job.result?.thumbnail_url || null })
        : h("img", { src: c.job?.result?.url, alt: cellName(c) }));
      return h("div", { class: "ssw-ab-side" },
        h("figure", {}, media(a), h("figcaption", {}, `Left: ${cellName(a)}`)),
        h("figure", {}, media(b), h("figcaption", {}, `Right: ${cellName(b)}`)));
    }
    const top = h("img", { class: "ssw-ab__a", src: urlA, alt: `Left: ${cellName(a)}`, draggable: false });
    const wrap = h("div", { class: "ssw-ab", testid: "ab-slider" },
      h("img", { class: "ssw-ab__b", src: urlB, alt: `Right: ${cellName(b)}`, draggable: false }),
      top,
      h("span", { class: "ssw-ab__handle", "aria-hidden": "true" }),
      h("span", { class: "ssw-ab__tag ssw-ab__tag--a", "aria-hidden": "true" }, cellName(a)),
      h("span", { class: "ssw-ab__tag ssw-ab__tag--b", "aria-hidden": "true" }, cellName(b)),
    );
    const range = h("input", {
      type: "range", min: 0, max: 100, value: 50, class: "ssw-ab__range", testid: "ab-range",
      "aria-label": `Slide to compare left (${cellName(a)}) with right (${cellName(b)})`, "data-lm-suppress-shortcuts": "true",
      oninput: () => place(range.value),
    });
    const place = (pos) => {
      wrap.style.setProperty("--pos", `${pos}%`);
      top.style.setProperty("clip-path", `inset(0 ${100 - pos}% 0 0)`);
      range.value = String(pos);
    };
    // Drag on the picture: the handle follows the pointer (captured, so it keeps following off it).
    const follow = (e) => {
      const box = wrap.getBoundingClientRect();
      if (box.width) place(Math.round(Math.min(Math.max((e.clientX - box.left) / box.width, 0), 1) * 100));
    };
    wrap.addEventListener("pointerdown", (e) => {
      wrap.setPointerCapture?.(e.pointerId);
      follow(e);
      e.preventDefault();
    });
    wrap.addEventListener("pointermove", (e) => {
      if (wrap.hasPointerCapture?.(e.pointerId)) follow(e);
    });
    place(50);
    return h("div", { class: "ssw-ab-wrap" }, wrap, range);
  }

  function openLightbox(key) {
    const order = colOrder();
    const list = cells()
      .filter((c) => complete(c) && c.job.media !== "video" && c.job.result?.url)
      .sort((x, y) => x.row - y.row || (order.get(x.col) ?? 0) - (order.get(y.col) ?? 0))
      .map((c) => ({ key: c.key, url: c.job.result.url, caption: cellName(c) }));
    const i = list.findIndex((it) => it.key === key);
    if (i >= 0) lightbox.open(list, i);
  }

  // --- header and summary ---
  /** A header request (run, reveal): busy until its reply, a refusal shown beside the buttons. */
  function headerRequest(type, setBusy, extra = {}) {
    setBusy(true);
    requestError = "";
    syncHeader();
    requests.send({ type, ...extra })
      .catch((err) => (requestError = refusal(err)))
      .finally(() => {
        setBusy(false);
        syncHeader();
      });
  }

  function onRun() {
    // Run consents to the total its label shows, no more (each cell to its own quote).
    headerRequest("run", (v) => (runClicked = v), { total_usd: get("quote")?.total_usd });
  }

  function onReveal() {
    headerRequest("reveal", (v) => (revealClicked = v));
  }

  function syncHeader() {
    const list = cells();
    const n = list.length;
    const q = get("quote") ?? {};
    const state = get("state") ?? "quoting";
    const prompts = get("prompts") ?? [];
    const models = get("models") ?? [];
    const repeats = get("repeats") ?? 1;
    info.textContent = `${prompts.length} prompt${prompts.length === 1 ? "" : "s"} × ${models.length} model${models.length === 1 ? "" : "s"}` +
      `${repeats > 1 ? ` × ${repeats}` : ""}${get("blind") ? " · blind" : ""}`;
    if (q.status === "ok") total.textContent = `Total ${formatUsd(q.total_usd)}`;
    else if (q.status === "error") total.textContent = q.message || "No price";
    else total.textContent = "Quoting…";
    const ready = state === "ready" && q.status === "ok";
    run.hidden = state === "running" || state === "done";
    run.disabled = !ready || runClicked;
    run.textContent = `Run ${n} generation${n === 1 ? "" : "s"} for ${q.status === "ok" ? formatUsd(q.total_usd) : "…"}`;
    const done = list.filter(complete).length;
    const failed = list.filter((c) => c.job && statusKind(c.job.status) === "failed").length;
    stateText.textContent = {
      quoting: "Getting the exact prices…",
      ready: "Check the total, then run.",
      running: `Running: ${done} of ${n} done${failed ? `, ${failed} failed` : ""}.`,
      done: `Done: ${done} of ${n} complete${failed ? `, ${failed} failed` : ""}.`,
    }[state] ?? state;
    const hasVoted = localVotes.size > 0 || (get("votes") ?? []).length > 0 || Object.keys(get("ratings") ?? {}).length > 0;
    reveal.hidden = !!get("revealed");
    reveal.textContent = get("blind") ? "Reveal models" : "Show results";
    reveal.disabled = (!!get("blind") && !hasVoted) || revealClicked;
    reveal.title = reveal.disabled ? "Vote at least once first" : "";
    // A refusal of a Run pressed here, else why a run() from code did not start (no reply shows that).
    fill(headerError, requestError || (runClicked ? "" : get("run_error")));
  }

  function syncSummary() {
    const rows = get("summary") ?? [];
    const show = !!get("revealed") && rows.length > 0;
    summary.hidden = !show;
    if (!show) return summary.replaceChildren();
    const pct = (v) => (v == null ? "—" : `${Math.round(v * 100)}%`);
    const num = (v) => (v == null ? "—" : Number(v).toFixed(2));
    const usd = (v) => (v == null ? "—" : formatUsd(v));
    // Only the columns the vote mode fills: pairwise votes give no ratings, ratings no wins.
    const columns = get("vote_mode") === "rating"
      ? [["Mean rating", (r) => num(r.mean_rating)], ["Cost", (r) => usd(r.cost_usd)]]
      : [["Wins", (r) => r.wins], ["Losses", (r) => r.losses], ["Ties", (r) => r.ties], ["Both bad", (r) => r.both_bad],
        ["Votes", (r) => r.votes], ["Win rate", (r) => pct(r.win_rate)], ["Cost", (r) => usd(r.cost_usd)],
        ["Cost per win", (r) => usd(r.cost_per_win)]];
    summary.replaceChildren(h("h4", {}, "Results"), h("div", { class: "ssw-compare__scroll" }, h("table", { class: "ssw-table", testid: "summary" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Model"), columns.map(([t]) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {},
        h("th", { scope: "row" }, r.label || r.model),
        columns.map(([, cell]) => h("td", {}, String(cell(r) ?? 0)))))),
    )));
  }

  function refresh() {
    syncCells();
    syncLayout();
    syncVoting();
    syncHeader();
    syncSummary();
  }

  for (const name of ["prompts", "models", "transpose", "blind", "revealed", "vote_mode", "repeats", "columns", "cells", "ratings", "summary", "state", "quote", "run_error"]) {
    listen(model, signal, `change:${name}`, refresh);
  }
  listen(model, signal, "change:votes", () => {
    for (const v of get("votes") ?? []) localVotes.delete(pairId(v.prompt_index, v.a, v.b)); // confirmed by the kernel
    refresh();
  });
  refresh();
  return dispose;
}

export default { initialize: followRecords, render };
