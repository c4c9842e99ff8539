"""``AsyncStableStudio`` (one ``httpx.AsyncClient``) and the ``StableStudio`` sync facade.

The paid request is the heart of it: validate → learn (or reuse) the route's payment terms →
check the policy → sign once → write the ledger → send, re-sending the *same* signed payment on
ambiguous failures so it can settle at most once → record the receipt.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from . import catalog as catalog_mod
from . import siwx
from .catalog import Catalog, Route
from .errors import (
    AuthError,
    InvalidParams,
    JobNotFound,
    PaymentRejected,
    PaymentRequiredError,
    ServiceError,
    StableStudioError,
    fmt_usd,
    usd,
)
from .jobs import NOT_FOUND_GRACE_S, AsyncJob, InspectorStep, Result, guess_mime, parse_retry_after
from .ledger import Ledger, home
from .policy import Spending, SpendingPolicy, check_terms, is_loopback
from .wallet import Wallet
from .x402 import (
    PaymentRequired,
    Receipt,
    Requirement,
    SignedPayment,
    decode_payment_required,
    decode_settle_response,
    parse_requirement,
    refuse_unsupported,
    sign_payment,
)

DEFAULT_BASE_URL = "https://stablestudio.dev"
ENV_BASE_URL = "STABLESTUDIO_BASE_URL"
PRODUCTION_BLOB_PUT = "https://vercel.com/api/blob/"
T = TypeVar("T")
_UNSET: Any = object()
MIN_SEARCH_S = 10.0  # how long to look for the job a possibly-settled payment bought, at least


@dataclass(frozen=True)
class Quote:
    """The exact price of a call, read from the server's unpaid 402 (nothing was signed)."""

    route: str
    amount: int
    network: str
    pay_to: str
    uploads: int = 0
    upload_amount: int = 0

    @property
    def amount_usd(self) -> float:
        return usd(self.amount)

    @property
    def total_usd(self) -> float:
        """Generation plus the uploads a call with local images needs."""
        return usd(self.amount + self.uploads * self.upload_amount)

    def __repr__(self) -> str:
        extra = f" + {self.uploads} upload(s) = {fmt_usd(self.total_usd)}" if self.uploads else ""
        return f"<Quote {self.route} {fmt_usd(self.amount_usd)}{extra} on {self.network}>"


@dataclass
class _Terms:
    """Payment terms learned for one route and price point, reused to pay in one round trip."""

    required: PaymentRequired
    requirement: Requirement
    paid: bool = False  # a payment on these terms was accepted: later ones are signed up front
    learned_at: float = 0.0
    learned_ms: float = 0.0


