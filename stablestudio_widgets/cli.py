"""The ``stablestudio`` command.

Each subcommand is one ``add_<name>(subparsers)`` function that registers its arguments and sets
``func`` to the function that runs it (returning the exit code); add a command by writing one
more and listing it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .policy import DEFAULT_MAX_USD_PER_REQUEST


def _run_sandbox(args: argparse.Namespace) -> int:
    from eth_account import Account

    from .sandbox import Faults, Sandbox, Timing

    faults = Faults(fail_rate=args.fail_rate, error_rate=args.error_rate, error_status=args.error_status,
                    poll_404_s=args.poll_404_s, drop_after_settle_rate=args.drop_rate,
                    drop_mode=args.drop_mode, seed=args.seed)
    try:
        sandbox = Sandbox(port=args.port, time_scale=args.time_scale, faults=faults, router=args.router,
                          siwx_reuse=args.siwx_reuse, body_402=args.body_402, extra_fields=args.extra_fields,
                          pricing_format=args.pricing_format, replay=args.replay, omit_extra=args.omit_extra,
                          log_level=args.log_level, access_log=args.log_level in ("info", "debug"),
                          networks=args.network, tempo_fee_payer=args.tempo_fee_payer, mpp_settle=args.mpp_settle,
                          mpp_strict=not args.mpp_lenient, mpp_signin_only=args.mpp_signin_only,
                          timing=Timing(spread=args.spread, seed=args.seed))
    except (ValueError, ImportError) as e:
        print(f"Cannot start the sandbox: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sandbox.start()
        except OSError as e:
            print(f"Cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}. Try another --port "
                  "(0 picks a free one).", file=sys.stderr)
            return 1
        mode = sandbox.mode
        print(f"StableStudio sandbox listening on {sandbox.url}  ({', '.join(sandbox.networks)})", flush=True)
        print(f"Answers like {'the real router (@agentcash/router)' if mode.router else 'the written spec'}: "
              f"re-sent sign-ins {mode.siwx_reuse}, 402 body {mode.body_402}, replayed payments {mode.replay}"
              + (", unknown fields in requirements" if mode.extra_fields else "")
              + f". Discovery: {sandbox.url}/openapi.json, {sandbox.url}/llms.txt")
        print("Throwaway wallet -- sandbox only, testnet terms, worthless; never fund it. Use it with:")
        print(f"  export STABLESTUDIO_BASE_URL={sandbox.url}")
        evm = [n for n in sandbox.networks if n.startswith("eip155:")]
        if evm:  # one EVM key pays on Base Sepolia (x402) and on Tempo testnet (MPP)
            wallet = Account.create()
            names = {"eip155:84532": "Base Sepolia", "eip155:42431": "Tempo testnet (MPP)"}
            fees = "".join(text for on, text in ((args.tempo_fee_payer, ", fees sponsored"),
                                                 (args.mpp_settle == "after", ", settles after the handler"),
                                                 (args.mpp_lenient, ", checks only what mppx checks"),
                                                 (args.mpp_signin_only, ", job routes take only the $0 proof"))
                           if on and sandbox.tempo_rpc_url)
            print(f"  # {' and '.join(f'{names[n]} ({n})' for n in evm)}{fees}, merchant {sandbox.merchant}; "
                  f"address: {wallet.address}")
            print(f"  export STABLESTUDIO_PRIVATE_KEY=0x{bytes(wallet.key).hex()}   # sandbox only -- worthless")
        if sandbox.tempo_rpc_url:
            print(f"  # Tempo JSON-RPC for the gas price: {sandbox.tempo_rpc_url}")
        if sandbox.takes_solana:
            from solders.keypair import Keypair

            keypair = Keypair()
            network = next(n for n in sandbox.networks if n.startswith("solana:"))
            print(f"  # Solana Devnet ({network}), merchant {sandbox.solana_merchant}; address: {keypair.pubkey()}")
            print(f"  export STABLESTUDIO_SOLANA_KEY={keypair}   # sandbox only -- worthless")
            print(f"  # Solana JSON-RPC for blockhashes: {sandbox.solana_rpc_url}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            if not sandbox.running:
                print("The sandbox server stopped unexpectedly.", file=sys.stderr)
                return 1
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Sandbox stopped.", flush=True)
    return 0


def add_sandbox(sub: Any) -> None:
    p = sub.add_parser("sandbox", help="run a local StableStudio-compatible server (no real money)",
                       description="Serve the StableStudio API on 127.0.0.1 with really verified x402 "
                                   "payments on Base Sepolia terms, locally rendered media and optional "
                                   "fault injection. Prints a throwaway wallet to use with it.")
    p.add_argument("--port", type=int, default=8402, help="port on 127.0.0.1 (0 picks a free one)")
    p.add_argument("--time-scale", type=float, default=0.1,
                   help="job duration as a fraction of the route's typical time (default 0.1)")
    p.add_argument("--router", action=argparse.BooleanOptionalAction, default=True,
                   help="answer like the real service's x402 router (default); --no-router: like the written spec")
    p.add_argument("--siwx-reuse", choices=("bare", "challenge", "allow"), default=None,
                   help="answer to a re-sent sign-in nonce: a bare 402 with an error (router default), a fresh "
                        "challenge, or allow it (spec default)")
    p.add_argument("--402-body", dest="body_402", choices=("empty", "json", "repeat"), default=None,
                   help="the body of a 402: empty (router default), {} (spec default), or the requirements again")
    p.add_argument("--extra-fields", action="store_true",
                   help="add fields clients do not know to every payment requirement (they must echo them)")
    p.add_argument("--pricing-format", choices=("price", "pricingMode"), default="price",
                   help="x-payment-info in /openapi.json: the structured price object or the older flat form")
    p.add_argument("--replay", choices=("refuse", "idempotent"), default="refuse",
                   help="answer to a re-sent payment: refuse (402 nonce_already_used) or the original job")
    p.add_argument("--network", action="append", choices=("base-sepolia", "solana-devnet", "tempo-testnet"),
                   default=None, help="a network the sandbox takes (repeat for several; the 402 lists them in "
                                      "this order); default base-sepolia; solana-devnet needs the solana extra; "
                                      "tempo-testnet is offered as an MPP challenge")
    p.add_argument("--tempo-fee-payer", action="store_true", help="sponsor Tempo fees (feePayer: true, 0x78 hand-off)")
    p.add_argument("--mpp-settle", choices=("before", "after"), default="before",
                   help="settle MPP payments before the handler, or after it as the real router does")
    p.add_argument("--mpp-lenient", action="store_true",
                   help="check a self-paid Tempo charge only as far as mppx does (source, chain id, extra transfers "
                        "pass)")
    p.add_argument("--mpp-signin-only", action="store_true",
                   help="job routes offer only the MPP $0 proof, no SIWX challenge")
    p.add_argument("--omit-extra", action="store_true",
                   help="leave extra/maxTimeoutSeconds out of 402s, like the real service's example")
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of jobs that fail")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of API requests answered with an error")
    p.add_argument("--error-status", type=int, default=503, choices=(429, 500, 502, 503))
    p.add_argument("--poll-404-s", type=float, default=0.0, help="seconds a new job answers 404")
    p.add_argument("--drop-rate", type=float, default=0.0,
                   help="share of paid requests that settle but are not answered properly")
    p.add_argument("--drop-mode", choices=("reset", "5xx", "delay"), default="reset")
    p.add_argument("--spread", type=float, default=0.2,
                   help="spread of job durations around their route's typical time (log-normal sigma; 0: exact)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault dice and of the job durations")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_run_sandbox)


def _run_quickstart(args: argparse.Namespace) -> int:
    """An image and a video on a fresh sandbox: the whole paid flow, with receipts."""
    from pathlib import Path

    from .errors import fmt_usd
    from .sync import StableStudio

    if args.lab:
        return _launch_lab(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with StableStudio.sandbox(time_scale=args.time_scale, ledger=str(out / "ledger.sqlite3")) as ss:
        print(f"Sandbox at {ss.base_url}; throwaway wallet {ss.wallet.address} (testnet terms, no real money)")
        calls = [("nano-banana", "a red fox in fresh snow, golden hour", {"aspectRatio": "16:9"}),
                 ("veo-3.1-fast", "a paper boat sailing across a puddle", {"durationSeconds": "4"})]
        for model, prompt, params in calls:
            quote = ss.quote(model, prompt=prompt, **params)
            print(f"\n{model}: {prompt!r} costs {fmt_usd(quote.amount_usd)} (read from the unpaid 402)")
            job = ss.generate(model, prompt, **params)
            r = job.receipt
            tx = f", tx {r.transaction[:18]}… on {r.network_name}" if r and r.transaction else ""
            print(f"  paid: job {job.id}{tx}")
            result = wait_showing_progress(job)
            path = result.save(out)
            print(f"  {job.status}: {result.url}\n  saved to {path}")
        print(f"\nSpent {fmt_usd(ss.ledger.spent_usd())} of test USDC in {len(ss.ledger.payments())} payments; "
              f"receipts in {out / 'ledger.sqlite3'}.")
    print("Next: `stablestudio quickstart --lab` opens notebooks/quickstart.ipynb (Studio, gallery, compare).")
    return 0


def _launch_lab(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--ip=127.0.0.1", str(notebook)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # Jupyter refuses to run as root without it (containers, CI boxes)
    print("Starting JupyterLab on 127.0.0.1:", " ".join(cmd[2:]))
    return subprocess.call(cmd)


def add_quickstart(sub: Any) -> None:
    p = sub.add_parser("quickstart", help="pay for an image and a video on a local sandbox (no wallet needed)")
    p.add_argument("--out", default="stablestudio-quickstart", help="where to save results and the ledger")
    p.add_argument("--time-scale", type=float, default=0.05, help="sandbox speed (fraction of real typical times)")
    p.add_argument("--lab", action="store_true", help="open the quickstart notebook in JupyterLab instead")
    p.set_defaults(func=_run_quickstart)


def _client(args: argparse.Namespace) -> Any:
    from .sync import StableStudio

    if args.sandbox:
        return StableStudio.sandbox(time_scale=args.time_scale, network=args.network,
                                    prefer_network=args.prefer_network)
    return StableStudio(max_usd_per_request=args.max_usd, prefer_network=args.prefer_network)


def _param(text: str) -> tuple[str, Any]:
    """``key=value``; true/false become booleans (everything else is sent as the string it is)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, {"true": True, "false": False}.get(value.lower(), value)


