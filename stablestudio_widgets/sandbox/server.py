"""The sandbox's HTTP API: StableStudio's routes, bodies and answers, served by Starlette.

Paid routes (``/api/generate/{model}/{operation}``, ``/api/upload``) validate the body first
(an invalid request gets a 400 and is never charged), then answer 402 with ``PAYMENT-REQUIRED``
or verify ``PAYMENT-SIGNATURE`` and settle. Between reading the body and settling there is no
``await``: the check-and-mark of the nonce cannot interleave with another request's.
Job and upload-confirm routes need a SIGN-IN-WITH-X header; a job is visible only to its payer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidParams
from . import jobs, payments, signin
from .drop import DropConnection, keep_raw_send
from .payments import Payment, PaymentInvalid
from .state import Blob, State, Upload
from .wire import alnum, encode_header, iso, job_id

Handler = Callable[[Request], Awaitable[Response]]
UPLOAD_TTL_S = 3600
_ERROR_BODIES = {429: "Too many requests", 500: "Internal server error", 502: "Bad gateway",
                 503: "Service unavailable"}
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _json_error(status: int, message: str, field: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if status == 400:
        body["field"] = field
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status)


def _json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`InvalidParams` saying why not."""
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidParams(f"The request body is not valid JSON ({e}).") from None
    if not isinstance(body, dict):
        raise InvalidParams("The request body must be a JSON object of parameters.")
    return body


def _base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


