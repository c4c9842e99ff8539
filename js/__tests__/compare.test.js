import { afterEach, describe, expect, it, vi } from "vitest";
import widget from "../compare.js";
import { click, completeJob, fakeModel, makeJob, mount, reply } from "./helpers.js";

let view;
afterEach(() => {
  view?.unmount();
  view = null;
});

const PROMPTS = ["a red fox", "a blue whale"];
// The kernel shuffled the models: display column order is col 1 ("Model A"), then col 0 ("Model B").
const COLUMNS = [{ col: 1, label: "Model A" }, { col: 0, label: "Model B" }];
const masked = { label: "", model: "", route: "" };

function cellsFor(jobFor = () => completeJob(masked)) {
  const cells = [];
  for (const row of [0, 1]) {
    for (const col of [0, 1]) {
      const key = `r${row}c${col}`;
      const job = jobFor(row, col);
      cells.push({ key, row, col, prompt_index: row, repeat: 0, label: col === 1 ? "Model A" : "Model B", job: job && { ...job, key } });
    }
  }
  return cells;
}

function show(extra = {}) {
  const model = fakeModel({
    prompts: PROMPTS, models: ["nano-banana", "grok"], transpose: false, blind: true, revealed: false,
    vote_mode: "pairwise", repeats: 1, columns: COLUMNS, cells: cellsFor(), state: "done",
    quote: { status: "ok", total_usd: 0.218, per_cell_usd: { r0c0: 0.039, r0c1: 0.07, r1c0: 0.039, r1c1: 0.07 }, message: "" },
    votes: [], ratings: {}, summary: [],
    ...extra,
  });
  view = mount(widget, model);
  return model;
}
const cell = (key) => view.el.querySelector(`[data-testid="compare-cell"][data-key="${key}"]`);

describe("Compare: grid", () => {
  it("lays out prompts as rows and the display columns in order", () => {
    show();
    const grid = view.$("compare-grid");
    expect([...grid.querySelectorAll("thead th")].map((th) => th.textContent)).toEqual(["Prompt", "Model A", "Model B"]);
    const rows = view.$$("compare-row");
    expect(rows.map((r) => r.querySelector("th").textContent)).toEqual(PROMPTS);
    const keysIn = (row) => [...row.querySelectorAll('[data-testid="compare-cell"]')].map((c) => c.dataset.key);
    expect(keysIn(rows[0])).toEqual(["r0c1", "r0c0"]);
    expect(keysIn(rows[1])).toEqual(["r1c1", "r1c0"]);
  });

  it("transposes: models as rows, prompts as columns", () => {
    const cells = [];
    for (const row of [0, 1]) for (const col of [0, 1]) {
      cells.push({ key: `m${row}p${col}`, row, col, prompt_index: col, repeat: 0, label: row ? "Model B" : "Model A", job: completeJob(masked) });
    }
    show({ transpose: true, columns: PROMPTS.map((label, col) => ({ col, label })), cells });
    const grid = view.$("compare-grid");
    expect([...grid.querySelectorAll("thead th")].map((th) => th.textContent)).toEqual(["Model", ...PROMPTS]);
    expect(view.$$("compare-row").map((r) => r.querySelector("th").textContent)).toEqual(["Model A", "Model B"]);
  });

  it("hides model names, prices and payment details while blind", () => {
    const inspector = [{ step: "402", at_ms: 0, summary: "resource …/nano-banana/generate", data: {} }];
    show({ cells: cellsFor(() => completeJob({ ...masked, cost_usd: 0.039, inspector })) });
    const text = view.el.textContent;
    expect(text).not.toMatch(/nano|grok|\$0\.039|\$0\.07/i);
    expect(view.$$("compare-cell")).toHaveLength(4);
    expect(view.$("cost-badge")).toBeNull();
    expect(view.$$("inspector").every((d) => d.hidden)).toBe(true);
    expect(cell("r0c1").querySelector(".ssw-card__title").textContent).toBe("Model A");
  });

  it("updates one cell without rebuilding the others", () => {
    const model = show({ cells: cellsFor(() => makeJob(masked)) });
    const before = view.$$("compare-cell");
    const next = structuredClone(model.get("cells"));
    next[0].job = { ...next[0].job, status: "complete", result: { url: "http://h/a.png" } };
    model.kernelSet("cells", next);
    const after = view.$$("compare-cell");
    expect(after.every((n, i) => n === before[i])).toBe(true);
    expect(cell("r0c0").querySelector('[data-testid="job-card"]').dataset.status).toBe("complete");
  });

  it("retries a failed cell by its cell key, and shows a refusal on that cell", async () => {
    const model = show({ cells: cellsFor((row, col) => (row === 0 && col === 0
      ? makeJob({ ...masked, status: "failed", error: { type: "JobFailed", message: "x", retryable: true, resumable: false } })
      : completeJob(masked))) });
    const retry = () => cell("r0c0").querySelector('[data-testid="retry"]');
    click(retry());
    expect(model.messages("retry")).toEqual([{ type: "retry", key: "r0c0", request_id: expect.any(String) }]);
    expect(retry().disabled).toBe(true);
    await reply(model, "retry", { type: "InvalidParams", message: "Cell r0c0 is complete: only a failed cell can be run again." });
    expect(retry().disabled).toBe(false);
    expect(cell("r0c0").querySelector('[data-testid="action-error"]').textContent).toContain("only a failed cell");
  });

  it("counts waiting and cancelled cells by their kinds, not as failed", () => {
    show({ state: "running", cells: cellsFor((row, col) => (col === 0 ? makeJob({ ...masked, status: row ? "cancelled" : "awaiting_confirmation" }) : completeJob(masked))) });
    expect(view.$("compare-state").textContent).toBe("Running: 2 of 4 done.");
  });

  it("removes its listeners with the view", () => {
    const model = show();
    view.unmount();
    view = null;
    expect(model.listenerCount()).toBe(0);
  });
});