def progress_line(job: Any, now: float) -> str:
    """What the card shows while a job runs: status, elapsed vs typical time."""
    from .status import VOCABULARY

    elapsed = max(0, int(now - job.created_at))
    typical = job.route.typical_s * job.scale
    label = VOCABULARY["job_status"].get(job.status, {}).get("label", job.status)
    shown = f"{elapsed // 60} min {elapsed % 60:02d} s" if elapsed >= 60 else f"{elapsed} s"
    expect = f"typically ~{typical:.0f} s" if typical < 90 else f"typically ~{typical / 60:.0f} min"
    return f"  {label} · {shown} · {expect}" + (" (taking longer than usual)" if elapsed > typical > 0 else "")


def wait_showing_progress(job: Any, out: Any = None, every_s: float = 1.0) -> Any:
    """``job.wait()`` that says how it is going: one line rewritten in place on a terminal; on a
    pipe, a line when the status changes (and every 30 s)."""
    import asyncio
    import concurrent.futures
    import time

    out = out or sys.stderr
    tty = out.isatty()
    pending = asyncio.run_coroutine_threadsafe(job.aio.wait(), job.loop)
    last, printed_at = None, 0.0
    while True:
        try:
            result = pending.result(timeout=every_s)
            break
        except concurrent.futures.TimeoutError:
            now = time.time()
            line = progress_line(job.aio, now)
            if tty:
                print("\r" + line.ljust(72), end="", file=out, flush=True)
            elif job.aio.status != last or now - printed_at >= 30:
                print(line, file=out, flush=True)
                last, printed_at = job.aio.status, now
        except BaseException:
            if tty:
                print(file=out)
            raise
    if tty:
        print("\r" + progress_line(job.aio, job.aio.finished_at or time.time()).ljust(72), file=out, flush=True)
    return result


