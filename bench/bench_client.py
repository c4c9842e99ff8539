"""Benchmark: AsyncStableStudio against the reference x402 SDK's httpx client, measured in one run.

    python bench/bench_client.py --n 20          # add --time-scale 0.01 to see polling at work

Both clients make N paid ``nano-banana/generate`` calls (the same N prompt variations), first one
after another, then all at once, against ONE sandbox running in a separate process on 127.0.0.1
(so ``time.process_time()`` of this process is client CPU only), and poll each job to completion:

- ours: ``job = await AsyncStableStudio.generate(...)`` then ``await job.wait()``. It learns the
  route's 402 terms once and then signs up front (one round trip per paid request); it polls on
  its own schedule with a fresh SIGN-IN-WITH-X proof per request (the router accepts a nonce once).
- reference: an ``httpx.AsyncClient`` on the SDK's ``x402AsyncTransport`` (x402Client with the
  EVM exact scheme registered for eip155:84532 and an eth-account key) does the paid POST
  (402 -> sign -> retry); then ``GET /api/jobs/{id}`` with a SIGN-IN-WITH-X header made by the
  SDK's helpers (``create_siwx_payload`` from a self-made EIP-4361 info, ``encode_siwx_header``;
  a fresh one per request, like ours, as the router-mode sandbox refuses a re-sent nonce), polled
  right after the POST and then every
  ``poll_interval_s * time_scale`` of the route (3 ms at 0.001: the interval ours settles on).

Each client sends through the transport it uses by default (ours: ``default_transport()``, httpx's
pool on asyncio sockets; the reference: httpx's ``AsyncHTTPTransport``, as the SDK documents it),
with a counting layer in front of it. Requests are counted there, signatures as the distinct
PAYMENT-SIGNATURE / SIGN-IN-WITH-X values sent, payments by the sandbox's settlement ledger.
Each mode uses fresh clients (cold terms and connections, built outside the timed part) after a
warm-up; every figure is the median of --rounds rounds (default 3), who goes first
alternating. By default the sandbox serves stub media (same job timing, no 0.1-0.5 s PIL render
competing for the 2 cores) with TCP_NODELAY (the shipped one leaves Nagle on: ~44 ms per response
on loopback); --render real and --nagle restore either.

Exit status 1 when a job is incomplete, settlements != jobs, or ours needs more round trips per
paid request than the reference or more than --cpu-target (0.4) of its client CPU per job.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from eth_account import Account
from x402 import x402Client
from x402.extensions.sign_in_with_x import create_siwx_payload, encode_siwx_header
from x402.http.clients.httpx import x402AsyncTransport
from x402.mechanisms.evm.exact.register import register_exact_evm_client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout, installed or not

import sandbox_process  # noqa: E402
from verdict import verdict  # noqa: E402

from stablestudio_widgets import AsyncStableStudio, Wallet  # noqa: E402
from stablestudio_widgets.catalog import load as load_catalog  # noqa: E402
from stablestudio_widgets.service import default_transport  # noqa: E402

ROUTE = "nano-banana/generate"
NETWORK = "eip155:84532"
SANDBOX = """
import asyncio.base_events, socket, sys
from stablestudio_widgets.sandbox import Sandbox, jobs
if sys.argv[2] == "stub":  # same job timing, media of a few bytes instead of a 0.1-0.5 s render
    jobs._render = lambda job: {f"{job.id}.png": (b"stub", "image/png")}
if sys.argv[3] == "nodelay":  # Sandbox.start binds a proto-0 socket, so asyncio leaves Nagle on
    asyncio.base_events._set_nodelay = lambda s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sb = Sandbox(time_scale=float(sys.argv[1])).start()
print("listening on", sb.url, flush=True)
sys.stdin.read()  # serve until the benchmark closes our stdin
sb.stop()
"""


class CountingTransport(httpx.AsyncBaseTransport):
    """A client's own transport, noting each request it sends: its kind and the signatures it carries."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.kinds = {"paid": 0, "unpaid_402": 0, "poll": 0, "other": 0}
        self.payment_sigs: set[str] = set()
        self.siwx_sigs: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pay, siwx = request.headers.get("payment-signature"), request.headers.get("sign-in-with-x")
        response = await self.inner.handle_async_request(request)
        if pay:
            kind = "paid"
            self.payment_sigs.add(pay)
        elif request.method == "POST" and response.status_code == 402:
            kind = "unpaid_402"
        elif request.method == "GET" and request.url.path.startswith("/api/jobs/"):
            kind = "poll"
        else:
            kind = "other"
        if siwx:
            self.siwx_sigs.add(siwx)
        self.kinds[kind] += 1
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- the sandbox, in its own process -------------------------------------------------------------------

