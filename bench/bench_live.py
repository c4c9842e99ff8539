"""Benchmark: a Gallery of 500 live cards, each updating once a second, in the kernel and in Chromium.

    python bench/bench_live.py                   # ~1 min on 2 cores
    python bench/bench_live.py --cards 1000 --seconds 10

kernel    A Gallery on a client's event loop (the sync client's private loop, as in a notebook) with
          N running jobs; each job's progress moves once a second, at its own phase (no HTTP: the
          widget's cost alone). A probe on the same loop sleeps 5 ms at a time and records how late
          it wakes (the event-loop lag every poll and card action would see); the widget's messages
          are serialised as the kernel's session would (JSON) and counted. The Gallery is shown as
          in a notebook (an IPython shell), so its static copy (the HTML a saved notebook keeps) is
          rewritten as it would be, and those display updates are counted too. Once with updates
          sent as the cards that changed (as shipped), once with the whole list per update (as before).
frontend  The built gallery.js in headless Chromium (Debian's /usr/bin/chromium) with a fake model
          holding N running cards: every 50 ms (the kernel's flush) a change message with the cards
          that moved since the last one, for --seconds; frames are counted with
          requestAnimationFrame and each update timed (apply + style/layout forced). Once as change
          messages, once as whole-list trait updates (as before), and once with no updates at all
          (the control: headless software rendering on a busy machine has slow frames of its own).

Prints p50/p99 event-loop lag, KB/s to the front end, and per-update and per-frame milliseconds,
with the ratios as-shipped / before. Exit status 1 when the kernel's p99 lag reaches 20 ms or the
front end's p99 work per update reaches 16 ms, as shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_widgets import CHROMIUM, CHROMIUM_ARGS, STATIC, serve  # noqa: E402
from verdict import verdict  # noqa: E402


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


# --- kernel -----------------------------------------------------------------------------------

def bench_kernel(cards: int, seconds: float, deltas: bool) -> dict:
    from IPython.core.interactiveshell import InteractiveShell

    from stablestudio_widgets import Gallery, StableStudio, Wallet
    from stablestudio_widgets.widgets.gallery import Gallery as GalleryClass

    if not deltas:  # as before: the whole list goes to the front end on every update
        GalleryClass._record_lists = ()
    ss = StableStudio("http://127.0.0.1:9", Wallet.generate(), ledger=":memory:")
    sent = {"bytes": 0, "messages": 0, "static": 0}
    try:
        async def make() -> list:
            made = []
            for i in range(cards):
                job = ss.aio.tracker.new_job("nano-banana/generate", {"prompt": f"a fox {i}"})
                job.id, job.status = f"job{i:05d}", "loading"
                job._poller = asyncio.get_running_loop().create_future()  # "polled elsewhere": the bench moves them
                made.append(job)
            return made

        jobs = asyncio.run_coroutine_threadsafe(make(), ss.loop).result()
        gallery = Gallery(ss, jobs=jobs, session=False)
        shell = InteractiveShell.instance()  # display() as in a notebook: the static copy's updates are published

        def publish(data=None, metadata=None, *args, **kwargs):
            sent["static"] += len(json.dumps({"data": data, "metadata": metadata or {}}))

        shell.display_pub.publish = publish
        gallery._ipython_display_()  # the live view and its static copy, once
        sent["static"] = 0
        send = gallery.comm.send

        def count(data=None, metadata=None, buffers=None):
            text = json.dumps(data)  # what the kernel's session does with every message
            sent["bytes"] += len(text)
            sent["messages"] += 1
            return send(data=data, metadata=metadata, buffers=buffers)

        gallery.comm.send = count
        lags: list[float] = []

        async def drive() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()

            async def card(i: int) -> None:
                job = jobs[i]
                await asyncio.sleep(i / cards)  # each card its own phase
                percent = 0
                while loop.time() - start < seconds:
                    percent = (percent + 1) % 100
                    job.apply({"status": "loading", "progress": percent})
                    await asyncio.sleep(1.0)

            async def probe() -> None:
                while loop.time() - start < seconds:
                    t = time.perf_counter()
                    await asyncio.sleep(0.005)
                    lags.append((time.perf_counter() - t - 0.005) * 1000)

            await asyncio.gather(probe(), *(card(i) for i in range(cards)))

        t0 = time.perf_counter()
        asyncio.run_coroutine_threadsafe(drive(), ss.loop).result(seconds + 60)
        elapsed = time.perf_counter() - t0
        gallery.close()
    finally:
        ss.close()
        if not deltas:
            del GalleryClass._record_lists
    return {"lag_p50": percentile(lags, 0.5), "lag_p99": percentile(lags, 0.99), "lag_max": max(lags),
            "kb_s": sent["bytes"] / 1024 / elapsed, "msgs_s": sent["messages"] / elapsed,
            "static_kb_s": sent["static"] / 1024 / elapsed}


# --- front end ----------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>live bench</title><link rel="stylesheet" href="gallery.css">
<style>body { margin: 0; font: 13px sans-serif; } #host { width: 1000px; padding: 8px; }</style>
</head><body><div id="host"></div>
<script type="module">import gallery from "./gallery.js"; window.gallery = gallery; window.benchReady = true;</script>
</body></html>
"""