def _run_generate(args: argparse.Namespace) -> int:
    from .errors import ConfirmationRequired, StableStudioError, fmt_usd

    params = dict(args.param or [])
    with _client(args) as ss:
        try:
            quote = ss.quote(args.model, prompt=args.prompt, **({"image": args.image} if args.image else {}),
                             **params)
            print(f"{quote.route}: {fmt_usd(quote.total_usd)} on {quote.network_name}")
            job = ss.generate(args.model, args.prompt, image=args.image, confirm=args.confirm, **params)
            r = job.receipt
            print(f"paid: job {job.id}" + (f", tx {r.transaction}" if r and r.transaction else ""))
            result = wait_showing_progress(job)
        except ConfirmationRequired as e:
            print(f"ConfirmationRequired: this costs {fmt_usd(e.price_usd)}, above the confirmation threshold of "
                  f"{fmt_usd(e.threshold_usd)}. Nothing was signed. Run it again with --confirm to pay it.",
                  file=sys.stderr)
            return 1
        except StableStudioError as e:
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(result.url)
        if args.out:
            print(f"saved to {result.save(args.out)}")
    return 0


def _run_jobs(args: argparse.Namespace) -> int:
    with _client(args) as ss:
        for job in ss.jobs(limit=args.limit, status=args.status):
            url = job.result.url if job.result else ""
            print(f"{job.id}  {job.route.id:<26} {job.status:<10} {url}")
    return 0


