"""What the speed work must keep true, tested for behaviour (the figures are in bench/): finished
jobs teach the next ones how long they take, across kernels; the poll plan uses what the service
says; connections and TLS set-up are made once per client, not per call."""

from __future__ import annotations

import json
import time

import pytest

from stablestudio_widgets import AsyncStableStudio, ConfirmationRequired, Wallet
from stablestudio_widgets.ledger import Ledger
from stablestudio_widgets.payments import Payments
from stablestudio_widgets.sandbox import Sandbox, Timing

from .conftest import until

pytestmark = pytest.mark.anyio
SCALE = 0.01


@pytest.fixture
def timed_sandbox():
    with Sandbox(time_scale=SCALE, timing=Timing(seed=3)) as sb:
        yield sb


async def test_finished_jobs_teach_the_next_ones_how_long_they_take(timed_sandbox, tmp_path):
    wallet, path = Wallet.generate(), tmp_path / "ledger.sqlite3"
    async with AsyncStableStudio(timed_sandbox.url, wallet, ledger=Ledger(path), time_scale=SCALE) as ss:
        jobs = []
        for i in range(3):
            jobs.append(await ss.generate("nano-banana", f"a fox {i}"))
            await jobs[-1].wait()
        for job in jobs:  # what the job measured is what the sandbox ran (render included), in service seconds
            served = timed_sandbox.jobs[job.id]
            assert job.run_s == pytest.approx((served.finished_at - served.created_at) / SCALE, rel=0.1, abs=0.5)
        assert jobs[0].reported_progress  # the first was seen loading (later ones may be looked at only when done)
        rows = ss.ledger.jobs()
        assert {r["variant"] for r in rows} == {'{"imageSize": "1K"}'} and all(r["run_s"] for r in rows)

    # A new kernel on the same ledger starts from those durations, per kind of job.
    async with AsyncStableStudio(timed_sandbox.url, wallet, ledger=Ledger(path), time_scale=SCALE) as ss:
        same = ss.tracker.new_job("nano-banana/generate", {"prompt": "x"})
        runs, shapes, progress = ss.tracker.learned(same)
        assert sorted(runs) == sorted(j.run_s for j in jobs) and progress is any(j.reported_progress for j in jobs)
        # where the progress readings fell in each run, so one reading places the next job
        assert shapes == [j.progress_shape for j in jobs if j.progress_shape] and shapes
        other = ss.tracker.new_job("sora-2/generate", {"prompt": "x", "seconds": "12"})
        # another kind: nothing learned, but the service reports progress
        assert ss.tracker.learned(other) == ([], [], True)
        elsewhere = AsyncStableStudio("http://127.0.0.1:9", wallet, ledger=ss.ledger, time_scale=SCALE)
        assert elsewhere.tracker.learned(same) == ([], [], False)  # another service: nothing learned there
        await elsewhere.aclose()


async def test_a_card_shows_how_far_along_the_service_says_the_job_is(tmp_path):
    with Sandbox(time_scale=0.01, timing=Timing(spread=0)) as sb:  # a 2.1 s video
        async with AsyncStableStudio(sb.url, Wallet.generate(), ledger=":memory:", time_scale=0.01) as ss:
            job = await ss.generate("wan-2.6", "a fox")
            seen: list[str] = []
            ss.on_job(lambda j: seen.append(j.detail))
            await job.wait()
    percents = [int(d.split("%")[0]) for d in seen if d.endswith("% done")]
    assert percents and percents == sorted(percents) and job.percent is None and job.status == "complete"


