"""Spend safety under faults: many jobs through every fault the sandbox can inject, then the
sandbox's settlement ledger is reconciled against ours. Plus a client killed mid-job (a separate
process) and resumed from the ledger in a new process."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter

import httpx
import pytest
from eth_account import Account

from stablestudio_widgets import AsyncStableStudio, StableStudioError, Wallet
from stablestudio_widgets.ledger import Ledger
from stablestudio_widgets.sandbox import Faults, Sandbox

pytestmark = pytest.mark.anyio

# Router mode (the default) answers like the real service; the sign-in-expiry round runs in spec
# mode, where a refused proof gets a challenge to sign (the router's 5-minute window cannot expire
# in a test, and our own proofs are backdated a few seconds).
FAULT_ROUNDS = [
    pytest.param(Faults(seed=1, drop_after_settle_rate=0.4, drop_mode="reset", error_rate=0.15, error_status=503,
                        retry_after_s=0), {}, id="reset+503"),
    pytest.param(Faults(seed=2, drop_after_settle_rate=0.4, drop_mode="5xx", error_rate=0.15, error_status=429,
                        retry_after_s=0, poll_404_s=0.02), {}, id="5xx+429+404"),
    pytest.param(Faults(seed=3, drop_after_settle_rate=0.3, drop_mode="delay", delay_s=0.6, fail_rate=0.2,
                        siwx_max_age_s=0.2), {"router": False}, id="delay+failures+siwx-expiry"),
    pytest.param(Faults(seed=4, drop_after_settle_rate=0.5, drop_mode="reset", error_rate=0.2, error_status=500,
                        fail_rate=0.1), {"replay": "idempotent"}, id="idempotent-replay"),
]
MODELS = [("nano-banana", {}), ("grok", {}), ("flux-2-pro", {}), ("gpt-image-1.5", {}),
          ("seedance-fast", {"duration": "4", "aspectRatio": "16:9", "outputResolution": "480p"})]


@pytest.mark.parametrize("faults,mode", FAULT_ROUNDS)
async def test_fault_suite_reconciles_with_the_sandbox_ledger(faults, mode, tmp_path):
    """No double settlement, no paid job lost, no payment above policy, whatever goes wrong."""
    cap, budget = 0.20, 3.0
    with Sandbox(time_scale=0.002, faults=faults, **mode) as sb:
        ss = AsyncStableStudio(sb.url, Wallet.generate(), ledger=Ledger(tmp_path / "l.db"), time_scale=0.002,
                               timeout=0.4, max_usd_per_request=cap, budget_usd=budget)

        async def one(i: int):
            try:
                model, params = MODELS[i % len(MODELS)]
                job = await ss.generate(model, f"fault suite prompt {i}", **params)
                await job.wait()
            except StableStudioError as e:
                return e
            return job

        outcomes = await asyncio.gather(*(one(i) for i in range(24)))
        # Whatever ended unfinished or uncertain is recoverable from the ledger.
        sb.set_faults(drop_after_settle_rate=0.0, error_rate=0.0, poll_404_s=0.0, siwx_max_age_s=600)
        await ss.resume()

        settlements = sb.settlements
        nonces = Counter(s["nonce"] for s in settlements)
        assert max(nonces.values()) == 1, "a nonce settled twice"
        per_job = Counter(s["job_id"] for s in settlements if s.get("job_id"))
        assert max(per_job.values()) == 1, "a job was paid twice"
        assert all(int(s["amount"]) <= cap * 1e6 for s in settlements)
        assert sum(int(s["amount"]) for s in settlements) <= budget * 1e6
        ours = {row["id"]: row for row in ss.ledger.jobs()}
        for job_id in per_job:  # every paid job is in our ledger and finished
            assert job_id in ours, f"paid job {job_id} is not in the client's ledger"
            assert ours[job_id]["status"] in ("complete", "failed"), (ours[job_id], [repr(o) for o in outcomes])
        paid = {p["nonce"]: p for p in ss.ledger.payments()}
        for s in settlements:
            assert paid[s["nonce"]]["status"] == "settled" and paid[s["nonce"]]["job_id"] == s["job_id"]
        # Every payment we signed either settled or is known not to have.
        assert {p["status"] for p in paid.values()} <= {"settled", "refused"}
        assert ss.stats["signatures"] == len(paid)
        completed = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(completed) >= 12, outcomes
        print([repr(o) for o in outcomes if isinstance(o, Exception)])
        await ss.aclose()


CHILD = textwrap.dedent("""
    import asyncio, os, sys
    from stablestudio_widgets import AsyncStableStudio
    async def main():
        ss = AsyncStableStudio(os.environ["SB_URL"], time_scale=float(os.environ["SB_SCALE"]),
                               ledger=os.environ["LEDGER"], timeout=30)
        if sys.argv[1] == "pay":
            job = await ss.generate("wan-2.6", "killed mid-job", duration="15", confirm=True)
            print("PAID", job.id, flush=True)
            await job.wait()
            print("UNREACHABLE", flush=True)
        else:
            jobs = await ss.resume()
            for j in jobs:
                print("RESUMED", j.id, j.status, j.result.url if j.result else None, flush=True)
        await ss.aclose()
    asyncio.run(main())
