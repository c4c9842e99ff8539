"""Paying on Solana against the sandbox over real HTTP: every route, the choice between Base and
Solana, hostile and replayed transactions, the blockhash window, and the reference SDK's own
client paying our sandbox."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from urllib.parse import urlsplit

import httpx
import pytest
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction

from stablestudio_widgets import Wallet
from stablestudio_widgets.catalog import load
from stablestudio_widgets.errors import PaymentRequiredError
from stablestudio_widgets.methods import EvmExact, SvmExact
from stablestudio_widgets.networks import SOLANA_DEVNET
from stablestudio_widgets.payments import Payments
from stablestudio_widgets.policy import Consent
from stablestudio_widgets.sandbox import Faults, Sandbox
from stablestudio_widgets.x402 import decode_payment_required

from .conftest import TIME_SCALE, Recorder, clients
from .test_client import valid_params

pytestmark = pytest.mark.anyio
CATALOG = load()
ROUTE = "/api/generate/nano-banana/generate"
BODY = {"prompt": "a fox on a Solana validator"}
TOKEN = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
NANO_KEY = Payments.price_key(CATALOG.route("nano-banana/generate"), BODY)  # the terms cache key of ROUTE


@pytest.fixture
def both():
    with Sandbox(time_scale=TIME_SCALE, networks=["base-sepolia", "solana-devnet"], faults=Faults(seed=3)) as sb:
        yield sb


@pytest.fixture
def client(both, tmp_path):
    """Clients with a Solana-only wallet, on ``both`` (or ``sb=``)."""
    yield from clients(both, tmp_path, wallet=lambda _sb: Wallet.generate(evm=False, solana=True),
                       solana_rpc_url=lambda sb: sb.solana_rpc_url)


async def test_every_route_paid_on_solana_end_to_end(client, both, tmp_path):
    """All routes and their uploads, concurrently, from a Solana-only wallet; polled with Solana sign-ins."""
    ss = client(max_usd_per_request=20)
    jobs = await asyncio.gather(*(ss.submit(r.id, valid_params(r, tmp_path), confirm=True)
                                  for r in CATALOG.routes.values()))
    await asyncio.gather(*(j.wait(timeout=180) for j in jobs))  # media synthesis is slow on a busy machine
    assert all(j.status == "complete" for j in jobs)
    me = ss.wallet.solana_address
    assert {s["network"] for s in both.settlements} == {SOLANA_DEVNET}
    assert {s["payer"] for s in both.settlements} == {me} == {j.payer for j in both.jobs.values()}
    assert {p["pay_method"] for p in ss.ledger.payments()} == {"exact-svm"}
    assert all(p["payer"] == me and p["status"] == "settled" for p in ss.ledger.payments())
    for j in jobs:
        assert Signature.from_string(j.receipt.transaction) and j.receipt.network_name == "Solana Devnet"
    assert ss.ledger.spent_atomic() == sum(int(s["amount"]) for s in both.settlements)
    assert {j.id for j in await ss.jobs(limit=50)} == {j.id for j in jobs}
    await ss.aclose()


async def test_the_offer_follows_the_wallet_and_prefer_network(client, both):
    dual = Wallet.generate(solana=True)
    on_base = client(wallet=dual)  # the server lists Base first
    assert (await on_base.quote("nano-banana", prompt="x")).network == "eip155:84532"
    on_solana = client(wallet=dual, prefer_network="solana")
    job = await on_solana.generate("nano-banana", "which chain?")
    await job.wait()
    assert job.receipt.network == SOLANA_DEVNET and both.jobs[job.id].payer == dual.solana_address
    listed = await on_solana.jobs()  # the dual wallet lists the jobs of both its addresses
    assert [j.id for j in listed] == [job.id]
    with Sandbox(time_scale=TIME_SCALE, networks="solana-devnet") as only_solana:
        evm_only = client(only_solana, wallet=Wallet.generate())
        with pytest.raises(PaymentRequiredError, match="no Solana key") as e:
            await evm_only.generate("nano-banana", "no way to pay")
        assert "Nothing was signed" in str(e.value) and not only_solana.settlements
    await on_base.aclose()
    await on_solana.aclose()


# --- hostile transactions --------------------------------------------------------------------------

def build(payer: Keypair, req: dict, *, amount=None, owner=None, mint=None, authority=None, fee_payer=None,
          extra_ix=None, memo=b"0123456789abcdef0123456789abcdef", blockhash=None, signers=None) -> str:
    """A payment transaction as a (possibly malicious) client could build it."""
    from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price

    mint = mint or Pubkey.from_string(req["asset"])
    authority = authority or payer
    fee = Pubkey.from_string(fee_payer or req["extra"]["feePayer"])
    dest = get_associated_token_address(owner or Pubkey.from_string(req["payTo"]), mint)
    data = bytes([12]) + int(amount or req["amount"]).to_bytes(8, "little") + bytes([6])
    transfer = Instruction(TOKEN, data, [
        AccountMeta(get_associated_token_address(authority.pubkey(), mint), False, True),
        AccountMeta(mint, False, False), AccountMeta(dest, False, True),
        AccountMeta(authority.pubkey(), True, False)])
    ixs = [set_compute_unit_limit(20_000), set_compute_unit_price(1), transfer]
    ixs += [Instruction(MEMO, memo, [])] if memo else []
    ixs += [extra_ix] if extra_ix else []
    msg = MessageV0.try_compile(fee, ixs, [], Hash.from_string(blockhash or req["extra"]["recentBlockhash"]))
    keys = list(msg.account_keys)
    sigs = [Signature.default()] * msg.header.num_required_signatures
    for kp in signers or [authority]:
        sigs[keys.index(kp.pubkey())] = kp.sign_message(to_bytes_versioned(msg))
    return base64.b64encode(bytes(VersionedTransaction.populate(msg, sigs))).decode()


def header(req: dict, tx: str, accepted: dict | None = None) -> str:
    payload = {"x402Version": 2, "resource": {"url": "x"}, "accepted": accepted or req, "payload": {"transaction": tx}}
    return base64.b64encode(json.dumps(payload).encode()).decode()


def offer(sb: Sandbox, http: httpx.Client) -> dict:
    r = http.post(sb.url + ROUTE, json=BODY)
    return next(a for a in decode_payment_required(r.headers["payment-required"]).raw["accepts"]
                if a["network"] == SOLANA_DEVNET)


def reason(r: httpx.Response) -> str:
    """Why a payment was refused: in ``PAYMENT-REQUIRED.error`` (spec mode) or the body (router mode)."""
    assert r.status_code == 402, (r.status_code, r.text)
    said = decode_payment_required(r.headers["payment-required"]).error or ""
    body = r.json() if r.content else {}
    return f"{said} {body.get('error', '') if isinstance(body, dict) else ''}"


def flip(tx: str, at: int) -> str:
    wire = bytearray(base64.b64decode(tx))
    wire[at] ^= 1
    return base64.b64encode(bytes(wire)).decode()


def _ix_with_fee_payer(req):
    return Instruction(MEMO, b"x", [AccountMeta(Pubkey.from_string(req["extra"]["feePayer"]), False, False)])


HOSTILE = {
    "amount": (lambda p, r: header(r, build(p, r, amount=int(r["amount"]) + 1)), "amount_mismatch"),
    "payee": (lambda p, r: header(r, build(p, r, owner=Keypair().pubkey())), "recipient_mismatch"),
    "mint": (lambda p, r: header(r, build(p, r, mint=Keypair().pubkey())), "mint_mismatch"),
    "signature": (lambda p, r: header(r, flip(build(p, r), 100)), "signature_invalid"),
    "no memo": (lambda p, r: header(r, build(p, r, memo=None)), "memo_count"),
    "extra program": (lambda p, r: header(r, build(p, r, extra_ix=Instruction(Keypair().pubkey(), b"", []))),
                      "unknown_instruction"),
    "fee payer in an account list": (lambda p, r: header(r, build(p, r, extra_ix=_ix_with_fee_payer(r))),
                                     "fee_payer_transferring_funds"),
    "unknown blockhash": (lambda p, r: header(r, build(p, r, blockhash=str(Hash.new_unique()))), "BlockhashNotFound"),
    "another fee payer": (lambda p, r: header(r, build(p, r, fee_payer=str(Keypair().pubkey()))), "fee_payer"),
    "accepted claims another fee payer": (  # the router's deep comparison of accepted catches it first
        lambda p, r: header(r, build(p, r), {**r, "extra": {**r["extra"], "feePayer": str(Keypair().pubkey())}}),
        ("fee_payer_not_managed_by_facilitator", "requirements_mismatch")),
    "garbage": (lambda p, r: header(r, base64.b64encode(b"\x02" + bytes(70)).decode()), "could_not_be_decoded"),
}


@pytest.mark.parametrize("router", [True, False], ids=["router mode", "spec mode"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_tampered_transactions_are_refused_and_create_nothing(case, router):
    make, expected = HOSTILE[case]
    with Sandbox(time_scale=TIME_SCALE, networks=["base-sepolia", "solana-devnet"], router=router) as sb, \
            httpx.Client() as http:
        req = offer(sb, http)
        r = http.post(sb.url + ROUTE, json=BODY, headers={"PAYMENT-SIGNATURE": make(Keypair(), req)})
        said = reason(r)
        assert any(e in said for e in ((expected,) if isinstance(expected, str) else expected)), said
        assert not sb.settlements and not sb.jobs


def test_replayed_transactions_are_refused_and_create_nothing(both):
    payer = Keypair()
    with httpx.Client() as http:
        req = offer(both, http)
        tx = build(payer, req)
        assert http.post(both.url + ROUTE, json=BODY, headers={"PAYMENT-SIGNATURE": header(req, tx)}).status_code == 200
        # the same transaction again, and again with the fee payer's slot filled with noise
        for again in (tx, flip(tx, 10)):
            r = http.post(both.url + ROUTE, json=BODY, headers={"PAYMENT-SIGNATURE": header(req, again)})
            assert "already_used" in reason(r)
    assert len(both.settlements) == 1 and len(both.jobs) == 1
    assert both.settlements[0]["payer"] == str(payer.pubkey())


def test_an_expired_blockhash_is_refused(tmp_path):
    with Sandbox(time_scale=TIME_SCALE, networks="solana-devnet", solana_blockhash_ttl_s=0.3) as sb, \
            httpx.Client() as http:
        issued = time.time()
        req = offer(sb, http)
        tx = build(Keypair(), req)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and time.time() < issued + 0.5:  # its blockhash has expired by then
            time.sleep(0.05)
        r = http.post(sb.url + ROUTE, json=BODY, headers={"PAYMENT-SIGNATURE": header(req, tx)})
        assert "expired" in reason(r)
        assert not sb.settlements


# --- the reference SDK's client pays the sandbox -----------------------------------------------------

@pytest.mark.parametrize("hint", [True, False], ids=["blockhash in extra", "blockhash from RPC"])
def test_the_reference_sdk_client_pays_the_sandbox(hint):
    from x402 import x402ClientSync
    from x402.extensions.sign_in_with_x import create_siwx_payload, encode_siwx_header
    from x402.http import decode_payment_required_header, encode_payment_signature_header
    from x402.mechanisms.svm import KeypairSigner
    from x402.mechanisms.svm.exact.client import ExactSvmScheme

    payer = Keypair()
    with Sandbox(time_scale=TIME_SCALE, networks="solana-devnet", solana_blockhash_hint=hint) as sb, \
            httpx.Client() as http:
        client = x402ClientSync().register("solana:*", ExactSvmScheme(KeypairSigner(payer), rpc_url=sb.solana_rpc_url))
        required = decode_payment_required_header(http.post(sb.url + ROUTE, json=BODY).headers["payment-required"])
        payload = client.create_payment_payload(required)
        paid = {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}
        r = http.post(sb.url + ROUTE, json=BODY, headers=paid)
        assert r.status_code == 200, r.headers.get("payment-required")
        job_id = r.json()["jobId"]
        assert sb.jobs[job_id].payer == str(payer.pubkey()) == sb.settlements[0]["payer"]
        # and it signs in with its own SIWX code to see its job
        url = f"{sb.url}/api/jobs/{job_id}"
        challenge = http.get(url).json()["extensions"]["sign-in-with-x"]
        chain = next(c for c in challenge["supportedChains"] if c["type"] == "ed25519")  # as its client hook picks
        # The router's challenge names the bare hostname; the SDK's client insists on host:port (the
        # same thing on a default port), and the router takes either.
        info = {**challenge["info"], **chain, "domain": urlsplit(url).netloc}
        proof = asyncio.run(create_siwx_payload(info, KeypairSigner(payer), url))
        seen = http.get(url, headers={"SIGN-IN-WITH-X": encode_siwx_header(proof)})
        assert seen.status_code == 200 and seen.json()["id"] == job_id


# --- the blockhash: where it comes from, and the window it opens ---------------------------------------

async def test_without_a_hint_the_blockhash_comes_from_one_rpc_call(client, tmp_path):
    with Sandbox(time_scale=TIME_SCALE, networks="solana-devnet", solana_blockhash_hint=False) as sb:
        rec = Recorder()
        ss = client(sb, transport=rec)
        job = await ss.generate("nano-banana", "ask the RPC")
        await job.wait()
        rpc = [i for i, (_, path, _) in enumerate(rec.log) if path == "/_sandbox/solana-rpc"]
        paid = [i for i, (_, _, h) in enumerate(rec.log) if h]
        assert len(rpc) == 1 and len(paid) == 1 and rpc[0] < paid[0]
        hostile = client(sb, solana_rpc_url=sb.url + "/api/jobs")  # answers, but not JSON-RPC
        with pytest.raises(PaymentRequiredError, match="Could not get a recent Solana blockhash"):
            await hostile.generate("nano-banana", "no blockhash")
        assert not hostile.ledger.payments() and hostile.spending.reserved == 0
        await ss.aclose()
        await hostile.aclose()


async def test_terms_reused_after_their_blockhash_aged_are_learned_again(client, both):
    rec = Recorder()
    ss = client(transport=rec, methods=[EvmExact(), SvmExact(validity_s=0.6)])
    await (await ss.generate("nano-banana", "first")).wait()
    learned = ss.payments.terms[next(iter(ss.payments.terms))].learned_at
    while time.time() < learned + 0.25:
        await asyncio.sleep(0.02)
    await (await ss.generate("nano-banana", "second")).wait()
    posts = [bool(h) for m, p, h in rec.log if p == ROUTE]
    assert posts == [False, True, False, True]  # a fresh 402 (fresh blockhash) before each payment
    await ss.aclose()


@pytest.mark.parametrize("replay", ["refuse", "idempotent"])
async def test_a_lost_answer_is_resent_within_the_window_and_settles_once(client, replay):
    faults = Faults(seed=1, drop_after_settle_rate=1.0, drop_mode="reset")
    with Sandbox(time_scale=TIME_SCALE, networks="solana-devnet", replay=replay, faults=faults) as sb:
        rec = Recorder()
        ss = client(sb, transport=rec)
        job = await ss.generate("nano-banana", "the answer gets lost")
        sb.set_faults(drop_after_settle_rate=0.0)
        await job.wait()
        sent = rec.paid()
        assert len(sent) == 2 and sent[0] == sent[1]  # the very same transaction, resent
        assert len(sb.settlements) == 1 and list(sb.jobs) == [job.id]
        assert ss.ledger.payments()[0]["status"] == "settled"
        await ss.aclose()


async def test_resending_stops_at_the_blockhash_deadline(client):
    faults = Faults(seed=1, error_rate=1.0, error_status=503, retry_after_s=1)
    with Sandbox(time_scale=TIME_SCALE, networks="solana-devnet", faults=faults) as sb:
        rec = Recorder()
        ss = client(sb, transport=rec, methods=[SvmExact(validity_s=2.5)], max_retries=8)
        sb.set_faults(error_rate=0.0)
        terms = await ss.payments.learn(ROUTE, BODY, NANO_KEY)
        sb.set_faults(error_rate=1.0)
        signed = await ss.payments._sign(terms.requirement, terms, ROUTE, BODY, kind="generate", route=None,
                                         consent=Consent(), job=None)
        assert ss.ledger.payment(signed.id)["valid_before"] == int(signed.deadline) <= time.time() + 2.5
        r, ambiguous = await ss.payments.send(ROUTE, BODY, signed)
        assert r is None and ambiguous and time.time() >= signed.deadline - 0.5
        assert 2 <= len(rec.paid()) <= 4 < 9  # stopped by the deadline, not by max_retries
        await ss.aclose()


@pytest.mark.parametrize("inside", [True, False], ids=["inside the window", "after the window"])
async def test_resume_resends_inside_the_window_and_only_looks_after_it(client, inside):
    with Sandbox(time_scale=TIME_SCALE, networks="solana-devnet", replay="idempotent") as sb:
        rec = Recorder()
        ss = client(sb, transport=rec, methods=[SvmExact(validity_s=30.0 if inside else 1.0)])
        route = CATALOG.route("nano-banana/generate")
        terms = await ss.payments.learn(ROUTE, BODY, NANO_KEY)
        signed = await ss.payments._sign(terms.requirement, terms, ROUTE, BODY, kind="generate", route=route,
                                         consent=Consent(), job=None)
        async with httpx.AsyncClient() as http:  # it settles, and the kernel dies before the answer is read
            assert (await http.post(sb.url + ROUTE, json=BODY, headers=signed.headers)).status_code == 200
        ss.ledger.update_payment(signed.id, status="uncertain")
        while not inside and time.time() < signed.deadline + 0.1:
            await asyncio.sleep(0.05)
        before = len(rec.paid())
        jobs = await ss.resume()
        assert [j.id for j in jobs] == list(sb.jobs) and jobs[0].status == "complete"
        assert rec.paid()[before:] == ([signed.header] if inside else [])  # after the deadline: no resend
        assert ss.ledger.payment(signed.id)["status"] == "settled" and len(sb.settlements) == 1
        await ss.aclose()
