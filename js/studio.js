// Studio widget: model picker, parameter form, live price, Generate, and the session's jobs.
//
// Traits (kernel <-> front end; see js/README.md for the full contract):
//   catalog               route table (catalog/routes.json)                         read
//   model, mode           "nano-banana", "generate" | "edit" | "i2v"               read/write
//   route_id              derived here from model + mode and written back          read/write
//   prompt                str                                                      read/write (debounced)
//   params                non-prompt, non-image wire params {name: str | bool}     read/write
//   inputs                [{name, size, status, url, thumb, param?}]               read
//   quote                 {status, amount_usd, route_id, message, for}             read
//                         `for` = the form it priced {route_id, params, inputs: [name]}: the price
//                         counts only while it is the form on screen (else "…", Generate disabled)
//   inputs_note           why attached images were taken off the form (a model/mode switch)
//   budget                {spent_usd, budget_usd, remaining_usd, max_per_request_usd, confirm_above_usd}
//   sandbox, banner, wallet_address, network_name, total_spent_usd                 read
//   pending_confirmation  null | {id, price_usd, route_id, message}               read
//   jobs                  [job record]                                             read
// Requests, each answered by one reply (components/requests.js); a refusal is shown where the
// user acted:
//   {type:"generate", quote: {for, amount_usd}}         next to Generate (busy until the reply);
//                                                       the kernel pays at most that quote's price, or refuses
//   {type:"confirm", confirmation_id, accept: bool, amount_usd}  in the confirmation panel (Pay / Cancel);
//                                                       Pay consents to amount_usd, the price it shows
//   {type:"upload", name, mime, size, param} + [ArrayBuffer]   at the image's drop zone
//   {type:"remove_input", index}                        at the image's drop zone
//   {type:"retry" | "resume", key, amount_usd?}         on the job card (a retry: the price it shows)
//   {type:"dismiss" | "download", key}                  on the job card (a cancelled card; a cross-origin file)

import "./css/base.css";
import "./css/studio.css";
import { createBanner } from "./components/banner.js";
import { button } from "./components/buttons.js";
import {
  assignInputs, missingInputs, modeLabel, modelGroups, modesFor, normalizeParams, routeFor,
} from "./components/catalog.js";
import { createShell } from "./components/connection.js";
import { canonical, fill, h, isolateKeys, listen, randomId, sameJSON } from "./components/dom.js";
import { formatTypical, formatUsd, formatUsdRange, shortHash } from "./components/format.js";
import { createGallery } from "./components/gallery.js";
import { cardRequest } from "./components/jobcard.js";
import { createParamForm } from "./components/paramform.js";
import { followRecords } from "./components/records.js";
import { refusal } from "./components/requests.js";
import { startView } from "./components/view.js";

const PROMPT_SAVE_MS = 300;
const ASK_FOCUS_MS = 30_000; // a confirmation this soon after a Generate click here is its question

