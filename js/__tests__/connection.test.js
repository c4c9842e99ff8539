import { afterEach, describe, expect, it } from "vitest";
import gallery from "../gallery.js";
import studio from "../studio.js";
import { click, fakeModel, loadCatalog, makeJob, mount, settle } from "./helpers.js";

let view;
afterEach(() => {
  view?.unmount();
  view = null;
});

/** What ipywidgets does when the kernel goes away: the view's element gets a class, the model an event. */
function killKernel(model) {
  view.el.classList.add("jupyter-widgets-disconnected");
  model.emit("comm_live_update");
}

describe("Kernel disconnected", () => {
  it("says so, disables every action, and rejects the request still waiting for a reply", async () => {
    const model = fakeModel({ jobs: [makeJob({ key: "x", status: "failed", error: { type: "JobFailed", message: "boom", retryable: true } })], filter_model: "", filter_status: "", total_spent_usd: 0, title: "Jobs", show_ledger: false });
    view = mount(gallery, model);
    expect(view.$("disconnected").hidden).toBe(true);
    click(view.$("retry"));
    expect(view.$("retry").disabled).toBe(true); // busy: waiting for the kernel's reply
    killKernel(model);
    await settle();
    expect(view.$("disconnected").hidden).toBe(false);
    expect(view.$("disconnected").textContent).toContain("Kernel disconnected — re-run this cell");
    expect(view.el.querySelector("fieldset.ssw-body").disabled).toBe(true);
    // The retry that will never be answered is not left spinning: its refusal is on the card.
    expect(view.$("retry").textContent).toBe("Retry");
    expect(view.$("action-error").textContent).toContain("Kernel disconnected");
  });

  it("lets the browser open a result link itself while the kernel is away (no request that cannot be answered)", async () => {
    const done = makeJob({ key: "d", status: "complete", result: { url: "https://cdn.example/fox.png" } });
    const model = fakeModel({ jobs: [done], filter_model: "", filter_status: "", total_spent_usd: 0, title: "Jobs", show_ledger: false });
    view = mount(gallery, model);
    killKernel(model);
    await settle();
    const link = view.$("download");
    const event = new MouseEvent("click", { bubbles: true, cancelable: true });
    link.dispatchEvent(event);
    await settle();
    expect(event.defaultPrevented).toBe(false); // the browser follows it: it opens the media
    expect(model.messages("download")).toHaveLength(0);
    expect(view.$("action-error")?.textContent ?? "").not.toContain("Kernel disconnected");
  });

  it("starts disconnected when reopened from saved state with no kernel; sends nothing", async () => {
    const el = document.createElement("div");
    el.className = "jupyter-widgets-disconnected";
    document.body.append(el);
    const model = fakeModel({
      catalog: loadCatalog(), model: "nano-banana", mode: "generate", route_id: "nano-banana/generate", prompt: "a fox",
      params: { aspectRatio: "1:1" }, inputs: [], budget: {}, sandbox: false, banner: "", wallet_address: "", network_name: "",
      quote: { status: "ok", amount_usd: 0.039, route_id: "nano-banana/generate", message: "", for: { route_id: "nano-banana/generate", params: { aspectRatio: "1:1" }, inputs: [] } },
      pending_confirmation: null, jobs: [], total_spent_usd: 0, inputs_note: "",
    });
    const controller = new AbortController();
    studio.render({ model, el, signal: controller.signal });
    const $ = (id) => el.querySelector(`[data-testid="${id}"]`);
    expect($("disconnected").hidden).toBe(false);
    expect($("generate").matches(":disabled")).toBe(true);
    click($("generate"));
    await settle();
    expect(model.messages("generate")).toHaveLength(0);
    controller.abort();
    el.remove();
  });
});
