import { describe, expect, it } from "vitest";
import compare from "../compare.js";
import { startView } from "../components/view.js";
import gallery from "../gallery.js";
import jobcard from "../jobcard.js";
import studio from "../studio.js";
import { fakeModel, loadCatalog, makeJob, mount, settle } from "./helpers.js";

const STATIC_ID = "abc123";
const hidden = () => document.getElementById(`ssw-static-hide-${STATIC_ID}`);

describe("startView: what every widget's view starts with", () => {
  it("ends everything it started when the view goes away", async () => {
    const model = fakeModel({ _static_id: STATIC_ID });
    const el = document.createElement("div");
    const view = startView(model, el, new AbortController().signal);
    expect(hidden()).not.toBeNull(); // the static copy is hidden while the view is live
    view.ticker.add(() => {});
    const pending = view.requests.send({ type: "retry", key: "k" });
    expect(view.connection.disconnected).toBe(false);
    view.dispose();
    await expect(pending).rejects.toMatchObject({ type: "Closed" });
    expect(view.ticker.size).toBe(0);
    expect(hidden()).toBeNull();
  });

  const widgets = {
    gallery: [gallery, { jobs: [makeJob()], filter_model: "", filter_status: "", total_spent_usd: 0, title: "Jobs", show_ledger: false }],
    jobcard: [jobcard, { job: makeJob() }],
    compare: [compare, { prompts: ["a fox"], models: ["Model A"], transpose: false, blind: true, revealed: false, vote_mode: "pairwise",
      repeats: 1, columns: [{ col: 0, label: "Model A" }], cells: [], state: "ready", votes: [], ratings: {}, summary: [], run_error: "",
      quote: { status: "ok", total_usd: 0.07, per_cell_usd: {}, message: "" } }],
    studio: [studio, { catalog: loadCatalog(), model: "nano-banana", mode: "generate", route_id: "nano-banana/generate", prompt: "",
      params: {}, inputs: [], budget: {}, sandbox: false, banner: "", wallet_address: "", network_name: "", inputs_note: "",
      quote: { status: "idle", amount_usd: null, route_id: "", message: "", for: null }, pending_confirmation: null, jobs: [], total_spent_usd: 0 }],
  };
  for (const [name, [widget, state]] of Object.entries(widgets)) {
    it(`${name}: hides its static copy while live, says when the kernel is gone, and cleans up`, async () => {
      const model = fakeModel({ ...state, _static_id: STATIC_ID });
      const view = mount(widget, model);
      expect(hidden()).not.toBeNull();
      expect(view.$("disconnected").hidden).toBe(true);
      view.el.classList.add("jupyter-widgets-disconnected");
      model.emit("comm_live_update");
      await settle();
      expect(view.$("disconnected").hidden).toBe(false);
      view.unmount();
      expect(hidden()).toBeNull();
      expect(model.listenerCount()).toBe(0);
    });
  }
});
