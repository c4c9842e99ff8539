import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { modesFor, routeFor } from "../components/catalog.js";
import widget from "../studio.js";
import { choose, click, fakeModel, loadCatalog, makeJob, mount, reply, settle } from "./helpers.js";

const catalog = loadCatalog();
let view;

function show(extra = {}) {
  const model = fakeModel({
    catalog, model: "nano-banana", mode: "generate", route_id: "", prompt: "", params: {}, inputs: [],
    quote: { status: "idle", amount_usd: null, route_id: null, message: "" },
    budget: { spent_usd: 0, budget_usd: null, remaining_usd: null, max_per_request_usd: null, confirm_above_usd: null },
    sandbox: false, banner: "", wallet_address: "", network_name: "", pending_confirmation: null,
    jobs: [], total_spent_usd: 0,
    ...extra,
  });
  view = mount(widget, model);
  return model;
}
const param = (name) => view.el.querySelector(`[data-param="${name}"]`);
const optionValues = (select) => [...select.options].map((o) => o.value);
function typePrompt(text) {
  const box = view.$("prompt");
  box.value = text;
  box.dispatchEvent(new Event("input", { bubbles: true }));
}
/** The form as the kernel reads it: what a quote says it priced. */
const formOf = (model) => ({ route_id: model.get("route_id"), params: model.get("params"), inputs: (model.get("inputs") ?? []).map((i) => i.name) });
function okQuote(model, amount = 0.039, extra = {}) {
  model.kernelSet("quote", { status: "ok", amount_usd: amount, route_id: model.get("route_id"), message: "", for: formOf(model), ...extra });
}

beforeEach(() => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] }));
afterEach(() => {
  view?.unmount();
  view = null;
  vi.useRealTimers();
});

describe("Studio: model picker", () => {
  it("groups models by media with price and typical time", () => {
    show();
    const select = view.$("model-select");
    const groups = [...select.querySelectorAll("optgroup")];
    expect(groups.map((g) => g.label)).toEqual(["Image", "Video"]);
    const text = (m) => select.querySelector(`option[value="${m}"]`).textContent;
    expect(text("nano-banana")).toBe("Nano Banana — $0.045–$0.151 · ~5 s");
    expect(text("gpt-image-2")).toBe("GPT Image 2 — $0.005–$0.21 · ~1–3 min");
    expect(text("nano-banana-pro")).toBe("Nano Banana Pro — $0.13–$0.24 · ~10 s");
    expect(text("veo-3.1")).toBe("Veo 3.1 — $1.60–$3.20 · ~1–2 min");
    expect(groups[0].querySelector('option[value="seedance"]')).toBeNull();
    expect(groups[1].querySelector('option[value="seedance"]')).not.toBeNull();
    const models = new Set(catalog.routes.map((r) => r.model));
    expect(select.options).toHaveLength(models.size);
  });

  it("writes back a consistent route_id and default params on first render", () => {
    const model = show();
    expect(model.get("route_id")).toBe("nano-banana/generate");
    expect(model.get("params")).toEqual({ aspectRatio: "1:1", imageSize: "1K" });
    expect(model.saves).toBe(1);
  });

  it("adopts route_id when the kernel gives only that", () => {
    const model = show({ model: "", mode: "", route_id: "seedance/i2v" });
    expect(model.get("model")).toBe("seedance");
    expect(model.get("mode")).toBe("i2v");
  });

  it.each([
    ["seedance", "i2v", "seedance/i2v"],
    ["seedance", "generate", "seedance/t2v"],
    ["veo-3.1", "i2v", "veo-3.1/generate"],
    ["veo-3.1", "generate", "veo-3.1/generate"],
    ["grok-video", "i2v", "grok-video/generate"],
    ["nano-banana", "edit", "nano-banana/edit"],
    ["wan-2.6", "i2v", "wan-2.6/i2v"],
    ["sora-2", "generate", "sora-2/generate"],
  ])("%s in %s mode uses %s", (m, mode, routeId) => {
    const model = show();
    choose(view.$("model-select"), m);
    choose(view.$("mode-select"), mode);
    expect(model.get("route_id")).toBe(routeId);
    expect(model.get("mode")).toBe(mode);
  });

  it("offers only the modes a model supports", () => {
    show();
    expect(optionValues(view.$("mode-select"))).toEqual(["generate", "edit"]);
    choose(view.$("model-select"), "sora-2");
    expect(optionValues(view.$("mode-select"))).toEqual(["generate"]);
    expect(view.$("mode-select").disabled).toBe(true);
    choose(view.$("model-select"), "veo-3.1");
    expect([...view.$("mode-select").options].map((o) => o.textContent)).toEqual(["Text to video", "Image to video"]);
  });

  it("falls back to a supported mode when the model changes", () => {
    const model = show();
    choose(view.$("mode-select"), "edit");
    choose(view.$("model-select"), "sora-2");
    expect(model.get("mode")).toBe("generate");
    expect(model.get("route_id")).toBe("sora-2/generate");
  });

  it("keeps params that stay valid and resets the rest to defaults", () => {
    const model = show();
    choose(param("aspectRatio"), "16:9");
    choose(param("imageSize"), "512");
    expect(model.get("params")).toEqual({ aspectRatio: "16:9", imageSize: "512" });
    choose(view.$("model-select"), "nano-banana-pro");
    expect(model.get("params")).toEqual({ aspectRatio: "16:9", imageSize: "1K" });
    choose(view.$("model-select"), "veo-3.1");
    expect(model.get("params")).toEqual({ durationSeconds: "8", aspectRatio: "16:9", resolution: "720p" });
    choose(view.$("model-select"), "gpt-image-1.5");
    expect(model.get("params")).toEqual({ quality: "medium", size: "1024x1024" });
    choose(view.$("model-select"), "seedance");  // required choices without a default start at their first value
    expect(model.get("params")).toEqual({ duration: "4", aspectRatio: "1:1", outputResolution: "480p" });
  });
});

