import { describe, expect, it } from "vitest";
import { createRequests, RequestError } from "../components/requests.js";
import { fakeModel } from "./helpers.js";

function setup() {
  const model = fakeModel();
  const view = new AbortController();
  return { model, view, requests: createRequests(model, view.signal) };
}

describe("requests: one reply per request id", () => {
  it("resolves and rejects each request on the reply with its id, in any order", async () => {
    const { model, requests } = setup();
    const generate = requests.send({ type: "generate" });
    const vote = requests.send({ type: "vote", choice: "a" });
    const [g, v] = model.messages();
    expect(g).toEqual({ type: "generate", request_id: expect.any(String) });
    expect(v.request_id).not.toBe(g.request_id);
    expect(requests.size).toBe(2);

    model.kernelSend({ type: "reply", request_id: v.request_id, ok: false, error: { type: "InvalidParams", message: "No cell 'x'.", field: "a" } });
    const error = await vote.catch((e) => e);
    expect(error).toBeInstanceOf(RequestError);
    expect(error).toMatchObject({ type: "InvalidParams", message: "No cell 'x'.", field: "a" });
    expect(String(error)).toBe("InvalidParams: No cell 'x'.");
    expect(requests.size).toBe(1);

    model.kernelSend({ type: "reply", request_id: g.request_id, ok: true });
    await expect(generate).resolves.toMatchObject({ ok: true, request_id: g.request_id });
    expect(requests.size).toBe(0);
  });

  it("ignores other messages, unknown ids and a second reply", async () => {
    const { model, requests } = setup();
    const p = requests.send({ type: "run" });
    const { request_id } = model.messages("run")[0];
    model.kernelSend({ type: "something-else", request_id });
    model.kernelSend({ type: "reply", request_id: "not-mine", ok: false, error: { message: "x" } });
    expect(requests.size).toBe(1);
    model.kernelSend({ type: "reply", request_id, ok: true });
    model.kernelSend({ type: "reply", request_id, ok: false, error: { message: "late" } });
    await expect(p).resolves.toMatchObject({ ok: true });
  });

  it("sends binary buffers with the request", () => {
    const { model, requests } = setup();
    const buffer = new ArrayBuffer(4);
    requests.send({ type: "upload", name: "a.png" }, [buffer]).catch(() => {});
    expect(model.sent[0].buffers).toEqual([buffer]);
  });

  it("rejects every pending request when the view goes away, and stops listening", async () => {
    const { model, view, requests } = setup();
    const a = requests.send({ type: "retry", key: "k1" });
    const b = requests.send({ type: "resume", key: "k2" });
    view.abort();
    await expect(a).rejects.toMatchObject({ type: "Closed" });
    await expect(b).rejects.toMatchObject({ type: "Closed" });
    expect(requests.size).toBe(0);
    expect(model.listenerCount()).toBe(0);
    await expect(requests.send({ type: "run" })).rejects.toMatchObject({ type: "Closed" });
    expect(model.messages("run")).toEqual([]); // nothing is sent from a closed view
  });
});