class AsyncStableStudio:
    """Async client: every method is awaitable and many jobs can be in flight at once."""

    def __init__(self, base_url: str | None = None, wallet: Wallet | None = None, *,
                 budget_usd: float | None = None, max_usd_per_request: float | None = None,
                 confirm_above_usd: float | None = _UNSET, ledger_budget_usd: float | None = None,
                 policy: SpendingPolicy | None = None, ledger: Ledger | str | os.PathLike | None = None,
                 save_results: bool | str | os.PathLike = False, time_scale: float = 1.0, dry_run: bool = False,
                 timeout: float = 60.0, max_retries: int = 4, transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        self.wallet = wallet if wallet is not None else Wallet.from_env()
        self.catalog: Catalog = catalog_mod.load()
        if policy is None:
            policy = SpendingPolicy(max_usd_per_request=max_usd_per_request, budget_usd=budget_usd,
                                    ledger_budget_usd=ledger_budget_usd)
            if confirm_above_usd is not _UNSET:
                policy.confirm_above_usd = confirm_above_usd
        self.policy = policy
        self.spending = Spending(policy)
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
        self.save_dir: Path | None = (
            None if save_results is False else
            (home() / "results" if save_results is True else Path(save_results)))
        self.time_scale = time_scale
        self.dry_run = dry_run  # every paid call returns its exact Quote instead of paying
        self.max_retries = max_retries
        self.session = uuid.uuid4().hex[:12]
        self.chain_ids = ["eip155:84532", "eip155:8453"] if is_loopback(self.base_url) else ["eip155:8453"]
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0), transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32), follow_redirects=False)
        self._terms: dict[tuple, _Terms] = {}
        self._learning: dict[tuple, asyncio.Lock] = {}
        self._claimed: set[str] = set()  # jobs matched to a lost answer, before the ledger has them
        self._siwx_cache: dict[str, tuple[str, float]] = {}
        self.siwx_signed: dict[str, dict[str, Any]] = {}  # last signed SIWX payload per URI (no secrets)
        self._jobs: dict[str, AsyncJob] = {}
        self._listeners: list[Any] = []
        self._sandbox: Any = None
        self.stats = {"requests": 0, "signatures": 0, "siwx_signatures": 0}

    # --- construction helpers -----------------------------------------------------------------
    @classmethod
    def sandbox(cls, *, time_scale: float = 0.1, faults: Any = None, **kwargs: Any) -> AsyncStableStudio:
        """A client on a fresh in-process sandbox with a throwaway wallet: no money, no network."""
        from .sandbox import Sandbox

        sb = Sandbox(time_scale=time_scale, faults=faults).start()
        kwargs.setdefault("ledger", ":memory:")
        client = cls(base_url=sb.url, wallet=kwargs.pop("wallet", None) or Wallet.generate(),
                     time_scale=time_scale, **kwargs)
        client._sandbox = sb
        return client

    @property
    def is_sandbox(self) -> bool:
        return self._sandbox is not None or (is_loopback(self.base_url) and self.wallet.sandbox)

    async def aclose(self) -> None:
        for job in self._jobs.values():
            if job._poller and not job._poller.done():
                job._poller.cancel()
        await self._http.aclose()
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None

    async def __aenter__(self) -> AsyncStableStudio:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = "sandbox " if self.is_sandbox else ""
        return f"<AsyncStableStudio {where}{self.base_url} wallet={self.wallet.address}>"

    # --- catalog --------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return list(self.catalog.routes.values())

    def _resolve(self, route_or_model: str, params: dict[str, Any]) -> Route:
        if "/" in route_or_model:
            return self.catalog.route(route_or_model)
        return self.catalog.generate_route(route_or_model, with_image="image" in params)

    # --- quotes ------------------------------------------------------------------------------------
    async def quote(self, route_or_model: str, /, **params: Any) -> Quote:
        """The exact price of a call from the server's unpaid 402. Pays nothing, signs nothing."""
        route = self._resolve(route_or_model, params)
        wire = route.validate(params, uploadable=True)
        body, uploads = _placeholder_uploads(route, wire)
        terms = await self._learn_terms(route.path, body, self._price_key(route, wire))
        upload_amount = 0
        if uploads:
            upload_amount = (await self._learn_terms(
                "/api/upload", {"filename": "image.png", "contentType": "image/png"}, ("upload",))).requirement.amount
        req = terms.requirement
        return Quote(route.id, req.amount, req.network, req.pay_to, len(uploads), upload_amount)

    async def quote_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Quote]:
        """Exact prices of a whole batch (a dry run): concurrent unpaid 402s, nothing signed."""
        return list(await asyncio.gather(*(self.quote(r, **p) for r, p in calls)))

    # --- generation ------------------------------------------------------------------------------
    async def generate(self, model: str, prompt: str | None = None, *, image: Any = None,
                       confirm: bool = False, dry_run: bool = False, **params: Any) -> AsyncJob:
        """Text-to-image/video with ``model``; with ``image`` its image-to-video route."""
        if prompt is not None:
            params["prompt"] = prompt
        if image is not None:
            params["image"] = image
        route = self.catalog.generate_route(model, with_image=image is not None)
        return await self.submit(route.id, params, confirm=confirm, dry_run=dry_run)

    async def edit(self, model: str, prompt: str | None = None, *, images: Any = None,
                   confirm: bool = False, dry_run: bool = False, **params: Any) -> AsyncJob:
        """Edit images with ``model`` (local files and PIL images are uploaded first)."""
        if prompt is not None:
            params["prompt"] = prompt
        if images is not None:
            params["images"] = images
        return await self.submit(self.catalog.edit_route(model).id, params, confirm=confirm, dry_run=dry_run)

    async def submit(self, route_id: str, params: dict[str, Any] | None = None, *,
                     confirm: bool = False, dry_run: bool = False, job: AsyncJob | None = None) -> AsyncJob:
        """Pay for one generation on an explicit route and return its job (not yet finished).

        Every check that can fail runs before money moves: parameters, the exact price of the
        generation and of any uploads it needs, the policy for their total. With ``dry_run``
        (here or on the client) it stops there and returns the exact :class:`Quote` instead.
        """
        route = self.catalog.route(route_id)
        params = dict(params or {})
        wire = route.validate(params, uploadable=True)
        if dry_run or self.dry_run:
            return await self.quote(route_id, **params)  # type: ignore[return-value]
        job = job or AsyncJob(route=route, params=wire, _client=self)
        job._client = self
        job.status, job.error, job.detail = "quoting", None, ""
        self._job_changed(job)
        try:
            return await self._submit(route, wire, job, confirm)
        except StableStudioError as e:
            if job.id is None:
                job._update(status="failed", error=e, finished_at=time.time())
                self._job_changed(job)
            raise

    async def _submit(self, route: Route, wire: dict[str, Any], job: AsyncJob, confirm: bool) -> AsyncJob:
        body, uploads = _placeholder_uploads(route, wire)
        key = self._price_key(route, wire)
        terms = await self._learn_terms(route.path, body, key)
        extra = 0
        if uploads:
            up = await self._learn_terms("/api/upload", {"filename": "image.png", "contentType": "image/png"},
                                         ("upload",))
            extra = up.requirement.amount * len(uploads)
            self._check(up.requirement, "/api/upload")
        self._check(terms.requirement, route.path)
        # The policy sees the total (generation + uploads) before the first upload is paid for.
        self.spending.reserve(terms.requirement.amount, extra=extra, confirm=confirm,
                              ledger_spent=self._ledger_spent())
        self.spending.release(terms.requirement.amount)
        if uploads:
            job._update(status="uploading", detail=f"Uploading {len(uploads)} image(s)")
            wire = await self._upload_inputs(wire, confirm=confirm)
        job.params = {**job.params, **{k: v for k, v in wire.items() if k in ("image", "images", "lastFrame")}}
        job._update(status="paying", detail="Signing and sending the payment")
        data, receipt, signed = await self._paid_post(route.path, wire, key, kind="generate", route=route,
                                                      confirm=confirm, job=job)
        job_id = data.get("jobId") or data.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ServiceError(f"The service took the payment ({fmt_usd(signed.requirement.amount_usd)}) but "
                               f"returned no job id: {str(data)[:200]}. The payment is in the ledger.",
                               status=200, body=str(data), paid_usd=signed.requirement.amount_usd)
        self._adopt(job, job_id, signed, receipt, data.get("status") or "pending")
        return job

    def _adopt(self, job: AsyncJob, job_id: str, signed: SignedPayment, receipt: Receipt | None,
               status: str) -> None:
        """A paid job exists: remember it everywhere before anything else can go wrong."""
        self.ledger.update_payment(signed.nonce, job_id=job_id)
        self.ledger.record_job(id=job_id, base_url=self.base_url, route=job.route.id, model=job.route.model,
                               media=job.route.media, prompt=job.prompt, params=job.params, status=status,
                               amount=signed.requirement.amount, nonce=signed.nonce, payer=self.wallet.address,
                               session=self.session, created_at=time.time())
        job._update(id=job_id, amount=signed.requirement.amount, receipt=receipt, status=status,
                    created_at=time.time(), detail="")
        self._jobs[job_id] = job
        self._job_changed(job)

    # --- uploads ------------------------------------------------------------------------------------
    async def upload(self, source: Any, *, confirm: bool = False) -> str:
        """Upload a local image (path, bytes or PIL image) with the paid three-step flow; returns
        the blob URL to use in edit and image-to-video calls."""
        data, filename, mime = _read_image(source)
        body = {"filename": filename, "contentType": mime}
        token, _, signed = await self._paid_post("/api/upload", body, ("upload",), kind="upload", route=None,
                                                 confirm=confirm)
        try:
            upload_id, client_token, pathname = token["uploadId"], token["clientToken"], token["pathname"]
        except (KeyError, TypeError):
            raise ServiceError(f"The upload token answer lacks uploadId/clientToken/pathname: {str(token)[:200]}",
                               status=200, body=str(token), paid_usd=signed.requirement.amount_usd) from None
        self.ledger.update_payment(signed.nonce, upload_id=upload_id)
        put_base = PRODUCTION_BLOB_PUT if self.base_url == DEFAULT_BASE_URL else f"{self.base_url}/api/blob/"
        r = await self._retrying(lambda: self._http.put(
            put_base, params={"pathname": pathname}, content=data,
            headers={"authorization": f"Bearer {client_token}", "x-content-type": mime, "x-api-version": "11"}))
        if r.status_code != 200:
            raise ServiceError(f"Uploading {filename} to blob storage failed with HTTP {r.status_code} after the "
                               f"$0.01 upload token was paid: {r.text[:200]}", status=r.status_code, body=r.text,
                               paid_usd=signed.requirement.amount_usd)
        blob_url = r.json()["url"]
        c = await self._siwx_request("POST", "/api/upload/confirm", json={"uploadId": upload_id, "blobUrl": blob_url})
        if c.status_code != 200:
            raise ServiceError(f"Confirming upload {upload_id} failed with HTTP {c.status_code}: {c.text[:200]}",
                               status=c.status_code, body=c.text, paid_usd=signed.requirement.amount_usd)
        return c.json().get("upload", {}).get("blobUrl") or blob_url

    async def _upload_inputs(self, wire: dict[str, Any], *, confirm: bool) -> dict[str, Any]:
        out = dict(wire)
        for name, value in wire.items():
            if name in ("image", "lastFrame") and not _is_url(value):
                out[name] = await self.upload(value, confirm=confirm)
            elif name == "images":
                out[name] = [v if _is_url(v) else await self.upload(v, confirm=confirm) for v in value]
        return out

    # --- jobs -----------------------------------------------------------------------------------------
    async def job(self, job_id: str) -> AsyncJob:
        """A job by id (from this session, the ledger, or the service)."""
        if job_id in self._jobs:
            return self._jobs[job_id]
        r = await self._siwx_request("GET", f"/api/jobs/{job_id}")
        if r.status_code == 404:
            raise JobNotFound(f"The service knows no job {job_id} for wallet {self.wallet.address}.", job_id=job_id)
        _ensure_ok(r, f"Fetching job {job_id}")
        return self._job_from(r.json(), job_id)

    async def jobs(self, limit: int = 20, status: str | None = None) -> list[AsyncJob]:
        """This wallet's jobs on the service, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        r = await self._siwx_request("GET", "/api/jobs", params=params)
        _ensure_ok(r, "Listing jobs")
        data = r.json()
        items = data.get("jobs", []) if isinstance(data, dict) else data
        jobs = []
        for d in items if isinstance(items, list) else []:
            try:
                jobs.append(self._job_from(d))
            except ServiceError:  # a job kind this client cannot show; the others still are
                continue
        return jobs

    async def delete_job(self, job_id: str) -> None:
        r = await self._siwx_request("DELETE", f"/api/jobs/{job_id}")
        _ensure_ok(r, f"Deleting job {job_id}")
        self.ledger.update_job(job_id, status="deleted")

    def _job_from(self, data: dict[str, Any], job_id: str | None = None) -> AsyncJob:
        job_id = job_id or data.get("id") or data.get("jobId")
        row = self.ledger.job(job_id) if job_id else None
        route_id = data.get("route") or (row or {}).get("route") or _route_from_type(self.catalog, data.get("type"))
        if route_id not in self.catalog.routes:
            raise ServiceError(f"Job {job_id} has a type this client does not know ({data.get('type')!r}).",
                               status=200, body=str(data)[:500], job_id=job_id)
        route = self.catalog.route(route_id)
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        if row and not params:
            params = json.loads(row["params"] or "{}")
        job = self._jobs.get(job_id) or AsyncJob(route=route, params=params, id=job_id, _client=self,
                                                 amount=(row or {}).get("amount"))
        if row and row.get("created_at"):
            job.created_at = row["created_at"]
        job.apply(data)
        self._jobs[job_id] = job
        if row:  # what the service says of a job we paid for goes to the ledger, however we learnt it
            self._job_changed(job)
        return job

    async def resume(self) -> list[AsyncJob]:
        """Finish what was paid for but never finished (crash, restart, timeout, network fault).

        Re-sends still-valid signed payments whose answer was lost (same nonce: they settle at
        most once), finds the jobs they bought, and polls every unfinished paid job to the end.
        """
        for p in self.ledger.open_payments():
            if p["url"].startswith(self.base_url + "/"):
                await self._resume_payment(p)
        jobs = []
        for row in self.ledger.unfinished_jobs(self.base_url):
            job = self._jobs.get(row["id"]) or self._job_from({"status": row["status"]}, row["id"])
            jobs.append(job)
        results = await asyncio.gather(*(j.wait() for j in jobs), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, StableStudioError):
                raise res
        return jobs

    async def _resume_payment(self, p: dict[str, Any]) -> None:
        route = self.catalog.route(p["route"]) if p["route"] else None
        if route is None or p["kind"] != "generate":
            return
        payload = json.loads(base64.b64decode(p["payload"]))
        signed = SignedPayment(p["payload"], payload, parse_requirement(payload["accepted"], 0), p["signed_at"])
        body = json.loads(p["body"])
        job = AsyncJob(route=route, params=body, _client=self)
        if p["valid_before"] > time.time() + 2:
            r = await self._send_with_payment(route.path, body, signed, p["nonce"], job=None)
            if r is not None and r.status_code == 200:
                data = r.json()
                receipt = _receipt(r)
                self.ledger.update_payment(p["nonce"], status="settled", tx=receipt and receipt.transaction,
                                           receipt=receipt and receipt.to_dict())
                self._adopt_row(job, data.get("jobId") or data.get("id"), p, receipt)
                return
        found = await self._find_paid_job(route, body, p["signed_at"])
        if found:
            self.ledger.update_payment(p["nonce"], status="settled")
            self._adopt_row(job, found, p, None)
        elif p["status"] == "settled":  # money moved: never call it expired; keep looking next time
            self.ledger.update_payment(p["nonce"], error="settled, but the service shows no job for it yet")
        elif p["valid_before"] < time.time():
            self.ledger.update_payment(p["nonce"], status="expired",
                                       error="validity ran out and the service shows no job for it")

    def _adopt_row(self, job: AsyncJob, job_id: str, p: dict[str, Any], receipt: Receipt | None) -> None:
        self.ledger.update_payment(p["nonce"], job_id=job_id)
        self.ledger.record_job(id=job_id, base_url=self.base_url, route=job.route.id, model=job.route.model,
                               media=job.route.media, prompt=job.prompt, params=job.params, status="pending",
                               amount=p["amount"], nonce=p["nonce"], payer=p["payer"], session=self.session,
                               created_at=p["signed_at"])
        job._update(id=job_id, amount=p["amount"], receipt=receipt, created_at=p["signed_at"])
        self._jobs[job_id] = job

    # --- the paid request -------------------------------------------------------------------------
    def _price_key(self, route: Route, wire: dict[str, Any]) -> tuple:
        return (route.id, *sorted((n, str(wire.get(n, route.params[n].default))) for n in route.price_factors))

    def _check(self, req: Requirement, path: str) -> None:
        check_terms(self.policy, req, self.base_url + path)

    def _ledger_spent(self) -> int:
        if self.policy.ledger_budget_usd is None:
            return 0
        return self.ledger.spent_in_period(self.policy.ledger_budget_period)

    def _choose(self, required: PaymentRequired, path: str) -> Requirement:
        """The first requirement we can sign and the policy allows; otherwise say what was offered."""
        reasons = []
        for req in required.accepts:
            why = refuse_unsupported(req) or self.policy.refuse_terms(req, self.base_url + path)
            if why is None:
                return req
            reasons.append(f"{req.describe()}: {why}")
        if not reasons:
            raise PaymentRequiredError(f"The server asked for payment for {path} but offered no way to pay"
                                       + (f" ({required.error})" if required.error else "") + ". Nothing was signed.")
        raise PaymentRequiredError("None of the offered payment options can be used. Offered: "
                                   + "; ".join(reasons) + ". Nothing was signed.")

    async def _learn_terms(self, path: str, body: dict[str, Any], key: tuple) -> _Terms:
        """Terms for ``key``: reused when known (one round trip to pay), else read from an unpaid 402."""
        if key in self._terms:
            return self._terms[key]
        # Concurrent first requests to one route learn its terms once, not once each.
        async with self._learning.setdefault(key, asyncio.Lock()):
            if key in self._terms:
                return self._terms[key]
            t0 = time.time()
            r = await self._retrying(lambda: self._http.post(path, json=body))
            if r.status_code != 402:
                _raise_unpaid(r, path)
            required = decode_payment_required(r.headers.get("payment-required"), _json_or_none(r))
            terms = _Terms(required, self._choose(required, path), learned_at=t0,
                           learned_ms=(time.time() - t0) * 1000)
            self._terms[key] = terms
            return terms

    async def _paid_post(self, path: str, body: dict[str, Any], key: tuple, *, kind: str, route: Route | None,
                         confirm: bool, job: AsyncJob | None = None) -> tuple[Any, Receipt | None, SignedPayment]:
        """POST with a payment. Signs at most twice, and the second time only after the server
        plainly refused the first (a fresh 402 with no earlier ambiguous attempt): so one request
        can never settle twice."""
        terms = await self._learn_terms(path, body, key)
        reused = terms.paid
        if job is not None:
            how = ("reused from an earlier paid request: this payment needs one round trip" if reused else
                   "read from the unpaid request's 402 answer (body {}), PAYMENT-REQUIRED header")
            job.inspector.append(InspectorStep("402 Payment Required", f"{terms.requirement.describe()} — {how}",
                                               {"PAYMENT-REQUIRED": terms.required.raw}, terms.learned_at,
                                               terms.learned_ms))
        for attempt in range(2):
            req = terms.requirement
            self._check(req, path)
            self.spending.reserve(req.amount, confirm=confirm, ledger_spent=self._ledger_spent())
            t0 = time.time()
            try:
                signed = sign_payment(self.wallet, req, terms.required.resource)
            except BaseException:
                self.spending.release(req.amount)
                raise
            self.stats["signatures"] += 1
            self.ledger.record_payment(
                nonce=signed.nonce, kind=kind, route=route.id if route else None, method="POST",
                url=self.base_url + path, body=body, amount=req.amount, asset=req.asset, network=req.network,
                pay_to=req.pay_to, payer=self.wallet.address, valid_before=signed.valid_before,
                payload=signed.header, session=self.session)
            if job is not None:
                auth = signed.payload["payload"]["authorization"]
                job.add_step("Signed authorization", f"EIP-3009 TransferWithAuthorization of {req.amount} atomic "
                             f"units, nonce {signed.nonce[:10]}…, valid until {auth['validBefore']}",
                             {"PAYMENT-SIGNATURE": signed.payload}, t0)
            t1 = time.time()
            try:
                r = await self._send_with_payment(path, body, signed, signed.nonce, job=job)
            except BaseException:  # cancelled or broken mid-send: it may have left, so it may settle
                self.spending.settle(req.amount)
                self.ledger.update_payment(signed.nonce, status="uncertain", error="interrupted while sending")
                raise
            if r is None:  # gave up on an ambiguous failure: may have settled
                self.spending.settle(req.amount)
                found = await self._find_paid_job(route, body, signed.signed_at) if route else None
                if found:
                    self.ledger.update_payment(signed.nonce, status="settled")
                    return {"jobId": found, "status": "pending"}, None, signed
                raise ServiceError(
                    f"The service did not answer the paid request to {path} after {self.max_retries + 1} tries. "
                    f"The payment ({fmt_usd(req.amount_usd)}, nonce {signed.nonce[:10]}…) may have settled; it "
                    "is recorded in the ledger and ss.resume() will find the job or confirm nothing was paid. "
                    "Nothing was signed twice.", paid_usd=req.amount_usd)
            if r.status_code == 200:
                receipt = _receipt(r)
                if receipt is not None and self.is_sandbox:
                    receipt = dataclasses.replace(receipt, on_chain=False)
                terms.paid = True
                self.spending.settle(req.amount)
                self.ledger.update_payment(signed.nonce, status="settled", tx=receipt and receipt.transaction,
                                           receipt=receipt and receipt.to_dict())
                if job is not None:
                    job.add_step("Settlement", f"PAYMENT-RESPONSE: {receipt.transaction if receipt else 'no receipt'}"
                                 f" on {receipt.network_name if receipt else '?'}",
                                 {"PAYMENT-RESPONSE": receipt.to_dict() if receipt else None,
                                  "response": _json_or_none(r)}, t1)
                return _json_or_none(r) or {}, receipt, signed
            if r.status_code == 402:
                refusal = decode_payment_required(r.headers.get("payment-required"), _json_or_none(r))
                ambiguous = self.ledger.payment(signed.nonce)["status"] == "uncertain"
                if ambiguous or _nonce_used(refusal.error):
                    # An earlier send of this very payment may have settled: find its job, never re-pay.
                    self.spending.settle(req.amount)
                    found = await self._find_paid_job(route, body, signed.signed_at) if route else None
                    if found:
                        self.ledger.update_payment(signed.nonce, status="settled")
                        return {"jobId": found, "status": "pending"}, None, signed
                    self.ledger.update_payment(signed.nonce, status="uncertain", error=refusal.error)
                    raise PaymentRejected(
                        f"The service refused a re-sent payment ({refusal.error or 'no reason'}) after an earlier "
                        f"send may have settled ({fmt_usd(req.amount_usd)}). It is recorded in the ledger; "
                        "ss.resume() will look for the job. Nothing was signed twice.",
                        reason=refusal.error, nonce=signed.nonce, paid_usd=req.amount_usd)
                self.spending.release(req.amount)
                self.ledger.update_payment(signed.nonce, status="rejected", error=refusal.error)
                if attempt == 0 and reused:
                    # Stale terms (price or payee changed): the refusal carries fresh ones; sign anew.
                    terms = _Terms(refusal, self._choose(refusal, path))
                    self._terms[key] = terms
                    continue
                raise PaymentRejected(f"The service refused the payment for {path}: "
                                      f"{refusal.error or 'no reason given'}. Nothing was paid.",
                                      reason=refusal.error, nonce=signed.nonce)
            status = self.ledger.payment(signed.nonce)["status"]
            if r.status_code in (400, 422) and status != "uncertain":
                self.spending.release(req.amount)
                self.ledger.update_payment(signed.nonce, status="rejected", error=r.text[:500])
                raise InvalidParams(f"The service rejected the request to {path}: {r.text[:300]}")
            self.spending.settle(req.amount) if status == "uncertain" else self.spending.release(req.amount)
            if status != "uncertain":
                self.ledger.update_payment(signed.nonce, status="rejected", error=r.text[:500])
            raise ServiceError(f"The paid request to {path} got HTTP {r.status_code}: {r.text[:200]}",
                               status=r.status_code, body=r.text)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_with_payment(self, path: str, body: dict[str, Any], signed: SignedPayment, nonce: str, *,
                                 job: AsyncJob | None) -> httpx.Response | None:
        """Send one signed payment, re-sending the same header on timeouts, resets, 429 and 5xx
        while it is still valid. ``None`` means we gave up without a definite answer."""
        for attempt in range(self.max_retries + 1):
            if attempt:
                if signed.valid_before - time.time() < 5:
                    break
            try:
                self.stats["requests"] += 1
                r = await self._http.post(path, json=body, headers={"PAYMENT-SIGNATURE": signed.header})
            except httpx.TransportError as e:
                # A connect error means the request never left: not ambiguous. Anything else might have
                # reached the server and settled.
                if not isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
                    self.ledger.update_payment(nonce, status="uncertain", error=f"{type(e).__name__}: {e}"[:300])
                if job is not None:
                    job._update(detail=f"Network fault after sending the payment ({type(e).__name__}); "
                                       "re-sending the same signed payment")
                await asyncio.sleep(self._backoff(attempt))
                continue
            if r.status_code == 429 or r.status_code >= 500:
                if r.status_code >= 500:
                    self.ledger.update_payment(nonce, status="uncertain", error=f"HTTP {r.status_code}")
                if job is not None:
                    job._update(detail=f"Service answered {r.status_code}; re-sending the same signed payment")
                await asyncio.sleep(parse_retry_after(r.headers.get("retry-after")) or self._backoff(attempt))
                continue
            if self.ledger.payment(nonce)["status"] == "signed":
                self.ledger.update_payment(nonce, status="sent")
            return r
        return None

    async def _find_paid_job(self, route: Route | None, body: dict[str, Any], since: float) -> str | None:
        """After a possibly-settled payment: the job it bought, by route, prompt and time."""
        if route is None:
            return None
        deadline = time.monotonic() + max(NOT_FOUND_GRACE_S * self.time_scale, MIN_SEARCH_S)
        while True:
            known = {row["id"] for row in self.ledger.jobs(limit=500)}
            try:
                for j in await self.jobs(limit=50):
                    d = j.raw
                    created = _ts(d.get("createdAt"))
                    same_route = (d.get("route") or _route_from_type(self.catalog, d.get("type"))) == route.id
                    same_prompt = "prompt" not in (d.get("params") or {}) or d["params"]["prompt"] == body.get("prompt")
                    fresh = j.id not in known and j.id not in self._claimed  # _claimed read live, after the await
                    if fresh and same_route and same_prompt and (created is None or created >= since - 120):
                        self._claimed.add(j.id)  # no await in between: two searches never take one job
                        return j.id
            except (StableStudioError, httpx.TransportError):
                pass
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(max(1.0 * self.time_scale, 0.05))

    def _backoff(self, attempt: int) -> float:
        return min(0.5 * 2**attempt, 8.0) * max(self.time_scale, 0.01) * (0.8 + 0.4 * random.random())

    async def _retrying(self, send) -> httpx.Response:
        """Unpaid requests: retry transport errors, 429 and 5xx freely (nothing can be charged)."""
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                self.stats["requests"] += 1
                r = await send()
            except httpx.TransportError as e:
                last = e
                await asyncio.sleep(self._backoff(attempt))
                continue
            if (r.status_code == 429 or r.status_code >= 500) and attempt < self.max_retries:
                await asyncio.sleep(parse_retry_after(r.headers.get("retry-after")) or self._backoff(attempt))
                continue
            return r
        raise ServiceError(f"The service could not be reached at {self.base_url}: {type(last).__name__}: {last}. "
                           "Nothing was paid.") from None

    # --- Sign-In-With-X --------------------------------------------------------------------------------
    async def _siwx_request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A job or upload-confirm request with a SIGN-IN-WITH-X header; answers one server challenge."""
        url = str(self._http.build_request(method, path, params=kwargs.get("params")).url)
        uri = url.split("?", 1)[0]
        header = self._siwx_header(uri)
        r = await self._retrying(lambda: self._http.request(method, path, headers={siwx.HEADER: header}, **kwargs))
        if r.status_code != 402:
            return r
        self._siwx_cache.pop(uri, None)
        challenge = decode_payment_required(r.headers.get("payment-required"), _json_or_none(r))
        info = siwx.challenge_info(challenge.extensions, url=uri, chains=self.chain_ids)
        header, self.siwx_signed[uri] = siwx.sign(self.wallet, info)
        self.stats["siwx_signatures"] += 1
        r = await self._retrying(lambda: self._http.request(method, path, headers={siwx.HEADER: header}, **kwargs))
        if r.status_code == 402:
            again = decode_payment_required(r.headers.get("payment-required"), _json_or_none(r))
            raise AuthError(f"Sign-in to {path} was refused even after answering the server's challenge: "
                            f"{again.error or 'no reason given'}.")
        return r

    def _siwx_header(self, uri: str) -> str:
        cached = self._siwx_cache.get(uri)
        if cached and cached[1] > time.time() + 30:
            return cached[0]
        header, payload = siwx.sign(self.wallet, siwx.own_info(uri, self.chain_ids[0]))
        self.stats["siwx_signatures"] += 1
        self._siwx_cache[uri] = (header, time.time() + 300)
        self.siwx_signed[uri] = payload
        return header

    # --- change propagation -------------------------------------------------------------------------
    def on_job(self, callback) -> None:
        """Call ``callback(job)`` whenever any job of this client changes (widgets use it)."""
        self._listeners.append(callback)

    def _job_changed(self, job: AsyncJob) -> None:
        if job.id:
            row = {"status": job.status, "result_url": job.result.url if job.result else None,
                   "thumbnail_url": job.result.thumbnail_url if job.result else None,
                   "error": str(job.error) if job.error else None, "finished_at": job.finished_at}
            if row != job._ledger_row:  # most polls change nothing: no write for them
                self.ledger.update_job(job.id, **row)
                job._ledger_row = row
        for cb in list(self._listeners):
            cb(job)

    async def _after_complete(self, job: AsyncJob) -> None:
        """Keep a local copy when asked to: result URLs expire."""
        if self.save_dir is None or job.result is None or job.result.local_path:
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        target = self.save_dir / f"{job.id}{job.result.suffix}"
        r = await self._retrying(lambda: self._http.get(job.result.url))
        if r.status_code == 200:
            target.write_bytes(r.content)
            job.result.local_path = str(target)
            self.ledger.update_job(job.id, local_path=str(target))