describe("Studio: a refreshed catalog", () => {
  const aurora = {
    id: "aurora-1/generate", model: "aurora-1", operation: "generate", label: "Aurora 1", media: "image",
    description: "A model only the live table knows",
    params: {
      prompt: { type: "string", required: true, min_length: 1 },
      style: { type: "enum", values: ["ink", "oil"], default: "ink" },
      steps: { type: "integer", minimum: 1, maximum: 50, default: 20 },
    },
    price: { base: 30000, factors: {} }, price_usd: [0.03, 0.09], typical_s: 150, typical_range_s: [60, 180],
    poll: { interval_s: 3 }, source: "live",
  };

  it("shows new models, drops removed ones and moves off a removed model while open", () => {
    const model = show({ model: "grok" });
    expect(model.get("route_id")).toBe("grok/generate");
    const fresh = structuredClone(catalog);
    fresh.routes = [...fresh.routes.filter((r) => r.model !== "grok"), structuredClone(aurora)];
    model.kernelSet("catalog", fresh);
    const select = view.$("model-select");
    expect(optionValues(select)).toContain("aurora-1");
    expect(optionValues(select)).not.toContain("grok");
    expect([model.get("model"), model.get("route_id")]).toEqual(["gpt-image-2", "gpt-image-2/generate"]);
    choose(select, "aurora-1");
    expect(model.get("params")).toEqual({ style: "ink", steps: 20 });
    expect(param("steps").type).toBe("number");
    const cheaper = structuredClone(fresh);
    cheaper.routes.find((r) => r.model === "aurora-1").price_usd = [0.01, 0.02];
    model.kernelSet("catalog", cheaper); // same models, new prices: the picker says so
    expect(select.querySelector('option[value="aurora-1"]').textContent).toBe("Aurora 1 — $0.01–$0.02 · ~1–3 min");
    expect(model.get("route_id")).toBe("aurora-1/generate");
  });

  it("offers an operation it has no name for as its own mode (vectorize)", () => {
    const model = show();
    choose(view.$("model-select"), "arrow-1.1");
    expect([model.get("mode"), model.get("route_id")]).toEqual(["vectorize", "arrow-1.1/vectorize"]);
    expect([...view.$("mode-select").options].map((o) => o.textContent)).toEqual(["Image to SVG"]);
    expect(view.$$("image-input").map((i) => i.dataset.param)).toEqual(["image"]);
    expect(model.get("params")).toEqual({ target_size: 1024, auto_crop: false });
  });
});

