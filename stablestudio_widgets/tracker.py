"""Every live job of one client, the one channel their changes go out on, and what a job needs
from its client (:class:`~stablestudio_widgets.jobs.JobHost`).

The ledger is a subscriber like the widgets: it writes a job's row whenever the row would change.
"""

from __future__ import annotations

import json
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from .boundary import atomic_amount, file_stem, finite_number, job_path, ledger_params, wire_params
from .boundary import job_id as checked_job_id
from .catalog import Catalog
from .errors import ServiceError, StableStudioError
from .jobs import AsyncJob
from .ledger import Ledger
from .results import Downloads, write_new
from .schedule import LEARNED, History
from .service import Service
from .status import JobStatus
from .x402 import Receipt

Listener = Callable[[AsyncJob], None]


FULL_INSPECTORS = 16  # finished jobs whose inspector steps stay whole (the latest)


class JobTracker:
    """The registry of live jobs by id and their change channel; the host every job talks to."""

    def __init__(self, service: Service, ledger: Ledger, catalog: Catalog, *, session: str,
                 save_dir: Path | None, resubmit: Callable[[AsyncJob, bool, float | None], Awaitable[AsyncJob]],
                 download_limits: dict[str, int] | None = None):
        self.service, self.ledger, self.catalog, self.session = service, ledger, catalog, session
        self.save_dir = save_dir
        self.downloads = Downloads(service, download_limits)
        self.jobs: dict[str, AsyncJob] = {}
        self._made: weakref.WeakSet[AsyncJob] = weakref.WeakSet()  # every job made here, while someone holds it
        self._earlier: weakref.WeakSet[AsyncJob] = weakref.WeakSet()  # cards of earlier kernels' payments
        self._listeners: list[Listener] = [self._persist]
        # Finished jobs keep their inspector steps whole while they are among the latest (what a notebook
        # looks at: the signed payload, the 402 body); older ones keep a compact form.
        self.full_inspectors = FULL_INSPECTORS
        self._latest_finished: deque[AsyncJob] = deque()
        self._ledger_rows: dict[str, dict[str, Any] | None] = {}  # ledger jobs: what their row last got
        self.payers: dict[str, str | None] = {}  # job id -> the wallet address that owns it (signs in to poll it)
        # Jobs a widget paid again for (their Retry is done, in every widget that shows them: one
        # request, one retry): the job's key.
        self.retried: set[str] = set()
        self._run_times: dict[tuple[str, str], list[float]] = {}  # (route, variant) -> recent run times
        self._shapes: dict[str, list[Any]] = {}  # route -> recent jobs' progress readings, as shares of their runs
        self._reports_progress: bool | None = None  # does this service say how far along jobs are?
        self._resubmit = resubmit
        self.client: Any = None  # the AsyncStableStudio this belongs to (a widget for a job reaches it here)

    @property
    def time_scale(self) -> float:
        return self.service.time_scale

    # --- the change channel ----------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(job)`` on every change of every job of this client; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def changed(self, job: AsyncJob) -> None:
        if job.percent is not None:  # this service says how far along jobs are: later plans count on it
            self._reports_progress = True
        if job.done and not job.events_compacted and job not in self._latest_finished:
            if job in self._earlier:  # a card for an earlier kernel's payment: not one of this session's latest
                job.compact_events()
            else:
                self._latest_finished.append(job)
                while len(self._latest_finished) > self.full_inspectors:
                    self._latest_finished.popleft().compact_events()
        for listener in list(self._listeners):
            listener(job)

    def _persist(self, job: AsyncJob) -> None:
        """The ledger's subscription: write the job's row when what it records has changed."""
        if job.id not in self._ledger_rows:
            return
        row = _row(job)
        if row != self._ledger_rows.get(job.id):  # most polls change nothing: no write for them
            self.ledger.update_job(job.id, **row)
            self._ledger_rows[job.id] = row

    # --- the job host interface -------------------------------------------------------------------
    def payer_of(self, job_id: str) -> str | None:
        """The wallet address that paid for ``job_id`` (it signs in to see it), if we know it."""
        if job_id not in self.payers:  # read once, a miss too: a job is polled many times
            payer = (self.ledger.job(job_id) or {}).get("payer")
            self.payers[job_id] = payer if payer in self.service.wallet.addresses.values() else None
        return self.payers[job_id]

    async def poll(self, job_id: str) -> tuple[httpx.Response, dict[str, Any]]:
        r = await self.service.signed_in("GET", job_path(job_id), as_=self.payer_of(job_id))
        return r, self.service.siwx_signed.get(str(r.request.url).split("?", 1)[0], {})

    def learned(self, job: AsyncJob) -> History:
        if self._reports_progress is None:
            self._reports_progress = self.ledger.reports_progress(self.service.base_url)
        if job.route.id not in self._shapes:
            self._shapes[job.route.id] = self.ledger.progress_shapes(self.service.base_url, job.route.id)
        return History(list(self._runs(job)), list(self._shapes[job.route.id]), self._reports_progress)

    def _runs(self, job: AsyncJob) -> list[float]:
        kind = (job.route.id, variant(job))
        if kind not in self._run_times:
            self._run_times[kind] = [r for r, _ in self.ledger.run_times(self.service.base_url, *kind)]
        return self._run_times[kind]

    async def completed(self, job: AsyncJob) -> None:
        """Learn how long it took; keep a local copy when asked to (result URLs expire): checked like
        any download, named after the job id (hashed unless plainly an id), with the suffix of its
        checked type."""
        if job.run_s is not None:
            runs = self._runs(job)
            runs.append(job.run_s)
            del runs[:-LEARNED]
        if job.progress_shape:
            shapes = self._shapes.setdefault(job.route.id, [])
            shapes.append(job.progress_shape)
            del shapes[:-LEARNED]
        if self.save_dir is None or job.result is None or job.result.local_path or job.id is None:
            return
        try:
            got = await self.downloads.fetch(job.result.url, job.route.media)
        except (StableStudioError, httpx.TransportError) as e:
            job.progress(f"Could not keep a local copy: {e}")
            return
        target = write_new(self.save_dir, file_stem(job.id), got.suffix, got.data)
        job.result.local_path = str(target)
        self.ledger.update_job(job.id, local_path=str(target))

    async def resubmit(self, job: AsyncJob, confirm: bool, confirm_usd: float | None) -> AsyncJob:
        return await self._resubmit(job, confirm, confirm_usd)

    # --- registering jobs ---------------------------------------------------------------------------
    def adopt(self, job: AsyncJob, job_id: str, *, amount: int, nonce: str, payer: str, status: str,
              receipt: Receipt | None, created_at: float | None = None, session: str | None = None) -> None:
        """A paid job exists: the ledger and the registry learn it before anything else can go wrong.
        ``session``: the session that paid, when it was an earlier one (a lost answer found later)."""
        created, status = created_at or time.time(), str(status or JobStatus.PENDING)
        self.ledger.record_job(id=job_id, base_url=self.service.base_url, route=job.route.id, model=job.route.model,
                               media=job.route.media, prompt=job.prompt, params=job.params, status=status,
                               amount=amount, nonce=nonce, payer=payer, session=session or self.session,
                               created_at=created, variant=variant(job))
        self.jobs[job_id] = job
        self.payers[job_id] = payer
        # The row as just recorded: the job's move to paid writes nothing more (unless it differs)
        self._ledger_rows[job_id] = {**_row(job), "status": status, "error": None}
        job.paid(job_id, amount=amount, receipt=receipt, status=status, created_at=created)

    def new_job(self, route_id: str, params: dict[str, Any], *, earlier: bool = False) -> AsyncJob:
        """A job of this client; ``earlier``: the card of a payment an earlier kernel made."""
        job = AsyncJob(route=self.catalog.route(route_id), params=params, host=self)
        self._made.add(job)
        if earlier:
            self._earlier.add(job)
        return job

    def awaiting(self, payment_id: str) -> AsyncJob | None:
        """The job a payment was signed for while the service has not named it (its answer was lost):
        the job that payment bought is given to it, so its card is the one that updates."""
        return next((j for j in list(self._made) if j.id is None and j.payment and j.payment[0] == payment_id), None)

    def from_service(self, data: dict[str, Any], job_id: str | None = None, *, payer: str | None = None) -> AsyncJob:
        """A job as the service (or the ledger) describes it, merged with what we know of it. Its
        params are wire data: image inputs stay only as http(s) URLs, never local paths. ``payer``:
        the address that signed in to see it."""
        job_id = checked_job_id(job_id or data.get("id") or data.get("jobId"))
        if payer:
            self.payers.setdefault(job_id, payer)
        row = self.ledger.job(job_id)
        route_id = data.get("route") or (row or {}).get("route") or route_from_type(self.catalog, data.get("type"))
        if not isinstance(route_id, str) or route_id not in self.catalog.routes:
            raise ServiceError(f"Job {job_id} has a type this client does not know ({str(data.get('type'))[:60]!r}).",
                               status=200, body=str(data)[:500], job_id=job_id)
        route = self.catalog.routes[route_id]
        params = wire_params(route, data.get("params"))
        if row and not params:
            params = ledger_params(route, row["params"])
        job = self.jobs.get(job_id)
        if job is None:
            job = self.new_job(route_id, params)
            job.id, job.amount = job_id, atomic_amount((row or {}).get("amount"))  # the ledger's, checked
            created = finite_number((row or {}).get("created_at"))
            job.created_at = created if created else job.created_at
            self.jobs[job_id] = job
        if row:  # what the service says of a job we paid for goes to the ledger, however we learnt it
            self._ledger_rows.setdefault(job_id, None)
        job.apply(data)
        return job


def variant(job: AsyncJob) -> str:
    """The kind of job, for learning how long such jobs take: its price-setting parameters."""
    return json.dumps(job.route.price_point(job.params), sort_keys=True)


def route_from_type(cat: Catalog, job_type: Any) -> str | None:
    """Map the service's ``type`` ("nano-banana-generate", "sora-2-video") to a route id."""
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


def _row(job: AsyncJob) -> dict[str, Any]:
    """What the ledger's row of a job records of it, beyond what it was paid for."""
    return {"status": str(job.status), "result_url": job.result.url if job.result else None,
            "thumbnail_url": job.result.thumbnail_url if job.result else None,
            "error": str(job.error) if job.error else None, "finished_at": job.finished_at,
            "run_s": job.run_s, "reported_progress": job.reported_progress,
            "progress_shape": json.dumps(job.progress_shape) if job.progress_shape else None}
