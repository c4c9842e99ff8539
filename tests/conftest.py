"""Shared fixtures: a real sandbox on 127.0.0.1 and clients that talk to it over real HTTP."""

from __future__ import annotations

import contextlib
import queue
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from stablestudio_widgets import AsyncStableStudio, Wallet
from stablestudio_widgets.ledger import Ledger
from stablestudio_widgets.sandbox import Faults, Sandbox

TIME_SCALE = 0.002  # a 5 s image takes 10 ms; a 3.5 min video under half a second


def until(cond: Callable[[], Any], seconds: float = 30.0) -> None:
    """Wait for a condition reached asynchronously (a widget's cards reach it ~50 ms after a job
    changes; a server carries on after a client gave up): a deadline, never a sleep."""
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Never touch the user's real ledger or environment."""
    monkeypatch.setenv("STABLESTUDIO_HOME", str(tmp_path / "home"))
    for var in ("STABLESTUDIO_PRIVATE_KEY", "STABLESTUDIO_KEYSTORE", "STABLESTUDIO_BASE_URL",
                "STABLESTUDIO_SOLANA_KEY"):
        monkeypatch.delenv(var, raising=False)


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real HTTP transport, counting what actually goes on the wire (method, path, paid?)."""

    def __init__(self):
        super().__init__()
        self.sent: Counter = Counter()
        self.log: list[tuple[str, str, bool]] = []

    async def handle_async_request(self, request):
        paid = "payment-signature" in request.headers
        self.log.append((request.method, request.url.path, paid))
        self.sent[(request.method, request.url.path)] += 1
        return await super().handle_async_request(request)

    @property
    def total(self) -> int:
        return len(self.log)

    def paid_posts(self) -> list[str]:
        return [p for m, p, paid in self.log if paid]


class Recorder(httpx.AsyncHTTPTransport):
    """The real transport, keeping (method, path, ``header`` or None) of every request: the
    payment header (x402's PAYMENT-SIGNATURE, MPP's Authorization) and what carried it."""

    def __init__(self, header: str = "payment-signature"):
        super().__init__()
        self.header = header
        self.log: list[tuple[str, str, str | None]] = []

    async def handle_async_request(self, request):
        self.log.append((request.method, request.url.path, request.headers.get(self.header)))
        return await super().handle_async_request(request)

    def paid(self) -> list[str]:
        """The payment headers sent to the API (not a chain's RPC, not a job poll's sign-in)."""
        return [h for _, p, h in self.log if h and p.startswith("/api/") and not p.startswith("/api/jobs")]


@pytest.fixture
def sandbox():
    with Sandbox(time_scale=TIME_SCALE, faults=Faults(seed=7)) as sb:
        yield sb


@pytest.fixture
def transport():
    return CountingTransport()


def clients(sandbox: Sandbox, tmp_path, **defaults: Callable[[Sandbox], Any]):
    """A maker of clients on ``sandbox`` (or on ``sb=``), each with a new wallet and its own ledger
    in tmp_path; ``defaults`` give other keywords from the sandbox. Yields the maker (a fixture's body)."""
    made: list[AsyncStableStudio] = []

    def make(sb: Sandbox | None = None, **kw) -> AsyncStableStudio:
        sb = sb or sandbox
        for name, default in defaults.items():
            if name not in kw:
                kw[name] = default(sb)
        kw.setdefault("wallet", Wallet.generate())
        kw.setdefault("ledger", Ledger(tmp_path / f"ledger{len(made)}.sqlite3"))
        kw.setdefault("time_scale", TIME_SCALE)
        c = AsyncStableStudio(sb.url, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        # Closing needs a loop; the transports close with the process otherwise.
        c.ledger.close()


@pytest.fixture
def make_client(sandbox, transport, tmp_path):
    """Clients on the sandbox; each keeps a ledger in tmp_path and counts its requests."""
    yield from clients(sandbox, tmp_path, transport=lambda _sb: transport)


@contextlib.contextmanager
def sandbox_process(*flags: str) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """``stablestudio sandbox --port 0 <flags>`` in its own process: yields it, its banner and its URL
    once it listens (the banner ends with "Ctrl-C"); terminates it afterwards if it still runs."""
    proc = subprocess.Popen([sys.executable, "-m", "stablestudio_widgets", "sandbox", "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        banner = ""
        while "Ctrl-C" not in banner:
            banner += lines.get(timeout=60)
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner).group(1)  # type: ignore[union-attr]
        yield proc, banner, url
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
