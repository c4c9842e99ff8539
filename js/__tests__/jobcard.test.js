import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import widget from "../jobcard.js";
import { click, completeJob, fakeModel, makeJob, mount, reply, settle } from "./helpers.js";

const NOW = new Date("2025-01-01T00:00:00Z").getTime();
let view;

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(NOW);
});
afterEach(() => {
  view?.unmount();
  view = null;
  vi.useRealTimers();
});

function show(job) {
  const model = fakeModel({ job });
  view = mount(widget, model);
  return model;
}

describe("JobCard", () => {
  it.each([
    ["quoting", "running", "getting the price"],
    ["awaiting_confirmation", "waiting", "waiting for your OK"],
    ["paying", "running", "paying"],
    ["uploading", "running", "uploading"],
    ["pending", "running", "pending"],
    ["processing", "running", "processing"],
    ["complete", "complete", "complete"],
    ["failed", "failed", "failed"],
    ["timeout", "failed", "timed out"],
    ["lost", "failed", "not found"],
    ["cancelled", "cancelled", "cancelled"],
    ["queued_somewhere_new", "running", "queued_somewhere_new"],
  ])("renders status %s", (status, kind, text) => {
    show(makeJob({ key: "a", status, result: status === "complete" ? { url: "http://h/x.png" } : null }));
    const card = view.$("job-card");
    expect(card.dataset.status).toBe(status);
    expect(card.dataset.key).toBe("a");
    expect([...card.classList].filter((c) => c.startsWith("ssw-card--"))).toEqual([`ssw-card--${kind}`]);
    expect(view.$("status").className).toBe(`ssw-pill ssw-pill--${kind}`);
    expect(view.$("status").textContent).toBe(text);
    expect(view.$("status").getAttribute("aria-live")).toBe("polite");
  });

  it("shows a card waiting for confirmation without a ticking progress bar", () => {
    const model = show(makeJob({ status: "awaiting_confirmation", detail: "Waiting for your consent to pay $1.60", created_at: NOW - 2000 }));
    expect(view.$("progress").closest(".ssw-progress-row").hidden).toBe(true);
    expect(view.$("detail").textContent).toBe("Waiting for your consent to pay $1.60");
    expect(vi.getTimerCount()).toBe(0);
    model.kernelSet("job", { ...model.get("job"), status: "paying", detail: "" });
    expect(view.$("progress").closest(".ssw-progress-row").hidden).toBe(false);
    expect(vi.getTimerCount()).toBe(1);
  });

  it("shows no progress bar or clock on a card whose job never ran (a lost answer, refused before paying)", () => {
    const lost = { type: "JobInterrupted", message: "the answer to its payment ($0.07) was lost", resumable: true };
    const model = show(makeJob({ id: null, status: "failed", created_at: NOW - 86_400_000, finished_at: NOW, error: lost }));
    expect(view.$("progress").closest(".ssw-progress-row").hidden).toBe(true);
    expect(view.$("job-card").textContent).not.toContain("stopped after");
    expect(view.$("error").textContent).toContain("was lost");
    expect(view.$("resume").textContent).toBe("Resume");
    expect(vi.getTimerCount()).toBe(0);
    // A Resume found its job: it runs (and then a clock is meaningful again).
    model.kernelSet("job", { ...model.get("job"), id: "job-1", status: "processing", error: null, finished_at: null });
    expect(view.$("progress").closest(".ssw-progress-row").hidden).toBe(false);
    // A job that ran and failed keeps its bar and says how long it ran.
    model.kernelSet("job", { ...model.get("job"), status: "failed", finished_at: NOW, error: { type: "JobFailed", message: "x" } });
    expect(view.$("progress").closest(".ssw-progress-row").hidden).toBe(false);
    expect(view.$("elapsed").textContent).toContain("stopped after");
  });

  it("shows elapsed time against the typical time, capped at 95% past it", () => {
    const model = show(makeJob({ created_at: NOW - 2000, typical_s: 5 }));
    expect(view.$("elapsed").textContent).toBe("2 s · typically ~5 s");
    const bar = view.$("progress");
    expect(bar.firstChild.style.width).toBe("40%");
    expect(bar.getAttribute("aria-valuenow")).toBe("40");
    vi.advanceTimersByTime(10_000); // one shared 1 s ticker keeps it live
    expect(view.$("elapsed").textContent).toBe("12 s · typically ~5 s");
    expect(bar.firstChild.style.width).toBe("95%");
    expect(bar.classList.contains("ssw-progress--over")).toBe(true);
    expect(bar.hasAttribute("aria-valuenow")).toBe(false);
    model.kernelSet("job", { ...model.get("job"), status: "complete", finished_at: NOW + 4000, result: { url: "http://h/x.png" } });
    expect(bar.firstChild.style.width).toBe("100%");
    expect(view.$("elapsed").textContent).toBe("done in 6 s");
    expect(vi.getTimerCount()).toBe(0); // nothing left to tick
  });

  it("shows the current step's detail while running", () => {
    show(makeJob({ detail: "Job not visible yet (404) — still polling, 12 s of 30 s grace" }));
    expect(view.$("detail").textContent).toContain("still polling");
    expect(view.$("detail").hidden).toBe(false);
  });

  it("drops a stale step detail once the job is complete", () => {
    const model = show(makeJob({ detail: "polling, 12 s of 30 s grace" }));
    model.kernelSet("job", { ...model.get("job"), status: "complete", result: { url: "http://h/x.png" } });
    expect(view.$("detail").hidden).toBe(true);
  });

  it("stops ticking and listening when the view is removed", () => {
    const model = show(makeJob());
    expect(vi.getTimerCount()).toBe(1);
    expect(model.listenerCount()).toBe(3); // change:job, msg:custom for replies, comm_live_update
    view.unmount();
    view = null;
    expect(vi.getTimerCount()).toBe(0);
    expect(model.listenerCount()).toBe(0);
  });

  it("renders an image result with Download and Copy URL", async () => {
    show(completeJob({ result: { url: "http://h/fox.png", thumbnail_url: null, local_path: null } }));
    const img = view.$("result-image");
    expect(img.tagName).toBe("IMG");
    expect(img.getAttribute("src")).toBe("http://h/fox.png");
    expect(img.closest("button")).not.toBeNull(); // keyboard-reachable lightbox trigger
    expect(view.$("result-video")).toBeNull();
    const a = view.$("download");
    expect(a.getAttribute("href")).toBe("http://h/fox.png");
    expect(a.hasAttribute("download")).toBe(true);
    expect(a.getAttribute("target")).toBe("_blank");
    expect(a.getAttribute("rel")).toBe("noopener");

    const writeText = vi.fn().mockResolvedValue(undefined);
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    click(view.$("copy-url"));
    await vi.waitFor(() => expect(view.$("copy-url").textContent).toBe("Copied"));
    expect(writeText).toHaveBeenCalledWith("http://h/fox.png");
    delete navigator.clipboard;
  });

  it("falls back to a selected text field when the clipboard is unavailable", async () => {
    show(completeJob({ result: { url: "http://h/fox.png" } }));
    expect(view.$("copy-fallback")).toBeNull();
    click(view.$("copy-url"));
    await vi.waitFor(() => expect(view.$("copy-fallback")).not.toBeNull());
    expect(view.$("copy-fallback").value).toBe("http://h/fox.png");
    expect(document.activeElement).toBe(view.$("copy-fallback"));
  });

  it("renders a video result as a muted inline player with its poster", () => {
    show(completeJob({ media: "video", result: { url: "http://h/v.mp4", thumbnail_url: "http://h/v.jpg" } }));
    const video = view.$("result-video");
    expect(video.tagName).toBe("VIDEO");
    expect(video.getAttribute("src")).toBe("http://h/v.mp4");
    expect(video.getAttribute("poster")).toBe("http://h/v.jpg");
    expect(video.controls).toBe(true);
    expect(video.muted).toBe(true);
    expect(video.hasAttribute("playsinline")).toBe(true);
    expect(video.getAttribute("preload")).toBe("metadata");
    expect(view.$("result-image")).toBeNull();
  });

  it("shows the error with Retry and Resume that send the job key", async () => {
    const model = show(makeJob({ key: "j9", status: "failed", error: { type: "JobFailed", message: "content policy", retryable: true, resumable: true } }));
    expect(view.$("error").textContent).toBe("JobFailed: content policy");
    click(view.$("retry"));
    await reply(model, "retry");
    click(view.$("resume"));
    await reply(model, "resume");
    expect(model.messages()).toEqual([
      { type: "retry", key: "j9", request_id: expect.any(String) },
      { type: "resume", key: "j9", request_id: expect.any(String) },
    ]);
  });

  it("shows the price a Retry consents to and sends it as the most it may pay", async () => {
    const model = show(makeJob({ key: "j9", status: "failed", error: { type: "JobFailed", message: "x", retryable: true, resumable: false, retry_usd: 0.07 } }));
    expect(view.$("retry").textContent).toBe("Retry $0.07");
    click(view.$("retry"));
    await reply(model, "retry");
    expect(model.messages()).toEqual([{ type: "retry", key: "j9", amount_usd: 0.07, request_id: expect.any(String) }]);
  });

  it("keeps its actions busy until the kernel replies, and shows a refusal on the card", async () => {
    const model = show(makeJob({ key: "j9", status: "failed", error: { type: "JobFailed", message: "x", retryable: true, resumable: true } }));
    click(view.$("resume"));
    expect(view.$("resume").disabled).toBe(true);
    expect(view.$("resume").textContent).toBe("Resuming…");
    expect(view.$("retry").disabled).toBe(true);
    click(view.$("retry"));
    expect(model.messages()).toHaveLength(1); // one request at a time per card
    await reply(model, "resume", { type: "InvalidParams", message: "Job j9 failed for good: nothing to resume." });
    expect(view.$("action-error").textContent).toBe("InvalidParams: Job j9 failed for good: nothing to resume.");
    expect(view.$("action-error").getAttribute("role")).toBe("alert");
    expect(view.$("resume").disabled).toBe(false);
    click(view.$("retry"));
    expect(view.$("action-error").hidden).toBe(true); // a new attempt clears the old answer
    await reply(model, "retry");
    expect(view.$("retry").disabled).toBe(false);
    expect(view.$("action-error").hidden).toBe(true);
  });

  it("rejects a request still pending when the view goes away", async () => {
    const model = show(makeJob({ status: "timeout", error: { type: "JobTimeout", message: "x", retryable: false, resumable: true } }));
    click(view.$("resume"));
    const { el } = view;
    view.unmount();
    view = null;
    await settle();
    expect(model.listenerCount()).toBe(0);
    // Rejected as closed: the card no longer waits (and an unhandled rejection would fail this test).
    expect(el.querySelector('[data-testid="resume"]').disabled).toBe(false);
  });

  it("offers Retry and Dismiss for a payment that expired unsettled", async () => {
    const model = show(makeJob({ key: "j9", status: "failed", error: { type: "PaymentExpired", message: "expired unsettled",
      retryable: true, resumable: false, retry_usd: 0.07, unpaid: true, dismissable: true } }));
    expect(view.$("retry").textContent).toBe("Retry $0.07");
    expect(view.$("resume")).toBeNull();
    click(view.$("dismiss"));
    await reply(model, "dismiss");
    expect(model.messages()).toEqual([{ type: "dismiss", key: "j9", request_id: expect.any(String) }]);
  });

  it("offers only the actions the error allows", () => {
    show(makeJob({ status: "timeout", error: { type: "JobTimeout", message: "gave up", retryable: false, resumable: true } }));
    expect(view.$("retry")).toBeNull();
    expect(view.$("resume")).not.toBeNull();
    expect(view.$("download")).toBeNull();
  });

  it("shows cost and a receipt linking the explorer", () => {
    show(completeJob({
      cost_usd: 0.039,
      receipt: { transaction: "0x1234567890abcdef1234", network: "eip155:84532", network_name: "Base Sepolia", payer: "0xabc", explorer_url: "https://sepolia.basescan.org/tx/0x1234567890abcdef1234" },
    }));
    expect(view.$("cost-amount").textContent).toBe("$0.039");
    const link = view.$("receipt");
    expect(link.tagName).toBe("A");
    expect(link.textContent).toBe("tx 0x1234…1234");
    expect(link.getAttribute("href")).toContain("basescan");
    expect(view.$("cost-badge").textContent).toContain("Base Sepolia");
  });

  it("shows the receipt hash as text without an explorer", () => {
    show(completeJob({ receipt: { transaction: "0xdeadbeefdeadbeefdead", network: "eip155:84532", network_name: "Base Sepolia", explorer_url: null } }));
    expect(view.$("receipt").tagName).toBe("CODE");
  });

  it("has a payment inspector that opens its steps in a dialog, built when opened", async () => {
    const steps = [
      { step: "402 Payment Required", at_ms: NOW, duration_ms: 12, summary: "asks 0.039 USDC on Base Sepolia", data: { accepts: [{ amount: "39000" }] } },
      { step: "Signed authorization", at_ms: NOW + 15, duration_ms: 3, summary: "EIP-3009", data: { nonce: "0x01" } },
    ];
    const model = show(completeJob({ inspector: steps }));
    const open = view.$("inspector");
    expect(open.tagName).toBe("BUTTON");
    expect(open.textContent).toBe("Payment inspector (2 steps)");
    expect(view.$("inspector-dialog").open).toBe(false);
    expect(view.$$("inspector-step")).toHaveLength(0); // not built until opened
    click(open);
    expect(view.$("inspector-dialog").hasAttribute("open")).toBe(true);
    const items = view.$$("inspector-step");
    expect(items).toHaveLength(2);
    expect(items[0].textContent).toMatch(/at \d\d:\d\d:\d\d\.\d{3}/); // a readable clock time
    expect(items[0].textContent).toContain("took 12 ms");
    expect(items[1].textContent).toContain("+15 ms");
    expect(items[0].querySelector("pre").textContent).toBe(JSON.stringify(steps[0].data, null, 2));
    // a new step arrives: the inspector stays open and shows it
    model.kernelSet("job", { ...model.get("job"), inspector: [...steps, { step: "Settled", at_ms: NOW + 900, summary: "tx 0x…", data: {} }] });
    expect(view.$("inspector-dialog").hasAttribute("open")).toBe(true);
    expect(view.$$("inspector-step")).toHaveLength(3);
    click(view.$("inspector-close"));
    expect(view.$("inspector-dialog").hasAttribute("open")).toBe(false);
  });

  it("says terms came from memory instead of showing their age as a duration", () => {
    show(completeJob({ inspector: [{ step: "402 Payment Required", at_ms: NOW, duration_ms: 0, summary: "", data: {}, from_memory: true }] }));
    click(view.$("inspector"));
    expect(view.$("inspector-step").textContent).toContain("from memory: no request");
  });

  it("hides the inspector when there are no steps", () => {
    show(makeJob({ inspector: [] }));
    expect(view.$("inspector").hidden).toBe(true);
  });

  it("updates in place: the card and its video survive unrelated changes", () => {
    const model = show(completeJob({ media: "video", result: { url: "http://h/v.mp4" }, cost_usd: null }));
    const card = view.$("job-card");
    const video = view.$("result-video");
    model.kernelSet("job", { ...model.get("job"), cost_usd: 0.4, result: { url: "http://h/v.mp4", local_path: "/tmp/v.mp4" } });
    expect(view.$("job-card")).toBe(card);
    expect(view.$("result-video")).toBe(video);
    expect(view.$("cost-amount").textContent).toBe("$0.40");
  });

  it("keeps its media when the embedded thumbnail arrives, and shows the thumbnail if the URL is dead", () => {
    const model = show(completeJob({ result: { url: "http://dead.invalid/x.png" } }));
    const img = view.$("result-image");
    model.kernelSet("job", { ...model.get("job"), result: { url: "http://dead.invalid/x.png", thumb: "data:image/jpeg;base64,AA==" } });
    expect(view.$("result-image")).toBe(img); // not rebuilt: no reload, no flicker
    img.dispatchEvent(new Event("error"));
    expect(img.getAttribute("src")).toBe("data:image/jpeg;base64,AA==");
    expect(img.dataset.degraded).toBe("true");
  });

  it("shows a cancelled job as finished and neutral, with its detail and no error", () => {
    show(makeJob({ status: "cancelled", detail: "Payment declined: nothing was signed" }));
    const card = view.$("job-card");
    expect(card.classList.contains("ssw-card--cancelled")).toBe(true);
    expect(card.classList.contains("ssw-card--failed")).toBe(false);
    expect(view.$("detail").textContent).toBe("Payment declined: nothing was signed");
    expect(view.$("error")).toBeNull();
    expect(view.$("dismiss").textContent).toBe("Dismiss"); // a cancelled request can be closed
    expect(view.$("progress").closest(".ssw-progress-row").hidden).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it.each([[null], [{}]])("renders nothing until there is a job (%j)", (empty) => {
    const model = show(empty);
    expect(view.$("job-card")).toBeNull();
    model.kernelSet("job", makeJob());
    expect(view.$("job-card")).not.toBeNull();
  });
});