class Api:
    """Request handlers over one :class:`State`."""

    def __init__(self, state: State):
        self.state = state
        self.tasks: set[asyncio.Task[None]] = set()

    # -- edge ----------------------------------------------------------------------------------

    def edge(self, handler: Handler) -> Handler:
        """Injected transient errors, decided before anything else (so they never settle)."""

        async def wrapped(request: Request) -> Response:
            status = self.state.dice.error()
            if status is None:
                return await handler(request)
            headers = {}
            message = _ERROR_BODIES[status]
            if status in (429, 503):
                headers["Retry-After"] = str(int(self.state.faults.retry_after_s))
                message += f"; retry after {headers['Retry-After']}s"
            return JSONResponse({"error": message}, status_code=status, headers=headers)

        return wrapped

    # -- payment -------------------------------------------------------------------------------

    def _402(self, url: str, description: str, accepts: list[dict[str, Any]], error: str | None) -> Response:
        required = payments.payment_required(url, description, accepts, error)
        return JSONResponse({}, status_code=402, headers={"PAYMENT-REQUIRED": encode_header(required)})

    async def _paid(self, request: Request, route_key: str, amount: int, description: str,
                    make: Callable[[Payment], tuple[dict[str, Any], dict[str, Any]]]) -> Response:
        """The x402 exchange for one paid request; ``make`` creates what was paid for.

        Synchronous from the start to the settlement (callers have already read the body).
        """
        state = self.state
        accepts = [payments.requirement(amount, state.merchant, omit_extra=state.omit_extra)]
        url = str(request.url)
        header = request.headers.get("payment-signature")
        if not header:
            return self._402(url, description, accepts, None)
        try:
            payment = payments.verify(header, accepts)
            if state.is_used(payment):
                original = state.replayed(payment, route_key)
                return JSONResponse(original.body,
                                    headers={"PAYMENT-RESPONSE": encode_header(original.headers)})
            payments.check_window(payment, time.time())
            body, receipt = state.settle(payment, route_key, lambda: make(payment))
        except PaymentInvalid as e:
            return self._402(url, description, accepts, e.reason)
        # Settled: from here on the payment has moved, whatever happens to this answer.
        drop = state.dice.drop()
        if drop == "reset":
            return DropConnection()  # type: ignore[return-value]
        if drop == "5xx":
            return JSONResponse({"error": "Bad gateway: the upstream did not answer in time"},
                                status_code=502)
        if drop == "delay":
            await asyncio.sleep(state.faults.delay_s)
        return JSONResponse(body, headers={"PAYMENT-RESPONSE": encode_header(receipt)})

    # -- generate ------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        route_id = f"{request.path_params['model']}/{request.path_params['operation']}"
        route = self.state.catalog.routes.get(route_id)
        if route is None:
            return _json_error(404, f"Unknown route {route_id!r}: no POST /api/generate/{route_id} here.")
        raw = await request.body()
        try:
            params = route.validate(_json_body(raw))
        except InvalidParams as e:
            return _json_error(400, str(e), e.field, allowed=e.allowed)

        def make(payment: Payment) -> tuple[dict[str, Any], dict[str, Any]]:
            job = jobs.Job(id=job_id(), route=route, params=params, payer=payment.payer,
                           base_url=_base_url(request), created_at=time.time(),
                           duration_s=route.typical_s * self.state.time_scale,
                           fate_error=self.state.dice.job_error(), inputs=self._inputs(params, request))
            self.state.add_job(job)
            task = asyncio.get_running_loop().create_task(jobs.run(job, self.state.executor))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return ({"type": job.type, "jobId": job.id, "status": "pending", "success": True},
                    {"job_id": job.id})

        return await self._paid(request, route_id, route.price_atomic(params),
                                f"{route.label} - {route.operation}", make)

    def _inputs(self, params: dict[str, Any], request: Request) -> list[bytes]:
        """Bytes of input images that are this sandbox's own blobs (external URLs: never fetched)."""
        port = (request.scope.get("server") or ("", None))[1]
        hosts = {request.headers.get("host", ""), *(f"{h}:{port}" for h in _LOOPBACK)}
        urls: list[str] = []
        for name in jobs.INPUT_PARAMS:
            value = params.get(name)
            urls += value if isinstance(value, list) else [value] if value else []
        found = []
        for url in urls:
            parts = urlsplit(url)
            if parts.netloc in hosts and parts.path.startswith("/blob/"):
                blob = self.state.blobs.get(unquote(parts.path[len("/blob/"):]))
                if blob is not None:
                    found.append(blob.data)
        return found

    # -- uploads -------------------------------------------------------------------------------

    def _upload_params(self, raw: bytes) -> tuple[str, str]:
        body = _json_body(raw)
        spec = self.state.catalog.upload["params"]
        unknown = [k for k in body if k not in spec]
        if unknown:
            raise InvalidParams(f"/api/upload has no parameter {unknown[0]!r}; it takes "
                                f"{', '.join(spec)}.", field=unknown[0], allowed=list(spec))
        filename, content_type = body.get("filename"), body.get("contentType")
        if not isinstance(filename, str) or not filename.strip() or len(filename) > 255 \
                or any(c in filename for c in "/\\\x00") or filename in (".", ".."):
            raise InvalidParams("/api/upload needs 'filename': a plain file name (no slashes, at most "
                                "255 characters).", field="filename")
        allowed = spec["contentType"]["values"]
        if content_type not in allowed:
            raise InvalidParams(f"/api/upload: contentType={content_type!r} is not allowed; allowed: "
                                f"{', '.join(allowed)}.", field="contentType", allowed=allowed)
        return filename, content_type

    async def upload(self, request: Request) -> Response:
        raw = await request.body()
        try:
            filename, content_type = self._upload_params(raw)
        except InvalidParams as e:
            return _json_error(400, str(e), e.field, allowed=e.allowed)

        def make(payment: Payment) -> tuple[dict[str, Any], dict[str, Any]]:
            up = Upload(id=str(uuid.uuid4()), client_token="vercel_blob_client_" + alnum(32),
                        pathname="", filename=filename, content_type=content_type, payer=payment.payer,
                        expires_at=time.time() + UPLOAD_TTL_S)
            up.pathname = f"uploads/{up.id}/{filename}"
            with self.state.lock:
                self.state.uploads[up.id] = up
            return ({"uploadId": up.id, "clientToken": up.client_token, "pathname": up.pathname,
                     "expiresAt": iso(up.expires_at)}, {"upload_id": up.id})

        return await self._paid(request, "upload", int(self.state.catalog.upload["price"]),
                                "StableStudio - upload", make)

    async def put_blob(self, request: Request) -> Response:
        pathname = request.query_params.get("pathname", "")
        up = next((u for u in list(self.state.uploads.values()) if u.pathname == pathname), None)
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if up is None or not token or token != up.client_token:
            return _json_error(403, "Forbidden: the client token does not grant this pathname.")
        if time.time() > up.expires_at:
            return _json_error(403, "Forbidden: the client token has expired; request a new upload.")
        limit = self.state.blob_limit_bytes
        too_big = _json_error(413, f"Payload too large: the limit is {limit} bytes.")
        if int(request.headers.get("content-length") or 0) > limit:
            return too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return too_big
            chunks.append(chunk)
        content_type = request.headers.get("x-content-type") or up.content_type
        url = f"{_base_url(request)}/blob/{quote(pathname)}"
        with self.state.lock:
            self.state.blobs[pathname] = Blob(b"".join(chunks), content_type, url)
            up.blob_url = url
        return JSONResponse({"url": url, "downloadUrl": url + "?download=1", "pathname": pathname,
                             "contentType": content_type})

    async def get_blob(self, request: Request) -> Response:
        blob = self.state.blobs.get(request.path_params["pathname"])
        if blob is None:
            return _json_error(404, "Blob not found.")
        return Response(blob.data, media_type=blob.content_type)

    async def confirm(self, request: Request) -> Response:
        who = self._signin(request)
        if isinstance(who, Response):
            return who
        try:
            body = _json_body(await request.body())
        except InvalidParams as e:
            return _json_error(400, str(e))
        upload_id, blob_url = body.get("uploadId"), body.get("blobUrl")
        if not isinstance(upload_id, str) or not isinstance(blob_url, str):
            return _json_error(400, "Confirm needs 'uploadId' and 'blobUrl' strings.",
                               "uploadId" if not isinstance(upload_id, str) else "blobUrl")
        up = self.state.uploads.get(upload_id)
        if up is None or up.payer.lower() != who.lower():
            return _json_error(404, "Upload not found.")
        if up.blob_url is None:
            return _json_error(409, "Nothing was uploaded for this upload yet: PUT the file to the blob "
                                    "store first.")
        if urlsplit(blob_url).path != urlsplit(up.blob_url).path:
            return _json_error(400, f"blobUrl does not belong to this upload (expected {up.blob_url}).",
                               "blobUrl")
        up.confirmed = True
        return JSONResponse({"success": True, "upload": {"id": up.id, "blobUrl": blob_url}})

    # -- jobs ----------------------------------------------------------------------------------

    def _signin(self, request: Request) -> str | Response:
        """The signed-in address, or the 402 challenge to answer with."""
        host = request.headers.get("host", "")
        url, now = str(request.url), time.time()
        try:
            return signin.verify(request.headers.get("sign-in-with-x"), host=host, url=url, now=now,
                                 max_age_s=self.state.faults.siwx_max_age_s)
        except signin.SignInInvalid as e:
            body = signin.challenge(url=url, host=host, error=e.reason, now=now)
            return JSONResponse(body, status_code=402, headers={"PAYMENT-REQUIRED": encode_header(body)})

    async def list_jobs(self, request: Request) -> Response:
        who = self._signin(request)
        if isinstance(who, Response):
            return who
        q = request.query_params
        try:
            limit = int(q.get("limit", "20"))
            if not 1 <= limit <= 100:
                raise ValueError
        except ValueError:
            return _json_error(400, f"limit must be an integer from 1 to 100, got {q.get('limit')!r}.",
                               "limit")
        status = q.get("status")
        if status is not None and status not in ("pending", "processing", "complete", "failed"):
            return _json_error(400, "status must be pending, processing, complete or failed, got "
                                    f"{status!r}.", "status")
        now = time.time()
        found = [j for j in self.state.jobs_of(who, now) if status is None or j.status(now) == status]
        return JSONResponse({"jobs": [j.view(now) for j in found[:limit]]})

    def _own_job(self, request: Request) -> tuple[Any, float] | Response:
        """The signed-in caller's job, or the answer to give (402 challenge, 404 for anyone else's)."""
        who = self._signin(request)
        if isinstance(who, Response):
            return who
        now = time.time()
        job = self.state.visible_job(request.path_params["job_id"], who, now)
        return _json_error(404, "Job not found.") if job is None else (job, now)

    async def get_job(self, request: Request) -> Response:
        found = self._own_job(request)
        if isinstance(found, Response):
            return found
        job, now = found
        return JSONResponse(job.view(now))

    async def delete_job(self, request: Request) -> Response:
        found = self._own_job(request)
        if isinstance(found, Response):
            return found
        job, now = found
        status = job.status(now)
        if status not in ("complete", "failed"):
            return _json_error(409, f"Job {job.id} is still {status}; only finished jobs can be deleted.")
        with self.state.lock:
            self.state.jobs.pop(job.id, None)
        return JSONResponse({"success": True})

    async def media(self, request: Request) -> Response:
        name = request.path_params["name"]
        job = self.state.jobs.get(name.split(".", 1)[0])
        item = job.media.get(name) if job else None
        if item is None:
            return _json_error(404, "Media not found (not rendered yet, or deleted).")
        data, mime = item
        return Response(data, media_type=mime, headers={"Cache-Control": "public, max-age=86400"})

    # -- admin ---------------------------------------------------------------------------------

    def admin(self, handler: Handler) -> Handler:
        """Admin routes answer loopback peers only (the server binds 127.0.0.1 anyway)."""

        async def wrapped(request: Request) -> Response:
            if request.client is None or request.client.host not in _LOOPBACK:
                return _json_error(403, "The sandbox admin API is loopback-only.")
            return await handler(request)

        return wrapped

    async def ledger(self, request: Request) -> Response:
        with self.state.lock:
            return JSONResponse({"settlements": [dict(s) for s in self.state.settlements]})

    async def snapshot(self, request: Request) -> Response:
        return JSONResponse(self.state.snapshot())

    async def faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = _json_body(await request.body())
                self.state.set_faults(self.state.faults.replace(**changes))
            except (InvalidParams, TypeError, ValueError) as e:
                return _json_error(400, str(e))
        return JSONResponse({"faults": self.state.faults.to_dict()})

    # -- app -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):  # type: ignore[no-untyped-def]
        yield
        for task in list(self.tasks):
            task.cancel()


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    return _json_error(status, getattr(exc, "detail", None) or "Not found.")


