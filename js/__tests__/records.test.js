import { afterEach, describe, expect, it } from "vitest";
import gallery from "../gallery.js";
import compare from "../compare.js";
import { applyChanges, followRecords } from "../components/records.js";
import { completeJob, fakeModel, makeJob, mount } from "./helpers.js";

let view;
afterEach(() => {
  view?.unmount();
  view = null;
});

describe("applyChanges", () => {
  const a = { key: "a", v: 1 };
  const b = { key: "b", v: 1 };
  const c = { key: "c", v: 1 };

  it("replaces changed records and keeps the others as the same objects", () => {
    const b2 = { key: "b", v: 2 };
    const next = applyChanges([a, b, c], { changed: [b2], removed: [], order: null });
    expect(next).toEqual([a, b2, c]);
    expect(next[0]).toBe(a);
    expect(next[2]).toBe(c);
  });

  it("drops removed records, adds new ones at the end without an order, and follows an order", () => {
    expect(applyChanges([a, b, c], { changed: [], removed: ["b"] })).toEqual([a, c]);
    expect(applyChanges([a], { changed: [b] })).toEqual([a, b]);
    const n = { key: "n" };
    expect(applyChanges([a, b], { changed: [n], order: ["n", "a", "b"] })).toEqual([n, a, b]);
    expect(applyChanges(undefined, { changed: [a] })).toEqual([a]);
  });
});

describe("record lists travel as changes", () => {
  it("a gallery applies a change message: the changed card updates, the others are untouched", () => {
    const jobs = [makeJob({ key: "a" }), makeJob({ key: "b" }), makeJob({ key: "c" })];
    const model = fakeModel({ jobs, filter_model: "", filter_status: "", total_spent_usd: 0, title: "G", show_ledger: false });
    view = mount(gallery, model);
    const [a, b, c] = view.$$("job-card");
    const aInner = a.innerHTML;
    const before = model.get("jobs");
    model.kernelSend({ type: "records", trait: "jobs", changed: [completeJob({ key: "b" })], removed: [], order: null });
    expect(model.get("jobs").map((j) => j.status)).toEqual(["processing", "complete", "processing"]);
    expect(model.get("jobs")[0]).toBe(before[0]); // unchanged records keep their identity
    const after = view.$$("job-card");
    expect(after).toEqual([a, b, c]);
    expect(a.innerHTML).toBe(aInner);
    expect(b.dataset.status).toBe("complete");
    expect(model.saves).toBe(0); // nothing goes back to the kernel
  });

  it("new cards appear and removed ones go, in the kernel's order", () => {
    const model = fakeModel({ jobs: [makeJob({ key: "a" })], filter_model: "", filter_status: "", total_spent_usd: 0,
                              title: "G", show_ledger: false });
    view = mount(gallery, model);
    model.kernelSend({ type: "records", trait: "jobs", changed: [makeJob({ key: "n" })], removed: [], order: ["n", "a"] });
    expect(view.$$("job-card").map((el) => el.dataset.key)).toEqual(["n", "a"]);
    model.kernelSend({ type: "records", trait: "jobs", changed: [], removed: ["a"], order: null });
    expect(view.$$("job-card").map((el) => el.dataset.key)).toEqual(["n"]);
  });

  it("a comparison's cells take changes the same way; other messages are ignored", () => {
    const model = fakeModel({ cells: [{ key: "x", row: 0, col: 0, job: null }] });
    const stop = followRecords({ model });
    model.kernelSend({ type: "reply", request_id: "r1", ok: true });
    model.kernelSend({ type: "records", trait: "cells", changed: [{ key: "x", row: 0, col: 0, job: makeJob() }] });
    expect(model.get("cells")[0].job.status).toBe("processing");
    stop();
    model.kernelSend({ type: "records", trait: "cells", changed: [], removed: ["x"] });
    expect(model.get("cells")).toHaveLength(1); // no longer listening
    expect(compare.initialize).toBe(followRecords);
  });
});
