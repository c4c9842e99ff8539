"""Nothing paid is lost: ``resume()`` finishes what was paid for but never finished, and
``find_paid_job`` finds the job a possibly-settled payment bought when its answer was lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from .boundary import MAX_ID_CHARS, atomic_amount, finite_number, ledger_params, wire_params
from .catalog import Catalog, Route
from .errors import JobInterrupted, PaymentExpired, StableStudioError, fmt_usd, usd
from .jobs import NOT_FOUND_GRACE_S, AsyncJob
from .ledger import Ledger
from .payments import Payments
from .service import json_or_none
from .siwx import parse_iso
from .status import OPEN_PAYMENTS, JobStatus, PaymentStatus, kind
from .tracker import JobTracker, route_from_type
from .x402 import MAX_VALIDITY_S, Receipt

MIN_SEARCH_S = 10.0  # how long to look for the job a possibly-settled payment bought, at least
LIST_LIMIT = 50  # jobs per look at the wallet's list (the service has no pages: `?limit=` only)
LOST = (PaymentStatus.SETTLED, PaymentStatus.EXPIRED)  # beside open ones: a lost answer's fate, as known
ListJobs = Callable[..., Awaitable[list[tuple[str, dict[str, Any]]]]]  # (owner, a job as listed)
Found = Callable[[AsyncJob], Any]


class Recovery:
    def __init__(self, catalog: Catalog, ledger: Ledger, tracker: JobTracker, payments: Payments,
                 list_jobs: ListJobs):
        self.catalog, self.ledger, self.tracker, self.list_jobs = catalog, ledger, tracker, list_jobs
        self.payments = payments
        self._claimed: set[str] = set()  # jobs matched to a lost answer, before the ledger has them
        self._run: asyncio.Future | None = None  # the resume under way: a second one joins it
        self._found: list[AsyncJob] = []
        self._listeners: list[Found] = []

    @property
    def base_url(self) -> str:
        return self.tracker.service.base_url

    def pending(self) -> bool:
        """Whether ``resume()`` has anything to do (read from the ledger, nothing sent)."""
        return bool(self._open_payments() or self.ledger.unfinished_jobs(self.base_url))

    def unfinished(self, *, running: bool = False) -> list[AsyncJob]:
        """Live jobs for the ledger's paid, unfinished jobs on this service; with ``running``, only
        those last seen running that this wallet can poll (what a new kernel follows by itself)."""
        rows = self.ledger.unfinished_jobs(self.base_url)
        if running:
            rows = [r for r in rows if kind(r["status"]) == "running" and self.tracker.payer_of(r["id"])]
        jobs = []
        for row in rows:
            job = self.tracker.jobs.get(row["id"]) or self.tracker.from_service({"status": row["status"]}, row["id"])
            receipt = ledger_receipt(self.ledger, row["nonce"]) if job.receipt is None and row["nonce"] else None
            if receipt is not None:
                job.receipted(receipt)
            jobs.append(job)
        return jobs

    def lost_answer(self, p: dict[str, Any], route_id: str, params: dict[str, Any]) -> AsyncJob | None:
        """The job of payment ``p`` (a ledger row) whose answer was lost (in this kernel or an
        earlier one): its card says what is known of the payment (``lost_answer_error``) and a
        resume gives it the job that payment bought (``JobTracker.awaiting``); once the payment
        expired unsettled, its Retry pays anew. None once the payment's job is known."""
        if p["job_id"] or (p["status"] not in OPEN_PAYMENTS and p["status"] not in LOST):
            return None
        job = self.tracker.awaiting(p["nonce"])
        if job is None:
            job = self.tracker.new_job(route_id, params, earlier=p["session"] != self.tracker.session)
            job.payment = (p["nonce"], atomic_amount(p["amount"]) or 0)
            job.created_at, job.ref = finite_number(p["signed_at"]) or 0.0, p["ref"]
            job.refused(lost_answer_error(route_id, p))
        return job

    def lost_answers(self) -> list[AsyncJob]:
        """A job for each generation this wallet paid for on this service whose answer was lost
        and whose card nobody closed: what a Gallery of the ledger shows beside its past jobs."""
        expired = [p for p in self.ledger.payments(status=PaymentStatus.EXPIRED)
                   if p["kind"] == "generate" and not p["job_id"] and not p["dismissed_at"]]
        jobs = []
        for p in [*self._open_payments(), *expired]:
            route = self.catalog.routes.get(p["route"])
            if route is not None and p["url"].startswith(self.base_url + "/"):
                job = self.lost_answer(p, route.id, ledger_params(route, p["body"]))
                if job is not None:
                    jobs.append(job)
        return jobs

    def no_job(self, route_id: str, params: dict[str, Any], since: float, taken: set[str], *,
               ref: str | None = None, lost: list[AsyncJob] | None = None) -> AsyncJob:
        """The job of a request the ledger has no job for (a comparison's cell that got none when it
        ran): the lost answer (among ``lost``, else the ledger's) whose payment was signed for
        ``ref``, never paid twice; for a payment signed before payments named what asked for them,
        one for the same route and prompt signed since ``since`` and not ``taken``. Else a job
        saying nothing was paid (every payment is written to the ledger before it leaves), for a retry."""
        candidates = [j for j in (self.lost_answers() if lost is None else lost) if j.key not in taken]
        since = finite_number(since) or 0.0  # read back from the ledger's comparison row
        mine = next((j for j in candidates if ref is not None and j.ref == ref), None) or next(
            (j for j in candidates if j.ref is None and j.route.id == route_id and j.prompt == params.get("prompt")
             and j.created_at >= since), None)
        if mine is not None:
            return mine
        job = self.tracker.new_job(route_id, params)
        job.refused(StableStudioError(
            f"{route_id}: it got no job when it ran (refused before paying, or its kernel stopped first) and the "
            "ledger has no payment for it. Nothing was paid. Retry with job.retry() (a new payment) or try another "
            "model."))
        return job

    def restate(self, job: AsyncJob) -> float | None:
        """Tell a lost answer's card again what the ledger knows of its payment (its authorization
        ran out meanwhile; a resume found its job or its expiry: nothing to say). Returns when its
        authorization runs out, if that is still to come."""
        p = self.ledger.payment(job.payment[0]) if job.payment is not None and job.id is None else None
        if p is None or p["job_id"] or not isinstance(job.error, JobInterrupted) or job.status != JobStatus.FAILED:
            return None
        job.refused(lost_answer_error(job.route.id, p))
        valid_before = deadline_of(p)
        return valid_before if p["status"] in OPEN_PAYMENTS and valid_before > time.time() else None

    def closed(self, job: AsyncJob) -> None:
        """The user closed the card of ``job`` (dismissed or retried): if it was a payment that
        expired unsettled, the next kernel's Gallery does not show it again."""
        p = self.ledger.payment(job.payment[0]) if job.payment is not None and job.id is None else None
        if p is not None and p["status"] == PaymentStatus.EXPIRED:
            self.ledger.update_payment(p["nonce"], dismissed_at=time.time())

    async def resume(self, found: Found | None = None) -> list[AsyncJob]:
        """Finish what was paid for but never finished (crash, restart, timeout, network fault).

        Re-sends still-valid signed payments whose answer was lost (same nonce: they settle at
        most once), finds the jobs they bought, and polls every unfinished paid job to the end.
        ``found(job)`` hears of each job as soon as it is known, before it is polled. Calls that
        overlap share one resume (a payment is never looked for twice at once).
        """
        if self._run is None or self._run.done():
            self._found, self._listeners = [], []
            self._run = asyncio.ensure_future(self._resume())
        if found is not None:
            self._listeners.append(found)
            for job in list(self._found):
                found(job)
        return await asyncio.shield(self._run)

    async def _resume(self) -> list[AsyncJob]:
        jobs = self.unfinished()
        for job in jobs:
            self._tell(job)
        # Unfinished jobs are polled while lost answers are looked for: each shows as soon as it is known.
        steps = [*(j.wait() for j in jobs), *(self._recover(p) for p in self._open_payments())]
        for res in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(res, BaseException) and not isinstance(res, StableStudioError):
                raise res
        return list(self._found)

    def _tell(self, job: AsyncJob) -> None:
        self._found.append(job)
        for listener in list(self._listeners):
            listener(job)

    def _open_payments(self) -> list[dict[str, Any]]:
        # A payment this kernel is still sending is its request's to finish: a resend racing it could
        # make the service run the request twice (behind the router, a replay runs before it is refused).
        rows = [_readable(p) for p in self.ledger.open_payments()]
        return [p for p in rows if p is not None and p["url"].startswith(self.base_url + "/")
                and p["kind"] == "generate" and p["route"] in self.catalog.routes
                and p["nonce"] not in self.payments.in_flight]

    async def _recover(self, p: dict[str, Any]) -> None:
        job = await self._resume_payment(p)
        if job is not None:
            self._tell(job)
            await job.wait()

    async def _resume_payment(self, p: dict[str, Any]) -> AsyncJob | None:
        """The job a payment whose answer was lost bought: given to the job it was signed for when
        that one is still here (its card updates), else to a new one."""
        route = self.catalog.routes[p["route"]]
        method = self.payments.method_named(p.get("pay_method"))
        body = json.loads(p["body"])
        owner = self.tracker.awaiting(p["nonce"])
        job = owner or self.tracker.new_job(route.id, wire_params(route, body))  # the ledger's params are wire data
        job.payment = (p["nonce"], atomic_amount(p["amount"]) or 0)
        # Still open and valid (its payload is still kept): resend the very same credential.
        signed = None
        if method and method.resend_when_ambiguous and p["status"] in OPEN_PAYMENTS \
                and deadline_of(p) > time.time() + 2:
            try:
                signed = method.restore(p)
            except (ValueError, TypeError, KeyError):  # a payload no client wrote: look for the job instead
                self.ledger.update_payment(p["nonce"], error="its signed payload in the ledger cannot be read")
        if signed is not None:
            r, _ = await self.payments.send(route.path, body, signed)
            if r is not None and r.status_code == 200:
                receipt = self.payments.receipt_of(r, method)
                self.ledger.update_payment(p["nonce"], status=PaymentStatus.SETTLED, tx=receipt and receipt.transaction,
                                           receipt=receipt and receipt.to_dict())
                data = json_or_none(r) or {}
                self._adopt(job, data.get("jobId") or data.get("id"), p, receipt)
                return job
        found, conclusive = await self._search(route, body, p["signed_at"], p["payer"], settle_by=deadline_of(p))
        if found:
            self.ledger.update_payment(p["nonce"], status=PaymentStatus.SETTLED)
            self._adopt(job, found, p, None)
            return job
        if p["status"] == PaymentStatus.SETTLED:  # money moved: never call it expired; keep looking next time
            self.ledger.update_payment(p["nonce"], error="settled, but the service shows no job for it yet")
        elif deadline_of(p) < time.time() and not conclusive:  # a listing that failed, or ended too soon
            self.ledger.update_payment(p["nonce"], error="its validity ran out, and the service's job list could not "
                                                         "be read far enough back to tell whether it bought a job")
        elif deadline_of(p) < time.time():
            self.ledger.update_payment(p["nonce"], status=PaymentStatus.EXPIRED,
                                       error="validity ran out and the service shows no job for it")
            if owner is not None:
                owner.refused(lost_answer_error(route.id, {**p, "status": PaymentStatus.EXPIRED}))
                return None
        if owner is not None:
            owner.progress("The service shows no job for this payment yet: Resume looks again")
        return None

    def _adopt(self, job: AsyncJob, job_id: str, p: dict[str, Any], receipt: Receipt | None) -> None:
        """``job`` is what payment ``p`` bought: without the service's receipt (the answer that carried
        it was lost), it carries what the ledger knows of the payment, as a later kernel's card would."""
        self.tracker.adopt(job, job_id, amount=atomic_amount(p["amount"]), nonce=p["nonce"], payer=p["payer"],
                           status="pending", receipt=receipt or ledger_receipt(self.ledger, p["nonce"]),
                           created_at=p["signed_at"], session=p["session"] if isinstance(p["session"], str) else None)

    async def find_paid_job(self, route: Route, body: dict[str, Any], since: float,
                            payer: str | None = None, *, settle_by: float | None = None) -> str | None:
        """After a possibly-settled payment: the job it bought (among ``payer``'s), by route, prompt and
        time. A payment that could settle only until ``settle_by`` (its validity) bought a job by
        then, listed within the service's grace: one look suffices once that has passed."""
        return (await self._search(route, body, since, payer, settle_by=settle_by))[0]

    async def _search(self, route: Route, body: dict[str, Any], since: float, payer: str | None,
                      *, settle_by: float | None) -> tuple[str | None, bool]:
        """:meth:`find_paid_job`, and whether "no job" is an answer: only a listing that was read, as
        the payer, and reached back past ``since`` (the list has no pages: a full one may end too
        soon) can say the payment bought nothing. A failed or short look says nothing."""
        conclusive = False
        if payer not in self.tracker.service.wallet.addresses.values():
            payer = None  # another wallet's payment: ours is the only list we can read, so never conclusive
        scale = self.tracker.time_scale
        search_s = max(NOT_FOUND_GRACE_S * scale, MIN_SEARCH_S)
        if settle_by is not None:
            search_s = min(search_s, settle_by + NOT_FOUND_GRACE_S * scale - time.time())
        deadline = time.monotonic() + search_s
        while True:
            known = {row["id"] for row in self.ledger.jobs(limit=500)}
            try:
                listed = [d for _, d in await self.list_jobs(LIST_LIMIT, payer=payer)]  # wire data, not jobs
                oldest = min((_ts(d.get("createdAt")) or 0.0 for d in listed), default=0.0)
                conclusive = conclusive or (payer is not None and (len(listed) < LIST_LIMIT or oldest < since - 120))
                for d in listed:
                    job_id = d.get("id") or d.get("jobId")
                    if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_ID_CHARS:
                        continue
                    created = _ts(d.get("createdAt"))
                    same_route = (d.get("route") or route_from_type(self.catalog, d.get("type"))) == route.id
                    params = d.get("params") if isinstance(d.get("params"), dict) else {}
                    same_prompt = "prompt" not in params or params["prompt"] == body.get("prompt")
                    fresh = job_id not in known and job_id not in self._claimed  # _claimed read live, after the await
                    if fresh and same_route and same_prompt and (created is None or created >= since - 120):
                        self._claimed.add(job_id)  # no await in between: two searches never take one job
                        return job_id, True
            except (StableStudioError, httpx.TransportError):
                pass
            if time.monotonic() > deadline:
                return None, conclusive
            await asyncio.sleep(max(1.0 * scale, 0.05))