def _run_ledger(args: argparse.Namespace) -> int:
    from .errors import fmt_usd
    from .ledger import Ledger

    led = Ledger(args.path) if args.path else Ledger()
    print(f"ledger {led.path}")
    print(f"spent today {fmt_usd(led.spent_today_usd())}, in all {fmt_usd(led.spent_usd())}")
    for route, usd_ in led.spent_by_route_usd().items():
        print(f"  {route:<28} {fmt_usd(usd_)}")
    for row in led.receipts()[-args.limit:]:
        print(f"{row['payment_status']:<9} {fmt_usd(row['amount_usd']):>7} {row['route'] or row['kind']:<26} "
              f"{row['job_id'] or '':<26} {row['job_status'] or '':<9} {row['network_name'] or '':<13} "
              f"{row['explorer_url'] or row['tx'] or ''}")
    if args.csv:
        print(f"CSV written to {led.to_csv(args.csv)}")
    return 0


def _client_options(p: Any) -> None:
    p.add_argument("--sandbox", action="store_true", help="use a fresh local sandbox and a throwaway wallet")
    p.add_argument("--time-scale", type=float, default=0.1, help="sandbox speed (with --sandbox)")
    p.add_argument("--max-usd", type=float, default=DEFAULT_MAX_USD_PER_REQUEST,
                   help=f"refuse to pay more than this per request (default ${DEFAULT_MAX_USD_PER_REQUEST:.2f})")
    p.add_argument("--prefer-network", default=None,
                   help="when the service offers several networks this wallet can pay on: base, solana, …")
    p.add_argument("--network", action="append", choices=("base-sepolia", "solana-devnet", "tempo-testnet"),
                   default=None, help="with --sandbox: a network the sandbox takes (repeatable)")


def add_generate(sub: Any) -> None:
    p = sub.add_parser("generate", help="pay for one generation, wait for it and print the result URL")
    p.add_argument("model", help="a model (nano-banana, veo-3.1, …) or a route id (wan-2.6/t2v)")
    p.add_argument("prompt")
    p.add_argument("-p", "--param", type=_param, action="append", metavar="KEY=VALUE",
                   help="a route parameter, e.g. -p aspectRatio=16:9 (repeatable)")
    p.add_argument("--image", help="a local image or URL: image to video")
    p.add_argument("--confirm", action="store_true", help="consent to pay above the confirmation threshold")
    p.add_argument("--out", help="save the result into this file or directory")
    _client_options(p)
    p.set_defaults(func=_run_generate)


def add_jobs(sub: Any) -> None:
    p = sub.add_parser("jobs", help="list this wallet's jobs on the service")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--status", choices=("pending", "processing", "loading", "complete", "failed"))
    _client_options(p)
    p.set_defaults(func=_run_jobs)


def add_ledger(sub: Any) -> None:
    p = sub.add_parser("ledger", help="what was paid: totals, per route, the latest receipts")
    p.add_argument("--path", help="a ledger file (default: $STABLESTUDIO_HOME/ledger.sqlite3)")
    p.add_argument("--limit", type=int, default=20, help="how many receipts to list")
    p.add_argument("--csv", help="also write every receipt to this CSV file")
    p.set_defaults(func=_run_ledger)


COMMANDS: list[Callable[[Any], None]] = [add_sandbox, add_quickstart, add_generate, add_jobs, add_ledger]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stablestudio",
                                     description="StableStudio widgets: pay-per-generation images and videos.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # bad option values (Faults validates them)
        parser.error(str(e))
        return 2  # pragma: no cover  (parser.error exits)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
