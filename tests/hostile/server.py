"""A small, configurable, malicious StableStudio on 127.0.0.1.

It speaks just enough of the protocol to be paid and polled, and answers whatever a test sets: any
402 terms, any answer to a paid request, any job id, params, result URL or media, any sign-in
challenge. It records every request it receives, so a test asserts what actually reached the
attacker — amounts and validity of the authorizations it got (decoded from PAYMENT-SIGNATURE),
the sign-in messages it got, the bytes uploaded to it — never just which exception was raised.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stablestudio_widgets.catalog import load

CATALOG = load()
SEPOLIA = "eip155:84532"
SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
BASE = "eip155:8453"
BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO = "0x1111111111111111111111111111111111111111"


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (250, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def payment(self) -> dict[str, Any] | None:
        """The decoded PAYMENT-SIGNATURE this request carried (what the attacker could settle)."""
        h = self.headers.get("payment-signature")
        return json.loads(base64.b64decode(h)) if h else None

    @property
    def authorization(self) -> dict[str, Any] | None:
        p = self.payment
        return p["payload"]["authorization"] if p else None

    @property
    def sign_in(self) -> dict[str, Any] | None:
        h = self.headers.get("sign-in-with-x")
        return json.loads(base64.b64decode(h)) if h else None


@dataclass
class Hostile:
    """The attacker's knobs. Every handler may be replaced by a test."""

    url: str = ""
    received: list[Seen] = field(default_factory=list)
    network: str = SEPOLIA
    asset: str = SEPOLIA_USDC
    pay_to: str = PAY_TO
    max_timeout_s: int = 300
    prices: dict[str, int] = field(default_factory=dict)  # route id (or "upload") -> atomic amount asked
    job_ids: list[str] = field(default_factory=list)  # handed out in order; then cm-style ids
    # What a paid request gets: None = a job (200), else a callable(seen) -> Response.
    on_paid: Callable[[Seen], Response] | None = None
    # What GET /api/jobs/{id} answers (the job as JSON), and the listing of GET /api/jobs.
    job: Callable[[str], dict[str, Any]] | None = None
    listed: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # /media/<name> -> (bytes, content type)
    media_handler: Callable[[Request], Awaitable[Response]] | None = None  # replaces the table above
    challenge: dict[str, Any] | None = None  # SIWX info sent (402) to any sign-in it has not answered yet
    _answered: set[str] = field(default_factory=set)
    _count: int = 0

    # --- what the attacker got -------------------------------------------------------------------
    def paid(self) -> list[Seen]:
        return [s for s in self.received if s.payment is not None]

    def amounts(self) -> list[int]:
        return [int(s.authorization["value"]) for s in self.paid()]

    def sign_ins(self) -> list[dict[str, Any]]:
        return [s.sign_in for s in self.received if s.sign_in is not None]

    # --- terms -----------------------------------------------------------------------------------
    def requirement(self, key: str, body: bytes = b"") -> dict[str, Any]:
        """The terms asked for ``key``: a price set by the test, else the honest one for the body."""
        amount = self.prices.get(key)
        if amount is None and key == "upload":
            amount = CATALOG.upload["price"]
        elif amount is None:
            amount = CATALOG.route(key).price_atomic(json.loads(body or b"{}"))
        return {"scheme": "exact", "network": self.network, "amount": str(amount), "asset": self.asset,
                "payTo": self.pay_to, "maxTimeoutSeconds": self.max_timeout_s,
                "extra": {"name": "USDC", "version": "2"}}

    def payment_required(self, key: str, error: str | None = None, seen: Seen | None = None) -> Response:
        body = {"x402Version": 2, "resource": {"url": self.url},
                "accepts": [self.requirement(key, seen.body if seen else b"")]}
        if error:
            body["error"] = error
        return Response(b"", status_code=402, headers={"PAYMENT-REQUIRED": b64(body)},
                        media_type="application/json")

    def next_id(self) -> str:
        self._count += 1
        return self.job_ids.pop(0) if self.job_ids else f"cmhostile{self._count:016d}"

    # --- handlers --------------------------------------------------------------------------------
    async def _record(self, request: Request) -> Seen:
        seen = Seen(request.method, request.url.path, request.url.query, dict(request.headers), await request.body())
        self.received.append(seen)
        return seen

    async def generate(self, request: Request) -> Response:
        seen = await self._record(request)
        key = request.path_params["route"]
        if seen.payment is None:
            return self.payment_required(key, seen=seen)
        if self.on_paid is not None:
            return self.on_paid(seen)
        return self.accept(seen)

    def accept(self, seen: Seen) -> Response:
        """Take the payment: a new job and a settlement receipt."""
        receipt = {"success": True, "transaction": "0x" + "ab" * 32, "network": self.network,
                   "payer": seen.authorization["from"], "amount": seen.authorization["value"]}
        return JSONResponse({"jobId": self.next_id(), "status": "pending", "success": True},
                            headers={"PAYMENT-RESPONSE": b64(receipt)})

    async def upload(self, request: Request) -> Response:
        seen = await self._record(request)
        if seen.payment is None:
            return self.payment_required("upload")
        return JSONResponse({"uploadId": "up1", "clientToken": "tok", "pathname": "uploads/x.png"})

    async def blob(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"url": f"{self.url}/media/uploaded.png"})

    async def confirm(self, request: Request) -> Response:
        seen = await self._record(request)
        return JSONResponse({"upload": {"blobUrl": json.loads(seen.body)["blobUrl"]}})

    def _challenged(self, seen: Seen) -> Response | None:
        """A sign-in the attacker has not answered yet gets its challenge instead."""
        if self.challenge is None or seen.path in self._answered:
            return None
        self._answered.add(seen.path)
        info = {"domain": self.url.split("//", 1)[1], "uri": f"{self.url}{seen.path}", "version": "1",
                "chainId": self.network, "type": "eip191", "nonce": "a1b2c3d4e5f6a7b8", "issuedAt": _iso(time.time()),
                "expirationTime": _iso(time.time() + 300), "statement": "Sign in to verify your wallet identity",
                **self.challenge}
        body = {"x402Version": 2, "error": "SIWX authentication required", "resource": {"url": self.url},
                "accepts": [], "extensions": {"sign-in-with-x": {
                    "info": info, "supportedChains": [{"chainId": self.network, "type": "eip191"}]}}}
        return JSONResponse(body, status_code=402, headers={"PAYMENT-REQUIRED": b64(body)})

    async def job_status(self, request: Request) -> Response:
        seen = await self._record(request)
        challenged = self._challenged(seen)
        if challenged is not None:
            return challenged
        job_id = request.path_params["job_id"]
        if self.job is not None:
            return JSONResponse(self.job(job_id))
        return JSONResponse({"id": job_id, "status": "complete", "result": {"imageUrl": f"{self.url}/media/ok.png"}})

    async def jobs(self, request: Request) -> Response:
        seen = await self._record(request)
        return self._challenged(seen) or JSONResponse({"jobs": self.listed})

    async def media_file(self, request: Request) -> Response:
        await self._record(request)
        if self.media_handler is not None:
            return await self.media_handler(request)
        data, kind = self.media.get(request.path_params["name"], (png_bytes(), "image/png"))
        return Response(data, media_type=kind)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/api/generate/{route:path}", self.generate, methods=["POST"]),
            Route("/api/upload", self.upload, methods=["POST"]),
            Route("/api/upload/confirm", self.confirm, methods=["POST"]),
            Route("/api/blob/", self.blob, methods=["PUT"]),
            Route("/api/jobs", self.jobs, methods=["GET"]),
            Route("/api/jobs/{job_id:path}", self.job_status, methods=["GET", "DELETE"]),
            Route("/media/{name:path}", self.media_file, methods=["GET"]),
            # A client that lets ``..`` in a job id climb out of /api/jobs/ lands here: still the attacker's.
            Route("/{job_id:path}", self.job_status, methods=["GET"]),
        ])


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


class Running:
    """The hostile app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, hostile: Hostile):
        self.hostile = hostile
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        hostile.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(hostile.app(), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Hostile:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "the hostile server did not start"
            time.sleep(0.01)
        return self.hostile

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
