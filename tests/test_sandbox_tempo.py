"""The sandbox's MPP/Tempo side over real HTTP: challenges, verification of every field, replay.

Credentials are built with the client's own modules where they are right, and tampered with
field by field where they must be refused; one test builds them with pytempo alone, so the
sandbox is checked against an encoder that is not ours.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import sys
import time

import httpx
import pytest

from stablestudio_widgets import Wallet, tempo
from stablestudio_widgets.catalog import load
from stablestudio_widgets.mpp import Challenge, credential, parse_challenges, source_did
from stablestudio_widgets.sandbox import Sandbox
from stablestudio_widgets.sandbox.mpp import PATH_USD, Mpp, MppInvalid
from stablestudio_widgets.sandbox.tempo import FEE_PAYER
from stablestudio_widgets.tempo import Call, TempoTransaction
from stablestudio_widgets.tempo_charge import Charge, build_transaction, parse_charge, sign_charge

from .conftest import TIME_SCALE, sandbox_process

ROUTE = "/api/generate/nano-banana/generate"
BODY = {"prompt": "a red fox"}
_NANO = load().routes["nano-banana/generate"]
PRICE = _NANO.price_atomic(_NANO.validate(BODY))
GAS = 2 * 10**10


@pytest.fixture
def tempo_sandbox():
    """Spec mode: a refusal says why (mppx's problem+json); the router's 402 body is empty."""
    with Sandbox(time_scale=TIME_SCALE, networks=("tempo-testnet",), router=False) as sb:
        yield sb


def challenge_of(r: httpx.Response) -> Challenge:
    assert r.status_code == 402, r.text
    (ch,), problems = parse_challenges(r.headers.get_list("www-authenticate"))
    assert not problems
    return ch


def fresh_charge(url: str) -> Charge:
    return parse_charge(challenge_of(httpx.post(url + ROUTE, json=BODY)))


def pay(url: str, header: str) -> httpx.Response:
    return httpx.post(url + ROUTE, json=BODY, headers={"Authorization": header})


def signed_with(charge: Charge, wallet: Wallet, **changes) -> str:
    """A credential whose transaction differs from the right one by ``changes``."""
    tx = dataclasses.replace(build_transaction(charge, wallet.address, gas_price=GAS, now=time.time()), **changes)
    raw = tempo.sign(tx, wallet).raw_hex
    return credential(charge.challenge, {"type": "transaction", "signature": raw},
                      source_did(charge.chain_id, wallet.address))[0]


def detail(r: httpx.Response) -> str:
    assert r.status_code == 402, (r.status_code, r.text)
    assert r.headers["www-authenticate"].startswith("Payment ")  # a fresh challenge with every refusal
    return r.json()["detail"]


# --- challenges ------------------------------------------------------------------------------------

def test_tempo_only_402_carries_one_mpp_challenge(tempo_sandbox):
    r = httpx.post(tempo_sandbox.url + ROUTE, json=BODY)
    assert "payment-required" not in r.headers and r.headers["cache-control"] == "no-store"
    charge = parse_charge(challenge_of(r))
    assert (charge.chain_id, charge.currency, charge.recipient) == (42431, PATH_USD, tempo_sandbox.merchant)
    assert charge.amount == PRICE and not charge.fee_payer
    assert charge.challenge.realm == tempo_sandbox.url.removeprefix("http://")
    assert charge.challenge.expires_at - time.time() == pytest.approx(300, abs=5)
    again = fresh_charge(tempo_sandbox.url)
    assert again.challenge.id != charge.challenge.id  # same price, same second: still a new challenge


def test_both_methods_side_by_side():
    with Sandbox(time_scale=TIME_SCALE, networks=("base-sepolia", "tempo-testnet")) as sb:
        r = httpx.post(sb.url + ROUTE, json=BODY)
        assert r.headers["payment-required"] and challenge_of(r).method == "tempo"


def test_challenge_ids_are_mppx_hmacs():
    """The id is HMAC-SHA256 over realm|method|intent|request|expires|digest|opaque (pympp agrees)."""
    if sys.version_info < (3, 11):
        pytest.skip("pympp needs Python >= 3.11")
    mpp = pytest.importorskip("mpp")
    issuer = Mpp(recipient="0x" + "ab" * 20, secret=b"s" * 32)
    cid, header = issuer.challenge("127.0.0.1:8402", 39000, "x", time.time())
    (ch,), _ = parse_challenges(header)
    opaque = json.loads(base64.urlsafe_b64decode(ch.opaque + "=" * (-len(ch.opaque) % 4)))
    assert cid == ch.id == mpp.generate_challenge_id(secret_key="s" * 32, realm=ch.realm, method="tempo",
                                                     intent="charge", request=ch.decoded, expires=ch.expires,
                                                     opaque=opaque)


# --- paying ------------------------------------------------------------------------------------------

def test_self_paid_charge_settles_with_the_tx_hash_as_reference(tempo_sandbox):
    wallet = Wallet.generate()
    signed = sign_charge(wallet, fresh_charge(tempo_sandbox.url), gas_price=GAS)
    r = pay(tempo_sandbox.url, signed.header)
    assert r.status_code == 200, r.text
    receipt = json.loads(base64.urlsafe_b64decode(r.headers["payment-receipt"] + "=="))
    assert receipt["reference"] == signed.tx_hash and receipt["status"] == "success"
    (entry,) = tempo_sandbox.settlements
    assert entry["network"] == "eip155:42431" and entry["payer"] == wallet.address
    assert entry["transaction"] == signed.tx_hash and entry["job_id"] == r.json()["jobId"]
    assert tempo_sandbox.jobs[r.json()["jobId"]].payer == wallet.address


def test_sponsored_charge_is_co_signed_by_the_fee_payer():
    with Sandbox(time_scale=TIME_SCALE, networks=("tempo-testnet",), tempo_fee_payer=True, router=False) as sb:
        charge = fresh_charge(sb.url)
        assert charge.fee_payer
        signed = sign_charge(Wallet.generate(), charge, gas_price=GAS)
        r = pay(sb.url, signed.header)
        assert r.status_code == 200, r.text
        assert sb.settlements[0]["transaction"].startswith("0x") and signed.tx_hash is None
        # a self-paid transaction on a sponsored challenge is refused
        other = dataclasses.replace(fresh_charge(sb.url), fee_payer=False)
        assert "sponsors fees" in detail(pay(sb.url, sign_charge(Wallet.generate(), other, gas_price=GAS).header))


def test_sandbox_co_signing_matches_the_reference_final_hash():
    """Co-signed with the vectors' fee payer key, our simulated broadcast hashes as ox/viem do."""
    import rlp

    from stablestudio_widgets.sandbox.tempo import cosign
    from tests.test_tempo import V

    fields = rlp.decode(bytes.fromhex(V["sponsored_handoff_viem"][4:]))
    body = fields[:11] + [b"\x00", fields[12]]
    key = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
    assert cosign(body, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", fields[13], key) == V["sponsored_final_hash"]
    assert FEE_PAYER.address.startswith("0x")


def test_a_credential_built_by_pytempo_alone_is_accepted(tempo_sandbox):
    pytempo = pytest.importorskip("pytempo")
    charge = fresh_charge(tempo_sandbox.url)
    acct_key = "0x" + "42" * 32
    wallet = Wallet.from_key(acct_key)
    memo = tempo.attribution_memo(charge.challenge.realm, charge.challenge.id)
    data = bytes.fromhex("95777d59") + bytes(12) + bytes.fromhex(charge.recipient[2:]) \
        + charge.amount.to_bytes(32, "big") + memo
    tx = pytempo.TempoTransaction.create(
        chain_id=42431, gas_limit=1_000_000, max_fee_per_gas=GAS, max_priority_fee_per_gas=GAS, nonce=0,
        nonce_key=2**256 - 1, valid_before=int(time.time()) + 20, fee_token=charge.currency,
        calls=(pytempo.Call.create(to=charge.currency, data=data),)).sign(acct_key)
    header = credential(charge.challenge, {"type": "transaction", "signature": "0x" + tx.encode().hex()},
                        source_did(42431, wallet.address))[0]
    assert pay(tempo_sandbox.url, header).status_code == 200


# --- every tampered field is refused ------------------------------------------------------------------

OTHER = "0x" + "11" * 20


@pytest.mark.parametrize("changes, why", [
    ({"calls": lambda c: (Call(c.currency, tempo.transfer_with_memo(c.recipient, c.amount - 1, _memo(c))),)},
     "no matching payment call"),
    ({"calls": lambda c: (Call(c.currency, tempo.transfer_with_memo(OTHER, c.amount, _memo(c))),)},
     "no matching payment call"),
    ({"calls": lambda c: (Call(tempo.USDC_E, tempo.transfer_with_memo(c.recipient, c.amount, _memo(c))),)},
     "no matching payment call"),
    ({"calls": lambda c: (Call(c.currency, tempo.transfer_with_memo(c.recipient, c.amount, bytes(32))),)},
     "memo is not bound"),
    ({"calls": lambda c: (Call(c.currency, tempo.transfer_with_memo(
        c.recipient, c.amount, tempo.attribution_memo(c.challenge.realm, "another-challenge"))),)},
     "memo is not bound"),
    ({"calls": lambda c: (Call(c.currency, tempo.transfer_with_memo(c.recipient, c.amount, _memo(c))),) * 2},
     "exactly one call"),
    ({"calls": lambda c: (Call(c.currency, tempo.SELECTOR_TRANSFER + bytes(64)),)}, "no matching payment call"),
    ({"calls": lambda c: (Call(c.currency, b"\x12\x34\x56\x78"),)}, "TIP-20 transfer"),
    ({"chain_id": lambda c: 4217}, "chain id"),
    ({"nonce_key": lambda c: 7}, "expiring nonce"),
    ({"nonce": lambda c: 1}, "expiring nonce"),
    ({"valid_before": lambda c: int(time.time()) - 1}, "past"),
    ({"valid_before": lambda c: int(time.time()) + 120}, "too far ahead"),
    ({"valid_before": lambda c: None}, "missing"),
    ({"valid_after": lambda c: int(time.time()) + 15}, "not valid yet"),
    ({"gas": lambda c: 3_000_000}, "sponsor policy"),
])
def test_every_tampered_transaction_field_is_refused(tempo_sandbox, changes, why):
    charge = fresh_charge(tempo_sandbox.url)
    header = signed_with(charge, Wallet.generate(), **{k: f(charge) for k, f in changes.items()})
    assert why in detail(pay(tempo_sandbox.url, header))
    assert tempo_sandbox.settlements == [] and tempo_sandbox.jobs == {}


def _memo(c: Charge) -> bytes:
    return tempo.attribution_memo(c.challenge.realm, c.challenge.id)


def _retarget(header: str, mutate) -> str:
    body = json.loads(base64.urlsafe_b64decode(header[8:] + "=="))
    mutate(body)
    return "Payment " + base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def _echo_request(body: dict, **changes) -> None:
    req = json.loads(base64.urlsafe_b64decode(body["challenge"]["request"] + "=="))
    req.update(changes)
    body["challenge"]["request"] = base64.urlsafe_b64encode(json.dumps(req).encode()).decode().rstrip("=")


@pytest.mark.parametrize("mutate, why", [
    (lambda b: _echo_request(b, amount="1"), "not issued by this server"),
    (lambda b: b["challenge"].update(id="x" * 43), "not issued by this server"),
    (lambda b: b["challenge"].update(expires="2099-01-01T00:00:00.000Z"), "not issued by this server"),
    (lambda b: b["challenge"].update(realm="stablestudio.dev"), "not issued by this server"),
    (lambda b: b.update(source=source_did(42431, OTHER)), "source does not match"),
    (lambda b: b.update(source=b["source"].replace(":42431:", ":4217:")), "source is invalid"),
    (lambda b: b.update(source=b["source"][:-1] + ("A" if b["source"][-1] != "A" else "B")), "source"),
    (lambda b: b.pop("source"), "source is invalid"),
    (lambda b: b["payload"].update(type="hash"), "payload must be"),
    (lambda b: b["payload"].update(type="proof"), "zero-amount"),
    (lambda b: b["payload"].update(signature="0x02" + b["payload"]["signature"][4:]), "envelope type"),
    (lambda b: b["payload"].update(signature=b["payload"]["signature"][:-6] + "000000"), "signature"),
    (lambda b: b["payload"].update(signature="0x76zz"), "not hex"),
])
def test_every_tampered_credential_field_is_refused(tempo_sandbox, mutate, why):
    signed = sign_charge(Wallet.generate(), fresh_charge(tempo_sandbox.url), gas_price=GAS)
    assert why in detail(pay(tempo_sandbox.url, _retarget(signed.header, mutate)))
    assert tempo_sandbox.settlements == []


def test_router_mode_refuses_with_an_empty_402_and_fresh_challenges():
    """Behind the router a refused credential gets a plain 402: both challenges again, no reason."""
    with Sandbox(time_scale=TIME_SCALE, networks=("base-sepolia", "tempo-testnet")) as sb:
        charge = fresh_charge(sb.url)
        forged = _retarget(sign_charge(Wallet.generate(), charge, gas_price=GAS).header,
                           lambda b: b.update(source=source_did(42431, OTHER)))
        r = pay(sb.url, forged)
        assert r.status_code == 402 and r.content == b"" and r.headers["payment-required"]
        assert challenge_of(r).id != charge.challenge.id and sb.settlements == []


def test_credentials_for_another_route_or_price_are_refused(tempo_sandbox):
    signed = sign_charge(Wallet.generate(), fresh_charge(tempo_sandbox.url), gas_price=GAS)
    r = httpx.post(tempo_sandbox.url + "/api/generate/nano-banana-pro/generate", json=BODY,
                   headers={"Authorization": signed.header})
    assert "amount does not match this route" in detail(r)


def test_malformed_and_expired_credentials():
    issuer = Mpp(recipient=OTHER)
    for bad in ("Payment !!!", "Payment " + base64.urlsafe_b64encode(b"[]").decode(), "Bearer x"):
        with pytest.raises(MppInvalid) as e:
            issuer.verify(bad, realm="r", amount=1, now=time.time())
        assert e.value.slug == "malformed-credential"
    _, header = issuer.challenge("r", 1, "d", time.time())
    (ch,), _ = parse_challenges(header)
    signed = sign_charge(Wallet.generate(), parse_charge(ch), gas_price=GAS)
    with pytest.raises(MppInvalid) as e:
        issuer.verify(signed.header, realm="r", amount=1, now=time.time() + 301)
    assert e.value.slug == "payment-expired"


def test_insufficient_simulated_balance_is_refused(tempo_sandbox):
    wallet = Wallet.generate()
    tempo_sandbox.state.mpp.balances[wallet.address.lower()] = PRICE  # the amount, but not the worst-case fee
    assert detail(pay(tempo_sandbox.url, sign_charge(wallet, fresh_charge(tempo_sandbox.url), gas_price=GAS).header)) \
        == "Payment verification failed."


# --- replay and single use ---------------------------------------------------------------------------

def test_replay_refused(tempo_sandbox):
    signed = sign_charge(Wallet.generate(), fresh_charge(tempo_sandbox.url), gas_price=GAS)
    assert pay(tempo_sandbox.url, signed.header).status_code == 200
    assert "already been used" in detail(pay(tempo_sandbox.url, signed.header))
    assert len(tempo_sandbox.settlements) == 1 and len(tempo_sandbox.jobs) == 1


def test_two_simultaneous_submissions_one_success(tempo_sandbox):
    signed = sign_charge(Wallet.generate(), fresh_charge(tempo_sandbox.url), gas_price=GAS)

    async def both():
        async with httpx.AsyncClient(base_url=tempo_sandbox.url) as c:
            return await asyncio.gather(*(c.post(ROUTE, json=BODY, headers={"Authorization": signed.header})
                                          for _ in range(8)))

    statuses = sorted(r.status_code for r in asyncio.run(both()))
    assert statuses == [200] + [402] * 7
    assert len(tempo_sandbox.settlements) == 1 and len(tempo_sandbox.jobs) == 1


def test_router_mode_settles_after_the_handler():
    """mpp_settle="after": a replayed credential runs the handler, then fails with a 500."""
    with Sandbox(time_scale=TIME_SCALE, networks=("tempo-testnet",), mpp_settle="after") as sb:
        signed = sign_charge(Wallet.generate(), fresh_charge(sb.url), gas_price=GAS)
        assert pay(sb.url, signed.header).status_code == 200
        r = pay(sb.url, signed.header)
        assert r.status_code == 500 and r.json() == {
            "success": False, "error": "MPP payment failed: Payment verification failed: Transaction hash has "
                                       "already been used."}
        assert len(sb.settlements) == 1 and len(sb.jobs) == 2  # the unpaid job exists, as at the router


def test_lenient_mode_checks_only_what_mppx_checks():
    """mpp_strict=False: signer != source and an extra transfer pass; the job goes to `source`."""
    with Sandbox(time_scale=TIME_SCALE, networks=("tempo-testnet",), mpp_strict=False) as sb:
        charge, wallet = fresh_charge(sb.url), Wallet.generate()
        twice = (Call(charge.currency, tempo.transfer_with_memo(charge.recipient, charge.amount, _memo(charge))),) * 2
        header = _retarget(signed_with(charge, wallet, calls=twice),
                           lambda b: b.update(source=source_did(42431, OTHER)))
        r = pay(sb.url, header)
        assert r.status_code == 200, r.text
        assert sb.jobs[r.json()["jobId"]].payer.lower() == OTHER


# --- the $0 proof as a sign-in -------------------------------------------------------------------------

def test_proof_signs_in_once(tempo_sandbox):
    wallet = Wallet.generate()
    job_id = pay(tempo_sandbox.url, sign_charge(wallet, fresh_charge(tempo_sandbox.url), gas_price=GAS).header
                 ).json()["jobId"]
    url = f"{tempo_sandbox.url}/api/jobs/{job_id}"
    r = httpx.get(url)
    assert r.status_code == 402 and r.headers["payment-required"]  # the SIWX challenge, and beside it:
    zero = parse_charge(challenge_of(r))
    assert zero.amount == 0 and "feePayer" not in zero.challenge.decoded["methodDetails"]
    proof = sign_charge(wallet, zero, gas_price=GAS)
    ok = httpx.get(url, headers={"Authorization": proof.header})
    assert ok.status_code == 200 and ok.json()["id"] == job_id
    again = httpx.get(url, headers={"Authorization": proof.header})
    assert again.status_code == 402 and "already been used" in again.json()["error"]
    stranger = sign_charge(Wallet.generate(), parse_charge(challenge_of(again)), gas_price=GAS)
    assert httpx.get(url, headers={"Authorization": stranger.header}).status_code == 404  # not their job
    forged = _retarget(sign_charge(Wallet.generate(), parse_charge(challenge_of(again)), gas_price=GAS).header,
                       lambda b: b.update(source=source_did(42431, wallet.address)))
    assert httpx.get(url, headers={"Authorization": forged}).status_code == 402


# --- the RPC stub ----------------------------------------------------------------------------------------

def test_gas_price_from_the_rpc_stub_and_hostile_rpcs(tempo_sandbox):
    from stablestudio_widgets.errors import ServiceError
    from stablestudio_widgets.tempo_charge import gas_price

    async def ask(url):
        async with httpx.AsyncClient() as http:
            return await gas_price(http, url)

    assert asyncio.run(ask(tempo_sandbox.tempo_rpc_url)) == GAS
    with pytest.raises(ServiceError, match="did not answer eth_gasPrice"):
        asyncio.run(ask(tempo_sandbox.url + "/_sandbox/state"))
    with pytest.raises(ServiceError, match="Cannot read"):
        asyncio.run(ask("http://127.0.0.1:9/"))
    assert TempoTransaction  # the envelope type the stub's price feeds


def test_cli_sandbox_on_tempo_testnet():
    with sandbox_process("--network", "tempo-testnet", "--tempo-fee-payer") as (_, text, url):
        assert "# Tempo testnet (MPP) (eip155:42431), fees sponsored" in text and "Base Sepolia" not in text
        assert "/_sandbox/tempo-rpc" in text
        charge = fresh_charge(url)
        assert charge.chain_id == 42431 and charge.fee_payer
        assert pay(url, sign_charge(Wallet.generate(), charge, gas_price=GAS).header).status_code == 200


def test_cli_sandbox_router_switches_for_mpp():
    """--mpp-lenient lets another `source` through; --mpp-signin-only drops the SIWX challenge on job routes."""
    with sandbox_process("--network", "tempo-testnet", "--mpp-lenient", "--mpp-signin-only", "--mpp-settle",
                         "after") as (_, text, url):
        assert ("settles after the handler, checks only what mppx checks, job routes take only the $0 proof"
                in text)
        charge = fresh_charge(url)
        header = _retarget(signed_with(charge, Wallet.generate()), lambda b: b.update(source=source_did(42431, OTHER)))
        r = pay(url, header)
        assert r.status_code == 200, r.text
        poll = httpx.get(f"{url}/api/jobs/{r.json()['jobId']}")
        (proof,), _ = parse_challenges(poll.headers.get_list("www-authenticate"))
        assert proof.decoded["amount"] == "0" and "sign-in-with-x" not in poll.text
        assert "payment-required" not in poll.headers


def test_readme_pays_by_hand_on_the_sandbox():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("Paying by hand, on the sandbox:\n\n```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('    paid.json()["jobId"]', '    result = paid.json()["jobId"]')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    job_id, tx_hash = scope["result"]
    assert job_id.startswith("cm") and tx_hash.startswith("0x")