# --- small helpers ----------------------------------------------------------------------------------

def _is_url(v: Any) -> bool:
    return isinstance(v, str) and v.startswith(("http://", "https://"))


def _placeholder_uploads(route: Route, wire: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The body to quote with (local images stand in as placeholder URLs) and the images to upload."""
    body, uploads = dict(wire), []
    for name, value in wire.items():
        if name in ("image", "lastFrame") and not _is_url(value):
            uploads.append(value)
            body[name] = "https://upload.invalid/pending.png"
        elif name == "images":
            local = [v for v in value if not _is_url(v)]
            uploads.extend(local)
            body[name] = [v if _is_url(v) else "https://upload.invalid/pending.png" for v in value]
    return body, uploads


def _read_image(source: Any) -> tuple[bytes, str, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "image.png", "image/png"
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise InvalidParams(f"{p} is not a file.", field="image")
        return p.read_bytes(), p.name, guess_mime(p.name)
    if type(source).__module__.startswith("PIL."):
        buf = io.BytesIO()
        source.save(buf, format="PNG")
        return buf.getvalue(), "image.png", "image/png"
    raise InvalidParams(f"Cannot upload a {type(source).__name__}: give a path, bytes or a PIL image.", field="image")


def _json_or_none(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _receipt(r: httpx.Response) -> Receipt | None:
    header = r.headers.get("payment-response")
    if not header:
        return None
    try:
        return decode_settle_response(header)
    except PaymentRequiredError:
        return None


def _nonce_used(error: str | None) -> bool:
    e = (error or "").lower()
    return "nonce" in e and ("used" in e or "replay" in e or "already" in e)


def _raise_unpaid(r: httpx.Response, path: str) -> None:
    if r.status_code in (400, 422):
        raise InvalidParams(f"The service rejected the request to {path}: {r.text[:300]}")
    raise ServiceError(f"Expected a 402 with payment terms from {path}, got HTTP {r.status_code}: {r.text[:200]}. "
                       "Nothing was paid.", status=r.status_code, body=r.text)


def _ensure_ok(r: httpx.Response, what: str) -> None:
    if r.status_code != 200:
        raise ServiceError(f"{what} failed with HTTP {r.status_code}: {r.text[:200]}", status=r.status_code,
                           body=r.text)


def _route_from_type(cat: Catalog, job_type: Any) -> str | None:
    """Map the service's ``type`` ("nano-banana-generate") to a route id."""
    if not isinstance(job_type, str):
        return None
    for rid, r in cat.routes.items():
        if job_type in (f"{r.model}-{r.operation}", rid):
            return rid
    # The service also says e.g. "sora-2-video": the longest model name it starts with decides.
    models = sorted((m for m in cat.models if job_type.startswith(m + "-")), key=len, reverse=True)
    if models:
        ops = [r for r in cat.routes.values() if r.model == models[0]]
        return ops[0].id if len(ops) == 1 else None
    return None


def _ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return siwx.parse_iso(value).timestamp()
    except ValueError:
        return None


# --- the sync facade --------------------------------------------------------------------------------

class _LoopThread:
    """A private event loop on a daemon thread: the sync API works inside a running notebook
    loop without patching it (nest-asyncio is archived upstream)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="stablestudio-loop", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self.running:
            coro.close()
            raise RuntimeError("This StableStudio client is closed; make a new one.")
        if threading.current_thread() is self._thread:
            raise RuntimeError("StableStudio (sync) was called from its own event loop; use AsyncStableStudio.")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class Job:
    """The sync twin of :class:`AsyncJob`; a bare ``job`` in a notebook cell shows a live card."""

    def __init__(self, inner: AsyncJob, runner: _LoopThread):
        self._inner, self._runner = inner, runner

    def wait(self, timeout: float | None = None) -> Result:
        return self._runner.run(self._inner.wait(timeout))

    def retry(self, *, confirm: bool = False) -> Job:
        """Pay again for the same route and parameters (a new payment, at your request)."""
        return Job(self._runner.run(self._inner.retry(confirm=confirm)), self._runner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """A bare ``job`` in a notebook cell shows a live card (plain text elsewhere)."""
        from .widgets import JobCard

        bundle = JobCard(self)._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data["text/plain"] = repr(self)
        return bundle


class StableStudio:
    """The sync client: the same methods as :class:`AsyncStableStudio`, blocking."""

    def __init__(self, *args: Any, _async: AsyncStableStudio | None = None, **kwargs: Any):
        self._runner = _LoopThread()
        if _async is None:
            async def make() -> AsyncStableStudio:
                return AsyncStableStudio(*args, **kwargs)
            try:
                _async = self._runner.run(make())
            except BaseException:
                self._runner.stop()
                raise
        self.aio = _async

    @classmethod
    def sandbox(cls, **kwargs: Any) -> StableStudio:
        """A client on a fresh in-process sandbox with a throwaway wallet: no money, no network."""
        self = cls.__new__(cls)
        self._runner = _LoopThread()

        async def make() -> AsyncStableStudio:
            return AsyncStableStudio.sandbox(**kwargs)
        self.aio = self._runner.run(make())
        return self

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _wrap(self, job: AsyncJob | Quote) -> Job | Quote:
        return job if isinstance(job, Quote) else Job(job, self._runner)

    # Attributes shared with the async client.
    base_url = property(lambda self: self.aio.base_url)
    wallet = property(lambda self: self.aio.wallet)
    ledger = property(lambda self: self.aio.ledger)
    policy = property(lambda self: self.aio.policy)
    spending = property(lambda self: self.aio.spending)
    is_sandbox = property(lambda self: self.aio.is_sandbox)
    catalog = property(lambda self: self.aio.catalog)
    stats = property(lambda self: self.aio.stats)

    def routes(self) -> list[Route]:
        return self.aio.routes()

    def quote(self, route_or_model: str, /, **params: Any) -> Quote:
        return self._run(self.aio.quote(route_or_model, **params))

    def quote_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Quote]:
        return self._run(self.aio.quote_many(calls))

    def generate(self, model: str, prompt: str | None = None, **kwargs: Any) -> Job:
        return self._wrap(self._run(self.aio.generate(model, prompt, **kwargs)))

    def edit(self, model: str, prompt: str | None = None, **kwargs: Any) -> Job:
        return self._wrap(self._run(self.aio.edit(model, prompt, **kwargs)))

    def submit(self, route_id: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Job:
        return self._wrap(self._run(self.aio.submit(route_id, params, **kwargs)))

    def upload(self, source: Any, **kwargs: Any) -> str:
        return self._run(self.aio.upload(source, **kwargs))

    def job(self, job_id: str) -> Job:
        return self._wrap(self._run(self.aio.job(job_id)))

    def jobs(self, limit: int = 20, status: str | None = None) -> list[Job]:
        return [self._wrap(j) for j in self._run(self.aio.jobs(limit, status))]

    def delete_job(self, job_id: str) -> None:
        self._run(self.aio.delete_job(job_id))

    def resume(self) -> list[Job]:
        return [self._wrap(j) for j in self._run(self.aio.resume())]

    def close(self) -> None:
        """Close connections, stop an in-process sandbox and the private loop (safe to call twice)."""
        if not self._runner.running:
            return
        try:
            self._run(self.aio.aclose())
        finally:
            self._runner.stop()

    def __enter__(self) -> StableStudio:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self.aio).replace("AsyncStableStudio", "StableStudio", 1)