LIVE = """async ({ n, seconds, deltas }) => {
  const handlers = new Map();
  const state = {};
  const fire = (event, ...args) => { for (const fn of [...(handlers.get(event) ?? [])]) fn(...args); };
  const model = {  // like Backbone: set fires change:<name> when the value changed (identity here)
    get: (k) => state[k],
    set(k, v) { const changed = state[k] !== v; state[k] = v; if (changed) fire(`change:${k}`, v); },
    on(e, fn) { if (!handlers.has(e)) handlers.set(e, new Set()); handlers.get(e).add(fn); },
    off(e, fn) { handlers.get(e)?.delete(fn); },
    save_changes() {}, send() {},
  };
  const now = Date.now();
  const job = (i, percent) => ({
    key: `k${i}`, id: `job${i}`, route: "nano-banana/generate", model: "nano-banana", label: "Nano Banana",
    media: "image", prompt: `prompt ${i}: a red fox in fresh snow`, params: { aspectRatio: "1:1" },
    status: "loading", detail: `${percent}% done`, created_at: now - i * 100, finished_at: null, typical_s: 5,
    cost_usd: 0.039, receipt: null, result: null, error: null, inspector: [] });
  Object.assign(state, { jobs: Array.from({ length: n }, (_, i) => job(i, 0)), filter_model: "", filter_status: "",
                         total_spent_usd: 0, title: "Gallery", show_ledger: false });
  const el = document.getElementById("host");
  const ctrl = new AbortController();
  window.gallery.initialize?.({ model, signal: ctrl.signal });
  window.gallery.render({ model, el, signal: ctrl.signal });
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));

  const frames = [];
  let last = performance.now();
  let running = true;
  const frame = (t) => { frames.push(t - last); last = t; if (running) requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  const updates = [];
  const percent = new Array(n).fill(0);
  const start = performance.now();
  let tick = 0;
  while (performance.now() - start < seconds * 1000) {
    await new Promise((r) => setTimeout(r, 50));
    tick++;
    // the cards whose second came round in these 50 ms: n / 20 of them
    const changed = [];
    for (let i = (tick * n / 20) % n, k = 0; k < n / 20; k++, i = (i + 1) % n) {
      percent[i] = (percent[i] + 1) % 100;
      changed.push(job(i, percent[i]));
    }
    const t0 = performance.now();
    if (deltas === "idle") {
      // no updates: the control (the ticker and the machine's own long frames)
    } else if (deltas) {
      const message = { type: "records", trait: "jobs", changed, removed: [], order: null };
      fire("msg:custom", JSON.parse(JSON.stringify(message)));  // as the comm delivers it
    } else {  // the whole list, fresh objects, as a trait update delivers them
      const list = JSON.parse(JSON.stringify(state.jobs.map((j) => j)));
      for (const c of changed) list[Number(c.key.slice(1))] = c;
      model.set("jobs", list);
    }
    void el.offsetHeight;
    updates.push(performance.now() - t0);
  }
  running = false;
  ctrl.abort();
  const statuses = [...el.querySelectorAll("[data-testid=job-card]")].length;
  el.replaceChildren();
  const q = (xs, p) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(p * s.length))];
  };
  const long = frames.slice(2).filter((f) => f > 20).length;
  return { long, cards: statuses, updates: updates.length, update_p50: q(updates, 0.5), update_p99: q(updates, 0.99),
           frame_p50: q(frames.slice(2), 0.5), frame_p99: q(frames.slice(2), 0.99), frames: frames.length };
}"""