""")


def _child(mode: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, mode], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _env(sb: Sandbox, tmp_path, key: str, scale: float) -> dict:
    return {**os.environ, "SB_URL": sb.url, "SB_SCALE": str(scale), "LEDGER": str(tmp_path / "ledger.sqlite3"),
            "STABLESTUDIO_PRIVATE_KEY": key}


def _wait_for(cond, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def test_killed_while_polling_then_resumed_in_a_new_process(tmp_path):
    key = "0x" + Account.create().key.hex().removeprefix("0x")
    with Sandbox(time_scale=0.02) as sb:  # the 15 s Wan video takes ~4 s here
        env = _env(sb, tmp_path, key, 0.02)
        payer = _child("pay", env)
        line = payer.stdout.readline()
        assert line.startswith("PAID"), line + payer.stderr.read()
        job_id = line.split()[1]
        payer.send_signal(signal.SIGKILL)
        payer.wait()
        assert Ledger(tmp_path / "ledger.sqlite3").job(job_id)["status"] in ("pending", "processing", "loading")
        out = _child("resume", env).communicate(timeout=120)[0]
        assert f"RESUMED {job_id} complete http" in out, out
        assert len(sb.settlements) == 1


def test_killed_after_settlement_before_the_answer_then_resumed(tmp_path):
    """The hardest case: the payment settled but the process died before it learnt the job id.
    The new process re-sends the same signed payment, is told the nonce was used, and finds the job."""
    key = "0x" + Account.create().key.hex().removeprefix("0x")
    with Sandbox(time_scale=0.002, faults=Faults(drop_after_settle_rate=1.0, drop_mode="delay", delay_s=30)) as sb:
        env = _env(sb, tmp_path, key, 0.002)
        payer = _child("pay", env)
        _wait_for(lambda: len(sb.settlements) == 1)
        payer.send_signal(signal.SIGKILL)
        payer.wait()
        (p,) = Ledger(tmp_path / "ledger.sqlite3").payments()
        assert p["status"] in ("signed", "sent") and p["job_id"] is None
        sb.set_faults(drop_after_settle_rate=0.0)
        out = _child("resume", env).communicate(timeout=120)[0]
        job_id = sb.settlements[0]["job_id"]
        assert f"RESUMED {job_id} complete http" in out, out
        assert len(sb.settlements) == 1
        (p,) = Ledger(tmp_path / "ledger.sqlite3").payments()
        assert p["status"] == "settled" and p["job_id"] == job_id


WRITER = textwrap.dedent("""
    import sys, time
    from stablestudio_widgets.ledger import Ledger
    led = Ledger(sys.argv[1])
    for i in range(60):
        led.record_payment(nonce=f"0x{sys.argv[2]}{i:062x}", kind="generate", route="grok/generate", method="POST",
                           url="http://127.0.0.1/api", body={}, amount=1000, asset="a", network="eip155:84532",
                           pay_to="p", payer="q", valid_before=0, payload="x", session=sys.argv[2])
        led.update_payment(f"0x{sys.argv[2]}{i:062x}", status="settled")
