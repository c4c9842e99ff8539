"""Dropping a connection with no HTTP response at all (the ``reset`` fault).

An ASGI app cannot normally do this: a server answers 500 when the app sends nothing. The outer
ASGI wrapper (:func:`keep_raw_send`) therefore stashes the server's own ``send`` in the scope;
under uvicorn that is a bound method of the request cycle, which holds the socket's asyncio
transport. :class:`DropConnection` sets ``SO_LINGER`` to 0 and aborts that transport, so the
peer sees a TCP reset before any byte of a response (httpx raises ``ReadError`` /
``RemoteProtocolError``, both ``httpx.TransportError``). Where there is no such transport (other
servers, httpx's ``ASGITransport``), it starts a response and raises :class:`ConnectionDropped`,
which servers turn into a truncated response and ``ASGITransport`` hands to the caller (it is an
``httpx.RemoteProtocolError``): still a transport error, never a clean status.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import httpx

RAW_SEND = "stablestudio.raw_send"


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised (only in the fallback) to abort a response after it started; in-process callers
    see the transport error a real dropped connection gives them."""


def keep_raw_send(app: Any) -> Any:
    """Wrap an ASGI app so that responses can reach the server's own ``send``."""

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await app(scope, receive, send)

    return wrapper


def _transport(scope: dict[str, Any]) -> Any:
    raw = scope.get(RAW_SEND)
    cycle = getattr(raw, "__self__", None)
    transport = getattr(cycle, "transport", None)
    return transport if hasattr(transport, "abort") else None


class DropConnection:
    """An ASGI "response" that kills the connection instead of answering."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        transport = _transport(scope)
        if transport is None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"1000")]})
            raise ConnectionDropped("sandbox fault: connection dropped after settlement")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()
        # Let the server notice the lost connection before the app returns, so it does not try
        # to send its own "returned without a response" 500 on a dead socket.
        for _ in range(3):
            await asyncio.sleep(0)
