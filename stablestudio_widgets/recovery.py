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

from .boundary import wire_params
from .catalog import Catalog, Route
from .errors import StableStudioError
from .jobs import NOT_FOUND_GRACE_S, AsyncJob
from .ledger import Ledger
from .payments import Payments
from .service import json_or_none
from .siwx import parse_iso
from .status import OPEN_PAYMENTS, PaymentStatus
from .tracker import JobTracker, route_from_type

MIN_SEARCH_S = 10.0  # how long to look for the job a possibly-settled payment bought, at least
ListJobs = Callable[..., Awaitable[list[AsyncJob]]]


class Recovery:
    def __init__(self, catalog: Catalog, ledger: Ledger, tracker: JobTracker, payments: Payments,
                 list_jobs: ListJobs):
        self.catalog, self.ledger, self.tracker, self.list_jobs = catalog, ledger, tracker, list_jobs
        self.payments = payments
        self._claimed: set[str] = set()  # jobs matched to a lost answer, before the ledger has them

    @property
    def base_url(self) -> str:
        return self.tracker.service.base_url

    async def resume(self) -> list[AsyncJob]:
        """Finish what was paid for but never finished (crash, restart, timeout, network fault).

        Re-sends still-valid signed payments whose answer was lost (same nonce: they settle at
        most once), finds the jobs they bought, and polls every unfinished paid job to the end.
        """
        for p in self.ledger.open_payments():
            if p["url"].startswith(self.base_url + "/"):
                await self._resume_payment(p)
        jobs = [self.tracker.jobs.get(row["id"]) or self.tracker.from_service({"status": row["status"]}, row["id"])
                for row in self.ledger.unfinished_jobs(self.base_url)]
        results = await asyncio.gather(*(j.wait() for j in jobs), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, StableStudioError):
                raise res
        return jobs

    async def _resume_payment(self, p: dict[str, Any]) -> None:
        route = self.catalog.routes.get(p["route"]) if p["route"] else None
        if route is None or p["kind"] != "generate":
            return
        method = self.payments.method_named(p.get("pay_method"))
        body = json.loads(p["body"])
        job = self.tracker.new_job(route.id, wire_params(route, body))  # the ledger's params are wire data
        # Still open and valid (its payload is still kept): resend the very same credential.
        if method and method.resend_when_ambiguous and p["status"] in OPEN_PAYMENTS \
                and p["valid_before"] > time.time() + 2:
            signed = method.restore(p)
            r, _ = await self.payments.send(route.path, body, signed)
            if r is not None and r.status_code == 200:
                receipt = self.payments.receipt_of(r, method)
                self.ledger.update_payment(p["nonce"], status=PaymentStatus.SETTLED, tx=receipt and receipt.transaction,
                                           receipt=receipt and receipt.to_dict())
                data = json_or_none(r) or {}
                self._adopt(job, data.get("jobId") or data.get("id"), p, receipt)
                return
        found = await self.find_paid_job(route, body, p["signed_at"], p["payer"])
        if found:
            self.ledger.update_payment(p["nonce"], status=PaymentStatus.SETTLED)
            self._adopt(job, found, p, None)
        elif p["status"] == PaymentStatus.SETTLED:  # money moved: never call it expired; keep looking next time
            self.ledger.update_payment(p["nonce"], error="settled, but the service shows no job for it yet")
        elif p["valid_before"] < time.time():
            self.ledger.update_payment(p["nonce"], status=PaymentStatus.EXPIRED,
                                       error="validity ran out and the service shows no job for it")

    def _adopt(self, job: AsyncJob, job_id: str, p: dict[str, Any], receipt: Any) -> None:
        self.tracker.adopt(job, job_id, amount=p["amount"], nonce=p["nonce"], payer=p["payer"],
                           status="pending", receipt=receipt, created_at=p["signed_at"])

    async def find_paid_job(self, route: Route, body: dict[str, Any], since: float,
                            payer: str | None = None) -> str | None:
        """After a possibly-settled payment: the job it bought (among ``payer``'s), by route, prompt and time."""
        payer = payer if payer in self.tracker.service.wallet.addresses.values() else None
        scale = self.tracker.time_scale
        deadline = time.monotonic() + max(NOT_FOUND_GRACE_S * scale, MIN_SEARCH_S)
        while True:
            known = {row["id"] for row in self.ledger.jobs(limit=500)}
            try:
                for j in await self.list_jobs(limit=50, payer=payer):
                    d = j.raw
                    created = _ts(d.get("createdAt"))
                    same_route = (d.get("route") or route_from_type(self.catalog, d.get("type"))) == route.id
                    params = d.get("params") if isinstance(d.get("params"), dict) else {}
                    same_prompt = "prompt" not in params or params["prompt"] == body.get("prompt")
                    fresh = j.id not in known and j.id not in self._claimed  # _claimed read live, after the await
                    if fresh and same_route and same_prompt and (created is None or created >= since - 120):
                        self._claimed.add(j.id)  # no await in between: two searches never take one job
                        return j.id
            except (StableStudioError, httpx.TransportError):
                pass
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(max(1.0 * scale, 0.05))


def _ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value).timestamp()
    except ValueError:
        return None