describe("Studio: parameter form from the catalog", () => {
  const cases = catalog.routes.flatMap((r) => modesFor(catalog, r.model)
    .filter((mode) => routeFor(catalog, r.model, mode).id === r.id)
    .map((mode) => [r.id, mode, r]));

  it.each(cases)("%s (%s): only allowed values, defaults selected", (id, mode, route) => {
    const model = show({ model: route.model, mode });
    expect(model.get("route_id")).toBe(id);
    const form = view.$("param-form");
    for (const [name, spec] of Object.entries(route.params)) {
      const el = form.querySelector(`[data-param="${name}"]`);
      if (name === "prompt") expect(el).toBe(view.$("prompt"));
      else if (spec.type === "enum") {
        const optional = !spec.required && spec.default == null;
        expect(el.tagName).toBe("SELECT");
        expect(optionValues(el)).toEqual([...(optional ? [""] : []), ...spec.values]);
        expect(el.value).toBe(spec.default ?? (spec.required ? spec.values[0] : ""));
        expect(el.closest("label").textContent).toMatch(/\w/);
      } else if (spec.type === "boolean") {
        expect(el.type).toBe("checkbox");
        expect(el.checked).toBe(!!spec.default);
      } else if (spec.type === "integer") {
        expect([el.type, el.min, el.max]).toEqual(["number", String(spec.minimum), String(spec.maximum)]);
        expect(el.value).toBe(spec.default == null ? "" : String(spec.default));
      } else if (spec.type === "url" || spec.type === "url_list") {
        if (mode === "generate") expect(el).toBeNull();
        else {
          expect(el.type).toBe("file");
          expect(el.dataset.testid).toBe("image-input");
          expect(el.multiple).toBe(spec.type === "url_list");
        }
      }
    }
    const expected = Object.fromEntries(Object.entries(route.params)
      .filter(([n, s]) => n !== "prompt" && (s.default !== undefined || (s.required && s.type === "enum")))
      .map(([n, s]) => [n, s.default ?? s.values[0]]));
    expect(model.get("params")).toEqual(expected);
  });

  it("sends form changes to the kernel", () => {
    const model = show({ model: "wan-2.6" });
    const box = param("multiShots");
    box.checked = true;
    box.dispatchEvent(new Event("change"));
    expect(model.get("params").multiShots).toBe(true);
    choose(param("duration"), "10");
    const seed = param("seed");
    seed.value = "42";
    seed.dispatchEvent(new Event("change"));
    expect(model.get("params")).toMatchObject({ duration: "10", multiShots: true, size: "1280*720", seed: 42 });
    expect(model.saves).toBe(4);
  });

  it("never lets a kernel update overwrite a prompt that is not saved yet", () => {
    const model = show({ prompt: "old" });
    typePrompt("new words");
    okQuote(model); // any trait change re-renders the form
    expect(view.$("prompt").value).toBe("new words");
    view.$("prompt").dispatchEvent(new Event("change")); // blur saves at once
    expect(model.get("prompt")).toBe("new words");
    model.kernelSet("prompt", "set from Python");
    expect(view.$("prompt").value).toBe("set from Python");
  });

  it("shows params changed by the kernel", () => {
    const model = show();
    model.kernelSet("params", { aspectRatio: "9:16" });
    expect(param("aspectRatio").value).toBe("9:16");
  });

  it("saves the prompt after a pause in typing", () => {
    const model = show();
    typePrompt("a red f");
    typePrompt("a red fox");
    expect(model.get("prompt")).toBe("");
    vi.advanceTimersByTime(300);
    expect(model.get("prompt")).toBe("a red fox");
  });
});

