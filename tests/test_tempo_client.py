"""Paying on Tempo (MPP) with the client, against the sandbox over real HTTP: every route, the
choice between x402 and MPP, the policy, sponsored fees, ambiguous failures that never sign (or
send) again, polling as a Tempo payer (what the widgets show: tests/test_widgets.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from stablestudio_widgets import AsyncStableStudio, SpendingPolicy, Wallet
from stablestudio_widgets.catalog import load
from stablestudio_widgets.errors import BudgetExceeded, PaymentRequiredError, ServiceError
from stablestudio_widgets.methods import TempoCharge, _tempo_offer
from stablestudio_widgets.mpp import parse_challenges
from stablestudio_widgets.networks import BASE_SEPOLIA, TEMPO, TEMPO_TESTNET
from stablestudio_widgets.sandbox import Faults, Sandbox

from .conftest import TIME_SCALE, Recorder, clients
from .test_client import valid_params

pytestmark = pytest.mark.anyio
CATALOG = load()
ROUTE = "/api/generate/nano-banana/generate"
_NANO = CATALOG.routes["nano-banana/generate"]
PRICE = _NANO.price_atomic(_NANO.validate({"prompt": "x"}))
USDC_E = "0x20C000000000000000000000b9537d11c60E8b50"


@pytest.fixture
def tempo_sb():
    with Sandbox(time_scale=TIME_SCALE, networks="tempo-testnet", faults=Faults(seed=5)) as sb:
        yield sb


@pytest.fixture
def client(tempo_sb, tmp_path):
    """Clients on ``tempo_sb`` (or ``sb=``)."""
    yield from clients(tempo_sb, tmp_path)


async def test_every_route_paid_on_tempo_end_to_end(client, tempo_sb, tmp_path):
    """All routes and their uploads, concurrently, from the same EVM key that pays on Base; polled
    with SIWX as that key; every settlement is a Tempo transaction whose hash is the receipt."""
    ss = client(max_usd_per_request=20)
    jobs = await asyncio.gather(*(ss.submit(r.id, valid_params(r, tmp_path), confirm=True)
                                  for r in CATALOG.routes.values()))
    await asyncio.gather(*(j.wait(timeout=180) for j in jobs))  # 23 renders on 2 shared cores
    assert all(j.status == "complete" for j in jobs)
    me = ss.wallet.address
    assert {s["network"] for s in tempo_sb.settlements} == {TEMPO_TESTNET}
    assert {s["payer"] for s in tempo_sb.settlements} == {me} == {j.payer for j in tempo_sb.jobs.values()}
    payments = ss.ledger.payments()
    assert {p["pay_method"] for p in payments} == {"mpp-tempo"} and all(p["status"] == "settled" for p in payments)
    assert sorted(p["tx"] for p in payments) == sorted(s["transaction"] for s in tempo_sb.settlements)
    for j in jobs:
        assert j.receipt.network_name == "Tempo testnet" and j.receipt.transaction.startswith("0x")
        assert j.receipt.explorer_url is None  # a sandbox settlement is on no explorer
    assert ss.ledger.spent_atomic() == sum(int(s["amount"]) for s in tempo_sb.settlements)
    assert {j.id for j in await ss.jobs(limit=50)} == {j.id for j in jobs}
    await ss.aclose()


async def test_sponsored_fees_and_what_each_option_costs(client):
    with Sandbox(time_scale=TIME_SCALE, networks=["base-sepolia", "tempo-testnet"], tempo_fee_payer=True) as sb:
        ss = client(sb)
        quote = await ss.quote("nano-banana", prompt="x")
        assert quote.network == BASE_SEPOLIA  # the server lists x402 first
        assert [(o.network, o.amount, o.max_fee, o.refused) for o in quote.options] == [
            (BASE_SEPOLIA, PRICE, 0, None), (TEMPO_TESTNET, PRICE, 0, None)]  # sponsored: no fees for us
        on_tempo = client(sb, prefer_network="tempo")
        job = await on_tempo.generate("nano-banana", "sponsored")
        await job.wait()
        assert job.receipt.network == TEMPO_TESTNET and sb.settlements[0]["transaction"] == job.receipt.transaction
        assert on_tempo.ledger.payments()[0]["tx"] == job.receipt.transaction  # known only from the receipt
        await ss.aclose()
        await on_tempo.aclose()


async def test_self_paid_quote_shows_the_fee_ceiling(client):
    ss = client()
    (option,) = (await ss.quote("nano-banana", prompt="x")).options
    assert option.max_fee == 20_000
    assert repr(option) == f"<Option ${PRICE / 1e6:.3f} + fees up to $0.02 on Tempo testnet>"
    await ss.aclose()


def test_the_wallet_says_where_it_may_pay():
    assert set(Wallet.generate().networks) == {BASE_SEPOLIA, TEMPO_TESTNET}  # a sandbox wallet: testnets only
    real = Wallet.from_key("0x" + "42" * 32)
    assert {TEMPO, TEMPO_TESTNET, "eip155:8453"} <= set(real.networks)
    assert not any(n.startswith("solana:") for n in real.networks)


# --- the policy: chain ids, currencies, hosts, amounts, the recipient ----------------------------

def _offer(chain: int, currency: str, amount: str = "39000"):
    from stablestudio_widgets.mpp import Challenge, b64url_encode

    request = {"amount": amount, "currency": currency, "recipient": "0x" + "ab" * 20,
               "methodDetails": {"chainId": chain}}
    raw = b64url_encode(json.dumps(request).encode())
    return _tempo_offer(Challenge("id", "stablestudio.dev", "tempo", "charge", raw, request,
                                  expires="2099-01-01T00:00:00.000Z"))


@pytest.mark.parametrize("chain, currency, url, why", [
    (4217, USDC_E, "https://stablestudio.dev/api/x", None),
    (4217, "0x20c0000000000000000000000000000000000000", "https://stablestudio.dev/api/x", "not a known USDC"),
    (4217, USDC_E, "https://evil.example/api/x", "real-money payments go only to stablestudio.dev"),
    (4217, USDC_E, "http://127.0.0.1:8402/api/x", "real-money payments go only to stablestudio.dev"),
    (42431, "0x20c0000000000000000000000000000000000000", "http://127.0.0.1:8402/api/x", None),
    (42431, "0x20c0000000000000000000000000000000000001", "http://127.0.0.1:8402/api/x", None),
    (42431, "0x20c0000000000000000000000000000000000000", "https://stablestudio.dev/api/x", "testnet"),
    (42431, USDC_E, "http://127.0.0.1:8402/api/x", "not a known USDC"),
    (1, USDC_E, "https://stablestudio.dev/api/x", "not a known USDC"),
])
def test_policy_pins_chains_currencies_and_hosts(chain, currency, url, why):
    got = SpendingPolicy().refuse_terms(_offer(chain, currency), url)
    assert got is None if why is None else why in got


async def test_amount_caps_hold_before_anything_is_signed(client, tempo_sb):
    ss = client(max_usd_per_request=0.01)
    with pytest.raises(BudgetExceeded):
        await ss.generate("nano-banana", "too dear")
    assert ss.ledger.payments() == [] and tempo_sb.settlements == []
    await ss.aclose()


async def test_a_challenge_paying_someone_else_than_the_x402_payee_is_refused(client, tmp_path):
    """A hostile 402: x402 terms to the merchant, an MPP challenge to another recipient."""
    with Sandbox(time_scale=TIME_SCALE, networks=["base-sepolia", "tempo-testnet"]) as sb:
        sb.state.mpp.recipient = "0x" + "66" * 20
        ss = client(sb, prefer_network="tempo-testnet")
        quote = await ss.quote("nano-banana", prompt="x")
        assert quote.network == BASE_SEPOLIA  # the Tempo option is refused, the x402 one is used
        assert "is not the payee of the x402 terms" in quote.options[1].refused
        await ss.aclose()
        with Sandbox(time_scale=TIME_SCALE, networks="tempo-testnet") as alone:  # alone, it is the quote
            assert (await client(alone).quote("nano-banana", prompt="x")).network == TEMPO_TESTNET


async def test_splits_and_unknown_methods_are_named_in_the_error(client, tempo_sb):
    tempo_sb.state.mpp.request = lambda amount: {"amount": str(amount), "currency": tempo_sb.state.mpp.currency,
                                                 "recipient": tempo_sb.merchant,
                                                 "methodDetails": {"chainId": 42431, "splits": [{}]}}
    ss = client()
    with pytest.raises(PaymentRequiredError, match="split payments .* are not supported"):
        await ss.generate("nano-banana", "split")
    assert ss.ledger.payments() == []
    await ss.aclose()


# --- ambiguous failures: never sign again, never resend; the ledger keeps the tx hash -------------

@pytest.mark.parametrize("mode", ["reset", "5xx"])
async def test_an_ambiguous_failure_never_signs_or_sends_again(client, tempo_sb, mode):
    tempo_sb.set_faults(drop_after_settle_rate=1.0, drop_mode=mode)
    rec = Recorder("authorization")
    ss = client(transport=rec)
    if mode == "reset":  # no answer at all: the client looks for the job the payment bought, and finds it
        job = await ss.generate("nano-banana", "the answer gets lost")
        assert job.id in tempo_sb.jobs
    else:  # a 5xx after sending: outcome unknown, reported with the transaction hash
        with pytest.raises(ServiceError, match="may have settled"):
            await ss.generate("nano-banana", "the answer gets lost")
        (row,) = ss.ledger.payments()
        assert row["status"] == "uncertain" and row["tx"] == tempo_sb.settlements[0]["transaction"]
        tempo_sb.set_faults(drop_after_settle_rate=0.0)
        (job,) = await ss.resume()
        assert job.id in tempo_sb.jobs and job.status == "complete"
    assert len(rec.paid()) == 1  # one credential, sent once
    assert ss.service.stats["signatures"] == 1
    assert ss.ledger.payments()[0]["status"] == "settled" and len(tempo_sb.settlements) == 1
    await ss.aclose()


async def test_a_ledger_credential_restores_exactly(client, tempo_sb):
    """While it may still settle, the ledger keeps the credential: the method rebuilds the very same one."""
    ss = client()
    route = CATALOG.route("nano-banana/generate")
    terms = await ss.payments.learn(ROUTE, {"prompt": "kept"}, ss.payments.price_key(route, {"prompt": "kept"}))
    signed = await ss.payments._sign(terms.requirement, terms, ROUTE, {"prompt": "kept"}, kind="generate",
                                     route=route, consent=__import__("stablestudio_widgets.policy", fromlist=["x"])
                                     .Consent.given(True, None, terms.requirement.amount, terms.requirement.pay_to),
                                     job=None)
    row = ss.ledger.payment(signed.id)
    restored = ss.payments.method_named(row["pay_method"]).restore(row)
    assert isinstance(ss.payments.method_named(row["pay_method"]), TempoCharge)
    assert restored.header == signed.header and restored.id == signed.id and row["tx"] == signed.transaction
    assert restored.requirement.network == TEMPO_TESTNET and restored.transaction == signed.transaction
    await ss.aclose()


# --- polling as a Tempo payer -------------------------------------------------------------------

async def test_polling_with_the_mpp_proof_where_that_is_what_the_route_offers(client):
    with Sandbox(time_scale=TIME_SCALE, networks="tempo-testnet", mpp_signin_only=True) as sb:
        rec = Recorder("authorization")
        ss = client(sb, transport=rec)
        job = await ss.generate("nano-banana", "proved")
        await job.wait()
        assert job.status == "complete"
        proofs = [h for _, p, h in rec.log if p.startswith("/api/jobs") and h]
        assert proofs and len(set(proofs)) == len(proofs)  # a fresh single-use proof each time
        (ch,), _ = parse_challenges(httpx.get(f"{sb.url}/api/jobs/{job.id}").headers.get_list("www-authenticate"))
        assert ch.decoded["amount"] == "0"
        await ss.aclose()


def _zero_challenge(realm: str, chain: int) -> str:
    from stablestudio_widgets.sandbox.mpp import Mpp

    issuer = Mpp(recipient="0x" + "ab" * 20)
    issuer.request = lambda amount: {"amount": "0", "currency": USDC_E, "recipient": "0x" + "ab" * 20,
                                     "methodDetails": {"chainId": chain}}
    return issuer.challenge(realm, 0, "sign in", __import__("time").time())[1]


@pytest.mark.parametrize("realm, chain, signed", [
    ("stablestudio.dev", 4217, True),
    ("evil.example", 4217, False),        # another realm: a proof for someone else
    ("stablestudio.dev", 42431, False),   # testnet from the real service
    ("stablestudio.dev", 1, False),       # not Tempo
])
async def test_a_proof_only_for_this_host_on_tempo(tmp_path, realm, chain, signed):
    """A peer whose job route offers only an MPP $0 challenge: signed only when it is for this host
    on Tempo, and then as our EVM address."""
    from stablestudio_widgets import AuthError
    from stablestudio_widgets.mpp import b64url_json

    seen = []

    def peer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if seen[-1]:
            return httpx.Response(200, json={"jobs": []})
        return httpx.Response(402, json={}, headers={"WWW-Authenticate": _zero_challenge(realm, chain)})

    wallet = Wallet.from_key("0x" + "42" * 32)
    ss = AsyncStableStudio("https://stablestudio.dev", wallet, ledger=tmp_path / "l.db",
                           transport=httpx.MockTransport(peer))
    if signed:
        assert await ss.jobs() == []
        proof = b64url_json(seen[-1].removeprefix("Payment "), "proof")
        assert proof["payload"]["type"] == "proof" and proof["source"] == f"did:pkh:eip155:4217:{wallet.address}"
    else:
        with pytest.raises(AuthError):
            await ss.jobs()
        assert not any(seen)  # no Authorization ever went out
    await ss.aclose()


# --- what the receipts link to ---------------------------------------------------------------------

def test_the_explorer_link_of_a_real_tempo_receipt():
    from stablestudio_widgets.x402 import Receipt

    tx = "0x" + "ab" * 32
    assert Receipt(True, tx, TEMPO, None, None).explorer_url == f"https://explore.tempo.xyz/tx/{tx}"
    assert Receipt(True, tx, TEMPO_TESTNET, None, None).explorer_url == f"https://explore.moderato.tempo.xyz/tx/{tx}"