describe("Compare: run", () => {
  it("shows the total before running and sends run once", async () => {
    const model = show({ state: "quoting", quote: { status: "loading", total_usd: null, per_cell_usd: {}, message: "" }, cells: cellsFor(() => null) });
    expect(view.$("compare-total").textContent).toBe("Quoting…");
    expect(view.$("compare-run").disabled).toBe(true);
    model.kernelSet("quote", { status: "ok", total_usd: 0.218, per_cell_usd: {}, message: "" });
    model.kernelSet("state", "ready");
    expect(view.$("compare-total").textContent).toBe("Total $0.218");
    const run = view.$("compare-run");
    expect(run.textContent).toBe("Run 4 generations for $0.218");
    expect(run.disabled).toBe(false);
    click(run);
    expect(model.messages("run")).toEqual([{ type: "run", request_id: expect.any(String), total_usd: 0.218 }]); // Run consents to the total it shows
    expect(run.disabled).toBe(true);
    model.kernelSet("quote", { status: "ok", total_usd: 0.218, per_cell_usd: {}, message: "again" });
    expect(run.disabled).toBe(true); // busy until its own reply, whatever else changes
    model.kernelSet("state", "running");
    await reply(model, "run");
    expect(run.hidden).toBe(true);
  });

  it("shows a refused Run beside it, and lets it be pressed again", async () => {
    const model = show({ state: "ready", cells: cellsFor(() => null) });
    click(view.$("compare-run"));
    await reply(model, "run", { type: "BudgetExceeded", message: "This comparison costs $0.218 but only $0.10 of the session budget is left." });
    expect(view.$("compare-error").textContent).toBe("BudgetExceeded: This comparison costs $0.218 but only $0.10 of the session budget is left.");
    expect(view.$("compare-error").getAttribute("role")).toBe("alert");
    expect(view.$("compare-run").disabled).toBe(false);
    click(view.$("compare-run"));
    expect(view.$("compare-error").hidden).toBe(true);
    expect(model.messages("run")).toHaveLength(2);
  });

  it("shows why a run() from code did not start, until a run starts or Run is pressed", async () => {
    const model = show({ state: "ready", cells: cellsFor(() => null), run_error: "" });
    expect(view.$("compare-error").hidden).toBe(true);
    model.kernelSet("run_error", "This comparison costs $0.218: above the $0.10 you asked to confirm.");
    expect(view.$("compare-error").hidden).toBe(false);
    expect(view.$("compare-error").textContent).toContain("above the $0.10 you asked to confirm");
    click(view.$("compare-run"));
    expect(view.$("compare-error").hidden).toBe(true); // Run pressed here: its own reply says how it went
    model.kernelSet("run_error", "");
    model.kernelSet("state", "running");
    await reply(model, "run");
    expect(view.$("compare-error").hidden).toBe(true);
  });

  it("shows per-cell prices before running only when not blind", () => {
    const model = show({ state: "ready", cells: cellsFor(() => null) });
    expect(cell("r0c1").textContent).not.toContain("$");
    model.kernelSet("blind", false);
    expect(cell("r0c1").textContent).toContain("$0.07");
  });
});

