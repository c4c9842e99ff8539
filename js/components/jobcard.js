// Job card: one job record rendered as a card. The card node stays the same object for the
// life of the job; `update(job)` rebuilds only the sections whose inputs changed, so a playing
// video or an open inspector survive status and cost updates.
//
// Job record (the contract with the kernel; see js/README.md):
//   { key, id, route, model, label, media: "image"|"video", prompt, params, status, detail,
//     created_at, finished_at, typical_s, cost_usd, receipt, result: {url, thumbnail_url, thumb,
//     local_path}, error, inspector, uploads: [{name, url, cost_usd, reused}] }
//   error: {type, message, retryable, resumable, retry_usd, unpaid, dismissable}: a Retry shows
//   retry_usd and sends it as the most it consents to pay (the kernel refuses or asks again above
//   it); `dismissable`: a payment that expired unsettled (nothing paid) may be closed.
// `result.thumb` is a small embedded JPEG: shown when the media URL no longer answers (a saved
// notebook whose sandbox is gone, an expired URL).

import "../css/card.css";
import { button, copyButton } from "./buttons.js";
import { costBadge } from "./costbadge.js";
import { fill, h } from "./dom.js";
import { formatUsd, humanize, STATUS_KINDS, statusKind, statusText } from "./format.js";
import { createInspector } from "./inspector.js";
import { createProgress } from "./progress.js";
import { refusal } from "./requests.js";

/** A card action as a request; a retry carries the amount its button showed: the most it consents to pay. */
export function cardRequest(type, job, key = job.key) {
  const amount = type === "retry" ? job?.error?.retry_usd : null;
  return amount != null ? { type, key, amount_usd: amount } : { type, key };
}

/**
 * @param job      job record
 * @param options  { onAction(type, job)  "retry" | "resume" | "dismiss" (a cancelled or expired card) |
 *                                      "download" | "open" (image clicked);
 *                                      for requests it returns the kernel's reply (a Promise): the
 *                                      buttons stay busy until it settles and a refusal is shown on the card,
 *                   title        text shown instead of job.label (Compare: "Model A"),
 *                   compact      smaller card (Compare grid),
 *                   hideCost     hide cost, receipt and inspector (blind Compare: prices reveal models),
 *                   live         announce status changes (single-card widget) }
 */
const HIDDEN_PARAMS = new Set(["prompt", "image", "images", "lastFrame"]);

/** "16 / 9" from a record's params (aspectRatio, aspect_ratio, size "1280x720", "1280*720"), or null. */
export function mediaRatio(params = {}) {
  const value = params?.aspectRatio ?? params?.aspect_ratio ?? params?.size;
  const m = typeof value === "string" && value.match(/^(\d+(?:\.\d+)?)\s*[:x*]\s*(\d+(?:\.\d+)?)$/);
  return m ? `${m[1]} / ${m[2]}` : null;
}

const sameOrigin = (url) => {
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch {
    return false;
  }
};

