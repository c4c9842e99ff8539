"""httpcore's sockets on plain asyncio, for the transport the client makes itself.

httpx reaches asyncio through httpcore's anyio backend. Before every request httpcore asks each idle
pooled connection whether its peer has hung up (``is_readable``), and on anyio that is a chain of
attribute lookups and a ``poll()`` system call per connection: with a few jobs running at once it
was most of a request's client CPU. An asyncio ``Protocol`` already knows what that check asks
(bytes waiting, the peer's EOF), so here it is two attribute reads, and reads and writes skip
anyio's wrappers. httpcore's own connection pool, HTTP/1.1 parser and TLS settings are used as they
are; only the bytes-in, bytes-out layer (httpcore's public ``AsyncNetworkBackend``) is ours.

A transport passed as ``transport=`` is used as it is, and proxies from the environment keep
httpx's own transports.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

HIGH_WATER = 1 << 20  # stop reading from the socket while this much is buffered and unread
HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305's recommended head start for the first address (anyio's too)


class _Connection(asyncio.Protocol):
    """What arrived on one socket and whether it can still be written to."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.write_paused = False
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close our side too: HTTP/1.1 never half-closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof, self.error = True, exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    def take(self, max_bytes: int) -> bytes:
        buf = self.buffer
        if len(buf) <= max_bytes:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:max_bytes])
            del buf[:max_bytes]
        if len(buf) <= HIGH_WATER // 2 and self.transport is not None and not self.eof:
            self.transport.resume_reading()  # a no-op unless paused
        return data

    async def until(self, name: str, timeout: float | None) -> None:
        """Wait for ``resume_writing`` / ``data_received`` (``name``: "_writable" / "_readable")."""
        waiter = asyncio.get_running_loop().create_future()
        setattr(self, name, waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            setattr(self, name, None)


class Stream(httpcore.AsyncNetworkStream):
    """One connection as httpcore sees it."""

    def __init__(self, connection: _Connection, transport: asyncio.Transport):
        self._c, self._t = connection, transport

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        c = self._c
        if not c.buffer and not c.eof:
            try:
                await c.until("_readable", timeout)
            except asyncio.TimeoutError:
                raise httpcore.ReadTimeout(f"no bytes from the server in {timeout} s") from None
        if c.buffer:
            return c.take(max_bytes)
        if c.error is not None:
            raise httpcore.ReadError(f"{type(c.error).__name__}: {c.error}")
        return b""  # the server closed the connection: httpcore turns this into its own error

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        c = self._c
        if c.eof or self._t.is_closing():
            raise httpcore.WriteError(f"the connection is closed ({c.error or 'by the server'})")
        self._t.write(buffer)
        while c.write_paused and not c.eof:
            try:
                await c.until("_writable", timeout)
            except asyncio.TimeoutError:
                raise httpcore.WriteTimeout(f"the server took no bytes for {timeout} s") from None
        if c.error is not None:
            raise httpcore.WriteError(f"{type(c.error).__name__}: {c.error}")

    async def aclose(self) -> None:
        self._t.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> Stream:
        loop = asyncio.get_running_loop()
        try:
            tls = await asyncio.wait_for(
                loop.start_tls(self._t, self._c, ssl_context, server_hostname=server_hostname), timeout)
        except asyncio.TimeoutError:
            self._t.close()
            raise httpcore.ConnectTimeout(f"no TLS handshake in {timeout} s") from None
        except (OSError, ssl.SSLError) as e:  # certificate refused, reset during the handshake, ...
            self._t.close()
            raise httpcore.ConnectError(f"{type(e).__name__}: {e}") from e
        self._c.transport = tls
        return Stream(self._c, tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # asked of every idle connection before each request
            return self._c.eof or bool(self._c.buffer)
        key = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername",
               "socket": "socket"}.get(info)
        return self._t.get_extra_info(key) if key else None


class Backend(httpcore.AsyncNetworkBackend):
    """Opens connections for httpcore's pool with ``loop.create_connection``."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> Stream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        return await self._open(loop.create_connection(
            _Connection, host, port, local_addr=local, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY),
            timeout, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> Stream:
        loop = asyncio.get_running_loop()
        return await self._open(loop.create_unix_connection(_Connection, path), timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @staticmethod
    async def _open(connecting: Any, timeout: float | None, socket_options: Iterable[Any] | None) -> Stream:
        try:
            transport, connection = await asyncio.wait_for(connecting, timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection in {timeout} s") from None
        except OSError as e:  # refused, unreachable, no such host
            raise httpcore.ConnectError(f"{type(e).__name__}: {e}") from e
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():  # asyncio has already set TCP_NODELAY
            sock.setsockopt(*option)
        return Stream(connection, transport)


class AsyncioTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on :class:`Backend` (HTTP/1.1, no proxy: the client
    mounts httpx's own transports for proxies from the environment)."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits):
        # httpx's own __init__ only builds the pool this replaces (sending, closing and the async
        # context all go through ``_pool``), so it is not called: no pool is built to be dropped.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=Backend())