function render({ model, el, signal: outer }) {
  const { signal, dispose, ticker, connection, requests } = startView(model, el, outer);
  const get = (name) => model.get(name);

  // --- view state that is not a trait ---
  const previews = new Map(); // file name -> object URL, until the kernel's thumbnail arrives
  let pending = []; // uploads sent and not answered yet: [{ name, param, thumb }]
  let promptTimer = null;
  let promptDirty = false;
  let busy = false; // a Generate click waiting for its reply: guards against a double payment
  let writing = false;
  let formKey = "";
  let pickerKey = "";
  let confirmId = null;
  let answeredId = null; // the confirmation already answered here (until the kernel refuses the answer)
  let askedAt = 0; // when Generate was pressed here: the confirmation that follows takes the focus

  // --- elements ---
  const banner = createBanner("sandbox-banner", "sandbox");
  const wallet = h("span", { class: "ssw-muted", testid: "wallet" });
  const budgetText = h("span", { class: "ssw-muted", testid: "budget" });
  const totalText = h("span", { class: "ssw-muted", testid: "total-spent" });

  const suppress = { "data-lm-suppress-shortcuts": "true" };
  const modelSelect = h("select", { testid: "model-select", ...suppress, onchange: () => choose(modelSelect.value, get("mode")) });
  const modeSelect = h("select", { testid: "mode-select", ...suppress, onchange: () => choose(get("model"), modeSelect.value) });
  const picker = h("div", { class: "ssw-studio__picker" },
    h("label", { class: "ssw-field" }, h("span", { class: "ssw-field__label" }, "Model"), modelSelect),
    h("label", { class: "ssw-field" }, h("span", { class: "ssw-field__label" }, "Mode"), modeSelect),
  );
  const description = h("p", { class: "ssw-muted ssw-studio__description", testid: "route-description" });

  const form = createParamForm({
    onPrompt: (text, commit) => {
      clearTimeout(promptTimer);
      promptDirty = true; // until saved, the textarea is the truth: kernel echoes must not overwrite it
      if (commit) savePrompt();
      else promptTimer = setTimeout(savePrompt, PROMPT_SAVE_MS);
      syncGenerate();
    },
    onParam: (name, value) => setTraits({ params: { ...(get("params") ?? {}), [name]: value } }),
    onFiles,
    onRemove: (index, param) => { // the kernel owns the attached bytes
      form.notice(param, "");
      requests.send({ type: "remove_input", index }).catch((err) => form.notice(param, refusal(err)));
    },
  });

  const cost = h("strong", { class: "ssw-studio__cost", testid: "cost", "aria-live": "polite" });
  const costHint = h("span", { class: "ssw-muted", testid: "cost-hint" });
  const reasonId = `ssw-reason-${randomId()}`;
  const reason = h("span", { class: "ssw-muted", id: reasonId, testid: "generate-hint" });
  const generate = button("Generate", { class: "ssw-btn ssw-btn--primary", testid: "generate", "aria-describedby": reasonId, onclick: onGenerate });
  const generateError = h("p", { class: "ssw-action-error", role: "alert", testid: "generate-error", hidden: true });
  const bar = h("div", { class: "ssw-studio__bar" }, h("span", {}, "Price: ", cost), costHint, generate, reason, generateError);

  const confirmTitleId = `ssw-confirm-${randomId()}`;
  const confirmText = h("p", { class: "ssw-confirm__text" });
  const confirmPay = button("Pay", { class: "ssw-btn ssw-btn--primary", testid: "confirm-pay", onclick: () => answer(true) });
  const cancelPay = button("Cancel", { testid: "cancel-pay", onclick: () => answer(false) });
  const confirmError = h("p", { class: "ssw-action-error", role: "alert", testid: "confirm-error", hidden: true });
  const confirmPanel = h("div", { class: "ssw-confirm", role: "alertdialog", "aria-labelledby": confirmTitleId, "aria-describedby": `${confirmTitleId}-text`, tabindex: -1, testid: "confirm-panel", hidden: true, ...suppress },
    h("strong", { id: confirmTitleId }, "Confirm payment"), confirmText, h("div", { class: "ssw-row" }, confirmPay, cancelPay), confirmError);
  confirmText.id = `${confirmTitleId}-text`;
  const inputsNote = h("p", { class: "ssw-muted", role: "status", testid: "inputs-note", hidden: true });

  const gallery = createGallery({ ticker, signal, onAction: (type, job) => requests.send(cardRequest(type, job)) });

  const root = createShell("ssw-studio", connection,
    banner.node,
    h("header", { class: "ssw-studio__header" }, h("strong", { class: "ssw-studio__title" }, "StableStudio"), wallet, budgetText, totalText),
    picker, description, form.node, inputsNote, bar, confirmPanel, gallery.node,
  );
  isolateKeys(root);
  el.append(root);

  // --- trait writes ---
  /** Set several traits, then save once (the kernel re-quotes on each save). */
  function setTraits(values) {
    const changed = Object.entries(values).filter(([k, v]) => !sameJSON(get(k), v));
    if (!changed.length) return;
    writing = true;
    try {
      for (const [k, v] of changed) model.set(k, v);
    } finally {
      writing = false;
    }
    model.save_changes();
    refresh();
  }

  function savePrompt() {
    clearTimeout(promptTimer);
    promptDirty = false;
    setTraits({ prompt: form.prompt.value });
  }

  const catalog = () => get("catalog") ?? {};
  const route = () => routeFor(catalog(), get("model"), get("mode"));

  /** Pick model + mode, keep them consistent with the catalog, carry params over where valid. */
  function choose(modelId, mode) {
    const cat = catalog();
    if (!cat.routes?.length) return;
    const models = modelGroups(cat).flatMap((g) => g.models.map((m) => m.model));
    if (!models.includes(modelId)) modelId = models.includes(cat.service?.recommended?.image) ? cat.service.recommended.image : models[0];
    const modes = modesFor(cat, modelId);
    if (!modes.includes(mode)) mode = modes[0];
    const r = routeFor(cat, modelId, mode);
    setTraits({ model: modelId, mode, route_id: r.id, params: normalizeParams(r, get("params")) });
  }

  /** The kernel set route_id alone (e.g. Studio(route_id="seedance/i2v")): adopt its model and mode. */
  function adoptRouteId() {
    const cat = catalog();
    const target = (cat.routes ?? []).find((r) => r.id === get("route_id"));
    if (!target || route()?.id === target.id) return;
    const mode = modesFor(cat, target.model).find((m) => routeFor(cat, target.model, m)?.id === target.id);
    if (mode) choose(target.model, mode);
  }

  // --- reading traits into the view ---
  function syncPicker() {
    const cat = catalog();
    const groups = modelGroups(cat); // a refreshed catalog may change prices and times, not only models
    const key = JSON.stringify([groups, get("model")]);
    if (key !== pickerKey) {
      pickerKey = key;
      modelSelect.replaceChildren(...groups.map((g) => h("optgroup", { label: g.label },
        g.models.map((m) => h("option", { value: m.model, title: m.description }, m.text)))));
      const r = routeFor(cat, get("model"), "generate");
      const modes = modesFor(cat, get("model"));
      modeSelect.replaceChildren(...modes.map((m) => h("option", { value: m }, modeLabel(m, r?.media))));
      modeSelect.disabled = modes.length < 2;
    }
    modelSelect.value = get("model") ?? "";
    modeSelect.value = get("mode") ?? "";
    description.textContent = route()?.description ?? "";
  }

  function syncForm() {
    const r = route();
    const key = `${r?.id}|${get("mode")}`;
    if (key !== formKey) {
      formKey = key;
      form.build(r, get("mode"));
    }
    form.setValues(get("params") ?? {}, promptDirty ? undefined : (get("prompt") ?? ""));
    syncInputs();
  }

  function syncInputs() {
    const inputs = get("inputs") ?? [];
    pending = pending.filter((p) => !inputs.some((i) => i.name === p.name));
    const byParam = assignInputs(route(), get("mode"), inputs);
    for (const [name, items] of Object.entries(byParam)) {
      for (const it of items) it.thumb = it.thumb || previews.get(it.name) || null;
      items.push(...pending.filter((p) => p.param === name).map((p) => ({ ...p, status: "local", pending: true })));
    }
    form.setInputs(byParam);
  }

  /** What the price depends on, as on screen now; a quote counts only for exactly this form. */
  const formNow = () => ({ route_id: get("route_id"), params: get("params") ?? {}, inputs: (get("inputs") ?? []).map((i) => i.name) });

  function quoteState() {
    const q = get("quote") ?? {};
    const stale = (q.status === "ok" || q.status === "error") && canonical(q.for) !== canonical(formNow());
    return { ...q, status: stale ? "loading" : q.status ?? "idle" };
  }

  function syncCost() {
    const q = quoteState();
    const r = route();
    cost.dataset.state = q.status;
    if (q.status === "ok") cost.textContent = formatUsd(q.amount_usd);
    else if (q.status === "loading") cost.textContent = "…";
    else if (q.status === "error") cost.textContent = q.message || "no price";
    else cost.textContent = "—";
    const typical = r ? formatTypical(r.typical_s, r.typical_range_s) : "";
    // The kernel's note on an exact price (uploads included, network) beats the catalog range.
    const note = q.status === "ok" && q.message ? q.message : r ? `catalog ${formatUsdRange(r.price_usd)}` : "";
    costHint.textContent = [note, typical].filter(Boolean).join(" · ");
  }

  /** Why Generate is disabled, or "" when it is enabled. */
  function blockReason() {
    const r = route();
    if (!r) return catalog().routes?.length ? "Pick a model" : "Loading the model list…";
    if (!form.prompt.value.trim() && r.params?.prompt) return "Write a prompt";
    const missing = missingInputs(r, get("mode"), get("inputs") ?? []);
    if (missing) return missing;
    if (get("pending_confirmation")) return "Confirm or cancel the payment first";
    const q = quoteState();
    if (q.status === "error") return q.message || "No price for these settings";
    if (q.status !== "ok") return "Waiting for the price…";
    const b = get("budget") ?? {};
    if (b.remaining_usd != null && q.amount_usd > b.remaining_usd) return `Over budget: ${formatUsd(b.remaining_usd)} left`;
    if (b.max_per_request_usd != null && q.amount_usd > b.max_per_request_usd) return `Above the ${formatUsd(b.max_per_request_usd)} per-request limit`;
    if (busy) return "Submitting…";
    return "";
  }

  function syncGenerate() {
    const why = blockReason();
    generate.disabled = !!why;
    reason.textContent = why;
  }

  function syncHeader() {
    banner.set(get("banner") || "Sandbox: payments are simulated on a local server, no real money.", !!get("sandbox"));
    const address = get("wallet_address");
    wallet.textContent = [address ? shortHash(address) : "no wallet", get("network_name")].filter(Boolean).join(" · ");
    wallet.title = address || "";
    const b = get("budget") ?? {};
    const parts = [`spent ${formatUsd(b.spent_usd ?? 0)}`];
    if (b.budget_usd != null) parts.push(`${formatUsd(b.remaining_usd ?? b.budget_usd - (b.spent_usd ?? 0))} of ${formatUsd(b.budget_usd)} left`);
    if (b.max_per_request_usd != null) parts.push(`max ${formatUsd(b.max_per_request_usd)}/request`);
    if (b.confirm_above_usd != null) parts.push(`asks above ${formatUsd(b.confirm_above_usd)}`);
    budgetText.textContent = `Budget: ${parts.join(" · ")}`;
    totalText.textContent = `This session: ${formatUsd(get("total_spent_usd") ?? 0)}`;
  }

  function syncConfirm() {
    const pc = get("pending_confirmation");
    confirmPanel.hidden = !pc;
    if (!pc) {
      confirmId = null;
      return;
    }
    confirmText.textContent = pc.message || `This costs ${formatUsd(pc.price_usd)}.`;
    confirmPay.textContent = `Pay ${formatUsd(pc.price_usd)}`;
    if (pc.id !== confirmId) {
      confirmId = pc.id;
      fill(confirmError);
      confirmPay.disabled = cancelPay.disabled = answeredId === pc.id;
      // The question takes the focus when it follows a click here (or focus is in this widget):
      // the safe default is Cancel. Generate is disabled meanwhile, so focus would be lost.
      if (Date.now() - askedAt < ASK_FOCUS_MS || root.contains(document.activeElement)) {
        askedAt = 0;
        confirmPanel.scrollIntoView?.({ block: "nearest" });
        cancelPay.focus();
      }
    }
  }

  function refresh() {
    syncPicker();
    syncForm();
    syncCost();
    syncHeader();
    syncConfirm();
    syncGenerate();
    fill(inputsNote, get("inputs_note"));
  }

  // --- actions ---
  function onGenerate() {
    if (blockReason()) return;
    savePrompt(); // the prompt reaches the kernel before the generate message (same comm, in order)
    busy = true; // until the kernel replies: the job card exists, or why not
    askedAt = Date.now();
    fill(generateError);
    syncGenerate();
    const q = quoteState(); // fresh: blockReason() checked it; the kernel pays this price or refuses
    requests.send({ type: "generate", quote: { for: q.for, amount_usd: q.amount_usd } })
      .catch((err) => fill(generateError, refusal(err)))
      .finally(() => {
        busy = false;
        syncGenerate();
      });
  }

  function answer(accept) {
    const pc = get("pending_confirmation");
    if (!pc || answeredId === pc.id) return; // one answer per confirmation
    answeredId = pc.id;
    confirmPay.disabled = cancelPay.disabled = true;
    fill(confirmError);
    // Pay consents to the price the panel shows, no more: above it the kernel asks again.
    requests.send({ type: "confirm", confirmation_id: pc.id, accept, amount_usd: pc.price_usd }).catch((err) => {
      fill(confirmError, refusal(err));
      answeredId = null; // refused: the question still stands
      if (get("pending_confirmation")?.id === pc.id) confirmPay.disabled = cancelPay.disabled = false;
    });
  }

  /** Send picked or dropped files to the kernel; why a file was not taken is said at its drop zone. */
  async function onFiles(param, files) {
    const allowed = catalog().upload?.params?.contentType?.values;
    const spec = route()?.params?.[param] ?? {};
    const have = (assignInputs(route(), get("mode"), get("inputs") ?? [])[param] ?? []).length + pending.filter((p) => p.param === param).length;
    const room = Math.max(spec.type === "url_list" ? (spec.max_items ?? Infinity) - have : 1 - have, 0);
    const notes = [];
    if (room === 0) notes.push("Remove an attached image first.");
    else if (files.length > room) notes.push(`Only ${room} more image${room === 1 ? "" : "s"} allowed: extra files skipped.`);
    const taken = files.slice(0, room).filter((file) => {
      if (!allowed || allowed.includes(file.type)) return true;
      notes.push(`${file.name}: ${file.type || "unknown type"} is not supported (${allowed.join(", ")}).`);
      return false;
    });
    form.notice(param, notes.join(" "));
    for (const file of taken) {
      const buffer = await file.arrayBuffer();
      if (signal.aborted) return;
      if (globalThis.URL?.createObjectURL && !previews.has(file.name)) previews.set(file.name, URL.createObjectURL(file));
      const sent = { name: file.name, param, thumb: previews.get(file.name) ?? null };
      pending.push(sent);
      requests.send({ type: "upload", name: file.name, mime: file.type, size: file.size, param }, [buffer])
        .catch((err) => form.notice(param, refusal(err)))
        .finally(() => { // answered: the kernel lists the image in `inputs`, or said why not
          pending = pending.filter((p) => p !== sent);
          syncInputs();
          syncGenerate();
        });
    }
    syncInputs();
    syncGenerate();
  }

  // --- wiring ---
  const onChange = () => {
    if (!writing) refresh();
  };
  for (const name of ["model", "mode", "params", "prompt", "inputs", "quote", "budget", "sandbox", "banner",
    "wallet_address", "network_name", "pending_confirmation", "total_spent_usd", "inputs_note"]) {
    listen(model, signal, `change:${name}`, onChange);
  }
  listen(model, signal, "change:catalog", () => {
    if (writing) return;
    pickerKey = formKey = "";
    choose(get("model"), get("mode"));
    refresh();
  });
  listen(model, signal, "change:route_id", () => {
    if (!writing) adoptRouteId();
  });
  listen(model, signal, "change:jobs", () => gallery.setJobs(get("jobs") ?? []));
  signal.addEventListener("abort", () => {
    clearTimeout(promptTimer);
    for (const url of previews.values()) URL.revokeObjectURL?.(url);
    previews.clear();
  }, { once: true });

  // First paint: make model/mode/route_id/params consistent (writes back only what differs).
  if (!get("model") && get("route_id")) adoptRouteId();
  choose(get("model"), get("mode"));
  gallery.setJobs(get("jobs") ?? []);
  refresh();
  return dispose;
}

export default { initialize: followRecords, render };