async def test_the_ledger_migrates_a_file_made_before_durations_were_kept(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE jobs (id TEXT PRIMARY KEY, base_url TEXT NOT NULL, route TEXT NOT NULL, model TEXT,"
                     " media TEXT, prompt TEXT, params TEXT, status TEXT NOT NULL, amount INTEGER, nonce TEXT,"
                     " payer TEXT, result_url TEXT, thumbnail_url TEXT, local_path TEXT, error TEXT, session TEXT,"
                     " created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL);"
                     "INSERT INTO jobs (id, base_url, route, params, status, created_at, updated_at)"
                     " VALUES ('old', 'http://x', 'nano-banana/generate', '{}', 'complete', 1, 1);")
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert ledger.job("old")["run_s"] is None and ledger.run_times("http://x", "nano-banana/generate", "{}") == []
    ledger.update_job("old", variant=json.dumps({}), run_s=4.2, reported_progress=True)
    assert ledger.run_times("http://x", "nano-banana/generate", "{}") == [(4.2, True)]
    ledger.close()


# ----------------------------------------------------------------------------- persisted terms


def _key(ss, route_id: str = "nano-banana/generate") -> str:
    route = ss.catalog.route(route_id)
    return json.dumps(Payments.price_key(route, route.validate({"prompt": "x"})))


async def test_terms_paid_on_in_one_kernel_pay_the_next_kernels_first_request_in_one_round_trip(
        make_client, transport, sandbox, tmp_path):
    wallet, ledger = Wallet.generate(), Ledger(tmp_path / "shared.sqlite3")
    first = make_client(wallet=wallet, ledger=ledger)
    await first.generate("nano-banana", "a red fox")  # learns the terms from a 402, pays, keeps them
    required, learned_at = ledger.stored_terms(sandbox.url, _key(first))
    assert required["accepts"][0]["payTo"].lower() == sandbox.merchant.lower() and time.time() - learned_at < 60

    n = transport.total
    second = make_client(wallet=wallet, ledger=ledger)  # a new kernel
    job = await second.generate("nano-banana", "a blue fox")
    assert transport.log[n:] == [("POST", "/api/generate/nano-banana/generate", True)]  # no unpaid 402
    assert job.id and job.events[0].data["reused"]
    assert sandbox.settlements[-1]["amount"] == required["accepts"][0]["amount"]


async def test_a_stale_kept_price_costs_one_more_round_trip_never_a_wrong_payment(
        make_client, transport, sandbox, tmp_path):
    wallet, ledger = Wallet.generate(), Ledger(tmp_path / "shared.sqlite3")
    first = make_client(wallet=wallet, ledger=ledger)
    await first.generate("nano-banana", "a red fox")
    required, learned_at = ledger.stored_terms(sandbox.url, _key(first))
    price = required["accepts"][0]["amount"]
    required["accepts"][0]["amount"] = str(int(price) - 4000)  # the price the service asked yesterday
    ledger.save_terms(sandbox.url, _key(first), required, learned_at)

    n, settled = transport.total, len(sandbox.settlements)
    job = await make_client(wallet=wallet, ledger=ledger).generate("nano-banana", "a blue fox")
    assert [paid for _, _, paid in transport.log[n:]] == [True, True]  # refused at the old price, then paid afresh
    assert [s["amount"] for s in sandbox.settlements[settled:]] == [price] and job.amount == int(price)
    assert ledger.stored_terms(sandbox.url, _key(first))[0]["accepts"][0]["amount"] == price


async def _kept_then_tampered(make_client, sandbox, tmp_path, **changes):
    """A kernel pays (so its terms are kept); then the kept terms are changed: a new kernel's client."""
    wallet, ledger = Wallet.generate(), Ledger(tmp_path / "shared.sqlite3")
    first = make_client(wallet=wallet, ledger=ledger)
    await first.generate("nano-banana", "a red fox")
    required, learned_at = ledger.stored_terms(sandbox.url, _key(first))
    required["accepts"][0].update(changes)
    ledger.save_terms(sandbox.url, _key(first), required, learned_at)
    return make_client(wallet=wallet, ledger=ledger)


@pytest.mark.parametrize("changes", [
    {"amount": "900000"},  # above the route table's top price for the route
    {"network": "eip155:1"},  # a network the policy does not allow
    {"asset": "0x" + "77" * 20},  # not a known USDC contract
    {"amount": "-1"},  # not even valid terms
])
async def test_kept_terms_pass_the_same_checks_as_fresh_ones(make_client, transport, sandbox, tmp_path, changes):
    second = await _kept_then_tampered(make_client, sandbox, tmp_path, **changes)
    n, settled = transport.total, len(sandbox.settlements)
    job = await second.generate("nano-banana", "a blue fox")
    assert [paid for _, _, paid in transport.log[n:]] == [False, True]  # refused unsigned: asked afresh, as new
    price = sandbox.settlements[-1]["amount"]
    assert [(p["amount"], p["network"]) for p in second.ledger.payments()][-1] == (int(price), "eip155:84532")
    assert [s["amount"] for s in sandbox.settlements[settled:]] == [price] and job.amount == int(price)


async def test_a_kept_payee_the_service_no_longer_names_needs_consent(make_client, transport, sandbox, tmp_path):
    second = await _kept_then_tampered(make_client, sandbox, tmp_path, payTo="0x" + "66" * 20)
    settled = len(sandbox.settlements)
    with pytest.raises(ConfirmationRequired, match="now asks to be paid at"):
        await second.generate("nano-banana", "a blue fox")
    assert len(sandbox.settlements) == settled  # nothing settled, to anyone


async def test_kept_terms_older_than_a_day_are_asked_for_again(make_client, transport, sandbox, tmp_path):
    wallet, ledger = Wallet.generate(), Ledger(tmp_path / "shared.sqlite3")
    first = make_client(wallet=wallet, ledger=ledger)
    await first.generate("nano-banana", "a red fox")
    required, _ = ledger.stored_terms(sandbox.url, _key(first))
    ledger.save_terms(sandbox.url, _key(first), required, time.time() - 2 * 86400)
    n = transport.total
    await make_client(wallet=wallet, ledger=ledger).generate("nano-banana", "a blue fox")
    assert [paid for _, _, paid in transport.log[n:]] == [False, True]  # an unpaid 402 first, as in a new kernel


# ------------------------------------------------------------------- per-call set-up: none


async def test_no_tls_context_or_connection_pool_is_built_per_call(sandbox, tmp_path, monkeypatch):
    import ssl
    import sys

    import httpcore
    import httpx

    made = {"tls": 0, "pools": 0, "clients": 0}

    def counting(cls_or_fn, what):
        def wrapped(*a, **kw):
            made[what] += 1
            return cls_or_fn(*a, **kw)
        return wrapped

    monkeypatch.setattr(ssl, "create_default_context", counting(ssl.create_default_context, "tls"))
    init_pool, init_client = httpcore.AsyncConnectionPool.__init__, httpx.AsyncClient.__init__
    monkeypatch.setattr(httpcore.AsyncConnectionPool, "__init__", counting(init_pool, "pools"))
    monkeypatch.setattr(httpx.AsyncClient, "__init__", counting(init_client, "clients"))

    first = AsyncStableStudio(sandbox.url, Wallet.generate(), ledger=":memory:", time_scale=0.002)
    assert made["tls"] <= 1 and made["clients"] == 1  # the process's one TLS context, the client's one pool
    made.update(tls=0, pools=0, clients=0)
    second = AsyncStableStudio(sandbox.url, Wallet.generate(), ledger=":memory:", time_scale=0.002)
    assert made == {"tls": 0, "pools": 1, "clients": 1}  # another client: its own pool, the same TLS context
    made.update(tls=0, pools=0, clients=0)
    for client in (first, second):
        for i in range(3):
            job = await client.generate("nano-banana", f"a fox {i}")
            result = await job.wait()
            await result.aread()
        await client.quote("sora-2", prompt="x", seconds="8")
    assert made == {"tls": 0, "pools": 0, "clients": 0}  # calls reuse them
    assert "sniffio" in sys.modules  # httpcore's per-request look-up finds it (a failed import costs every request)
    await first.aclose()
    await second.aclose()


async def test_a_result_without_a_client_shares_one_pool_for_its_downloads(monkeypatch):
    """A Result rebuilt without a client (e.g. from the ledger) downloads over https only: here to a
    closed loopback port, which is enough to see which pool each download goes through."""
    import asyncio
    import threading

    import httpx

    from stablestudio_widgets.results import Result

    made = []
    init = httpx.AsyncClient.__init__
    monkeypatch.setattr(httpx.AsyncClient, "__init__",
                        lambda self, *a, **kw: (made.append(self), init(self, *a, **kw))[1])
    results = [Result(f"https://127.0.0.1:9/{i}.png", "image") for i in range(3)]

    async def read_all() -> list[type]:
        failures = []
        for result in results * 2:
            with pytest.raises(httpx.ConnectError) as err:
                await result.aread()
            failures.append(err.type)
        return failures

    assert await read_all() == [httpx.ConnectError] * 6 and len(made) == 1  # six downloads, one pool
    assert made[0].timeout.read == 60.0
    seen: list[list[type]] = []
    thread = threading.Thread(target=lambda: seen.append(asyncio.run(read_all())))  # another event loop
    thread.start()
    thread.join(30)
    assert seen and len(made) == 2  # a pool of its own (a pool belongs to its loop), shared there too


async def test_finished_jobs_but_the_latest_keep_a_small_inspector(sandbox):
    """Hundreds of finished jobs in a kernel: each keeps its inspector steps in a few hundred bytes
    (not the 402 body, the signatures, the service's first answer), worded as before; the latest
    finished ones keep them whole (a notebook looks at the payload just signed)."""
    from stablestudio_widgets.widgets.records import inspector_steps

    def size(job) -> int:  # what the job's events hold, as JSON
        return len(json.dumps([e.data for e in job.events], default=str))

    async with AsyncStableStudio(sandbox.url, Wallet.generate(), ledger=":memory:", time_scale=0.002) as ss:
        ss.tracker.full_inspectors = 2
        jobs = [await ss.generate("nano-banana", f"a fox {i}") for i in range(4)]
        before = [inspector_steps(job) for job in jobs]
        for job in jobs:
            await job.wait()
        after = [inspector_steps(job) for job in jobs]
    old, latest = jobs[:2], jobs[2:]
    whole = min(size(j) for j in latest)  # the same five steps, kept whole
    assert whole > 3500 and all(size(j) < 1600 and size(j) < 0.45 * whole for j in old)
    assert all(e.compact for j in old for e in j.events) and not any(e.compact for j in latest for e in j.events)
    paid = ["402 Payment Required", "Signed authorization", "Settlement"]
    for steps, was in zip(after, before, strict=True):
        assert [s["step"] for s in steps[:3]] == [s["step"] for s in was[:3]] == paid
        assert [s["summary"] for s in steps[:3]] == [s["summary"] for s in was[:3]]  # worded the same
        assert steps[-1]["step"] == "Result"
    assert after[0][0]["data"]["PAYMENT-REQUIRED"].startswith("(not kept")
    signed = after[0][1]["data"]["PAYMENT-SIGNATURE"]["payload"]
    assert signed["signature"].endswith("…") and signed["authorization"]["value"] == "67000"
    assert not after[3][1]["data"]["PAYMENT-SIGNATURE"]["payload"]["signature"].endswith("…")


def test_the_payment_message_is_eth_accounts_eip712_encoding_and_signature():
    """Payments skip eth-account's generic EIP-712 encoder (a tenth of a ms each): the bytes must be
    the same, and so must the signature, for any values."""
    import random

    from eth_account import Account
    from eth_account.messages import encode_typed_data
    from eth_utils import keccak

    from stablestudio_widgets import x402

    assert x402._TRANSFER_TYPEHASH == keccak(b"TransferWithAuthorization(address from,address to,uint256 value,"
                                             b"uint256 validAfter,uint256 validBefore,bytes32 nonce)")
    rng = random.Random(5)
    wallet = Wallet.generate()
    for _ in range(25):
        hexes = lambda n: "0x" + rng.randbytes(n).hex()  # noqa: E731
        domain = {"name": rng.choice(["USDC", "USD Coin", "ünïcode"]), "version": str(rng.randint(1, 3)),
                  "chainId": rng.choice([8453, 84532, 2**40]), "verifyingContract": hexes(20)}
        auth = {"from": wallet.evm_address, "to": hexes(20), "value": str(rng.randint(0, 2**256 - 1)),
                "validAfter": str(rng.randint(0, 2**40)), "validBefore": str(rng.randint(0, 2**64)), "nonce": hexes(32)}
        reference = encode_typed_data(full_message=x402.typed_data(domain, auth))
        assert x402.transfer_message(domain, auth) == reference
        signature = wallet.sign_encoded(x402.transfer_message(domain, auth))
        assert signature == wallet.sign_typed_data(x402.typed_data(domain, auth))
        assert Account.recover_message(reference, signature=signature) == wallet.evm_address


# --------------------------------------------------------------------- widgets: follow, deltas


def _wire(widget) -> list[dict]:
    """What the widget sends to the front end from now on (its comm messages)."""
    sent: list[dict] = []
    send = widget.comm.send

    def capture(data=None, metadata=None, buffers=None):
        sent.append(data)
        return send(data=data, metadata=metadata, buffers=buffers)

    widget.comm.send = capture
    return sent


@pytest.fixture
def sync_client(sandbox, tmp_path):
    from stablestudio_widgets import StableStudio

    client = StableStudio(sandbox.url, Wallet.generate(), ledger=tmp_path / "w.db", time_scale=0.01)
    yield client
    client.close()


@pytest.mark.parametrize("session", [True, False])
def test_a_gallery_follows_every_running_job_it_shows_without_anyone_waiting(sync_client, session):
    from stablestudio_widgets import Gallery

    jobs = [sync_client.generate("nano-banana", f"a fox {i}") for i in range(2)]  # nobody calls wait()
    gallery = Gallery(sync_client, jobs=None if session else jobs, session=session)
    until(lambda: len(gallery.jobs) == 2 and all(r["status"] == "complete" for r in gallery.jobs))
    assert all(j.status == "complete" and j.result is not None for j in jobs)
    gallery.close()


def test_widget_updates_carry_only_the_cards_that_changed(sync_client):
    from stablestudio_widgets import Gallery

    jobs = [sync_client.generate("nano-banana", f"a fox {i}") for i in range(4)]
    for job in jobs:
        job.wait()
    gallery = Gallery(sync_client)
    until(lambda: len(gallery.jobs) == 4 and all(r["status"] == "complete" for r in gallery.jobs)
           and all(r["result"]["thumb"] for r in gallery.jobs)  # each card's embedded thumbnail is in
           and not gallery._feed._dirty)  # every change so far has gone out
    sent = _wire(gallery)
    sync_client.loop.call_soon_threadsafe(jobs[1].aio.progress, "looked at again")
    until(lambda: any(m.get("method") == "custom" for m in sent))
    changes = [m["content"] for m in sent if m.get("method") == "custom" and m["content"]["type"] == "records"]
    assert len(changes) == 1 and changes[0]["trait"] == "jobs" and changes[0]["order"] is None
    assert [r["key"] for r in changes[0]["changed"]] == [jobs[1].key] and changes[0]["removed"] == []
    assert changes[0]["changed"][0]["detail"] == "looked at again"
    assert not any("jobs" in m.get("state", {}) for m in sent)  # the whole list never goes

    # A view that asks for the whole state (a page reload) gets the list in full, as it is now.
    sent.clear()
    gallery._handle_msg({"content": {"data": {"method": "request_state"}}})
    full = [m for m in sent if m.get("method") == "update" and "jobs" in m["state"]]
    assert len(full) == 1 and [r["detail"] for r in full[0]["state"]["jobs"]].count("looked at again") == 1
    # The front end's copy, sent back with its other changes, does not overwrite the kernel's.
    gallery.set_state({"jobs": [], "filter_model": "nano-banana"})
    assert len(gallery.jobs) == 4 and gallery.filter_model == "nano-banana"
    gallery.close()


def test_the_static_copy_follows_the_cards_while_they_travel_as_changes(sync_client):
    """A shown widget's static copy (the HTML a saved notebook keeps) is rewritten when its cards
    change, while the live list still goes to the front end as the cards that changed."""
    from IPython.core.interactiveshell import InteractiveShell

    from stablestudio_widgets import Gallery

    shell = InteractiveShell.instance()  # display() as in a notebook; what it publishes is captured
    published: list[tuple[dict, dict]] = []
    shell.display_pub.publish = lambda data=None, metadata=None, *a, **kw: published.append((data or {}, kw))
    try:
        gallery = Gallery(sync_client)
        sent = _wire(gallery)
        gallery._ipython_display_()
        assert "No jobs yet" in published[-1][0]["text/html"] and not published[-1][1].get("update")

        def copy() -> str:  # the static copy as last rewritten
            updates = [data["text/html"] for data, kw in published if kw.get("update")]
            return updates[-1] if updates else ""

        job = sync_client.generate("nano-banana", "a fox for the saved notebook")  # nobody waits: the gallery follows
        until(lambda: "a fox for the saved notebook" in copy() and "data:image/jpeg;base64," in copy())
        assert job.status == "complete"
        records = [m["content"] for m in sent if m.get("method") == "custom" and m["content"]["type"] == "records"]
        assert records and all(c["trait"] == "jobs" for c in records)
        assert not any("jobs" in m.get("state", {}) for m in sent)  # the whole list never went
        gallery.close()
    finally:
        InteractiveShell.clear_instance()
