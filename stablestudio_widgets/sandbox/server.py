"""The sandbox's HTTP API: StableStudio's routes, bodies and answers, served by Starlette.

Paid routes (``/api/generate/{model}/{operation}``, ``/api/upload``) validate the body first
(an invalid request gets a 400 and is never charged), then answer 402 with ``PAYMENT-REQUIRED``
or verify ``PAYMENT-SIGNATURE`` and settle. Between reading the body and settling there is no
``await``: the check-and-mark of the nonce cannot interleave with another request's.
Job and upload-confirm routes need a SIGN-IN-WITH-X header; a job is visible only to its payer.
``/openapi.json`` and ``/llms.txt`` describe the routes the sandbox serves right now. How each
answer looks (the real router's way or the written spec's) is the :class:`~.router.Mode`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..catalog.schema import object_schema
from ..errors import InvalidParams
from . import discovery, jobs, mpp, payments, signin, solana
from .drop import DropConnection, keep_raw_send
from .mpp import MppInvalid
from .payments import PaymentInvalid
from .router import SIWX_MESSAGES, SIWX_WINDOW_S
from .state import State
from .uploads import UploadRoutes
from .wire import HeaderError, base_url, decode_header, encode_header, job_id, json_body, json_error

Handler = Callable[[Request], Awaitable[Response]]
_ERROR_BODIES = {429: "Too many requests", 500: "Internal server error", 502: "Bad gateway",
                 503: "Service unavailable"}
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


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

    async def paid(self, request: Request, route_key: str, amount: int, description: str,
                    make: Callable[[Any], tuple[dict[str, Any], dict[str, Any]]],
                    bazaar: dict[str, Any] | None = None) -> Response:
        """The x402 or MPP exchange for one paid request; ``make`` creates what was paid for.

        Synchronous from the start to the settlement (callers have already read the body). An x402
        ``PAYMENT-SIGNATURE`` wins over an ``Authorization: Payment``, as at the router.
        """
        state, mode = self.state, self.state.mode
        accepts = state.accepts(amount)
        required = mode.payment_required(url=str(request.url), description=description, accepts=accepts,
                                         bazaar=bazaar)
        header = request.headers.get("payment-signature") if accepts else None
        authorization = request.headers.get("authorization", "")
        if not header and state.mpp is not None and authorization.startswith("Payment "):
            return await self._mpp_paid(request, route_key, amount, description, make, required, authorization)
        if not header:
            return self._402(request, required, amount, description)
        try:
            on_solana = state.solana is not None and _network(header).startswith("solana:")
            verifier = state.solana.verify if on_solana else payments.verify
            payment = verifier(header, accepts, deep=mode.router)
            if state.is_used(payment):
                original = state.replayed(payment, route_key)
                return JSONResponse(original.body,
                                    headers={"PAYMENT-RESPONSE": encode_header(original.headers)})
            (solana.check_window if on_solana else payments.check_window)(payment, time.time())
            body, receipt = state.settle(payment, route_key, lambda: make(payment))
        except PaymentInvalid as e:
            return self._402(request, required, amount, description, e.reason)
        return await self._settled(body, {"PAYMENT-RESPONSE": encode_header(receipt)})

    def _402(self, request: Request, required: dict[str, Any], amount: int, description: str,
             refusal: str | None = None, problem: MppInvalid | None = None) -> Response:
        """Payment required: x402's ``PAYMENT-REQUIRED`` and/or a fresh MPP challenge, as offered;
        an MPP refusal's reason as mppx's problem+json (the router sends none: its body stays empty)."""
        state = self.state
        response = state.mode.answer_402(required, refusal) if required["accepts"] else \
            Response(b"", status_code=402, media_type="application/json", headers={"Cache-Control": "no-store"})
        if state.mpp is None:
            return response
        cid, challenge = state.mpp.challenge(_realm(request), amount, description, time.time())
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        headers["WWW-Authenticate"] = challenge
        if problem is not None and not state.mode.router:
            return JSONResponse(mpp.problem(problem, cid), status_code=402, headers=headers,
                                media_type="application/problem+json")
        return Response(response.body, status_code=402, headers=headers)

    async def _mpp_paid(self, request: Request, route_key: str, amount: int, description: str,
                        make: Callable[[Any], tuple[dict[str, Any], dict[str, Any]]], required: dict[str, Any],
                        authorization: str) -> Response:
        state, mpp_ = self.state, self.state.mpp
        assert mpp_ is not None
        now = time.time()
        try:
            verified = mpp_.verify(authorization, realm=_realm(request), amount=amount, now=now)
            with state.lock:  # check-and-mark, debit and create: one step
                if state.is_used(verified):
                    raise MppInvalid("verification-failed",
                                     "Payment verification failed: Transaction hash has already been used.")
                mpp_.debit(verified)
                body, _ = state.settle(verified, route_key, lambda: make(verified))
        except MppInvalid as e:
            payer = mpp.source_of(authorization)
            if mpp_.settle == "after" and e.slug != "malformed-credential" and payer:
                make(mpp.Unpaid(payer))  # the router ran the handler before settling: the job exists
                return JSONResponse({"success": False, "error": f"MPP payment failed: {e.detail}"}, status_code=500)
            return self._402(request, required, amount, description, problem=e)
        return await self._settled(body, {"Payment-Receipt": mpp.receipt(verified, now), "Cache-Control": "private"})

    async def _settled(self, body: dict[str, Any], headers: dict[str, str]) -> Response:
        """The answer to a settled payment: from here on it has moved, whatever happens to this answer."""
        state = self.state
        drop = state.dice.drop()
        if drop == "reset":
            return DropConnection()  # type: ignore[return-value]
        if drop == "5xx":
            return JSONResponse({"error": "Bad gateway: the upstream did not answer in time"},
                                status_code=502)
        if drop == "delay":
            await asyncio.sleep(state.faults.delay_s)
        return JSONResponse(body, headers=headers)

    # -- generate ------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        route_id = f"{request.path_params['model']}/{request.path_params['operation']}"
        route = self.state.catalog.routes.get(route_id)
        if route is None:
            return self.state.mode.not_found(str(request.url), base_url(request),
                                             f"Unknown route {route_id!r}: no POST /api/generate/{route_id} here.")
        raw = await request.body()
        try:
            params = route.validate(json_body(raw))
        except InvalidParams as e:
            return self.state.mode.invalid_body(str(e), e.field, e.allowed)

        def make(payment: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            job = jobs.Job(id=job_id(), route=route, params=params, payer=payment.payer,
                           base_url=base_url(request), created_at=time.time(),
                           duration_s=self.state.duration_s(route, params),
                           fate_error=self.state.dice.job_error(), inputs=self._inputs(route, params, request))
            self.state.add_job(job)
            task = asyncio.get_running_loop().create_task(jobs.run(job, self.state.executor))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return ({"type": job.type, "jobId": job.id, "status": "pending", "success": True},
                    {"job_id": job.id})

        return await self.paid(request, route_id, route.price_atomic(params), f"{route.label} - {route.operation}",
                                make, bazaar=_bazaar(route.params))

    def _inputs(self, route: Any, params: dict[str, Any], request: Request) -> list[bytes]:
        """Bytes of input images that are this sandbox's own blobs (external URLs: never fetched)."""
        port = (request.scope.get("server") or ("", None))[1]
        hosts = {request.headers.get("host", ""), *(f"{h}:{port}" for h in _LOOPBACK)}
        urls: list[str] = []
        for name in (n for n, p in route.params.items() if p.is_media):
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

    # -- jobs ----------------------------------------------------------------------------------

    def signed_in(self, request: Request) -> str | Response:
        """The signed-in address, or the 402 to answer with: a challenge, or (as the router answers
        a proof it refuses) a bare ``{error, message}``."""
        host, mode = request.headers.get("host", ""), self.state.mode
        url, now = str(request.url), time.time()
        max_age = self.state.faults.siwx_max_age_s
        max_age = min(max_age, SIWX_WINDOW_S) if mode.router else max_age
        authorization, chains = request.headers.get("authorization", ""), self.state.signin_chains
        try:
            if self.state.mpp is not None and authorization.startswith("Payment "):
                return self.state.proved(authorization, realm=_realm(request), now=now)
            if self.state.mpp is not None and self.state.mpp.signin_only:
                raise MppInvalid("payment-required", "this sandbox signs in with the MPP $0 proof only")
            return signin.verify(request.headers.get("sign-in-with-x"), host=host, url=url, now=now, max_age_s=max_age,
                                 router=mode.router, nonces=self.state.siwx_nonces if mode.tracks_siwx_nonces else None,
                                 chains=chains)
        except MppInvalid as e:  # an invalid proof falls through to a fresh SIWX challenge, as at the router
            return self._signin_402(request, signin.challenge(url=url, host=host, error=e.detail, now=now,
                                                             router=mode.router, chains=chains), now)
        except signin.SignInInvalid as e:
            if mode.siwx_refusal(e.code):
                return JSONResponse({"error": e.code, "message": SIWX_MESSAGES[e.code]}, status_code=402)
            body = signin.challenge(url=url, host=host, error=e.reason if not mode.router or e.code != "siwx_required"
                                    else "SIWX authentication required", now=now, router=mode.router, chains=chains)
            return self._signin_402(request, body, now)

    def _signin_402(self, request: Request, body: dict[str, Any], now: float) -> Response:
        """A sign-in challenge: SIWX's and, where Tempo is taken, an amount-0 MPP challenge beside it."""
        headers = {"PAYMENT-REQUIRED": encode_header(body), "Cache-Control": "no-store"}
        if self.state.mpp is not None and self.state.mpp.signin_only:  # no SIWX challenge, only the proof's
            body, headers = {"error": body.get("error")}, {"Cache-Control": "no-store"}
        if self.state.mpp is not None:
            headers["WWW-Authenticate"] = self.state.mpp.challenge(_realm(request), 0, "Sign in", now)[1]
        return JSONResponse(body, status_code=402, headers=headers)

    async def list_jobs(self, request: Request) -> Response:
        who = self.signed_in(request)
        if isinstance(who, Response):
            return who
        q = request.query_params
        try:
            limit = int(q.get("limit", "20"))
            if not 1 <= limit <= 100:
                raise ValueError
        except ValueError:
            return json_error(400, f"limit must be an integer from 1 to 100, got {q.get('limit')!r}.",
                               "limit")
        status = q.get("status")
        running = "loading" if self.state.mode.router else "processing"
        if status is not None and status not in ("pending", running, "complete", "failed"):
            return json_error(400, f"status must be pending, {running}, complete or failed, got {status!r}.", "status")
        now = time.time()
        views = [self._view(j, now) for j in self.state.jobs_of(who, now)]
        return JSONResponse({"jobs": [v for v in views if status is None or v["status"] == status][:limit]})

    def _view(self, job: Any, now: float) -> dict[str, Any]:
        return job.view(now, loading=self.state.mode.router)

    def _own_job(self, request: Request) -> tuple[Any, float] | Response:
        """The signed-in caller's job, or the answer to give (402 challenge, 404 for anyone else's)."""
        who = self.signed_in(request)
        if isinstance(who, Response):
            return who
        now = time.time()
        job = self.state.visible_job(request.path_params["job_id"], who, now)
        return json_error(404, "Job not found.") if job is None else (job, now)

    async def get_job(self, request: Request) -> Response:
        found = self._own_job(request)
        if isinstance(found, Response):
            return found
        job, now = found
        return JSONResponse(self._view(job, now))

    async def delete_job(self, request: Request) -> Response:
        found = self._own_job(request)
        if isinstance(found, Response):
            return found
        job, now = found
        status = job.status(now)
        if status not in ("complete", "failed"):
            return json_error(409, f"Job {job.id} is still {status}; only finished jobs can be deleted.")
        with self.state.lock:
            self.state.jobs.pop(job.id, None)
        return JSONResponse({"success": True})

    async def media(self, request: Request) -> Response:
        name = request.path_params["name"]
        job = self.state.jobs.get(name.split(".", 1)[0])
        item = job.media.get(name) if job else None
        if item is None:
            return json_error(404, "Media not found (not rendered yet, or deleted).")
        data, mime = item
        return Response(data, media_type=mime, headers={"Cache-Control": "public, max-age=86400"})

    # -- admin ---------------------------------------------------------------------------------

    def admin(self, handler: Handler) -> Handler:
        """Admin routes answer loopback peers only (the server binds 127.0.0.1 anyway)."""

        async def wrapped(request: Request) -> Response:
            if request.client is None or request.client.host not in _LOOPBACK:
                return json_error(403, "The sandbox admin API is loopback-only.")
            return await handler(request)

        return wrapped

    async def ledger(self, request: Request) -> Response:
        with self.state.lock:
            return JSONResponse({"settlements": [dict(s) for s in self.state.settlements]})

    async def solana_rpc(self, request: Request) -> Response:
        """Solana JSON-RPC, the two calls an x402 client makes (blockhash, mint); no chain behind it."""
        if self.state.solana is None:
            return json_error(404, "This sandbox does not take Solana (start it with --network solana-devnet).")
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        return JSONResponse(self.state.solana.rpc(body))

    async def tempo_rpc(self, request: Request) -> Response:
        """Tempo testnet JSON-RPC, offline: the one call a pull-mode payer makes is eth_gasPrice."""
        try:
            call = json_body(await request.body())
        except InvalidParams as e:
            return JSONResponse({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": str(e)}})
        answers = {"eth_gasPrice": hex(mpp.GAS_PRICE), "eth_chainId": hex(mpp.CHAIN_ID)}
        if call.get("method") not in answers:
            return JSONResponse({"jsonrpc": "2.0", "id": call.get("id"),
                                 "error": {"code": -32601, "message": f"the sandbox answers only {sorted(answers)}"}})
        return JSONResponse({"jsonrpc": "2.0", "id": call.get("id"), "result": answers[call["method"]]})

    async def snapshot(self, request: Request) -> Response:
        return JSONResponse(self.state.snapshot())

    async def faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json_body(await request.body())
                self.state.set_faults(self.state.faults.replace(**changes))
            except (InvalidParams, TypeError, ValueError) as e:
                return json_error(400, str(e))
        return JSONResponse({"faults": self.state.faults.to_dict()})

    # -- discovery -----------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        doc = discovery.openapi(self.state.catalog, base_url(request), pricing_format=self.state.mode.pricing_format)
        return JSONResponse(doc, headers={"Access-Control-Allow-Origin": "*"})

    async def llms_txt(self, request: Request) -> Response:
        return PlainTextResponse(discovery.llms_txt(self.state.catalog, base_url(request)),
                                 headers={"Access-Control-Allow-Origin": "*"})

    async def not_found(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = getattr(exc, "detail", None) or "Not found."
        if status == 404 and request.url.path.startswith("/api/"):
            return self.state.mode.not_found(str(request.url), base_url(request), message)
        return json_error(status, message)

    # -- app -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):  # type: ignore[no-untyped-def]
        yield
        for task in list(self.tasks):
            task.cancel()


def _network(header: str) -> str:
    """The network a payment header claims (its ``accepted.network``), or "" when unreadable."""
    try:
        accepted = decode_header(header).get("accepted")
    except HeaderError:
        return ""
    network = accepted.get("network") if isinstance(accepted, dict) else None
    return network if isinstance(network, str) else ""


def _realm(request: Request) -> str:
    """The MPP realm: the host (and port) the client addressed, as the router derives it."""
    return request.headers.get("host", "") or request.url.netloc


def _bazaar(params: dict[str, Any]) -> dict[str, Any]:
    """The bazaar extension's body schema, in zod's *output* mode: defaulted fields are required too."""
    schema = object_schema(params)
    schema["required"] = [n for n, p in params.items() if p.required or p.default is not None]
    return {"type": "object", "properties": {"input": {"type": "object", "properties": {"body": schema}}}}


def build_app(state: State) -> Any:
    """The sandbox as an ASGI app (wrapped so the ``reset`` fault can reach the socket)."""
    api = Api(state)
    up = UploadRoutes(api)
    e, a = api.edge, api.admin
    routes = [
        Route("/api/generate/{model}/{operation}", e(api.generate), methods=["POST"]),
        Route("/api/upload", e(up.upload), methods=["POST"]),
        Route("/api/upload/confirm", e(up.confirm), methods=["POST"]),
        Route("/api/blob/", up.put_blob, methods=["PUT"]),
        Route("/api/blob", up.put_blob, methods=["PUT"]),
        Route("/api/jobs", e(api.list_jobs), methods=["GET"]),
        Route("/api/jobs/{job_id}", e(api.get_job), methods=["GET"]),
        Route("/api/jobs/{job_id}", e(api.delete_job), methods=["DELETE"]),
        *(Route(f"{prefix}/openapi.json", api.openapi, methods=["GET"]) for prefix in ("", "/api")),
        *(Route(f"{prefix}/llms.txt", api.llms_txt, methods=["GET"]) for prefix in ("", "/api")),
        Route("/blob/{pathname:path}", up.get_blob, methods=["GET"]),
        Route("/media/{name}", api.media, methods=["GET"]),
        Route("/_sandbox/solana-rpc", a(api.solana_rpc), methods=["POST"]),
        Route("/_sandbox/ledger", a(api.ledger), methods=["GET"]),
        Route("/_sandbox/state", a(api.snapshot), methods=["GET"]),
        Route("/_sandbox/faults", a(api.faults), methods=["GET", "POST"]),
        Route("/_sandbox/tempo-rpc", api.tempo_rpc, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=api.lifespan, exception_handlers={HTTPException: api.not_found})
    return keep_raw_send(app)
