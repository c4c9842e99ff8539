"""Authorizations are bearer money until they expire: what the attacker holds, and for how long."""

from __future__ import annotations

import time

import httpx
import pytest
from starlette.responses import JSONResponse, Response

from stablestudio_widgets import BudgetExceeded, StableStudioError

from .conftest import outcome

pytestmark = pytest.mark.anyio


async def test_signed_validity_is_short_whatever_the_server_asks(hostile, client):
    hostile.max_timeout_s = 86_400  # "sign something valid for a day"
    ss = client()
    before = time.time()
    await ss.generate("nano-banana", "a fox")
    (auth,) = [s.authorization for s in hostile.paid()]
    assert int(auth["validBefore"]) <= time.time() + 600
    assert before - 120 <= int(auth["validAfter"]) <= before  # slightly in the past, not 0


ANSWERS = {
    "402 refusal": lambda h: h.payment_required("nano-banana/generate", error="insufficient_funds"),
    "302 redirect": lambda h: Response(status_code=302, headers={"location": "/elsewhere"}),
    "401": lambda h: JSONResponse({"error": "unauthorized"}, status_code=401),
    "403": lambda h: JSONResponse({"error": "forbidden"}, status_code=403),
    "409": lambda h: JSONResponse({"error": "conflict"}, status_code=409),
}


@pytest.mark.parametrize("answer", sorted(ANSWERS))
async def test_refused_authorizations_count_against_the_budget_until_they_expire(hostile, client, answer):
    """Every answer says "no", yet the attacker keeps each signature and may settle it later."""
    hostile.on_paid = lambda seen: ANSWERS[answer](hostile)
    ss = client(budget_usd=0.50)
    errors = []
    for i in range(20):
        err = await outcome(ss.generate("nano-banana", f"try {i}"))
        errors.append(err)
        if isinstance(err, BudgetExceeded):
            break
    assert sum(hostile.amounts()) <= 500_000  # what the attacker holds never exceeds the budget
    assert isinstance(errors[-1], BudgetExceeded)
    refusal = errors[0]
    assert isinstance(refusal, StableStudioError) and "stays valid until" in str(refusal)
    assert "Nothing was paid" not in str(refusal)
    assert {p["status"] for p in ss.ledger.payments()} == {"refused"}
    assert ss.ledger.spent_atomic() == sum(hostile.amounts())


async def test_a_payment_that_waited_in_vain_for_a_busy_connection_never_left(hostile, client):
    """Every connection busy (here the only one, held by a streamed answer): the paid request times
    out in the pool before a byte is sent. That is "never left, nothing paid", not "may have
    settled" (which would hold the amount against the budgets and send the user to resume())."""
    ss = client(transport=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1)), timeout=0.5,
                budget_usd=0.50)
    await ss.generate("nano-banana", "a fox")  # learns the terms: the next payment is signed up front
    async with ss.service.http.stream("GET", "/api/jobs/held"):  # the one connection stays busy
        err = await outcome(ss.generate("nano-banana", "a hare"))
    assert len(hostile.paid()) == 1  # the second payment never reached the server
    statuses = sorted(p["status"] for p in ss.ledger.payments())
    assert statuses == ["settled", "unsent"]
    assert isinstance(err, StableStudioError) and "nothing was paid" in str(err)
    first = hostile.paid()[0].authorization["value"]
    assert (ss.spending.spent, ss.spending.reserved, ss.spending.held) == (int(first), 0, 0)  # given back


async def test_a_hostile_job_list_gives_a_lost_answer_only_its_job_never_a_second_payment(hostile, client):
    """Every answer to the paid request is lost (5xx, then 5xx to the same credential again), so the
    client reads the job list for the job that payment may have bought. There the attacker put ids
    that are not ids beside one that matches the request: it takes that one, skips the rest, and
    signs nothing more (one credential, sent again, never a second)."""
    hostile.on_paid = lambda seen: JSONResponse({"error": "unavailable"}, status_code=503)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    hostile.listed = [{"id": {"$ne": None}}, {"id": 5}, {"id": "x" * 5000}, {"jobId": ["a"]},
                      {"id": "cmtheonethatmatches00001", "route": "nano-banana/generate",
                       "params": {"prompt": "a fox"}, "createdAt": now}]
    ss = client()
    job = await ss.generate("nano-banana", "a fox")
    assert job.id == "cmtheonethatmatches00001"
    await job.wait()
    assert job.status == "complete" and ss.stats["signatures"] == 1
    assert len({s.authorization["nonce"] for s in hostile.paid()}) == 1 < len(hostile.paid())  # resent, not re-signed