""")


FIRST_RELEASE = {  # the ledger's columns as the first release wrote them
    "payments": {"nonce", "kind", "route", "method", "url", "body", "amount", "asset", "network", "pay_to", "payer",
                 "valid_before", "payload", "status", "tx", "receipt", "job_id", "upload_id", "error", "session",
                 "signed_at", "updated_at"},
    "jobs": {"id", "base_url", "route", "model", "media", "prompt", "params", "status", "amount", "nonce", "payer",
             "result_url", "thumbnail_url", "local_path", "error", "session", "created_at", "updated_at",
             "finished_at"}}


def _columns(ledger: Ledger, table: str) -> set[str]:
    return {r[1] for r in ledger._db.execute(f"PRAGMA table_info({table})")}


def test_a_ledger_written_by_an_older_version_gains_the_new_columns(tmp_path):
    """A ledger file as the first release wrote it (every later column dropped): opened again, every
    column this version reads is there (a column added without a migration fails here)."""
    path = tmp_path / "old.sqlite3"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX jobs_kind")  # made on later columns
        for table, first in FIRST_RELEASE.items():
            for (name,) in db.execute(f"SELECT name FROM pragma_table_info('{table}')").fetchall():
                if name not in first:
                    db.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
    led = Ledger(path)
    led.record_payment(nonce="n", kind="generate", route="grok/generate", method="POST", url="https://x/y",
                       body={}, amount=70000, asset="usdc", network="eip155:84532", pay_to="0xto", payer="0xme",
                       valid_before=0, payload="p", session="s", ref="grid/cell")
    assert led.payment("n")["ref"] == "grid/cell" and led.payment("n")["dismissed_at"] is None
    fresh = Ledger(tmp_path / "new.sqlite3")
    for table in FIRST_RELEASE:
        assert _columns(led, table) == _columns(fresh, table)
    led.close()
    fresh.close()


def test_ledger_is_safe_with_several_kernels_writing(tmp_path):
    path = tmp_path / "shared.sqlite3"
    Ledger(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(k)]) for k in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    led = Ledger(path)
    assert len(led.payments(status="settled")) == 240
    assert led.spent_usd() == pytest.approx(0.24)
    assert led.spent_by_route_usd() == {"grok/generate": pytest.approx(0.24)}


async def test_ledger_answers_and_exports(make_client, tmp_path):
    ss = make_client(save_results=tmp_path / "cache")
    a = await ss.generate("grok", "one")
    b = await ss.generate("nano-banana", "two")
    await asyncio.gather(a.wait(), b.wait())
    led = ss.ledger
    assert led.spent_usd(session=ss.session) == pytest.approx(0.137)
    assert led.spent_today_usd() == pytest.approx(0.137)
    assert led.spent_by_route_usd() == {"grok/generate": pytest.approx(0.07),
                                        "nano-banana/generate": pytest.approx(0.067)}
    df = led.to_dataframe()
    assert list(df["route"]) == ["grok/generate", "nano-banana/generate"]
    assert set(df["job_status"]) == {"complete"} and df["tx"].str.startswith("0x").all()
    csv_text = led.to_csv(tmp_path / "r.csv").read_text()
    assert "grok/generate" in csv_text and a.id in csv_text
    # Results were cached locally (URLs expire) and the path recorded.
    assert a.result.local_path and os.path.exists(a.result.local_path)
    assert led.job(a.id)["local_path"] == a.result.local_path
    assert a.result.read()[:4] == b"\x89PNG"


async def test_ledger_wide_daily_budget_spans_clients(make_client, tmp_path):
    shared = Ledger(tmp_path / "daily.sqlite3")
    first = make_client(ledger=shared)
    await first.generate("grok", "a")  # $0.07 today
    second = make_client(ledger=shared, ledger_budget_usd=0.10)
    from stablestudio_widgets import BudgetExceeded
    with pytest.raises(BudgetExceeded, match="this day"):
        await second.generate("grok", "b")
    assert second.stats["signatures"] == 0


async def test_settled_payment_without_a_recorded_job_is_resumed(make_client, sandbox, tmp_path):
    """The process died after the settlement answer but before the job id reached the ledger: the
    ledger has a settled payment and no job. resume() must find the job, not forget the money."""
    ss = make_client()
    job = await ss.generate("grok", "settled, then the kernel died")
    (p,) = ss.ledger.payments()
    # What that crash leaves behind: the payment says settled, no job is known.
    ss.ledger.update_payment(p["nonce"], job_id=None)
    with ss.ledger._tx() as db:
        db.execute("DELETE FROM jobs")
    later = make_client(wallet=ss.wallet, ledger=ss.ledger)
    jobs = await later.resume()
    assert [j.id for j in jobs] == [job.id] and jobs[0].status == "complete"
    assert ss.ledger.payment(p["nonce"])["job_id"] == job.id and len(sandbox.settlements) == 1
    assert later.stats["signatures"] == 0


class ListingDown(httpx.AsyncHTTPTransport):
    """The real transport, but the wallet's job list (``GET /api/jobs``) answers 503: a flaky service."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/api/jobs":
            return httpx.Response(503, json={"error": "unavailable"})
        return await super().handle_async_request(request)