describe("Studio: price and Generate", () => {
  it("shows the live quote", () => {
    const model = show();
    expect(view.$("cost").textContent).toBe("—");
    model.kernelSet("quote", { status: "loading", amount_usd: null, route_id: "nano-banana/generate", message: "" });
    expect(view.$("cost").textContent).toBe("…");
    okQuote(model);
    expect(view.$("cost").textContent).toBe("$0.039");
    okQuote(model, 0.049, { message: "$0.049 incl. 1 upload(s) on Base Sepolia" });
    expect(view.$("cost-hint").textContent).toBe("$0.049 incl. 1 upload(s) on Base Sepolia · ~5 s");
    model.kernelSet("quote", { status: "error", amount_usd: null, route_id: "nano-banana/generate", message: "Service unreachable", for: formOf(model) });
    expect(view.$("cost").textContent).toBe("Service unreachable");
  });

  it("enables Generate only with a prompt and a fresh quote, and sends generate", () => {
    const model = show();
    const gen = view.$("generate");
    expect(gen.disabled).toBe(true);
    typePrompt("a red fox");
    expect(gen.disabled).toBe(true); // no quote yet
    expect(view.$("generate-hint").textContent).toBe("Waiting for the price…");
    okQuote(model);
    expect(gen.disabled).toBe(false);
    typePrompt("   ");
    expect(gen.disabled).toBe(true);
    typePrompt("a red fox");
    // a quote for another route is stale
    model.kernelSet("quote", { status: "ok", amount_usd: 0.07, route_id: "grok/generate", message: "", for: { ...formOf(model), route_id: "grok/generate" } });
    expect(gen.disabled).toBe(true);
    expect(view.$("cost").textContent).toBe("…");
    okQuote(model);
    click(gen);
    const [msg] = model.messages("generate");
    // The click carries the quote it saw: the kernel pays that price for that form, or refuses.
    expect(msg).toEqual({ type: "generate", request_id: expect.any(String), quote: { for: formOf(model), amount_usd: 0.039 } });
    expect(model.get("prompt")).toBe("a red fox"); // flushed before the message
  });

  it("treats a quote as stale the moment a priced parameter changes, until the kernel prices the new form", () => {
    const model = show({ prompt: "a wave" });
    choose(view.$("model-select"), "seedance-fast");
    choose(param("duration"), "4");
    choose(param("outputResolution"), "480p");
    okQuote(model, 0.04);
    const gen = view.$("generate");
    expect(gen.disabled).toBe(false);
    expect(view.$("cost").textContent).toBe("$0.04");
    choose(param("duration"), "12");
    choose(param("outputResolution"), "720p");
    // The old price is not shown for the new settings, and it cannot be paid.
    expect(view.$("cost").textContent).toBe("…");
    expect(gen.disabled).toBe(true);
    click(gen);
    expect(model.messages("generate")).toHaveLength(0);
    okQuote(model, 0.24);
    expect(view.$("cost").textContent).toBe("$0.24");
    click(gen);
    expect(model.messages("generate")[0].quote.amount_usd).toBe(0.24);
  });

  it("keeps Generate busy until the kernel replies to that click, however long it takes", async () => {
    const model = show({ prompt: "a red fox" });
    okQuote(model);
    const gen = view.$("generate");
    click(gen);
    expect(gen.disabled).toBe(true);
    expect(view.$("generate-hint").textContent).toBe("Submitting…");
    click(gen);
    vi.advanceTimersByTime(60_000); // no timer stands in for the answer
    expect(gen.disabled).toBe(true);
    expect(model.messages("generate")).toHaveLength(1);
    model.kernelSend({ type: "reply", request_id: "someone-else", ok: true }); // not this click's reply
    expect(gen.disabled).toBe(true);
    await reply(model, "generate");
    expect(gen.disabled).toBe(false);
    expect(view.$("generate-error").hidden).toBe(true);
    click(gen);
    expect(model.messages("generate")).toHaveLength(2);
  });

  it("shows a refused Generate next to the button, until the next try", async () => {
    const model = show({ prompt: "a red fox" });
    okQuote(model);
    click(view.$("generate"));
    await reply(model, "generate", { type: "InvalidParams", message: "prompt is required. Nothing was paid.", field: "prompt" });
    const error = view.$("generate-error");
    expect(error.hidden).toBe(false);
    expect(error.getAttribute("role")).toBe("alert");
    expect(error.textContent).toBe("InvalidParams: prompt is required. Nothing was paid.");
    expect(view.$("generate").disabled).toBe(false);
    click(view.$("generate"));
    expect(error.hidden).toBe(true);
  });

  it("rejects a pending Generate when the view goes away", async () => {
    const model = show({ prompt: "a red fox" });
    okQuote(model);
    click(view.$("generate"));
    const { el } = view;
    view.unmount();
    view = null;
    await settle();
    expect(model.listenerCount()).toBe(0);
    expect(el.querySelector('[data-testid="generate-error"]').hidden).toBe(true); // closing is not an error to show
  });

  it("keeps Generate disabled over budget or over the per-request cap", () => {
    const model = show({ prompt: "fox" });
    okQuote(model, 0.13);
    expect(view.$("generate").disabled).toBe(false);
    model.kernelSet("budget", { spent_usd: 4.9, budget_usd: 5, remaining_usd: 0.1, max_per_request_usd: null, confirm_above_usd: null });
    expect(view.$("generate").disabled).toBe(true);
    expect(view.$("generate-hint").textContent).toBe("Over budget: $0.10 left");
    expect(view.$("budget").textContent).toContain("$0.10 of $5.00 left");
    model.kernelSet("budget", { spent_usd: 0, budget_usd: null, remaining_usd: null, max_per_request_usd: 0.1, confirm_above_usd: 0.05 });
    expect(view.$("generate").disabled).toBe(true);
    expect(view.$("budget").textContent).toContain("asks above $0.05");
  });

  it("requires images in edit mode", () => {
    const model = show({ prompt: "make it blue", mode: "edit" });
    okQuote(model);
    expect(view.$("generate").disabled).toBe(true);
    expect(view.$("generate-hint").textContent).toBe("Add at least 1 image");
    model.kernelSet("inputs", [{ name: "cat.png", size: 10, status: "uploading", url: null, thumb: null }]);
    expect(view.$("generate").disabled).toBe(true);
    model.kernelSet("inputs", [{ name: "cat.png", size: 10, status: "uploaded", url: "http://h/cat.png", thumb: "data:image/png;base64,AA==" }]);
    expect(view.$("generate").disabled).toBe(true); // the price of the form with the image is not known yet
    okQuote(model, 0.049);
    expect(view.$("generate").disabled).toBe(false);
    expect(view.$("input-thumb").querySelector("img").getAttribute("src")).toBe("data:image/png;base64,AA==");
  });

  it("requires the first frame in image-to-video mode, even where the route makes it optional", () => {
    const model = show({ prompt: "waves", model: "veo-3.1", mode: "i2v" });
    okQuote(model, 3.2);
    expect(view.$("generate").disabled).toBe(true);
    expect(view.$$("image-input").map((i) => i.dataset.param)).toEqual(["image", "lastFrame", "referenceImages"]);
    const labels = view.$$("drop-zone").map((z) => z.parentElement.querySelector(".ssw-field__label").textContent);
    expect(labels).toEqual(["Image", "Last frame (optional)", "Reference images (optional)"]);
    model.kernelSet("inputs", [{ name: "last.png", size: 1, status: "local", url: null, thumb: null, param: "lastFrame" }]);
    expect(view.$("generate").disabled).toBe(true);
    model.kernelSet("inputs", [
      { name: "last.png", size: 1, status: "local", url: null, thumb: null, param: "lastFrame" },
      { name: "first.png", size: 1, status: "local", url: null, thumb: null, param: "image" },
    ]);
    okQuote(model, 3.22);
    expect(view.$("generate").disabled).toBe(false);
  });
});