def bench_frontend(cards: int, seconds: float) -> dict[bool, dict]:
    from playwright.sync_api import sync_playwright

    for name in ("gallery.js", "gallery.css"):
        if not (STATIC / name).exists():
            sys.exit(f"{STATIC / name} is missing: run `npm run build` first")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        for name in ("gallery.js", "gallery.css"):
            shutil.copy(STATIC / name, site / name)
        (site / "index.html").write_text(PAGE)
        server, url = serve(site)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for deltas in (True, False, "idle"):
                    page = browser.new_page(viewport={"width": 1100, "height": 900})
                    page.goto(f"{url}/index.html")
                    page.wait_for_function("() => window.benchReady === true")
                    out[deltas] = page.evaluate(LIVE, {"n": cards, "seconds": seconds, "deltas": deltas})
                    assert out[deltas]["cards"] == cards, out[deltas]
                    page.close()
                browser.close()
        finally:
            server.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cards", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--part", choices=["kernel", "frontend", "all"], default="all")
    args = ap.parse_args()
    failures = []
    if args.part in ("kernel", "all"):
        ours, before = bench_kernel(args.cards, args.seconds, True), bench_kernel(args.cards, args.seconds, False)
        print(f"\n## kernel: a Gallery of {args.cards} live cards, each updating once a second, for {args.seconds:g} s")
        print("(event-loop lag: how late a 5 ms sleep on the client's loop wakes; KB/s: JSON to the front end;")
        print("static KB/s: the static copy's display updates)\n")
        print(f"{'':<28}{'lag p50 ms':>11}{'lag p99 ms':>11}{'lag max ms':>11}{'KB/s':>9}{'msgs/s':>8}"
              f"{'static KB/s':>12}")
        for label, r in (("changed cards (as shipped)", ours), ("whole list (before)", before)):
            print(f"{label:<28}{r['lag_p50']:>11.2f}{r['lag_p99']:>11.2f}{r['lag_max']:>11.1f}{r['kb_s']:>9.1f}"
                  f"{r['msgs_s']:>8.1f}{r['static_kb_s']:>12.2f}")
        print(f"ratios shipped/before: lag p99 {ours['lag_p99'] / before['lag_p99']:.2f}, "
              f"KB/s {ours['kb_s'] / before['kb_s']:.3f}")
        if ours["lag_p99"] >= 20:
            failures.append(f"kernel event-loop lag p99 {ours['lag_p99']:.1f} ms")
    if args.part in ("frontend", "all"):
        r = bench_frontend(args.cards, args.seconds)
        print(f"\n## front end: gallery.js in headless Chromium, {args.cards} running cards, an update every 50 ms "
              f"({args.cards // 20} cards each), {args.seconds:g} s")
        print("(update ms: applying one, style and layout forced; frames: between animation frames, and how many")
        print("took over 20 ms; 'no updates' is the control: the cards' clocks and this machine's own slow frames)\n")
        print(f"{'':<28}{'update p50':>11}{'update p99':>11}{'frame p50':>10}{'frame p99':>10}{'frames':>8}"
              f"{'> 20 ms':>8}")
        for label, deltas in (("changed cards (as shipped)", True), ("whole list (before)", False),
                              ("no updates", "idle")):
            x = r[deltas]
            print(f"{label:<28}{x['update_p50']:>11.2f}{x['update_p99']:>11.2f}{x['frame_p50']:>10.1f}"
                  f"{x['frame_p99']:>10.1f}{x['frames']:>8}{x['long']:>8}")
        print(f"ratios shipped/before: update p99 {r[True]['update_p99'] / r[False]['update_p99']:.2f}")
        if r[True]["update_p99"] >= 16:
            failures.append(f"front-end update p99 {r[True]['update_p99']:.1f} ms")
    return verdict(failures, "kernel event-loop lag p99 under 20 ms and front-end work per update under 16 ms, "
                             "as shipped.")


if __name__ == "__main__":
    sys.exit(main())
