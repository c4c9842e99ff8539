"""The client's own transport: httpx's pool on asyncio sockets (``stablestudio_widgets.sockets``).

Every other test already sends through it (it is the default); these hold the edges a sandbox
never shows: a server that hangs up an idle connection, one that never answers, never reads, resets
mid-answer, and TLS with a certificate the client does or does not trust. Small raw servers on
127.0.0.1 count the connections they accept, so reuse is asserted, not assumed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import trustme

from stablestudio_widgets.service import LIMITS, default_transport, tls_context
from stablestudio_widgets.sockets import AsyncioTransport, Stream

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Served:
    def __init__(self) -> None:
        self.connections = 0
        self.url = ""


@asynccontextmanager
async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Served]:
    served = Served()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.connections += 1
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    served.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield served
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return await reader.readexactly(length)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n" % (len(body), extra) + body


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request on the connection with the size and SHA-256 of its body."""
    while True:
        body = await read_request(reader)
        writer.write(answer(b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())))
        await writer.drain()


def client(transport: httpx.AsyncBaseTransport | None = None, **timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or default_transport(),
                             timeout=httpx.Timeout(10.0, **timeout))


async def until_true(cond: Callable[[], bool], seconds: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + seconds
    while not cond():
        assert asyncio.get_running_loop().time() < end, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_requests_share_one_connection_on_asyncio_streams():
    async with serve(keep_answering) as s, client() as http:
        first = await http.post(s.url, content=b"abc")
        second = await http.post(s.url, content=b"abcd")
    assert (first.text.split()[0], second.text.split()[0]) == ("3", "4")
    assert isinstance(first.extensions["network_stream"], Stream)  # not httpx's anyio default
    assert s.connections == 1


async def test_a_connection_the_server_hung_up_is_not_reused():
    """The keep-alive race: the server closes an idle connection; the next request must open a new
    one instead of failing with "Server disconnected" on the dead one."""
    async def once_then_close(reader, writer):
        await read_request(reader)
        writer.write(answer(b"ok"))  # no "connection: close": the client keeps it for reuse
        await writer.drain()

    async with serve(once_then_close) as s, client() as http:
        first = await http.get(s.url)
        stream = first.extensions["network_stream"]
        await until_true(lambda: stream.get_extra_info("is_readable"))  # the client saw the EOF
        second = await http.get(s.url)
    assert (first.text, second.text) == ("ok", "ok")
    assert s.connections == 2


async def test_big_bodies_both_ways_arrive_whole():
    """Past both flow-control marks: the socket's write buffer (the server reads slowly) and our
    read buffer's high-water mark (the server sends 8 MiB at once)."""
    upload, download = os.urandom(8 << 20), os.urandom(8 << 20)

    async def slow_reader_big_writer(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
                      .split(b":")[1])
        got = bytearray()
        while len(got) < length:
            got += await reader.read(16384)
            await asyncio.sleep(0)
        writer.write(answer(download, b"x-sha: %s\r\n" % hashlib.sha256(got).hexdigest().encode()))
        await writer.drain()

    async with serve(slow_reader_big_writer) as s, client() as http:
        r = await http.post(s.url, content=upload)
    assert r.headers["x-sha"] == hashlib.sha256(upload).hexdigest()
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(download).digest()


async def test_a_server_that_never_answers_is_a_read_timeout():
    async def silent(reader, writer):
        await read_request(reader)
        await reader.read()  # until the client gives up

    async with serve(silent) as s, client(read=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(s.url)


async def test_a_server_that_never_reads_is_a_write_timeout():
    async def deaf(reader, writer):
        await asyncio.Event().wait()  # accepts, never reads: the socket buffers fill up

    async with serve(deaf) as s, client(write=0.3) as http:
        with pytest.raises(httpx.WriteTimeout):
            await http.post(s.url, content=b"x" * (64 << 20))


async def test_a_closed_port_is_a_connect_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_a_server_that_hangs_up_without_answering_is_a_protocol_error():
    async def hang_up(reader, writer):
        await read_request(reader)

    async with serve(hang_up) as s, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(s.url)


async def test_a_reset_in_the_middle_of_an_answer_is_a_transport_error():
    async def reset(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        writer.transport.abort()

    async with serve(reset) as s, client() as http:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await http.get(s.url)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


async def test_tls_to_a_trusted_certificate_works_and_reuses_its_connection(ca):
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with serve(keep_answering, tls=server_tls(ca)) as s, \
            client(AsyncioTransport(verify=trusting, limits=LIMITS)) as http:
        first = await http.post(s.url, content=b"secret")
        second = await http.post(s.url, content=b"more")
    assert first.text.split()[0] == "6" and second.text.split()[0] == "4"
    assert first.extensions["network_stream"].get_extra_info("ssl_object").version().startswith("TLS")
    assert s.connections == 1


async def test_tls_to_an_untrusted_certificate_is_refused(ca):
    async with serve(keep_answering, tls=server_tls(ca)) as s, \
            client(AsyncioTransport(verify=tls_context(), limits=LIMITS)) as http:
        with pytest.raises(httpx.ConnectError, match="(?i)certificate"):
            await http.get(s.url)


async def test_a_server_that_never_starts_tls_is_a_connect_timeout():
    async def mute(reader, writer):
        await reader.read()

    async with serve(mute) as s, client(connect=0.3) as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(s.url.replace("http://", "https://"))
