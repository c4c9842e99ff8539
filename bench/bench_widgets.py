"""Benchmark the widgets: front-end render time of big galleries, and the size of a saved notebook.

    python bench/bench_widgets.py                          # both parts, about a minute on 2 cores
    python bench/bench_widgets.py --part render --sizes 100 500 1000 --rounds 5
    python bench/bench_widgets.py --part notebook --jobs 50

Prints figures; asserts nothing about speed.

render    The built ``static/gallery.js`` in headless Chromium (Debian's /usr/bin/chromium), on a
          static page served by ``http.server`` on 127.0.0.1 (no JupyterLab: the widget's own
          cost). ``render({model, el, signal})`` is called with a fake anywidget model holding N
          completed job records (image URLs point at a small PNG on the same server, one URL per
          card, so the lazy images really load). Measured with ``performance.now()``: until
          ``render`` returns, and until two animation frames later (style, layout, paint of
          the first frame); then a one-card update: the newest card going running -> complete
          (and back), i.e. a ``change:jobs`` with the whole new list, as the kernel sends it.
          The fake model's ``set`` does not deep-compare: Backbone's equality check and the
          JSON parse of the update message in the real widget manager come on top; the table
          shows the message size and a ``JSON.parse`` of it for that reason.
notebook  A notebook run by nbclient (kernel python3) with ``store_widget_state=True``: a sandbox
          at time_scale 0.002, a Studio and a Gallery, N jobs (mostly images, every tenth a
          short video), all waited for. The last cell re-sends both widgets' full state
          (``send_state()``), as JupyterLab's "save widget state" would serialise it: nbclient
          only keeps comm messages of the cell being run, and the job updates come from the
          client's background loop. Prints the file size, the biggest widget-state entries and
          which traits dominate (the ``_esm``/``_css`` bundles, the catalog, the job records with
          their embedded thumbnails), and the static HTML copies under the widgets.
"""

from __future__ import annotations

