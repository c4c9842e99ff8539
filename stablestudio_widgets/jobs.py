"""A paid generation and its polling. The job is the only owner of its status: the client, the
widgets and the service's answers ask it to move (``stage``, ``paid``, ``apply`` …), and every
move is published on the client's one change channel.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from .boundary import json_object, result_url
from .catalog import Route
from .errors import (
    AuthError,
    JobFailed,
    JobInterrupted,
    JobNotFound,
    JobTimeout,
    ServiceError,
    StableStudioError,
    fmt_usd,
    usd,
)
from .results import Result
from .schedule import History, PollPlan, parse_retry_after
from .status import LOCAL, RUNNING_ON_SERVICE, JobStatus, is_done
from .status import kind as kind_of
from .x402 import Receipt

if TYPE_CHECKING:
    from .results import Downloads

NOT_FOUND_GRACE_S = 30.0
MIN_TIMEOUT_S = 30.0
MAX_AUTH_REFUSALS = 3


class JobHost(Protocol):
    """What a job needs from its client, and nothing more."""

    time_scale: float
    downloads: Downloads

    def changed(self, job: AsyncJob) -> None:
        """Publish the job's new state on the change channel (ledger, widgets)."""

    async def poll(self, job_id: str) -> tuple[httpx.Response, dict[str, Any]]:
        """One signed-in ``GET /api/jobs/{id}``: the answer and the SIWX payload signed for it."""

    def learned(self, job: AsyncJob) -> History:
        """What the job's poll plan starts from: how long this user's recent jobs of the same kind
        took (the service's seconds), where their progress readings put them, whether the service
        reports progress."""

    async def completed(self, job: AsyncJob) -> None:
        """The job finished with a result (keep a local copy if asked, learn how long it took)."""

    async def resubmit(self, job: AsyncJob, confirm: bool, confirm_usd: float | None) -> AsyncJob:
        """Pay again for the same route and parameters (never reading a local file by path)."""


@dataclass
class JobEvent:
    """One step of how a job was paid for and fetched, as data; the widgets word it."""

    kind: str  # terms | signed | settled | signed_in | result
    data: dict[str, Any]
    at: float
    duration_ms: float
    compact: bool = False  # already cut down to what a finished job keeps

    def compacted(self) -> JobEvent:
        """What a finished job keeps of this step (a few hundred bytes, not kilobytes): the inspector
        words it the same, but the 402 body, repeated descriptions, the service's first answer and
        the long signature and transaction bytes are gone (the ledger keeps the payment)."""
        data = _compact(self.data)
        if self.kind == "terms" and data.get("offer"):  # the offer says it in words
            data.pop("accepted", None)
        signature = data.get("PAYMENT-SIGNATURE")
        if isinstance(signature, dict) and "authorization" in (signature.get("payload") or {}):
            signature.pop("accepted", None)  # an EIP-3009 authorization names the payee and amount itself
        return JobEvent(self.kind, data, self.at, self.duration_ms, compact=True)


DROPPED = frozenset({"PAYMENT-REQUIRED", "resource", "extensions", "response"})
SHORTENED = frozenset({"signature", "transaction"})  # signatures and encoded transactions: start only


def _compact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _compact(v, k) if isinstance(v, (dict, list)) or k in SHORTENED else v
                for k, v in value.items() if k not in DROPPED}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    if key in SHORTENED and isinstance(value, str) and len(value) > 80:
        return value[:24] + "…"
    return value