def _readable(p: dict[str, Any]) -> dict[str, Any] | None:
    """A payment row as resume() reads it, checked (the ledger file may have been edited): its
    request body a JSON object, its times numbers, its text fields text; else None (left alone)."""
    try:
        body = json.loads(p["body"]) if isinstance(p["body"], str) else None
    except (ValueError, RecursionError):
        body = None
    signed = finite_number(p["signed_at"])
    texts = all(isinstance(p[k], str) for k in ("nonce", "url", "kind", "route", "status"))
    if not isinstance(body, dict) or signed is None or not texts:
        return None
    return {**p, "signed_at": signed, "valid_before": deadline_of(p)}


def deadline_of(p: dict[str, Any]) -> float:
    """When payment ``p`` (a ledger row, read back: checked) can no longer settle: its recorded
    deadline when that is a number no later than the longest window this client signs ends, else
    the end of that window (not a number, or one no clock can show, counts as the longest)."""
    signed = finite_number(p.get("signed_at"))
    longest = (signed if signed is not None else time.time()) + MAX_VALIDITY_S + 60
    recorded = finite_number(p.get("valid_before"))
    if recorded is not None and 0 <= recorded <= longest:
        return recorded
    return longest


def lost_answer_error(route_id: str, p: dict[str, Any]) -> StableStudioError:
    """What a card says of payment ``p`` (a ledger row) whose answer was lost, as the ledger knows
    it: settled, possibly paid while its authorization is valid (until when) or after it ran out
    (not known until a resume looks), or expired unsettled (nothing paid: a retry pays anew)."""
    valid_before, amount = deadline_of(p), atomic_amount(p["amount"])
    cost = fmt_usd(usd(amount)) if amount is not None else "an amount the ledger does not show"
    until = _clock(valid_before)
    if p["status"] == PaymentStatus.EXPIRED:
        return PaymentExpired(
            f"{route_id}: its payment ({cost}) expired unsettled at {until} and the service shows no job for it. "
            "Nothing was paid. Retry with job.retry() (a new payment) or try another model.", nonce=p["nonce"])
    if p["status"] == PaymentStatus.SETTLED:
        known = "It was paid: the payment settled, and the answer naming its job was lost"
    elif valid_before > time.time():
        known = f"It may have been paid — the authorization stays valid until {until}"
    else:
        known = (f"It may have been paid before its authorization expired at {until}: whether it settled is "
                 "not known yet")
    return JobInterrupted(f"{route_id}: the answer to its payment ({cost}) was lost. {known}. ss.resume() looks "
                          "for the job it bought (it is not paid again).", job_id="", paid_usd=usd(amount or 0))


def ledger_receipt(ledger: Ledger, nonce: str) -> Receipt | None:
    """A payment's receipt as the ledger knows it (``Ledger.receipt``: network, payer, amount, the
    transaction if it was told): read back from a file, so each field is checked before use."""
    known = ledger.receipt(nonce)
    if known is None:
        return None
    return Receipt(success=known["success"] is True, transaction=_text(known["transaction"]),
                   network=_text(known["network"]), payer=_text(known["payer"]),
                   amount=atomic_amount(known["amount"]), on_chain=bool(known["explorer_url"]))


def _text(value: Any) -> str | None:
    """A short printable string from the ledger, or nothing."""
    return value if isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable() else None


def _clock(ts: float) -> str:
    """A time as a card says it: HH:MM (local time), with the date when it is not today."""
    t = time.localtime(ts)
    return time.strftime("%H:%M" if t[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M", t)


def _ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value).timestamp()
    except ValueError:
        return None