describe("Studio: images", () => {
  function pick(input, files) {
    Object.defineProperty(input, "files", { value: files, configurable: true });
    input.dispatchEvent(new Event("change"));
  }

  it("sends picked files to the kernel as binary buffers", async () => {
    const model = show({ mode: "edit" });
    const bytes = new Uint8Array([137, 80, 78, 71, 1, 2, 3]);
    pick(view.$("image-input"), [new File([bytes], "cat.png", { type: "image/png" })]);
    await vi.waitFor(() => expect(model.messages("upload")).toHaveLength(1));
    const { content, buffers } = model.sent.find((m) => m.content.type === "upload");
    expect(content).toEqual({ type: "upload", request_id: expect.any(String), name: "cat.png", mime: "image/png", size: 7, param: "images" });
    expect(buffers).toHaveLength(1);
    expect(buffers[0]).toBeInstanceOf(ArrayBuffer);
    expect([...new Uint8Array(buffers[0])]).toEqual([...bytes]);
    expect(view.$("input-thumb").textContent).toContain("sending…");
    model.kernelSet("inputs", [{ name: "cat.png", size: 7, status: "local", url: null, thumb: null, param: "images" }]);
    await reply(model, "upload");
    expect(view.$$("input-thumb")).toHaveLength(1);
    expect(view.$("input-thumb").textContent).not.toContain("sending…");
  });

  it("shows a refused upload at its drop zone and stops showing it as sending", async () => {
    const model = show({ model: "veo-3.1", mode: "i2v" });
    pick(view.$$("image-input")[1], [new File(["x"], "last.png", { type: "image/png" })]);
    await vi.waitFor(() => expect(model.messages("upload")).toHaveLength(1));
    expect(view.$("input-thumb").textContent).toContain("sending…");
    await reply(model, "upload", { type: "InvalidParams", message: "No file data arrived with the upload." });
    expect(view.$$("input-thumb")).toHaveLength(0);
    const [first, last] = view.$$("drop-zone").map((z) => view.$("input-error", z.parentElement));
    expect(first.hidden).toBe(true);
    expect(last.hidden).toBe(false);
    expect(last.textContent).toBe("InvalidParams: No file data arrived with the upload.");
  });

  it("refuses file types the upload route does not accept, at the drop zone", async () => {
    const model = show({ mode: "edit" });
    pick(view.$("image-input"), [new File(["x"], "notes.txt", { type: "text/plain" })]);
    await vi.waitFor(() => expect(view.$("input-error").hidden).toBe(false));
    expect(view.$("input-error").textContent).toContain("notes.txt: text/plain is not supported");
    expect(model.messages("upload")).toHaveLength(0);
  });

  it("asks the kernel to remove an attached image", async () => {
    const model = show({ mode: "edit", inputs: [
      { name: "a.png", size: 1, status: "uploaded", url: "http://h/a.png", thumb: null },
      { name: "b.png", size: 1, status: "uploaded", url: "http://h/b.png", thumb: null },
    ] });
    click(view.$$("remove-input")[1]);
    expect(model.messages("remove_input")).toEqual([{ type: "remove_input", request_id: expect.any(String), index: 1 }]);
    expect(model.get("inputs")).toHaveLength(2); // the kernel owns the list (and the bytes)
    await reply(model, "remove_input", { type: "InvalidParams", message: "No attached image 1 (the list changed)." });
    expect(view.$("input-error").textContent).toContain("No attached image 1");
  });
});

