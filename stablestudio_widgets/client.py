"""``AsyncStableStudio``: the public client, a thin facade over the modules that do the work.

    service.py   pooled HTTP, unpaid retries, Sign-In-With-X
    payments.py  terms, requirement choice, the paid POST and its one outcome
    uploads.py   local images → blob URLs
    tracker.py   live jobs, their change channel, what a job needs from its client
    recovery.py  resume(), finding the job a payment bought
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import catalog as catalog_mod
from .boundary import job_id as boundary_job_id
from .boundary import job_path, json_object, refuse_local_files
from .catalog import Catalog, Route, live
from .catalog.live import RouteTableWarning
from .catalog.schema import NotUnderstood
from .errors import AuthError, InvalidParams, JobNotFound, ServiceError, StableStudioError, fmt_usd
from .jobs import AsyncJob
from .ledger import Ledger, home
from .methods import PaymentMethod, default_methods
from .networks import TEMPO_TESTNET
from .payments import Payments
from .policy import DEFAULT_MAX_USD_PER_REQUEST, Consent, Spending, SpendingPolicy, is_loopback
from .quotes import Quote
from .recovery import Recovery
from .service import DEFAULT_BASE_URL, Service, json_or_none
from .status import JobStatus
from .tracker import JobTracker
from .uploads import Uploads, media_params, placeholder_uploads
from .wallet import Wallet

ENV_BASE_URL = "STABLESTUDIO_BASE_URL"
_UNSET: Any = object()

__all__ = ["AsyncStableStudio", "Quote"]


class AsyncStableStudio:
    """Async client: every method is awaitable and many jobs can be in flight at once."""

    def __init__(self, base_url: str | None = None, wallet: Wallet | None = None, *,
                 budget_usd: float | None = None, max_usd_per_request: float | None = DEFAULT_MAX_USD_PER_REQUEST,
                 confirm_above_usd: float | None = _UNSET, ledger_budget_usd: float | None = None,
                 policy: SpendingPolicy | None = None, ledger: Ledger | str | os.PathLike | None = None,
                 save_results: bool | str | os.PathLike = False, download_limits: dict[str, int] | None = None,
                 time_scale: float = 1.0, dry_run: bool = False, strict: bool = True, timeout: float = 60.0,
                 max_retries: int = 4, transport: Any = None, prefer_network: str | list[str] | None = None,
                 solana_rpc_url: str | dict[str, str] | None = None,
                 tempo_rpc_url: str | dict[str, str] | None = None, methods: list[PaymentMethod] | None = None):
        base_url = (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        wallet = wallet if wallet is not None else Wallet.from_env()
        # The route table: the service's, as read last time (if recent), else the bundled one.
        self.catalog: Catalog = live.load_cached(home(), base_url, catalog_mod.load(),
                                                 max_age_s=live.CACHE_FRESH_S) or catalog_mod.bundled()
        self.strict = strict  # parameters the route table does not know: refused (True) or sent with a warning
        if policy is None:
            policy = SpendingPolicy(max_usd_per_request=max_usd_per_request, budget_usd=budget_usd,
                                    ledger_budget_usd=ledger_budget_usd)
            if confirm_above_usd is not _UNSET:
                policy.confirm_above_usd = confirm_above_usd
        self.policy = policy
        self.spending = Spending(policy)
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
        self.dry_run = dry_run  # every paid call returns its exact Quote instead of paying
        self.session = uuid.uuid4().hex[:12]
        self._sandbox: Any = None
        self.service = Service(base_url, wallet, timeout=timeout, max_retries=max_retries, time_scale=time_scale,
                               transport=transport)
        save_dir = None if save_results is False else (home() / "results" if save_results is True
                                                       else Path(save_results))
        self.tracker = JobTracker(self.service, self.ledger, self.catalog, session=self.session, save_dir=save_dir,
                                  download_limits=download_limits, resubmit=self._resubmit)
        self.tracker.client = self
        prefer = [prefer_network] if isinstance(prefer_network, str) else list(prefer_network or [])
        self.payments = Payments(self.service, policy, self.spending, self.ledger, self.catalog, session=self.session,
                                 on_chain=not (is_loopback(base_url) and wallet.sandbox),
                                 find_job=lambda *a: self.recovery.find_paid_job(*a),
                                 methods=methods or default_methods(solana_rpc_url=solana_rpc_url,
                                                                    tempo_rpc_url=_tempo_rpc(tempo_rpc_url, base_url)),
                                 prefer=prefer)
        self.recovery = Recovery(self.catalog, self.ledger, self.tracker, self.payments, self._listing)
        self.uploads = Uploads(self.service, self.payments)

    # --- construction helpers -----------------------------------------------------------------
    @classmethod
    def sandbox(cls, *, time_scale: float = 0.1, faults: Any = None, network: str | list[str] | None = None,
                timing: Any = None, **kwargs: Any) -> AsyncStableStudio:
        """A client on a fresh in-process sandbox with a throwaway wallet: no money, no network.
        ``network``: what the sandbox takes ("base-sepolia", "solana-devnet", "tempo-testnet", or several);
        ``timing``: how long its jobs take (:class:`~stablestudio_widgets.sandbox.Timing`)."""
        from .sandbox import Sandbox

        sb = Sandbox(time_scale=time_scale, faults=faults, networks=network, timing=timing).start()
        kwargs.setdefault("ledger", ":memory:")
        kwargs.setdefault("solana_rpc_url", sb.solana_rpc_url)
        kwargs.setdefault("tempo_rpc_url", sb.tempo_rpc_url)
        wallet = kwargs.pop("wallet", None) or Wallet.generate(evm=any(n.startswith("eip155:") for n in sb.networks),
                                                               solana=sb.takes_solana)
        client = cls(base_url=sb.url, wallet=wallet, time_scale=time_scale, **kwargs)
        client._sandbox = sb
        return client

    base_url = property(lambda self: self.service.base_url)
    wallet = property(lambda self: self.service.wallet)
    time_scale = property(lambda self: self.service.time_scale)
    chain_ids = property(lambda self: self.service.chain_ids)
    stats = property(lambda self: self.service.stats)

    @property
    def is_sandbox(self) -> bool:
        return self._sandbox is not None or (is_loopback(self.base_url) and self.wallet.sandbox)

    def live_jobs(self) -> list[AsyncJob]:
        """Every job this client has paid for or looked up in this session."""
        return list(self.tracker.jobs.values())

    def on_job(self, callback: Any) -> Any:
        """Call ``callback(job)`` on every change of any job of this client; returns an unsubscribe."""
        return self.tracker.subscribe(callback)

    async def aclose(self) -> None:
        for job in self.tracker.jobs.values():
            job.stop_polling()
        await self.service.aclose()
        self.tracker.downloads.close()
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

    # --- catalog and quotes ---------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return list(self.catalog.routes.values())

    async def refresh_routes(self) -> Catalog:
        """Read the service's route table (``/openapi.json``) into this client: new models appear,
        removed ones disappear, validation follows the service's own schemas, and a copy is kept
        on disk for the next start. When it cannot be read or used (offline, a document this
        client does not understand) the disk copy, else the bundled table, stands in, with a
        :class:`RouteTableWarning` saying why. Returns the catalog (``.source``, ``.age_s``)."""
        now = time.time()
        try:
            raw = await self._discovery_document()
            fresh = live.from_document(raw, catalog_mod.load(), fetched_at=now)
            live.save(home(), self.base_url, raw, now)
        except (ServiceError, NotUnderstood) as e:
            fresh = live.load_cached(home(), self.base_url, catalog_mod.load(), max_age_s=None) or catalog_mod.bundled()
            instead = (f"the copy read {fresh.age_s / 3600:.1f} h ago" if fresh.age_s is not None
                       else "the bundled route table")
            warnings.warn(f"Could not use the route table of {self.base_url} ({e}); using {instead}.",
                          RouteTableWarning, stacklevel=2)
        self.catalog.replace(fresh)
        return self.catalog

    async def _discovery_document(self) -> bytes:
        for path in ("/openapi.json", "/api/openapi.json"):
            status, body = await self.service.get_bounded(path, live.MAX_DOC_BYTES)
            if status == 200:
                return body
            if status != 404:
                raise ServiceError(f"GET {path} answered HTTP {status}.", status=status)
        raise ServiceError("the service serves no /openapi.json.", status=404)

    def _strict(self, strict: bool | None) -> bool:
        return self.strict if strict is None else strict

    def _resolve(self, route_or_model: str, params: dict[str, Any]) -> Route:
        if "/" in route_or_model:
            return self.catalog.route(route_or_model)
        return self.catalog.generate_route(route_or_model, with_image="image" in params)

    async def quote(self, route_or_model: str, /, *, strict: bool | None = None, **params: Any) -> Quote:
        """The exact price of a call from the server's unpaid 402. Pays nothing, signs nothing."""
        route = self._resolve(route_or_model, params)
        wire = route.validate(params, uploadable=True, strict=self._strict(strict))
        body, uploads = placeholder_uploads(route, wire)
        terms = await self.payments.learn(route.path, body, Payments.price_key(route, body))
        req = terms.requirement
        uploads = self.uploads.needed(uploads)  # an image uploaded already is not paid again
        upload_amount = (await self.payments.upload_terms()).requirement.amount if uploads else 0
        return Quote(route.id, req.amount, req.network, req.pay_to, len(uploads), upload_amount,
                     terms.options)

    async def quote_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Quote]:
        """Exact prices of a whole batch (a dry run): concurrent unpaid 402s, nothing signed."""
        return list(await asyncio.gather(*(self.quote(r, **p) for r, p in calls)))

    # --- generation ------------------------------------------------------------------------------
    async def generate(self, model: str, prompt: str | None = None, *, image: Any = None, confirm: bool = False,
                       confirm_usd: float | None = None, dry_run: bool = False, strict: bool | None = None,
                       **params: Any) -> AsyncJob:
        """Text-to-image/video with ``model``; with ``image`` its image-to-video route."""
        if prompt is not None:
            params["prompt"] = prompt
        if image is not None:
            params["image"] = image
        route = self.catalog.generate_route(model, with_image=image is not None)
        return await self.submit(route.id, params, confirm=confirm, confirm_usd=confirm_usd, dry_run=dry_run,
                                 strict=strict)

    async def edit(self, model: str, prompt: str | None = None, *, images: Any = None, confirm: bool = False,
                   confirm_usd: float | None = None, dry_run: bool = False, strict: bool | None = None,
                   **params: Any) -> AsyncJob:
        """Edit images with ``model`` (local files and PIL images are uploaded first)."""
        if prompt is not None:
            params["prompt"] = prompt
        if images is not None:
            params["images"] = images
        return await self.submit(self.catalog.edit_route(model).id, params, confirm=confirm, confirm_usd=confirm_usd,
                                 dry_run=dry_run, strict=strict)

    async def submit(self, route_id: str, params: dict[str, Any] | None = None, *, confirm: bool = False,
                     confirm_usd: float | None = None, dry_run: bool = False, strict: bool | None = None,
                     job: AsyncJob | None = None, local_files: bool = True) -> AsyncJob:
        """Pay for one generation on an explicit route and return its job (not yet finished).

        Every check that can fail runs before money moves: parameters, the exact price of the
        generation and of any uploads it needs, the policy and your consent for their total.
        ``confirm=True`` consents to exactly the quoted price; ``confirm_usd`` is the most you agree
        to pay for the whole call. With ``dry_run`` (here or on the client) it stops there and
        returns the exact :class:`Quote` instead. ``strict=False`` sends parameters the route table
        does not know, unchecked. ``local_files=False`` (retries, params from the service) refuses
        paths: only URLs and in-memory images are sent.
        """
        route = self.catalog.route(route_id)
        try:
            if not local_files:
                refuse_local_files(route, dict(params or {}))
            wire = route.validate(dict(params or {}), uploadable=True, strict=self._strict(strict))
        except InvalidParams as e:
            if job is not None:  # a card waiting for this call shows why it did not run
                job.refused(e)
            raise
        if dry_run or self.dry_run:
            return await self.quote(route_id, strict=strict, **(params or {}))  # type: ignore[return-value]
        if job is None:
            job = self.tracker.new_job(route.id, wire)
        job.host = self.tracker
        job.stage(JobStatus.QUOTING)
        try:
            return await self._pay(route, wire, job, confirm, confirm_usd)
        except StableStudioError as e:
            if job.id is None:
                job.refused(e)
            raise
        except Exception as e:  # unexpected: the job still says what happened, what it cost, what to do
            job.interrupted(e)
            raise

    async def _resubmit(self, job: AsyncJob, confirm: bool, confirm_usd: float | None) -> AsyncJob:
        """A retry: the same route and params, a new payment, and no local file read by path."""
        return await self.submit(job.route.id, dict(job.params), confirm=confirm, confirm_usd=confirm_usd,
                                 local_files=False)

    async def _pay(self, route: Route, wire: dict[str, Any], job: AsyncJob, confirm: bool,
                   confirm_usd: float | None) -> AsyncJob:
        body, uploads = placeholder_uploads(route, wire)
        key = Payments.price_key(route, body)
        terms = await self.payments.learn(route.path, body, key)
        extra, upload_consent = await self.uploads.extra_cost(uploads, route.path, confirm or confirm_usd is not None)
        self.payments.check(terms.requirement, route.path)
        # The policy and the user's consent see the total (generation + uploads) before the first upload is paid.
        req = terms.requirement
        consent = Consent.given(confirm, confirm_usd, req.amount + extra, req.pay_to)
        self.spending.reserve(req.amount, extra=extra, consent=consent, ledger_spent=self.payments.ledger_spent())
        self.spending.release(req.amount)
        if uploads:
            job.stage(JobStatus.UPLOADING, f"Uploading {len(uploads)} image(s)")
            wire, job.uploads = await self.uploads.upload_inputs(route, wire, consent=upload_consent)
            job.params = {**job.params, **{k: wire[k] for k in media_params(route, wire)}}
        job.stage(JobStatus.PAYING, "Signing and sending the payment")
        paid = await self.payments.post(route.path, wire, key, kind="generate", route=route,
                                        consent=consent.less(extra), job=job)
        try:
            job_id = boundary_job_id(paid.data.get("jobId") or paid.data.get("id"))
        except ServiceError:
            usd_ = paid.signed.requirement.amount_usd
            raise ServiceError(f"The service took the payment ({fmt_usd(usd_)}) but returned no usable job id: "
                               f"{str(paid.data)[:200]}. The payment is in the ledger.",
                               status=200, body=str(paid.data), paid_usd=usd_) from None
        self.tracker.adopt(job, job_id, amount=paid.signed.requirement.amount, nonce=paid.signed.nonce,
                           payer=paid.signed.payer, status=paid.data.get("status") or JobStatus.PENDING,
                           receipt=paid.receipt, created_at=paid.sent_at)
        return job

    async def upload(self, source: Any, *, confirm: bool = False, confirm_usd: float | None = None) -> str:
        """Upload a local image (path, bytes or PIL image) with the paid three-step flow; returns
        the blob URL to use in edit and image-to-video calls."""
        terms = await self.payments.upload_terms()
        consent = Consent.given(confirm, confirm_usd, terms.requirement.amount, terms.requirement.pay_to)
        return await self.uploads.upload(source, consent=consent)

    # --- jobs -----------------------------------------------------------------------------------------
    def _owners(self, job_id: str | None = None) -> list[str]:
        """Who may own a job: its known payer, else each of the wallet's addresses."""
        known = self.tracker.payer_of(job_id) if job_id else None
        return [known] if known else list(self.wallet.addresses.values())

    async def job(self, job_id: str) -> AsyncJob:
        """A job by id (from this session, the ledger, or the service)."""
        if job_id in self.tracker.jobs:
            return self.tracker.jobs[job_id]
        for owner in self._owners(job_id):  # jobs belong to the address that paid: ask as each
            r = await self.service.signed_in("GET", job_path(job_id), as_=owner)
            if r.status_code != 404:
                _ensure_ok(r, f"Fetching job {job_id}")
                return self.tracker.from_service(json_object(r) or {}, job_id, payer=owner)
        raise JobNotFound(f"The service knows no job {job_id} for wallet {self.wallet}.", job_id=job_id)

    async def jobs(self, limit: int = 20, status: str | None = None, *, payer: str | None = None) -> list[AsyncJob]:
        """This wallet's jobs on the service, newest first (those of ``payer`` only, if given)."""
        found: list[tuple[str, AsyncJob]] = []
        for owner, d in await self._listing(limit, status, payer=payer):
            try:
                found.append((str(d.get("createdAt") or ""), self.tracker.from_service(d, payer=owner)))
            except ServiceError:  # a job kind this client cannot show; the others still are
                continue
        found.sort(key=lambda cj: cj[0], reverse=True)  # stable: one owner's list keeps the service's order
        return [j for _, j in found[:limit]]

    async def _listing(self, limit: int, status: str | None = None, *,
                       payer: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The job list as the service sent it, per owner (wire data: checked by whoever reads it).
        Looking in it (resume) makes no jobs of this session; ``jobs()`` does."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        listed: list[tuple[str, dict[str, Any]]] = []
        owners, answered, refused = [payer] if payer else self._owners(), False, None
        for owner in owners:
            try:
                r = await self.service.signed_in("GET", "/api/jobs", as_=owner, params=params)
            except AuthError as e:  # the service does not sign in this kind of account: it owns no job there
                refused = e
                continue
            answered = True
            _ensure_ok(r, "Listing jobs")
            data = json_or_none(r)
            items = data.get("jobs", []) if isinstance(data, dict) else data  # {"jobs": […]} or a bare list
            listed += [(owner, d) for d in (items if isinstance(items, list) else []) if isinstance(d, dict)]
        if refused is not None and not answered:
            raise refused
        return listed

    async def delete_job(self, job_id: str) -> None:
        r = await self.service.signed_in("DELETE", job_path(job_id), as_=self.tracker.payer_of(job_id))
        _ensure_ok(r, f"Deleting job {job_id}")
        self.ledger.update_job(job_id, status=JobStatus.DELETED)

    async def resume(self, found: Callable[[AsyncJob], Any] | None = None) -> list[AsyncJob]:
        """Finish what was paid for but never finished (crash, restart, timeout, network fault).

        Re-sends still-valid signed payments whose answer was lost (same nonce: they settle at
        most once), finds the jobs they bought, and polls every unfinished paid job to the end.
        ``found(job)`` is called for each job as soon as it is known, before it is polled.
        """
        return await self.recovery.resume(found)


def _ensure_ok(r: Any, what: str) -> None:
    if r.status_code != 200:
        raise ServiceError(f"{what} failed with HTTP {r.status_code}: {r.text[:200]}", status=r.status_code,
                           body=r.text)


def _tempo_rpc(given: str | dict[str, str] | None, base_url: str) -> str | dict[str, str] | None:
    """Tempo testnet terms come only from a loopback sandbox, so there its gas price comes from the
    sandbox's own RPC stub unless told otherwise; mainnet always asks Tempo's public RPC."""
    if given is None and is_loopback(base_url):
        return {TEMPO_TESTNET: base_url + "/_sandbox/tempo-rpc"}
    return given