describe("Compare: voting", () => {
  it("asks about one pair per prompt and sends the vote", () => {
    const model = show();
    const panels = view.$$("vote-panel");
    expect(panels).toHaveLength(2);
    expect(panels[0].textContent).toContain("a red fox");
    expect(panels[0].textContent).toContain("Left: Model A · Right: Model B");
    click(view.$("vote-a", panels[0]));
    expect(model.messages("vote")).toEqual([{ type: "vote", request_id: expect.any(String), prompt_index: 0, a: "r0c1", b: "r0c0", choice: "a" }]);
    expect(view.$$("vote-panel")[0].textContent).toContain("All 1 pair voted.");
    click(view.$("vote-both-bad", view.$$("vote-panel")[1]));
    expect(model.messages("vote")[1]).toMatchObject({ prompt_index: 1, choice: "both_bad" });
    // the kernel's echo keeps them voted
    model.kernelSet("votes", model.messages("vote").map(({ type, request_id, ...v }) => v));
    expect(view.$$("vote-panel").every((p) => p.textContent.includes("All 1 pair voted."))).toBe(true);
  });

  it.each([["vote-b", "b"], ["vote-tie", "tie"]])("%s sends choice %s", (testid, choice) => {
    const model = show();
    click(view.$(testid));
    expect(model.messages("vote")[0].choice).toBe(choice);
  });

  it("puts a refused vote back and says why beside the vote buttons", async () => {
    const model = show();
    click(view.$("vote-a", view.$$("vote-panel")[0]));
    expect(view.$$("vote-panel")[0].textContent).toContain("All 1 pair voted.");
    await reply(model, "vote", { type: "InvalidParams", message: "The models were revealed: further votes would not be blind." });
    const [first, second] = view.$$("vote-panel");
    expect(view.$("vote-a", first)).not.toBeNull(); // the pair is asked again
    expect(view.$("vote-error", first).textContent).toContain("would not be blind");
    expect(view.$("vote-error", second)).toBeNull();
    click(view.$("vote-b", first));
    expect(view.$("vote-error", view.$$("vote-panel")[0])).toBeNull(); // a new vote clears it
  });

  it("waits for two complete cells", () => {
    show({ cells: cellsFor((row, col) => (col === 0 ? makeJob(masked) : completeJob(masked))) });
    expect(view.$$("vote-panel")).toHaveLength(0);
  });

  it("compares two images with a clip-path slider", () => {
    show();
    const slider = view.$("ab-slider");
    const [b, a] = slider.querySelectorAll("img");
    expect(a.getAttribute("alt")).toContain("Model A");
    expect(b.getAttribute("alt")).toContain("Model B");
    const range = view.$("ab-range");
    expect(range.type).toBe("range");
    range.value = "30";
    range.dispatchEvent(new Event("input"));
    expect(slider.style.getPropertyValue("--pos")).toBe("30%");
    expect(a.style.getPropertyValue("clip-path")).toBe("inset(0 70% 0 0)");
  });

  it("shows videos side by side instead of the slider", () => {
    show({ cells: cellsFor(() => completeJob({ ...masked, media: "video", result: { url: "http://h/v.mp4" } })) });
    expect(view.$("ab-slider")).toBeNull();
    expect(view.$("vote-panel").querySelectorAll("video")).toHaveLength(2);
  });

  it("rates cells 1–5 in rating mode", async () => {
    const model = show({ vote_mode: "rating" });
    expect(view.$$("vote-panel")).toHaveLength(0);
    const stars = (key) => [1, 2, 3, 4, 5].map((n) => cell(key).querySelector(`[data-testid="rate-${n}"]`));
    click(stars("r1c0")[3]);
    expect(model.messages("rate")).toEqual([{ type: "rate", request_id: expect.any(String), key: "r1c0", rating: 4 }]);
    await reply(model, "rate", { type: "InvalidParams", message: "A rating is a whole number from 1 to 5." });
    expect(cell("r1c0").querySelector('[data-testid="rate-error"]').textContent).toContain("whole number");
    expect(cell("r0c0").querySelector('[data-testid="rate-error"]').hidden).toBe(true);
    click(stars("r1c0")[3]);
    await reply(model, "rate");
    expect(cell("r1c0").querySelector('[data-testid="rate-error"]').hidden).toBe(true);
    model.kernelSet("ratings", { r1c0: 4 });
    expect(stars("r1c0").map((s) => s.getAttribute("aria-pressed"))).toEqual(["false", "false", "false", "true", "false"]);
    expect(stars("r1c0").map((s) => s.textContent).join("")).toBe("★★★★☆");
  });
});