describe("Studio: kernel state", () => {
  it("asks for confirmation above the threshold", async () => {
    const model = show({ prompt: "fox" });
    okQuote(model, 3.2);
    expect(view.$("confirm-panel").hidden).toBe(true);
    model.kernelSet("pending_confirmation", { id: "c1", price_usd: 3.2, route_id: "veo-3.1/generate", message: "Pay $3.20 for Veo 3.1 (8 s)?" });
    expect(view.$("confirm-panel").hidden).toBe(false);
    expect(view.$("confirm-panel").textContent).toContain("Pay $3.20 for Veo 3.1 (8 s)?");
    expect(view.$("confirm-pay").textContent).toBe("Pay $3.20");
    expect(view.$("generate").disabled).toBe(true);
    click(view.$("confirm-pay"));
    // Pay consents to the price it shows: the kernel refuses or asks again above it.
    expect(model.messages("confirm")).toEqual([{ type: "confirm", request_id: expect.any(String), confirmation_id: "c1", accept: true, amount_usd: 3.2 }]);
    expect(view.$("confirm-pay").disabled).toBe(true);
    click(view.$("confirm-pay"));
    expect(model.messages("confirm")).toHaveLength(1);
    await reply(model, "confirm");
    model.kernelSet("pending_confirmation", { id: "c2", price_usd: 1, route_id: "x", message: "" });
    click(view.$("cancel-pay"));
    expect(model.messages("confirm")[1]).toMatchObject({ type: "confirm", confirmation_id: "c2", accept: false });
    model.kernelSet("pending_confirmation", null);
    expect(view.$("confirm-panel").hidden).toBe(true);
  });

  it("shows a refused answer to a confirmation and lets it be given again", async () => {
    const model = show({ prompt: "fox" });
    model.kernelSet("pending_confirmation", { id: "c1", price_usd: 3.2, route_id: "veo-3.1/generate", message: "Pay?" });
    click(view.$("confirm-pay"));
    await reply(model, "confirm", { type: "InvalidParams", message: "No payment waits for this confirmation." });
    expect(view.$("confirm-error").textContent).toBe("InvalidParams: No payment waits for this confirmation.");
    expect(view.$("confirm-pay").disabled).toBe(false);
    click(view.$("confirm-pay"));
    expect(view.$("confirm-error").hidden).toBe(true);
    expect(model.messages("confirm")).toHaveLength(2);
  });

  it("shows the sandbox banner, wallet and session total", () => {
    const model = show();
    expect(view.$("sandbox-banner").hidden).toBe(true);
    model.kernelSet("banner", "Sandbox: no wallet configured — payments are simulated.");
    model.kernelSet("sandbox", true);
    expect(view.$("sandbox-banner").hidden).toBe(false);
    expect(view.$("sandbox-banner").textContent).toContain("payments are simulated");
    model.kernelSet("wallet_address", "0x1234567890abcdef1234567890abcdef12345678");
    model.kernelSet("network_name", "Base Sepolia");
    expect(view.$("wallet").textContent).toBe("0x1234…5678 · Base Sepolia");
    model.kernelSet("total_spent_usd", 0.078);
    expect(view.$("total-spent").textContent).toContain("$0.078");
  });

  it("renders the session's jobs with the gallery and relays retry", async () => {
    const model = show();
    model.kernelSet("jobs", [makeJob({ key: "j1", status: "failed", error: { type: "JobFailed", message: "x", retryable: true, resumable: false } })]);
    expect(view.$$("job-card")).toHaveLength(1);
    click(view.$("retry"));
    expect(model.messages("retry")).toEqual([{ type: "retry", key: "j1", request_id: expect.any(String) }]);
    expect(view.$("retry").disabled).toBe(true);
    await reply(model, "retry", { type: "InvalidParams", message: "Nothing to retry." });
    expect(view.$("action-error").textContent).toBe("InvalidParams: Nothing to retry.");
    expect(view.$("generate-error").hidden).toBe(true); // shown on the card, not at Generate
  });

  it("removes every listener and timer with the view", () => {
    const model = show();
    typePrompt("pending save");
    model.kernelSet("jobs", [makeJob()]);
    view.unmount();
    view = null;
    expect(model.listenerCount()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });
});
