"""Tempo transactions and the MPP charge, against public known answers and independent oracles.

- ox's ``TxEnvelopeTempo`` test vectors (ox 0.14.33, the version mppx pins) and mppx-generated
  vectors for a realistic pull charge (/work/notes/tempo.md §2.8, ``tests/data/tempo_vectors.json``);
- mppx's ``Proof.conformance`` vector for the $0 proof;
- byte-for-byte equality with ``pytempo`` over generated transactions;
- ``pympp``'s own server-side validation accepting our credentials offline (Python ≥ 3.11).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from stablestudio_widgets import Wallet, tempo
from stablestudio_widgets.errors import PaymentRequiredError
from stablestudio_widgets.mpp import Challenge, b64url_encode, parse_challenges
from stablestudio_widgets.tempo import Call, TempoTransaction
from stablestudio_widgets.tempo_charge import build_transaction, parse_charge, sign_charge, sign_proof

V = json.loads((Path(__file__).parent / "data" / "tempo_vectors.json").read_text())
PK = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # ox's test key
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TO = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
RECIPIENT = "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00"


def hx(b: bytes) -> str:
    return "0x" + b.hex()


# --- ox TxEnvelopeTempo.test.ts ---------------------------------------------------------------------

OX_TX = TempoTransaction(chain_id=1, calls=(Call(TO),))


def test_ox_serialize_default():
    tx = TempoTransaction(chain_id=1, calls=(Call(TO),), nonce=785, max_fee_per_gas=2 * 10**9,
                          max_priority_fee_per_gas=2 * 10**9)
    assert hx(tx.signing_preimage()) == ("0x76ef018477359400847735940080d8d79470997970c51812dc3a010c7d01b50e0d17dc79c8"
                                         "8080c08082031180808080c0")


def test_ox_serialize_minimal_and_multiple_calls():
    assert hx(TempoTransaction(chain_id=1, calls=(Call(None),)).signing_preimage()) == \
        "0x76d101808080c4c3808080c0808080808080c0"
    tx = TempoTransaction(chain_id=1, calls=(Call(TO), Call("0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
                                                            bytes.fromhex("1234"), 2000)))
    assert hx(tx.signing_preimage()) == (
        "0x76f84101808080f4d79470997970c51812dc3a010c7d01b50e0d17dc79c88080db943c44cdddb6a900fa2b585dd299e03d12fa"
        "4293bc8207d0821234c0808080808080c0")


def test_ox_sign_payload_signature_and_hash():
    assert hx(OX_TX.signing_preimage()) == \
        "0x76e501808080d8d79470997970c51812dc3a010c7d01b50e0d17dc79c88080c0808080808080c0"
    assert hx(OX_TX.signing_hash()) == "0xe1222a45806457acbe3a13940aae4c34f3180659fa16613b5a45dc183adae07c"
    signed = tempo.sign(OX_TX, Wallet.from_key(PK))
    assert signed.raw_hex == (
        "0x76f86801808080d8d79470997970c51812dc3a010c7d01b50e0d17dc79c88080c0808080808080c0b8416b37e17bf41d92dfee5f"
        "fdce55431bf01dd7875b2229d6258350c5ee6fe6a54225b867dc1b19c9ec97833ebdccd830d2846c5b724b72dcd754d694d08b5e"
        "80ee1c")
    assert signed.tx_hash == "0x04ad27d1607bc3fc37445724d8864b0843f88008bafd818814474e5ee94647eb"


def test_ox_fee_payer_placeholder_and_handoff():
    sponsored = TempoTransaction(chain_id=1, calls=(Call(TO),), sponsored=True)
    assert hx(sponsored.signing_preimage()) == \
        "0x76e501808080d8d79470997970c51812dc3a010c7d01b50e0d17dc79c88080c0808080808000c0"
    handoff = sponsored.fee_payer_handoff("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266")
    assert hx(handoff) == ("0x78f83901808080d8d79470997970c51812dc3a010c7d01b50e0d17dc79c88080c0808080808094f39fd6e51a"
                           "ad88f6f4ce6ab8827279cfffb92266c0")
    assert hx(keccak(handoff)) == "0xde7a88984d766d0f5aac705487b43e68261516d6e7c524698804d4970d39d77d"


# --- a realistic pull charge (mppx / viem / pytempo agree on these bytes) ---------------------------

def _vector_tx(sponsored: bool) -> TempoTransaction:
    return TempoTransaction(
        chain_id=4217, calls=(Call(tempo.USDC_E, bytes.fromhex(V["calldata"][2:])),),
        max_priority_fee_per_gas=10**9, max_fee_per_gas=2 * 10**10, gas=1_000_000,
        nonce_key=tempo.EXPIRING_NONCE_KEY, valid_before=1893456325, valid_after=1700000000,
        fee_token=None if sponsored else tempo.USDC_E, sponsored=sponsored)


def test_memo_and_calldata_vectors():
    cid = V["challenge"]["id"]
    assert hx(tempo.attribution_memo("stablestudio.dev", cid)) == V["memo"]
    assert hx(tempo.attribution_memo("stablestudio.dev", cid, "stablestudio-widgets")) == V["memo_with_client"]
    assert hx(tempo.MEMO_TAG) == V["tag"] and hx(tempo.SELECTOR_TRANSFER_WITH_MEMO) == V["selector_transferWithMemo"]
    data = tempo.transfer_with_memo(RECIPIENT, 39000, bytes.fromhex(V["memo"][2:]))
    assert hx(data) == V["calldata"]


def test_self_paid_vector():
    tx = _vector_tx(sponsored=False)
    assert hx(tx.signing_preimage()) == V["selfpaid_presign"]
    assert hx(tx.signing_hash()) == V["selfpaid_signpayload"]
    signed = tempo.sign(tx, Wallet.from_key(PK))
    assert signed.raw_hex == V["selfpaid_signed"] == V["selfpaid_viem"]
    assert signed.tx_hash == V["selfpaid_hash"]
    assert tempo.max_fee_base_units(tx) == 20_000  # 1M gas at 2e10 attodollars: $0.02 at most


def test_sponsored_vector():
    tx = _vector_tx(sponsored=True)
    assert hx(tx.signing_preimage()) == V["sponsored_presign"]
    assert hx(tx.signing_hash()) == V["sponsored_signpayload"]
    signed = tempo.sign(tx, Wallet.from_key(PK))
    assert signed.raw_hex == V["sponsored_handoff_viem"] == V["sponsored_handoff_ox"]
    assert signed.tx_hash is None  # the final hash covers the fee payer's signature: unknowable here
    assert signed.signing_hash == V["sponsored_signpayload"]
    assert tx.encode(signed.signature).hex() == V["sponsored_0x76_with_placeholder"][2:]


def test_proof_conformance_vector():
    """mppx ``src/tempo/Proof.conformance.test.ts``."""
    wallet = Wallet.from_key("0x" + "01" * 32)
    assert wallet.address == "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1"
    data = tempo.proof_typed_data(42431, wallet.address, "kM9xPqWvT2nJrHsY4aDfEb", "api.example.com")
    assert wallet.sign_typed_data(data) == V["proof_sig"]


def test_wallet_sign_hash_is_raw_secp256k1():
    wallet, digest = Wallet.from_key(PK), keccak(b"x")
    sig = wallet.sign_hash(digest)
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert Account._recover_hash(digest, vrs=(sig[64], int.from_bytes(sig[:32], "big"),
                                              int.from_bytes(sig[32:64], "big"))) == SENDER
    ref = Account.from_key(PK).unsafe_sign_hash(digest)  # the same bytes as eth-account's (RFC 6979, low s)
    assert sig == ref.r.to_bytes(32, "big") + ref.s.to_bytes(32, "big") + bytes([ref.v])
    with pytest.raises(Exception, match="32-byte"):
        wallet.sign_hash(b"short")


# --- pytempo: byte-for-byte over generated transactions ----------------------------------------------

pytempo = pytest.importorskip("pytempo")

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
uints = st.integers(min_value=0, max_value=2**64)


@settings(max_examples=40, deadline=None)
@given(chain=st.integers(1, 2**32), to=addresses, data=st.binary(max_size=120), value=uints,
       prio=uints, fee=uints, gas=st.integers(1, 2**40), nonce_key=st.sampled_from([0, 5, 2**256 - 1]),
       nonce=uints, vb=st.integers(2, 2**40), fee_token=st.one_of(st.none(), addresses),
       n_calls=st.integers(1, 3))
def test_byte_equal_with_pytempo(chain, to, data, value, prio, fee, gas, nonce_key, nonce, vb, fee_token, n_calls):
    calls = tuple(Call(to, data, value + i) for i in range(n_calls))
    prio = min(prio, fee)  # pytempo (like the chain) refuses a priority fee above the max fee
    ours = TempoTransaction(chain_id=chain, calls=calls, max_priority_fee_per_gas=prio, max_fee_per_gas=fee,
                            gas=gas, nonce_key=nonce_key, nonce=nonce, valid_before=vb, valid_after=vb - 1,
                            fee_token=fee_token)
    theirs = pytempo.TempoTransaction.create(
        chain_id=chain, gas_limit=gas, max_fee_per_gas=fee, max_priority_fee_per_gas=prio, nonce=nonce,
        nonce_key=nonce_key, valid_before=vb, valid_after=vb - 1, fee_token=fee_token,
        calls=tuple(pytempo.Call.create(to=c.to, value=c.value, data=c.data) for c in calls))
    assert ours.signing_preimage() == theirs.encode_for_signing()
    signed = tempo.sign(ours, Wallet.from_key(PK))
    theirs_signed = theirs.sign(PK)
    assert signed.raw == theirs_signed.encode()
    assert signed.tx_hash == hx(theirs_signed.hash())


def test_sponsored_signing_hash_equals_pytempo():
    tx = _vector_tx(sponsored=True)
    theirs = pytempo.TempoTransaction.create(
        chain_id=4217, gas_limit=1_000_000, max_fee_per_gas=2 * 10**10, max_priority_fee_per_gas=10**9, nonce=0,
        nonce_key=tempo.EXPIRING_NONCE_KEY, valid_before=1893456325, valid_after=1700000000,
        awaiting_fee_payer=True, calls=(pytempo.Call.create(to=tempo.USDC_E, data=bytes.fromhex(V["calldata"][2:])),))
    assert tx.signing_preimage() == theirs.encode_for_signing()


# --- charges: terms, validity, and pympp's server-side validation ------------------------------------

def _challenge(request: dict, *, expires_in: float = 300, cid: str = "cid-1", realm: str = "stablestudio.dev"):
    from stablestudio_widgets.sandbox.wire import iso

    raw = b64url_encode(json.dumps(request, separators=(",", ":"), sort_keys=True).encode())
    return Challenge(cid, realm, "tempo", "charge", raw, request, expires=iso(time.time() + expires_in))


GOOD = {"amount": "39000", "currency": tempo.USDC_E, "recipient": RECIPIENT, "methodDetails": {"chainId": 4217}}


@pytest.mark.parametrize("change, message", [
    ({"amount": "-1"}, "amount"), ({"amount": 39000}, "amount"), ({"amount": "1e6"}, "amount"),
    ({"currency": "0x123"}, "currency"), ({"recipient": None}, "recipient"),
    ({"methodDetails": None}, "chain id must be stated"), ({"methodDetails": {}}, "chainId"),
    ({"methodDetails": {"chainId": "4217"}}, "chainId"), ({"methodDetails": {"chainId": True}}, "chainId"),
    ({"methodDetails": {"chainId": 4217, "feePayer": "yes"}}, "feePayer"),
    ({"methodDetails": {"chainId": 4217, "memo": "0x12"}}, "memo"),
    ({"methodDetails": {"chainId": 4217, "splits": [{"amount": "1", "recipient": RECIPIENT}]}}, "split"),
    ({"methodDetails": {"chainId": 4217, "supportedModes": ["push"]}}, "pull"),
])
def test_hostile_charge_terms_are_refused_before_signing(change, message):
    with pytest.raises(PaymentRequiredError, match=message):
        parse_charge(_challenge({**GOOD, **change}))


def test_wrong_method_or_no_expiry_refused():
    ch = _challenge(GOOD)
    with pytest.raises(PaymentRequiredError, match="only tempo/charge"):
        parse_charge(Challenge(ch.id, ch.realm, "stripe", "charge", ch.request, ch.decoded, ch.expires))
    with pytest.raises(PaymentRequiredError, match="no expiry"):
        parse_charge(Challenge(ch.id, ch.realm, "tempo", "charge", ch.request, ch.decoded))


def test_valid_before_is_capped_by_25s_and_by_the_challenge_expiry():
    wallet, now = Wallet.generate(), time.time()
    long = build_transaction(parse_charge(_challenge(GOOD)), wallet.address, gas_price=2 * 10**10, now=now)
    assert long.valid_before == int(now) + 25
    assert long.nonce_key == 2**256 - 1 and long.nonce == 0 and long.fee_token == tempo.USDC_E
    short = parse_charge(_challenge(GOOD, expires_in=12))
    capped = build_transaction(short, wallet.address, gas_price=1, now=now)
    assert capped.valid_before == int(short.challenge.expires_at)
    with pytest.raises(PaymentRequiredError, match="too soon"):
        build_transaction(parse_charge(_challenge(GOOD, expires_in=3)), wallet.address, gas_price=1, now=now)


def test_sponsored_charge_commits_to_no_fee_token_and_caps_priority():
    charge = parse_charge(_challenge({**GOOD, "methodDetails": {"chainId": 4217, "feePayer": True}}))
    tx = build_transaction(charge, SENDER, gas_price=9 * 10**10, now=time.time())
    assert tx.sponsored and tx.fee_token is None and tx.max_priority_fee_per_gas == 10**10
    signed = sign_charge(Wallet.from_key(PK), charge, gas_price=2 * 10**10)
    assert signed.tx.raw[0] == 0x78 and signed.tx_hash is None and signed.max_fee == 0


def test_proof_only_for_zero_amount():
    wallet = Wallet.generate()
    with pytest.raises(PaymentRequiredError, match="zero-amount"):
        sign_proof(wallet, parse_charge(_challenge(GOOD)))
    proof = sign_charge(wallet, parse_charge(_challenge({**GOOD, "amount": "0"})), gas_price=1)
    assert proof.credential["payload"]["type"] == "proof" and proof.tx is None
    assert proof.credential["source"] == f"did:pkh:eip155:4217:{wallet.address}"


@pytest.fixture
def pympp():
    if sys.version_info < (3, 11):
        pytest.skip("pympp needs Python >= 3.11")
    return pytest.importorskip("mpp")


SECRET = "sandbox-secret-sandbox-secret-0123456789"


def _pympp_server():
    from mpp.methods.tempo import server as tempo_server
    from mpp.server import Mpp

    return Mpp(methods=tempo_server.charge(recipient=RECIPIENT, currencies=[tempo.USDC_E], chain_id=4217),
               realm="stablestudio.dev", secret_key=SECRET)


def _pympp_challenge(request: dict):
    """A pympp server's challenge, parsed by our client (beside another scheme, as routers send it)."""
    from mpp import Challenge as PChallenge

    from stablestudio_widgets.sandbox.wire import iso

    issued = PChallenge.create(secret_key=SECRET, realm="stablestudio.dev", method="tempo", intent="charge",
                               request=request, expires=iso(time.time() + 300))
    (ours,), problems = parse_challenges('Bearer realm="x", ' + issued.to_www_authenticate(issued.realm))
    assert not problems
    return parse_charge(ours)