import argparse
import ast
import functools
import http.server
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STATIC = REPO / "stablestudio_widgets" / "static"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>gallery bench</title>
<link rel="stylesheet" href="gallery.css">
<style>body { margin: 0; font: 13px sans-serif; } #host { width: 1000px; padding: 8px; }</style>
</head><body><div id="host"></div>
<script type="module">
import gallery from "./gallery.js";
window.gallery = gallery;
window.benchReady = true;
</script></body></html>
"""

# Runs in the page: render N cards, then time one-card updates. Returns milliseconds.
MEASURE = """async ({ n, updates }) => {
  const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const handlers = new Map();
  const state = {};
  const model = {
    get: (k) => state[k],
    set(k, v) { state[k] = v; for (const fn of [...(handlers.get(`change:${k}`) ?? [])]) fn(v); },
    on(e, fn) { if (!handlers.has(e)) handlers.set(e, new Set()); handlers.get(e).add(fn); },
    off(e, fn) { handlers.get(e)?.delete(fn); },
    save_changes() {},
    send() {},
  };
  const labels = [["nano-banana", "Nano Banana"], ["grok", "Grok Imagine"], ["flux-2-pro", "FLUX.2 [pro]"]];
  const now = Date.now();
  const hex = (i, len) => i.toString(16).padStart(len, "0");
  const job = (i, done) => {
    const [model, label] = labels[i % 3];
    return {
      key: `k${i}`, id: `job_${hex(i, 20)}`, route: `${model}/generate`, model, label, media: "image",
      prompt: `prompt ${i}: a red fox in fresh snow at golden hour, wide shot, soft light`,
      params: { aspectRatio: "1:1" }, status: done ? "complete" : "processing",
      detail: done ? "" : "Generating", created_at: now - 60000 - i * 1000,
      finished_at: done ? now - 55000 - i * 1000 : null, typical_s: 5, cost_usd: 0.039,
      receipt: { transaction: "0x" + hex(i, 64), network: "eip155:84532", network_name: "Base Sepolia",
                 payer: "0x" + hex(7, 40), explorer_url: null },
      result: done ? { url: `thumb.png?i=${i}`, thumbnail_url: null, local_path: null } : null,
      error: null, inspector: [],
    };
  };
  Object.assign(state, { jobs: Array.from({ length: n }, (_, i) => job(i, true)), filter_model: "",
                         filter_status: "", total_spent_usd: n * 0.039, title: "Gallery", show_ledger: false });
  const el = document.getElementById("host");
  const ctrl = new AbortController();
  const t0 = performance.now();
  window.gallery.render({ model, el, signal: ctrl.signal });
  const t1 = performance.now();
  void el.offsetHeight; // forces style and layout now
  const tl = performance.now();
  await frames();
  const t2 = performance.now();
  const cards = el.querySelectorAll("[data-testid=job-card]").length;

  const update = [], updateLayout = [], updatePaint = [], parse = [];
  let bytes = 0;
  for (let u = 0; u < updates; u++) {
    const list = state.jobs.slice();
    const done = u % 2 === 1; // the newest card completes (with a new result URL), then runs again
    list[0] = job(0, done);
    if (done) list[0].result = { url: `thumb.png?i=0&v=${u}`, thumbnail_url: null, local_path: null };
    const text = JSON.stringify(list);
    bytes = text.length;
    const p0 = performance.now();
    JSON.parse(text);
    parse.push(performance.now() - p0);
    const s = performance.now();
    model.set("jobs", list);
    const e = performance.now();
    void el.offsetHeight;
    updateLayout.push(performance.now() - s);
    await frames();
    update.push(e - s);
    updatePaint.push(performance.now() - s);
  }
  const status = el.querySelector("[data-testid=job-card]").dataset.status;
  ctrl.abort();
  el.replaceChildren();
  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
  return { cards, render: t1 - t0, layout: tl - t0, paint: t2 - t0, update: median(update),
           updateLayout: median(updateLayout), updatePaint: median(updatePaint), parse: median(parse), bytes, status };
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def bench_render(sizes: list[int], rounds: int, updates: int) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    for name in ("gallery.js", "gallery.css"):
        if not (STATIC / name).exists():
            sys.exit(f"{STATIC / name} is missing: run `npm run build` first")
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        for name in ("gallery.js", "gallery.css"):
            shutil.copy(STATIC / name, site / name)
        (site / "index.html").write_text(PAGE)
        buf = io.BytesIO()
        Image.linear_gradient("L").resize((320, 320)).convert("RGB").save(buf, "PNG")
        (site / "thumb.png").write_bytes(buf.getvalue())
        server, url = serve(site)
        print(f"\n## Gallery front end: static/gallery.js in headless Chromium ({CHROMIUM})")
        print("ms, from the call: render returned / style+layout forced / two animation frames later")
        print(f"(first paint; at 60 Hz two frames take 17-33 ms); median of {rounds} fresh pages per N,")
        print(f"updates median of {updates}. msg KB / JSON.parse: the update message (the whole `jobs` list)")
        print("and parsing it, which the update column does not include\n")
        print(f"{'N':>5} {'render':>8} {'+layout':>8} {'+2 frames':>10} {'1-card update':>14} {'+layout':>8} "
              f"{'+2 frames':>10} {'msg KB':>7} {'JSON.parse':>11}")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for n in sizes:
                    runs = []
                    for _ in range(rounds):
                        page = browser.new_page(viewport={"width": 1100, "height": 900})
                        page.goto(f"{url}/index.html")
                        page.wait_for_function("() => window.benchReady === true")
                        r = page.evaluate(MEASURE, {"n": n, "updates": updates})
                        assert r["cards"] == n, r
                        runs.append(r)
                        page.close()
                    med = {k: statistics.median(r[k] for r in runs) for k in
                           ("render", "layout", "paint", "update", "updateLayout", "updatePaint", "parse", "bytes")}
                    print(f"{n:>5} {med['render']:>8.1f} {med['layout']:>8.1f} {med['paint']:>10.1f} "
                          f"{med['update']:>14.2f} {med['updateLayout']:>8.2f} {med['updatePaint']:>10.1f} "
                          f"{med['bytes'] / 1024:>7.0f} {med['parse']:>11.2f}")
                browser.close()
        finally:
            server.shutdown()


NOTEBOOK_CELLS = [
    """\
from stablestudio_widgets import Gallery, StableStudio, Studio

ss = StableStudio.sandbox(time_scale=0.002)
studio = Studio(ss)
studio""",
    """\
gallery = Gallery(ss)
gallery""",
    """\
IMAGES = [("nano-banana", {{"aspectRatio": "1:1"}}), ("grok", {{"aspect_ratio": "1:1"}}),
          ("flux-2-pro", {{"aspect_ratio": "1:1"}}), ("gpt-image-1.5", {{"quality": "low"}}),
          ("nano-banana-pro", {{}})]
VIDEOS = [("veo-3.1-fast", {{"durationSeconds": "4"}}), ("grok-video", {{"duration": "3"}}),
          ("seedance-fast", {{"duration": "4", "aspectRatio": "16:9", "outputResolution": "480p"}})]
jobs = []
for i in range({n}):
    model, params = VIDEOS[i // 10 % 3] if i % 10 == 9 else IMAGES[i % 5]
    jobs.append(ss.generate(model, f"prompt {{i}}: a red fox in fresh snow at golden hour", **params))
results = [job.wait(timeout=120) for job in jobs]
sum(r.media == "video" for r in results), len(results)""",
    """\
import time

deadline = time.monotonic() + 30  # the widgets' feeds flush 50 ms after the last change
while not all(len(w.jobs) == {n} and all(j["status"] == "complete" for j in w.jobs) for w in (studio, gallery)):
    assert time.monotonic() < deadline
    time.sleep(0.05)
deadline = time.monotonic() + 30  # and the embedded thumbnails are made (after each result)
while not all((j["result"] or {{}}).get("thumb") for w in (studio, gallery) for j in w.jobs):
    assert time.monotonic() < deadline
    time.sleep(0.05)
studio.send_state()
gallery.send_state()
studio._push_static()  # the static copies too, from this cell (nbclient keeps only its messages)
gallery._push_static()
len(studio.jobs), len(gallery.jobs), gallery.total_spent_usd""",
]


def jsize(value) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def bench_notebook(n: int) -> None:
    import nbformat
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STABLESTUDIO_HOME"] = str(Path(tmp) / "home")  # a throwaway ledger, inherited by the kernel
        for var in ("STABLESTUDIO_PRIVATE_KEY", "STABLESTUDIO_KEYSTORE", "STABLESTUDIO_BASE_URL"):
            os.environ.pop(var, None)
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(src.format(n=n) if "{n}" in src else src)
                    for src in NOTEBOOK_CELLS]
        t0 = time.perf_counter()
        NotebookClient(nb, kernel_name="python3", timeout=300, store_widget_state=True,
                       resources={"metadata": {"path": tmp}}).execute()
        elapsed = time.perf_counter() - t0
        path = Path(tmp) / "fifty_jobs.ipynb"
        nbformat.write(nb, path)
        total = path.stat().st_size
        videos, jobs = ast.literal_eval(nb.cells[2].outputs[-1]["data"]["text/plain"])
        widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        states = widgets.get("state", {})
        bare = nbformat.from_dict(json.loads(json.dumps(nb)))
        bare.metadata.pop("widgets", None)
        without = len(nbformat.writes(bare).encode())

        print(f"\n## Saved notebook: {jobs} jobs ({videos} videos), a Studio and a Gallery "
              f"(nbclient, store_widget_state=True; run took {elapsed:.1f} s)\n")
        print(f"file                      {total / 1024:8.1f} KB")
        print(f"  widget state            {(total - without) / 1024:8.1f} KB  ({len(states)} widget models)")
        print(f"  cells and outputs       {without / 1024:8.1f} KB")
        print(f"per job                   {total / jobs / 1024:8.2f} KB of file")
        copies = [o for c in nb.cells for o in c.get("outputs", [])
                  if "ssw-static" in str(o.get("data", {}).get("text/html", ""))]
        size = sum(len(str(o["data"]["text/html"])) for o in copies)
        print(f"  static copies           {size / 1024:8.1f} KB  ({len(copies)} HTML outputs: thumbnails, prompts, "
              "prices; what nbviewer/GitHub show)")

        print("\nlargest widget-state entries (compact JSON):")
        ranked = sorted(states.items(), key=lambda kv: -jsize(kv[1]))
        for model_id, entry in ranked[:6]:
            st = entry.get("state", {})
            name = st.get("_anywidget_id") or entry.get("model_name")
            print(f"  {name:<45} {jsize(entry) / 1024:8.1f} KB  {model_id[:8]}")
        others = ranked[6:]
        if others:
            print(f"  {len(others)} more (layouts etc.) {sum(jsize(e) for _, e in others) / 1024:25.1f} KB")

        print("\nwhat dominates (traits of the two widgets, compact JSON):")
        rows = []
        for _, entry in ranked[:2]:
            st = entry.get("state", {})
            name = (st.get("_anywidget_id") or entry.get("model_name", "")).rsplit(".", 1)[-1]
            for trait, value in st.items():
                rows.append((jsize(value), f"{name}.{trait}", value))
        rows.sort(key=lambda r: -r[0])
        for size, label, value in rows[:8]:
            extra = ""
            if isinstance(value, list) and value and isinstance(value[0], dict) and "key" in value[0]:
                per = statistics.mean(jsize(v) for v in value)
                insp = statistics.mean(jsize(v.get("inspector", [])) for v in value)
                thumb = statistics.mean(jsize((v.get("result") or {}).get("thumb") or "") for v in value)
                extra = (f"  ({len(value)} records, {per / 1024:.2f} KB each, of which inspector {insp / 1024:.2f} KB, "
                         f"thumbnail {thumb / 1024:.2f} KB)")
            print(f"  {label:<26} {size / 1024:8.1f} KB{extra}")
        wstates = sum(jsize(e) for e in states.values())
        bundles = sum(jsize(e.get("state", {}).get(t, "")) for e in states.values() for t in ("_esm", "_css"))
        catalog = sum(jsize(e.get("state", {}).get("catalog", {})) for e in states.values()
                      if "catalog" in e.get("state", {}))
        records = sum(jsize(e.get("state", {}).get("jobs", [])) for e in states.values()
                      if "jobs" in e.get("state", {}))
        print(f"\nshares of the widget state ({wstates / 1024:.1f} KB as compact JSON; nbformat's indent=1 makes it "
              f"{(total - without) / 1024:.0f} KB in the file): job records {records / wstates:.0%}, "
              f"_esm/_css bundles {bundles / wstates:.0%}, catalog {catalog / wstates:.0%}, "
              f"rest {(wstates - records - bundles - catalog) / wstates:.0%}")
        print(f"the job records are {records / 1024 / jobs:.2f} KB per job in total: "
              "each job is stored once by the Studio and once by the Gallery")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["render", "notebook", "all"], default="all")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--rounds", type=int, default=3, help="fresh pages per gallery size (median)")
    ap.add_argument("--updates", type=int, default=20, help="one-card updates per page (median)")
    ap.add_argument("--jobs", type=int, default=50, help="jobs in the saved-notebook run")
    args = ap.parse_args()
    if args.part in ("render", "all"):
        bench_render(args.sizes, args.rounds, args.updates)
    if args.part in ("notebook", "all"):
        bench_notebook(args.jobs)


if __name__ == "__main__":
    main()