def build_app(state: State) -> Any:
    """The sandbox as an ASGI app (wrapped so the ``reset`` fault can reach the socket)."""
    api = Api(state)
    e, a = api.edge, api.admin
    routes = [
        Route("/api/generate/{model}/{operation}", e(api.generate), methods=["POST"]),
        Route("/api/upload", e(api.upload), methods=["POST"]),
        Route("/api/upload/confirm", e(api.confirm), methods=["POST"]),
        Route("/api/blob/", api.put_blob, methods=["PUT"]),
        Route("/api/blob", api.put_blob, methods=["PUT"]),
        Route("/api/jobs", e(api.list_jobs), methods=["GET"]),
        Route("/api/jobs/{job_id}", e(api.get_job), methods=["GET"]),
        Route("/api/jobs/{job_id}", e(api.delete_job), methods=["DELETE"]),
        Route("/blob/{pathname:path}", api.get_blob, methods=["GET"]),
        Route("/media/{name}", api.media, methods=["GET"]),
        Route("/_sandbox/ledger", a(api.ledger), methods=["GET"]),
        Route("/_sandbox/state", a(api.snapshot), methods=["GET"]),
        Route("/_sandbox/faults", a(api.faults), methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=api.lifespan,
                    exception_handlers={HTTPException: _not_found})
    return keep_raw_send(app)