@pytest.mark.parametrize("fee_payer", [False, True])
def test_pympp_server_accepts_our_credentials_offline(pympp, fee_payer):
    details = {"chainId": 4217, **({"feePayer": True} if fee_payer else {})}
    wallet = Wallet.generate()
    signed = sign_charge(wallet, _pympp_challenge({**GOOD, "methodDetails": details}), gas_price=2 * 10**10)
    verified = asyncio.run(_pympp_server().validate_credential(signed.header))
    assert verified.payer == wallet.address.lower()
    assert verified.details["mode"] == "pull"
    assert signed.credential["source"] == f"did:pkh:eip155:4217:{wallet.address}"


@pytest.mark.parametrize("change, error", [
    ({"amount": 38999}, "no matching payment call"),
    ({"recipient": "0x" + "11" * 20}, "no matching payment call"),
    ({"chain_id": 42431}, "chain"),
])
def test_pympp_refuses_a_transaction_for_other_terms(pympp, change, error):
    """The oracle is not a rubber stamp: the same echo with a transaction for other terms fails."""
    import dataclasses

    charge = _pympp_challenge(GOOD)
    signed = sign_charge(Wallet.generate(), dataclasses.replace(charge, **change), gas_price=2 * 10**10)
    with pytest.raises(Exception, match=error):
        asyncio.run(_pympp_server().validate_credential(signed.header))