def start_sandbox(time_scale: float, render: str, nagle: bool) -> tuple[subprocess.Popen, str]:
    return sandbox_process.start(SANDBOX, str(time_scale), render, "nagle" if nagle else "nodelay")


def stop_sandbox(proc: subprocess.Popen) -> None:
    if proc.stdin:
        proc.stdin.close()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def settlements_by(base: str, payer: str) -> int:
    async with httpx.AsyncClient() as c:
        rows = (await c.get(f"{base}/_sandbox/ledger")).json()["settlements"]
    return sum(1 for s in rows if s["payer"].lower() == payer.lower())


# --- the two clients: one(prompt) pays for one generation and polls it to the end ----------------------

class Ours:
    def __init__(self, base: str, wallet: Wallet, time_scale: float):
        self.transport = CountingTransport(default_transport())  # what it sends through by default
        self.client = AsyncStableStudio(base, wallet, ledger=":memory:", time_scale=time_scale,
                                        transport=self.transport)

    async def one(self, prompt: str) -> str:
        job = await self.client.generate("nano-banana", prompt)
        await job.wait()
        return job.status

    async def aclose(self) -> None:
        await self.client.aclose()


class Reference:
    def __init__(self, base: str, account, interval: float):
        self.base, self.account, self.interval = base, account, interval
        sdk = register_exact_evm_client(x402Client(), account, networks=NETWORK)
        self.transport = CountingTransport(httpx.AsyncHTTPTransport())  # the SDK's documented set-up
        self.http = httpx.AsyncClient(base_url=base, transport=x402AsyncTransport(sdk, self.transport), timeout=60)

    async def siwx_header(self, uri: str) -> str:
        now = datetime.now(timezone.utc)
        iso = lambda t: t.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731
        info = {"domain": self.base.split("://", 1)[1], "uri": uri, "version": "1", "chainId": NETWORK,
                "type": "eip191", "nonce": secrets.token_hex(8), "issuedAt": iso(now),
                "expirationTime": iso(now + timedelta(minutes=5))}
        return encode_siwx_header(await create_siwx_payload(info, self.account, uri))

    async def one(self, prompt: str) -> str:
        r = await self.http.post(f"/api/generate/{ROUTE}", json={"prompt": prompt})
        if r.status_code != 200:
            raise RuntimeError(f"reference paid POST got HTTP {r.status_code}: {r.text[:200]}")
        uri = f"{self.base}/api/jobs/{r.json()['jobId']}"
        while True:
            g = await self.http.get(uri, headers={"SIGN-IN-WITH-X": await self.siwx_header(uri)})
            if g.status_code != 200:
                raise RuntimeError(f"reference poll got HTTP {g.status_code}: {g.text[:200]}")
            if g.json()["status"] in ("complete", "failed"):
                return g.json()["status"]
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        await self.http.aclose()


# --- measuring --------------------------------------------------------------------------------------------

async def measure(name: str, make, base: str, payer: str, n: int, mode: str) -> dict:
    prompts = [f"a lighthouse at dusk, watercolor, {mode} variation {i}" for i in range(n)]  # same for both
    settled_before = await settlements_by(base, payer)
    c = make()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if mode == "concurrent":
        statuses = list(await asyncio.gather(*(c.one(p) for p in prompts)))
    else:
        statuses = [await c.one(p) for p in prompts]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await c.aclose()
    settled = await settlements_by(base, payer) - settled_before
    k, per_paid = c.transport.kinds, max(settled, 1)
    return {
        "client": name, "mode": mode, "complete": statuses.count("complete"), "settled": settled,
        "rt/paid": (k["paid"] + k["unpaid_402"]) / per_paid, "paidPOST/paid": k["paid"] / per_paid,
        "402/paid": k["unpaid_402"] / per_paid, "polls/job": k["poll"] / n, "req/job": sum(k.values()) / n,
        "paysig/job": len(c.transport.payment_sigs) / n, "siwx/job": len(c.transport.siwx_sigs) / n,
        "cpu ms/job": cpu * 1000 / n, "wall ms/job": wall * 1000 / n,
    }


def merge(rows: list[dict]) -> dict:
    """One row for several rounds: jobs and settlements added up, every per-job figure the median."""
    out = dict(rows[0])
    for k, v in out.items():
        if isinstance(v, int):
            out[k] = sum(r[k] for r in rows)
        elif isinstance(v, float):
            out[k] = statistics.median(r[k] for r in rows)
    return out