@dataclass(eq=False)
class AsyncJob:
    """A paid generation. ``await job.wait()`` polls it to completion."""

    route: Route
    params: dict[str, Any]
    host: JobHost | None = field(default=None, repr=False)
    id: str | None = None
    status: str = JobStatus.PENDING
    detail: str = ""
    amount: int | None = None  # atomic units paid
    receipt: Receipt | None = None
    result: Result | None = None
    error: StableStudioError | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    events: list[JobEvent] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)  # {name, url, cost_usd, reused} per input image
    raw: dict[str, Any] = field(default_factory=dict)
    percent: float | None = None  # how much of the work is done, when the service says
    run_s: float | None = None  # how long it ran, in the service's seconds (once complete)
    reported_progress: bool = False  # the service said how far along it was while it ran
    # The payment signed for it before the service named the job: (its ledger id, atomic amount).
    # A lost answer is found by it (resume() gives the job it bought to this same job).
    payment: tuple[str, int] | None = field(default=None, repr=False)
    ref: str | None = field(default=None, repr=False)  # what asked for it (a comparison's cell), kept with its payment
    progress_shape: list[list[float]] = field(default_factory=list)  # [share of its run, percent] readings
    events_compacted: bool = field(default=False, repr=False)  # its inspector steps are kept compact
    _poller: asyncio.Task | None = field(default=None, repr=False)

    @property
    def prompt(self) -> str | None:
        return self.params.get("prompt")

    @property
    def cost_usd(self) -> float | None:
        return usd(self.amount) if self.amount is not None else None

    @property
    def done(self) -> bool:
        """Finished for good (complete or failed); a timed-out or not-yet-found job is not."""
        return is_done(self.status)

    @property
    def scale(self) -> float:
        return self.host.time_scale if self.host is not None else 1.0

    # --- the only ways the status moves ----------------------------------------------------------
    def _move(self, **fields: Any) -> None:
        for k, v in fields.items():
            setattr(self, k, v)
        if self.host is not None:
            self.host.changed(self)

    def stage(self, status: str, detail: str = "") -> None:
        """A step of our own request (quoting, uploading, paying) before the service knows the job."""
        assert status in LOCAL, status
        self._move(status=status, detail=detail, error=None, finished_at=None)

    def awaiting_confirmation(self, price_usd: float) -> None:
        self._move(status=JobStatus.AWAITING_CONFIRMATION, error=None, finished_at=None,
                   detail=f"Waiting for your consent to pay {fmt_usd(price_usd)}")

    def cancel(self, detail: str = "Payment declined: nothing was signed") -> None:
        self._move(status=JobStatus.CANCELLED, detail=detail, finished_at=time.time())

    def refused(self, error: StableStudioError) -> None:
        """Our request ended before the service took the job (bad input, policy, refused payment)."""
        self._move(status=JobStatus.FAILED, error=error, finished_at=time.time())

    def paid(self, job_id: str, *, amount: int, receipt: Receipt | None, status: str,
             created_at: float | None = None) -> None:
        """The service took the payment and named the job."""
        self._move(id=job_id, amount=amount, receipt=receipt, status=status or JobStatus.PENDING,
                   created_at=created_at or time.time(), detail="", error=None)

    def receipted(self, receipt: Receipt) -> None:
        """The receipt of the payment that bought this job, when the job was learnt without one (from
        the ledger or the service's job list in a later kernel)."""
        if self.receipt is None:
            self._move(receipt=receipt)

    def interrupted(self, error: BaseException) -> None:
        """Our work on this job stopped on ``error`` without saying how the job ended: it moves to a
        truthful state instead of showing "paying" or "processing" forever. A paid job stays
        "interrupted" (the ledger keeps it for ``resume()``); an answer lost after signing may have
        been paid (found by ``resume()``, never paid again); before signing, nothing was paid."""
        if self.done or kind_of(self.status) == "cancelled":
            return  # a finished job keeps its verdict
        what = str(error) if isinstance(error, StableStudioError) else f"{type(error).__name__}: {error}"
        what = what.rstrip(". ")
        if self.id is not None:
            cost = fmt_usd(self.cost_usd or 0)
            self._move(status=JobStatus.INTERRUPTED, detail="", error=JobInterrupted(
                f"Following job {self.id} ({self.route.id}) stopped: {what}. It was paid ({cost}) and is kept in "
                "the ledger: call job.wait() again or ss.resume() later (it is not paid again).",
                job_id=self.id, paid_usd=self.cost_usd or 0.0))
        elif self.payment is not None and self.status == JobStatus.PAYING:
            paid = usd(self.payment[1])
            self.refused(JobInterrupted(
                f"{self.route.id}: the request stopped after its payment ({fmt_usd(paid)}) was signed: {what}. "
                "The payment may have gone through: ss.resume() looks for the job it bought (it is not paid again).",
                job_id="", paid_usd=paid))
        else:
            uploads = (" Images it uploaded were paid for; a retry reuses them."
                       if self.status == JobStatus.UPLOADING or self.uploads else "")
            self.refused(JobInterrupted(
                f"{self.route.id}: the request stopped before its payment was signed: {what}. Nothing was paid for "
                f"the generation.{uploads} Retry with job.retry() (a new payment) or try another model.", job_id=""))

    def note(self, kind: str, data: dict[str, Any], started: float, duration_ms: float | None = None) -> None:
        """Record an inspector event (what was sent and received, with timings)."""
        ms = (time.time() - started) * 1000 if duration_ms is None else duration_ms
        event = JobEvent(kind, data, started, ms)
        self.events.append(event.compacted() if self.events_compacted else event)

    def compact_events(self) -> None:
        """From now on keep only what the inspector words of each step (see :meth:`JobEvent.compacted`):
        the tracker does this to its finished jobs but the latest few, so hundreds cost little memory."""
        self.events_compacted = True
        self.events = [e if e.compact else e.compacted() for e in self.events]
        if self.host is not None:
            self.host.changed(self)

    def apply(self, data: dict[str, Any]) -> None:
        """Take the service's view of the job: its status verbatim, result URLs when complete (only
        URLs we may fetch: others never reach the ledger or a widget). What the service says now
        replaces an earlier timeout or not-found verdict."""
        status = data.get("status") if isinstance(data.get("status"), str) else self.status
        status = status[:40]
        res = data.get("result") if isinstance(data.get("result"), dict) else {}
        given = res.get("imageUrl") or res.get("videoUrl") or res.get("url")
        downloads = self.host.downloads if self.host else None
        service_url = downloads.service_url if downloads else ""
        url = result_url(given, service_url)
        progress = data.get("progress")
        if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0 <= progress <= 100:
            progress = None
        fields: dict[str, Any] = {"status": status, "raw": data, "error": None, "percent": progress,
                                  "detail": f"{progress:.0f}% done" if progress is not None else ""}
        if status == JobStatus.COMPLETE and url:
            fields["result"] = Result(url=url, media=self.route.media, name=self.id, downloads=downloads,
                                      thumbnail_url=result_url(res.get("thumbnailUrl"), service_url))
            fields["finished_at"] = time.time()
        elif status == JobStatus.COMPLETE and given:
            fields["status"] = JobStatus.FAILED
            fields["error"] = JobFailed(
                f"Job {self.id} ({self.route.id}) finished, but the service gave a result address this client "
                "will not open (only https, or http from a local sandbox). It cost "
                f"{fmt_usd(self.cost_usd or 0)}; the receipt is in the ledger.",
                job_id=self.id or "", paid_usd=self.cost_usd or 0.0)
            fields["finished_at"] = time.time()
        elif status == JobStatus.FAILED:
            reason = str(data.get("error") or data.get("message") or "the service gave no reason")[:300]
            fields["error"] = JobFailed(
                f"Job {self.id} ({self.route.id}) failed: {reason}. It cost {fmt_usd(self.cost_usd or 0)}. "
                "Retry with job.retry() (a new payment) or try another model.",
                job_id=self.id or "", paid_usd=self.cost_usd or 0.0)
            fields["finished_at"] = time.time()
        self._move(**fields)

    def progress(self, detail: str) -> None:
        """What is happening now, in words; the status does not move."""
        self._move(detail=detail)

    # --- polling ------------------------------------------------------------------------------
    async def wait(self, timeout: float | None = None) -> Result:
        """Poll until complete; raises JobFailed / JobTimeout / JobNotFound with the job id.

        Several waiters share one poller. A timeout leaves the job in the ledger: ``wait()``
        again or ``resume()`` later picks it up.
        """
        if self.result is not None:
            return self.result
        if isinstance(self.error, JobFailed):
            raise self.error
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._follow(timeout))
        return await asyncio.shield(self._poller)

    async def _follow(self, timeout: float | None) -> Result:
        """Poll to the end; an error that leaves the job where it was (a refused sign-in, an odd
        answer, anything unexpected) goes on the job too, so nothing shows it running forever."""
        if self.error is not None or kind_of(self.status) != "running":  # after a timeout, a 404 verdict …
            self._move(error=None, detail="Checking on it again")
        try:
            return await self._poll(timeout)
        except Exception as e:
            if self.error is not e:
                self.interrupted(e)
            raise

    @property
    def polling(self) -> bool:
        """Someone is polling it (a ``wait()`` is running)."""
        return self._poller is not None and not self._poller.done()

    def stop_polling(self) -> None:
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()

    async def _poll(self, timeout: float | None) -> Result:
        host = self.host
        assert host is not None and self.id is not None
        scale = host.time_scale
        # A scaled-down service (the sandbox) still renders media in real time: keep a real floor.
        limit = timeout if timeout is not None else max(self.route.poll_timeout_s * scale, MIN_TIMEOUT_S)
        grace = NOT_FOUND_GRACE_S * scale
        history = host.learned(self)
        plan = PollPlan(self.route, scale, history.runs, shapes=history.shapes,
                        progress_expected=history.reports_progress)
        started = time.monotonic()  # ages count from here on (after the plan, which may take a moment)
        age_at_start = max(time.time() - self.created_at, 0.0)
        polls = auth_refusals = 0
        running_at = 0.0  # the age at which the job was last seen running
        first = plan.next_delay(age_at_start)
        if first < limit:
            await asyncio.sleep(first)  # nothing to see before completion is likely
        while True:
            age = age_at_start + time.monotonic() - started
            poll_started = time.time()
            r = None
            try:
                r, signed_in = await host.poll(self.id)
                auth_refusals = 0
            except (httpx.TransportError, ServiceError) as e:
                self.progress(f"Poll failed ({type(e).__name__}); retrying")
            except AuthError:
                # A refused sign-in can be a clock or load hiccup; a persistent one is a real error.
                auth_refusals += 1
                if auth_refusals >= MAX_AUTH_REFUSALS:
                    raise
                self.progress("Sign-in refused; signing in again")
            polls += 1
            if r is not None and polls == 1:
                self.note("signed_in", {"path": f"/api/jobs/{self.id}", "status": r.status_code,
                                        "SIGN-IN-WITH-X": signed_in}, poll_started)
            retry_after = parse_retry_after(r.headers.get("retry-after")) if r is not None else None
            delay = None
            if r is not None:
                if r.status_code == 200:
                    data = json_object(r)  # a body that is not a job keeps the status: poll again
                    if data is not None and data.get("status") == JobStatus.COMPLETE:  # (one ledger write with it)
                        self.run_s, self.reported_progress = plan.duration(running_at, age, data), plan.saw_progress
                        self.progress_shape = plan.shape(self.run_s)
                    self.apply(data if data is not None else {"status": self.status})
                    data = data or {}
                    if self.status == JobStatus.COMPLETE and self.result is not None:
                        await host.completed(self)
                        self.note("result", {"url": self.result.url, "thumbnail_url": self.result.thumbnail_url,
                                             "polls": polls}, time.time())
                        return self.result
                    if self.status == JobStatus.FAILED:
                        raise self.error  # type: ignore[misc]
                    running_at = age
                    plan.observe(age, self.status, self.percent, retry_after)
                elif r.status_code == 404:
                    if age > grace:
                        err = JobNotFound(
                            f"Job {self.id} is unknown to the service {age:.0f} s after it was paid for "
                            f"({fmt_usd(self.cost_usd or 0)}). It stays in the ledger; ss.resume() will look "
                            "again, and the receipt proves the payment.", job_id=self.id,
                            paid_usd=self.cost_usd or 0.0)
                        self._move(error=err, status=JobStatus.LOST)
                        raise err
                    self.progress(f"Job not visible yet (404) — still polling, {age:.0f} s of {grace:.0f} s grace")
                elif r.status_code == 429 or r.status_code >= 500:
                    delay = retry_after or plan.next_delay(age)
                    self.progress(f"Service busy ({r.status_code}); polling again in {delay:.1f} s")
                else:
                    raise ServiceError(f"Polling job {self.id} got HTTP {r.status_code}: {r.text[:200]}",
                                       status=r.status_code, body=r.text, job_id=self.id)
            if delay is None:
                delay = plan.next_delay(age_at_start + time.monotonic() - started)
            if time.monotonic() - started + delay > limit:
                remaining = limit - (time.monotonic() - started)
                if remaining > 0:
                    await asyncio.sleep(remaining)
                    continue
                err = JobTimeout(
                    f"Job {self.id} ({self.route.id}) is still {self.status} after {limit:.0f} s. It was paid "
                    f"({fmt_usd(self.cost_usd or 0)}) and is kept in the ledger: call job.wait() again or "
                    "ss.resume() later.", job_id=self.id, paid_usd=self.cost_usd or 0.0)
                self._move(error=err, status=JobStatus.TIMEOUT if self.status in RUNNING_ON_SERVICE else self.status)
                raise err
            await asyncio.sleep(delay)

    async def retry(self, *, confirm: bool = False, confirm_usd: float | None = None) -> AsyncJob:
        """Pay again for the same route and parameters (a new payment, at your request; local
        files are not read again — only URLs and in-memory images are sent)."""
        assert self.host is not None
        return await self.host.resubmit(self, confirm, confirm_usd)

    def __repr__(self) -> str:
        cost = f" {fmt_usd(self.cost_usd)}" if self.cost_usd is not None else ""
        return f"<Job {self.id or '(unpaid)'} {self.route.id} {self.status}{cost}>"
