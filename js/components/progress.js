// Progress vs the route's typical time. The service reports no percentage, so the bar is an
// estimate: it caps at 95% until the job completes and turns striped once past typical. A job
// waiting for the user's OK, or cancelled, shows no bar; nor does a card that ended without a job
// ever running (no job id: refused before paying, a payment whose answer was lost, one that expired
// unsettled): no clock ran for it, so it shows only its message and buttons.

import { h } from "./dom.js";
import { formatElapsed, formatTypical, statusKind } from "./format.js";

export function createProgress() {
  const bar = h("div", { class: "ssw-progress__bar" });
  const track = h("div", { class: "ssw-progress", role: "progressbar", "aria-label": "Progress against the typical time", "aria-valuemin": 0, "aria-valuemax": 100, testid: "progress" }, bar);
  const text = h("span", { class: "ssw-progress__text", testid: "elapsed" });
  const node = h("div", { class: "ssw-progress-row" }, track, text);
  let job = null;

  function update(now = Date.now()) {
    if (!job) return;
    const kind = statusKind(job.status);
    const neverRan = !job.id && kind !== "running" && kind !== "complete";
    node.hidden = kind === "waiting" || kind === "cancelled" || neverRan; // nobody is working on it: no clock
    if (node.hidden) return;
    const end = kind === "running" ? now : (job.finished_at ?? now);
    const elapsed = Math.max(0, end - (job.created_at ?? now));
    const typicalMs = (job.typical_s || 0) * 1000;
    let fraction;
    if (kind === "complete") fraction = 1;
    else if (kind === "failed") fraction = 1;
    else fraction = typicalMs ? Math.min(elapsed / typicalMs, 0.95) : 0.5;
    const over = kind === "running" && typicalMs > 0 && elapsed > typicalMs;
    bar.style.width = `${Math.round(fraction * 100)}%`;
    track.classList.toggle("ssw-progress--over", over || (kind === "running" && !typicalMs));
    track.classList.toggle("ssw-progress--failed", kind === "failed");
    track.classList.toggle("ssw-progress--complete", kind === "complete");
    if (over || kind !== "running") track.removeAttribute("aria-valuenow");
    else track.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    const typical = formatTypical(job.typical_s);
    if (kind === "running") text.textContent = typical ? `${formatElapsed(elapsed)} · typically ${typical}` : formatElapsed(elapsed);
    else if (kind === "complete") text.textContent = `done in ${formatElapsed(elapsed)}`;
    else text.textContent = `stopped after ${formatElapsed(elapsed)}`;
    track.setAttribute("aria-valuetext", text.textContent);
  }

  return {
    node,
    set(j) {
      job = j;
      update();
    },
    update,
  };
}