RATIOS = [("round trips per paid request", "rt/paid"), ("total requests per job", "req/job"),
          ("client CPU ms per job", "cpu ms/job"), ("wall ms per job", "wall ms/job")]


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    print(f"{'client':<10}{'mode':<11}" + "".join(f"{c:>{len(c) + 2}}" for c in cols[2:]))
    for r in rows:
        cells = (f"{r[c]:>{len(c) + 2}}" if isinstance(r[c], int) else f"{r[c]:>{len(c) + 2}.2f}" for c in cols[2:])
        print(f"{r['client']:<10}{r['mode']:<11}" + "".join(cells))
    print("complete/settled: totals over all rounds; the rest: per job (rt/paid, paidPOST/paid, 402/paid: per "
          "settled payment; POST round trips = paid + unpaid 402), median over rounds; sigs = distinct values sent")


async def run(args: argparse.Namespace) -> int:
    interval = load_catalog().route(ROUTE).poll_interval_s * args.time_scale
    proc, base = start_sandbox(args.time_scale, args.render, args.nagle)
    try:
        wallet, account = Wallet.generate(), Account.create()
        clients = {"ours": (lambda: Ours(base, wallet, args.time_scale), wallet.address),
                   "reference": (lambda: Reference(base, account, interval), account.address)}
        for make, _ in clients.values():  # warm-up, not measured: imports, lazy caches, first connections
            c = make()
            await c.one("warm-up")
            await c.aclose()
        rows = []
        for i in range(args.rounds):  # who goes first alternates between modes and rounds
            for mode, order in (("sequential", ["ours", "reference"]), ("concurrent", ["reference", "ours"])):
                for name in order[::-1] if i % 2 else order:
                    make, payer = clients[name]
                    rows.append(await measure(name, make, base, payer, args.n, mode))
    finally:
        stop_sandbox(proc)

    rows = [merge([r for r in rows if (r["client"], r["mode"]) == key])
            for key in (("ours", "sequential"), ("reference", "sequential"), ("ours", "concurrent"),
                        ("reference", "concurrent"))]
    total = args.n * args.rounds
    print(f"N={args.n} per client and mode, median of {args.rounds} rounds, {ROUTE}, sandbox "
          f"time_scale={args.time_scale} in its own process ({args.render} media, "
          f"{'Nagle on' if args.nagle else 'TCP_NODELAY'}); reference polls every {interval * 1000:g} ms\n")
    print_table(rows)
    failures = []
    print("\nratios ours/reference:")
    for mode in ("sequential", "concurrent"):
        o, r = (next(x for x in rows if x["mode"] == mode and x["client"] == c) for c in ("ours", "reference"))
        print(f"  {mode:<11}" + ", ".join(f"{label} {o[k] / r[k]:.2f}" for label, k in RATIOS))
        for row in (o, r):
            if row["complete"] != total or row["settled"] != total:
                failures.append(f"{row['client']} {mode}: {row['complete']}/{total} jobs complete, "
                                f"{row['settled']} settlements for {total} jobs")
        if o["rt/paid"] > r["rt/paid"]:
            failures.append(f"{mode}: ours needs more round trips per paid request "
                            f"({o['rt/paid']:.2f} vs {r['rt/paid']:.2f})")
        if o["cpu ms/job"] > r["cpu ms/job"] * args.cpu_target:
            ours_ms, ref_ms = o["cpu ms/job"], r["cpu ms/job"]
            failures.append(f"{mode}: ours uses {ours_ms / ref_ms:.2f}x the reference's client CPU per job "
                            f"({ours_ms:.2f} vs {ref_ms:.2f} ms; target {args.cpu_target}x)")
    return verdict(failures, "every job complete, one settlement per job; ours needs no more round trips per paid "
                             f"request and at most {args.cpu_target}x the client CPU per job.")


def main() -> int:
    p = argparse.ArgumentParser(description="Ours vs the reference x402 SDK client: round trips, CPU, wall.")
    p.add_argument("--n", type=int, default=20, help="generations per client and mode (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="rounds to take medians over (default 3)")
    p.add_argument("--time-scale", type=float, default=0.001, help="sandbox time scale (default 0.001)")
    p.add_argument("--render", choices=("stub", "real"), default="stub", help="sandbox media (default stub)")
    p.add_argument("--nagle", action="store_true", help="keep the sandbox's Nagle delay (~44 ms a response)")
    p.add_argument("--cpu-target", type=float, default=0.4,
                   help="most client CPU per job, as a share of the reference's (default 0.4)")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