describe("Compare: reveal and summary", () => {
  it("enables Reveal after a vote when blind, and sends reveal", async () => {
    const model = show();
    expect(view.$("reveal").disabled).toBe(true);
    click(view.$("vote-tie"));
    expect(view.$("reveal").disabled).toBe(false);
    click(view.$("reveal"));
    expect(model.messages("reveal")).toEqual([{ type: "reveal", request_id: expect.any(String) }]);
    expect(view.$("reveal").disabled).toBe(true);
    await reply(model, "reveal", { type: "Error", message: "x" });
    expect(view.$("reveal").disabled).toBe(false);
    expect(view.$("compare-error").textContent).toBe("Error: x");
  });

  it("enables Reveal at once when not blind", () => {
    show({ blind: false });
    expect(view.$("reveal").disabled).toBe(false);
  });

  it("shows real labels and the summary table after reveal", () => {
    const model = show();
    expect(view.$("summary")).toBeNull();
    model.kernelSet("summary", [
      { model: "nano-banana", label: "Nano Banana", wins: 2, losses: 1, ties: 0, both_bad: 0, votes: 3, win_rate: 2 / 3, mean_rating: null, cost_usd: 0.078, cost_per_win: 0.039 },
      { model: "grok", label: "Grok Imagine", wins: 1, losses: 2, ties: 0, both_bad: 0, votes: 3, win_rate: 1 / 3, mean_rating: null, cost_usd: 0.14, cost_per_win: 0.14 },
    ]);
    expect(view.$("summary")).toBeNull(); // not before reveal
    model.kernelSet("columns", [{ col: 1, label: "Grok Imagine" }, { col: 0, label: "Nano Banana" }]);
    model.kernelSet("revealed", true);
    const table = view.$("summary");
    const rows = [...table.querySelectorAll("tbody tr")].map((tr) => [...tr.children].map((c) => c.textContent));
    // Pairwise votes: no (empty) rating column.
    expect([...table.querySelectorAll("thead th")].map((th) => th.textContent)).not.toContain("Mean rating");
    expect(rows[0]).toEqual(["Nano Banana", "2", "1", "0", "0", "3", "67%", "$0.078", "$0.039"]);
    expect([...view.$("compare-grid").querySelectorAll("thead th")].map((th) => th.textContent)).toEqual(["Prompt", "Grok Imagine", "Nano Banana"]);
    expect(view.$("reveal").hidden).toBe(true);
    expect(view.$$("cost-badge").length).toBeGreaterThan(0); // prices back once revealed
  });
});
