"""Benchmark: what ``import stablestudio_widgets`` costs, and that the lazy imports behind it do not
delay a Studio's first paint. Every figure is the median over fresh Python processes.

    python bench/bench_import.py            # ~30 s
    python bench/bench_import.py --runs 11

import   ``import stablestudio_widgets`` alone: seconds (perf_counter around the import) and the
         process's resident memory afterwards (VmRSS), against the targets (0.2 s, 35 MiB).
studio   from a fresh process to a Studio ready to display (``Studio()`` on its default sandbox and
         its MIME bundle made: what a notebook cell needs before the front end can paint), as the
         package loads now (lazily) and with everything it defers loaded up front first (the
         signing stack and the widgets, as before). The ratio lazy/eager must not exceed 1 (plus
         noise): deferring moves the cost, it must not add to it.

Exit status 1 when the import misses a target or the Studio gets slower than with eager imports
(beyond --margin, default 10%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from verdict import verdict

REPO = Path(__file__).resolve().parents[1]
IMPORT = """
import json, time
t = time.perf_counter()
import stablestudio_widgets
took = time.perf_counter() - t
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
print(json.dumps({"seconds": took, "rss_mib": rss, "eth_account": "eth_account" in __import__("sys").modules,
                  "widgets": "stablestudio_widgets.widgets" in __import__("sys").modules}))
"""
STUDIO = """
import json, os, sys, time, tempfile
os.environ["STABLESTUDIO_HOME"] = tempfile.mkdtemp()
for var in ("STABLESTUDIO_PRIVATE_KEY", "STABLESTUDIO_KEYSTORE", "STABLESTUDIO_BASE_URL"):
    os.environ.pop(var, None)
t = time.perf_counter()
if sys.argv[1] == "eager":  # what the package imported up front before it deferred them
    import eth_account, eth_account.messages, eth_utils, stablestudio_widgets.widgets  # noqa
import stablestudio_widgets
studio = stablestudio_widgets.Studio()
bundle = studio._repr_mimebundle_()
took = time.perf_counter() - t
print(json.dumps({"seconds": took}), flush=True)
os._exit(0)  # the default sandbox's server thread: no clean shutdown needed to measure
"""


def run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"measurement failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7, help="fresh processes per figure (default 7)")
    p.add_argument("--margin", type=float, default=0.10, help="noise allowed on the Studio ratio (default 0.10)")
    args = p.parse_args()
    run(IMPORT)  # warm the OS file cache: the first process reads every module from disk
    imports = [run(IMPORT) for _ in range(args.runs)]
    seconds = statistics.median(r["seconds"] for r in imports)
    rss = statistics.median(r["rss_mib"] for r in imports)
    print(f"## import stablestudio_widgets (median of {args.runs} fresh processes)\n")
    print(f"time   {seconds:.3f} s   (target <= 0.200 s)")
    print(f"RSS    {rss:.1f} MiB  (target <= 35 MiB)")
    print(f"loaded at import: signing stack {imports[0]['eth_account']}, widgets {imports[0]['widgets']}")

    lazy, eager = [], []
    for _ in range(args.runs):  # interleaved, so both see the same machine load
        lazy.append(run(STUDIO, "lazy")["seconds"])
        eager.append(run(STUDIO, "eager")["seconds"])
    ratio = statistics.median(lazy) / statistics.median(eager)
    print(f"\n## a fresh process to a Studio ready to display (median of {args.runs})\n")
    print(f"lazy imports (as shipped)   {statistics.median(lazy):.3f} s")
    print(f"everything up front         {statistics.median(eager):.3f} s")
    print(f"ratio lazy/eager            {ratio:.2f}")
    failures = []
    if seconds > 0.2:
        failures.append(f"import takes {seconds:.3f} s")
    if rss > 35:
        failures.append(f"RSS after import is {rss:.1f} MiB")
    if ratio > 1 + args.margin:
        failures.append(f"a Studio is {ratio:.2f}x as slow to be ready with lazy imports")
    return verdict(failures, "import within 0.2 s and 35 MiB; a Studio is ready no later than with eager imports.")


if __name__ == "__main__":
    sys.exit(main())
