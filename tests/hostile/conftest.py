"""The hostile tier: our real client, over real HTTP, against a malicious server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import httpcore
import httpx
import pytest

from stablestudio_widgets import AsyncStableStudio, Wallet
from stablestudio_widgets.ledger import Ledger
from stablestudio_widgets.sockets import Backend

from .server import Hostile, Running

FAST = 0.002  # the client's time scale: polls and back-offs in milliseconds


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def hostile():
    with Running(Hostile()) as h:
        yield h


class _Loopback(httpcore.AsyncNetworkBackend):
    """Resolves every host name to the hostile server: the client believes it talks to that host."""

    def __init__(self, port: int):
        self.port, self.inner = port, Backend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_tcp("127.0.0.1", self.port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def posing_as(hostile: Hostile) -> httpx.AsyncHTTPTransport:
    """A real HTTP transport whose every connection lands on the hostile server (a DNS that lies)."""
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(network_backend=_Loopback(int(hostile.url.rsplit(":", 1)[1])))
    return transport


@pytest.fixture
def client(hostile, tmp_path):
    """Clients of the hostile server, each with its own ledger in tmp_path."""
    made: list[AsyncStableStudio] = []

    def make(base_url: str | None = None, **kw: Any) -> AsyncStableStudio:
        kw.setdefault("wallet", Wallet.generate())
        kw.setdefault("ledger", Ledger(tmp_path / f"ledger{len(made)}.sqlite3"))
        kw.setdefault("time_scale", FAST)
        kw.setdefault("max_retries", 1)
        c = AsyncStableStudio(base_url or hostile.url, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.ledger.close()


async def outcome(coro: Any) -> BaseException | None:
    """What a call raised (None if it returned): the tests assert what the server or the disk saw
    first, and only then the error the user got."""
    try:
        await coro
    except Exception as e:  # noqa: BLE001 - the caller asserts the type after the outcome
        return e
    return None