def lose_the_answer(ss, p) -> None:
    """What a lost answer leaves once its authorization has run out: an open payment, no job."""
    ss.ledger.update_payment(p["nonce"], job_id=None, status="uncertain", valid_before=int(time.time()) - 600)
    with ss.ledger._tx() as db:
        db.execute("DELETE FROM jobs")


async def test_a_job_list_that_cannot_be_read_never_calls_a_paid_payment_expired(make_client, sandbox):
    """The service settled the payment; after its validity ran out the job list fails: "no job" was
    never seen, so the payment stays open (never "expired, nothing paid", which would offer a Retry)."""
    ss = make_client()
    job = await ss.generate("grok", "paid, answer lost")
    (p,) = ss.ledger.payments()
    lose_the_answer(ss, p)
    down = make_client(wallet=ss.wallet, ledger=ss.ledger, transport=ListingDown())
    assert await down.resume() == []
    row = ss.ledger.payment(p["nonce"])
    assert row["status"] == "uncertain" and "could not be read" in row["error"]
    (card,) = down.recovery.lost_answers()
    assert "not known yet" in str(card.error) and type(card.error).__name__ != "PaymentExpired"
    later = make_client(wallet=ss.wallet, ledger=ss.ledger)  # the list answers again: the job is found
    assert [j.id for j in await later.resume()] == [job.id] and len(sandbox.settlements) == 1


async def test_a_full_job_list_that_ends_after_the_payment_never_calls_it_expired(make_client, sandbox):
    """The list has no pages: when it is full of newer jobs, the payment's job may be further back."""
    ss = make_client()
    await ss.generate("grok", "the lost one")
    (p,) = ss.ledger.payments()
    for i in range(50):  # a big comparison since: the list's 50 are all newer than the payment
        await ss.generate("grok", f"other {i}")
    lose_the_answer(ss, p)
    later = make_client(wallet=ss.wallet, ledger=ss.ledger)
    assert await later.resume() == []  # not among the 50 newest
    assert ss.ledger.payment(p["nonce"])["status"] == "uncertain"  # not "expired": Resume looks again


@pytest.mark.parametrize(("column", "value"), [
    ("body", "{bad"), ("body", '"a string"'), ("payload", "garbage"), ("payload", 5), ("signed_at", "abc"),
    ("valid_before", "x"), ("status", 5), ("route", 5), ("kind", 5), ("url", 5), ("pay_method", 5)])
async def test_resume_reads_an_edited_payment_row_without_breaking(make_client, sandbox, column, value):
    """A lost answer's payment row with a field no client writes: resume() goes on (that row is
    left alone, or its job is looked for without resending what cannot be read), signs nothing."""
    ss = make_client()
    await ss.generate("grok", "paid, answer lost")
    (p,) = ss.ledger.payments()
    ss.ledger.update_payment(p["nonce"], job_id=None, status="uncertain")  # still valid: resume would resend it
    with ss.ledger._tx() as db:
        db.execute("DELETE FROM jobs")
        db.execute(f"UPDATE payments SET {column}=?", (value,))
    later = make_client(wallet=ss.wallet, ledger=ss.ledger)
    await later.resume()
    assert len(sandbox.settlements) == 1 and later.stats["signatures"] == 0


class HoldPaid(httpx.AsyncHTTPTransport):
    """The real transport; a paid POST waits at the door until ``release`` is set (a slow network)."""

    def __init__(self):
        super().__init__()
        self.release, self.held, self.paid_posts = asyncio.Event(), asyncio.Event(), 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and "payment-signature" in request.headers:
            self.paid_posts += 1
            self.held.set()
            await self.release.wait()
        return await super().handle_async_request(request)


async def test_resume_leaves_a_payment_its_own_kernel_is_still_sending_alone(make_client, sandbox):
    """A resume while a paid request is on its way does not resend that payment or look for its job
    (behind the router a racing resend runs the request twice): the request finishes it, paid once."""
    wire = HoldPaid()
    ss = make_client(transport=wire)
    pending = asyncio.ensure_future(ss.generate("grok", "on its way"))
    await asyncio.wait_for(wire.held.wait(), 10)
    assert [p["status"] for p in ss.ledger.payments()] == ["sent"]
    assert await asyncio.wait_for(ss.resume(), 10) == [] and wire.paid_posts == 1  # nothing resent, nothing adopted
    wire.release.set()
    job = await asyncio.wait_for(pending, 10)
    await job.wait()
    assert job.status == "complete" and wire.paid_posts == 1 and len(sandbox.settlements) == 1
    assert ss.ledger.payment(ss.ledger.payments()[0]["nonce"])["job_id"] == job.id