/** Save bytes the kernel sent as a file (a temporary object URL and a click on a download link). */
function saveBytes(data, name, mime) {
  if (!data) return;
  const href = URL.createObjectURL(new Blob([data], { type: mime || "application/octet-stream" }));
  const link = h("a", { href, download: name || "stablestudio-result" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
}

/** A URL from the service goes into an href only if it is http(s). */
const safeUrl = (u) => (typeof u === "string" && /^https?:\/\//i.test(u) ? u : null);

/** "Uploads: cat.png $0.01, dog.png (already paid, reused)". */
function uploadsText(list) {
  if (!list?.length) return "";
  return `Uploads: ${list.map((u) => `${u.name} ${u.reused ? "(already paid, reused)" : formatUsd(u.cost_usd)}`).join(", ")}`;
}

export function createJobCard(job, options = {}) {
  const { onAction = () => {}, compact = false, live = false } = options;
  let opts = { title: options.title, hideCost: !!options.hideCost };
  let current = job;

  const title = h("span", { class: "ssw-card__title" });
  const pill = h("span", { class: "ssw-pill", testid: "status", "aria-live": live ? "polite" : null });
  const prompt = h("p", { class: "ssw-card__prompt", testid: "prompt-text" });
  const chips = h("ul", { class: "ssw-chips", testid: "param-chips", "aria-label": "Parameters" });
  const uploads = h("p", { class: "ssw-card__uploads ssw-muted", testid: "uploads" });
  const media = h("div", { class: "ssw-card__media" });
  const progress = createProgress();
  const detail = h("p", { class: "ssw-card__detail ssw-muted", testid: "detail" });
  const error = h("div", { class: "ssw-card__error" });
  const actionError = h("p", { class: "ssw-action-error", role: "alert", testid: "action-error", hidden: true });
  const actions = h("div", { class: "ssw-card__actions" });
  const cost = h("div", { class: "ssw-card__cost" });
  const inspector = createInspector();

  const node = h("article", { class: `ssw-card${compact ? " ssw-card--compact" : ""}`, testid: "job-card" },
    h("header", { class: "ssw-card__head" }, title, pill),
    prompt, chips, media, progress.node, detail, error, actionError, actions, cost, uploads, inspector.node,
  );

  // [name, the job fields the section reads, how to render it]
  const sections = [
    ["head", (j) => [j.label, j.status, opts.title], renderHead],
    ["prompt", (j) => j.prompt, (j) => {
      prompt.textContent = j.prompt || "";
      prompt.title = j.prompt || "";
      prompt.hidden = !j.prompt;
    }],
    ["chips", (j) => j.params, renderChips],
    // The embedded thumbnail arrives after the result: it must not rebuild (reload, restart) the media.
    ["media", (j) => [j.status, j.media, j.result?.url, j.result?.thumbnail_url, j.prompt, mediaRatio(j.params)], renderMedia],
    ["thumb", (j) => j.result?.thumb ?? null, (j) => setThumb(j.result?.thumb ?? null)],
    ["progress", (j) => [j.status, j.id, j.created_at, j.finished_at, j.typical_s], (j) => progress.set(j)],
    // The step detail while live; after an end without success only when no error explains it.
    ["detail", (j) => [j.detail, j.status, !!j.error], (j) => {
      const kind = statusKind(j.status);
      fill(detail, (kind === "running" || kind === "waiting" || (kind !== "complete" && !j.error)) && j.detail);
    }],
    ["error", (j) => [j.error, j.status, acting], renderError],
    ["uploads", (j) => [j.uploads, opts.hideCost], (j) => fill(uploads, !opts.hideCost && uploadsText(j.uploads))],
    ["actions", (j) => [j.status, j.result], renderActions],
    ["cost", (j) => [j.cost_usd, j.receipt, opts.hideCost], (j) => fill(cost, !opts.hideCost && costBadge(j.cost_usd, j.receipt))],
    ["inspector", (j) => [j.inspector, opts.hideCost], (j) => inspector.set(opts.hideCost ? [] : j.inspector)],
  ];
  const signatures = new Map();
  let acting = null; // "retry" | "resume" while the kernel has not replied to it

  function renderHead(j) {
    title.textContent = opts.title ?? j.label ?? j.model ?? "";
    pill.textContent = statusText(j.status);
    pill.className = `ssw-pill ssw-pill--${statusKind(j.status)}`;
    node.dataset.status = j.status ?? "";
    node.dataset.key = j.key ?? "";
    node.classList.remove(...STATUS_KINDS.map((kind) => `ssw-card--${kind}`));
    node.classList.add(`ssw-card--${statusKind(j.status)}`);
  }

  function renderChips(j) {
    const shown = Object.entries(j.params ?? {}).filter(([k, v]) => !HIDDEN_PARAMS.has(k) && v !== "" && v != null && typeof v !== "object");
    chips.replaceChildren(...shown.map(([k, v]) => h("li", { class: "ssw-chip", title: k }, `${humanize(k)}: ${v === true ? "on" : v === false ? "off" : v}`)));
    chips.hidden = shown.length === 0;
  }

  let thumb = null; // the embedded thumbnail, shown when the media URL does not answer
  let broken = null; // the media element whose URL failed, waiting for a thumbnail

  function setThumb(value) {
    thumb = value;
    if (thumb && broken) degrade(broken);
  }

  /** The media URL no longer answers: show the embedded thumbnail in its place (when there is one). */
  function degrade(el) {
    broken = el;
    if (!thumb) return;
    broken = null;
    if (el.tagName === "IMG") {
      el.src = thumb;
      el.dataset.degraded = "true";
    } else el.replaceWith(h("img", { src: thumb, alt: el.getAttribute("aria-label") || "", testid: "result-image", "data-degraded": "true" }));
  }

  function renderMedia(j) {
    const url = j.result?.url;
    let content = null;
    broken = null;
    // Until the media is there, its box takes the shape it will have (no forced squares).
    media.style.setProperty("--ssw-ratio", mediaRatio(j.params) ?? "1 / 1");
    if (statusKind(j.status) === "complete" && url) {
      const label = `${j.media === "video" ? "Video" : "Image"}: ${j.prompt || "generated"}`;
      if (j.media === "video") {
        content = h("video", {
          src: url, poster: j.result.thumbnail_url || thumb, controls: true, muted: true,
          playsinline: true, preload: "metadata", testid: "result-video", "aria-label": label,
        });
        const video = content;
        video.addEventListener("error", () => degrade(video), { once: true });
      } else {
        // loading/decoding before src: set after it, the image would already be fetching eagerly
        const img = h("img", { loading: "lazy", decoding: "async", src: j.result.thumbnail_url || url, alt: j.prompt || "generated image", testid: "result-image" });
        img.addEventListener("error", () => degrade(img), { once: true });
        // A real button around the image: keyboard users can open the lightbox too.
        content = h("button", { type: "button", class: "ssw-card__mediabtn", "aria-label": "Enlarge image", onclick: () => onAction("open", current) }, img);
      }
    } else if (statusKind(j.status) === "running") {
      content = h("div", { class: "ssw-card__placeholder", "aria-hidden": "true" });
    }
    media.classList.toggle("ssw-card__media--pending", !content || statusKind(j.status) !== "complete");
    fill(media, content);
  }



  function renderError(j) {
    const e = j.error;
    if (!e && statusKind(j.status) !== "failed" && statusKind(j.status) !== "cancelled") return fill(error);
    const message = e ? `${e.type ? `${e.type}: ` : ""}${e.message ?? ""}` : `Job ${statusText(j.status)}`;
    const action = (type, label, busyLabel) => button(acting === type ? busyLabel : label, {
      testid: type, disabled: !!acting, "aria-busy": acting === type ? "true" : null, onclick: () => act(type),
    });
    if (!e && statusKind(j.status) === "cancelled") return fill(error, action("dismiss", "Dismiss", "Dismissing…"));
    // A retry is a new payment: its button says how much (the most the kernel may pay for it).
    fill(error,
      h("p", { class: "ssw-card__errortext", testid: "error" }, message),
      e?.retryable && action("retry", e.retry_usd != null ? `Retry ${formatUsd(e.retry_usd)}` : "Retry", "Retrying…"),
      e?.resumable && action("resume", "Resume", "Resuming…"),
      e?.dismissable && action("dismiss", "Dismiss", "Dismissing…"),
    );
  }

  /** Ask the kernel to retry, resume or dismiss; one request at a time, its refusal shown here. */
  function act(type) {
    if (acting) return;
    const reply = onAction(type, current);
    if (!reply?.then) return;
    acting = type;
    fill(actionError);
    update(current);
    reply.catch((err) => fill(actionError, refusal(err))).finally(() => {
      acting = null;
      update(current);
    });
  }

  function renderActions(j) {
    const url = safeUrl(j.result?.url);
    if (statusKind(j.status) !== "complete" || !url) return fill(actions);
    const download = h("a", { class: "ssw-btn", href: url, download: "", target: "_blank", rel: "noopener", testid: "download" }, "Download");
    // A browser ignores `download` on a cross-origin link (it would open the media instead): the
    // kernel fetches the bytes and the card saves them. With the kernel away (the widget's
    // fieldset is disabled), the browser opens the link itself rather than a request nobody answers.
    download.addEventListener("click", (e) => {
      if (sameOrigin(url) || download.closest("fieldset:disabled")) return;
      e.preventDefault();
      const reply = onAction("download", current);
      if (!reply?.then) return;
      download.setAttribute("aria-busy", "true");
      fill(actionError);
      reply.then(({ name, mime, buffers }) => saveBytes(buffers?.[0], name, mime))
        .catch((err) => fill(actionError, refusal(err)))
        .finally(() => download.removeAttribute("aria-busy"));
    });
    fill(actions,
      download,
      copyButton(() => current.result?.url ?? url),
      j.result.local_path && h("span", { class: "ssw-muted ssw-card__path", title: j.result.local_path, testid: "local-path" }, "saved locally"),
    );
  }

  function update(j, newOptions) {
    current = j;
    if (newOptions) opts = { ...opts, ...newOptions };
    for (const [name, pick, render] of sections) {
      const sig = JSON.stringify(pick(j) ?? null);
      if (signatures.get(name) !== sig) {
        signatures.set(name, sig);
        render(j);
      }
    }
  }

  update(job);
  return {
    node,
    update,
    /** True while the elapsed time should tick. */
    get running() {
      return statusKind(current.status) === "running";
    },
    tick: (now) => progress.update(now),
    get job() {
      return current;
    },
  };
}
