"""x402 / SIWX codecs, checked against the reference ``x402`` SDK (a test-only dependency)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from x402.extensions.sign_in_with_x.evm import format_siwe_message
from x402.extensions.sign_in_with_x.types import SIWxPayload
from x402.extensions.sign_in_with_x.verify import verify_siwx_signature
from x402.http.utils import (
    decode_payment_signature_header,
    encode_payment_required_header,
    encode_payment_response_header,
)
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.exact.client import ExactEvmScheme
from x402.mechanisms.evm.types import ExactEIP3009Payload
from x402.mechanisms.evm.verify import verify_eoa_signature
from x402.schemas import PaymentRequired as RefPaymentRequired
from x402.schemas import PaymentRequirements, ResourceInfo, SettleResponse

from stablestudio_widgets import siwx, x402
from stablestudio_widgets.errors import AuthError, PaymentRequiredError
from stablestudio_widgets.wallet import Wallet

BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO = "0xfbd7b7Ed48146aD9bEfF956212c77cE056815ad0"
SERVICE_402 = {  # the service's own example: no extra, no maxTimeoutSeconds
    "x402Version": 2,
    "accepts": [{"scheme": "exact", "network": "eip155:8453", "amount": "39000", "asset": BASE_USDC,
                 "payTo": PAY_TO}],
    "resource": {"url": "https://stablestudio.dev/api/generate/nano-banana/generate",
                 "description": "Nano Banana - generate"},
}


def b64(obj, urlsafe=False, pad=True):
    raw = json.dumps(obj).encode()
    s = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return s if pad else s.rstrip("=")


@pytest.fixture(scope="module")
def wallet():
    return Wallet.generate()


@pytest.mark.parametrize("urlsafe,pad", [(False, True), (False, False), (True, True), (True, False)])
def test_decodes_service_example_in_any_base64(urlsafe, pad):
    pr = x402.decode_payment_required(b64(SERVICE_402, urlsafe, pad))
    (req,) = pr.accepts
    assert (req.amount, req.amount_usd, req.network, req.max_timeout_seconds, req.extra) == (
        39000, 0.039, "eip155:8453", 300, {})
    assert pr.resource["description"] == "Nano Banana - generate"


def test_signature_accepted_by_reference_sdk(wallet):
    """Our PAYMENT-SIGNATURE decodes with the SDK and its EIP-3009 hash + EOA check verify it."""
    full = json.loads(json.dumps(SERVICE_402))
    full["accepts"][0].update(maxTimeoutSeconds=300, extra={"name": "USD Coin", "version": "2"})
    pr = x402.decode_payment_required(b64(full))
    signed = x402.sign_payment(wallet, pr.accepts[0], pr.resource, now=1_767_225_300)
    ref = decode_payment_signature_header(signed.header)
    assert ref.x402_version == 2 and ref.accepted.amount == "39000" and ref.accepted.pay_to == PAY_TO
    assert ref.resource.url == SERVICE_402["resource"]["url"]
    evm = ExactEIP3009Payload.from_dict(ref.payload)
    a = evm.authorization
    assert (a.from_address, a.to, a.value, a.valid_after, a.valid_before) == (
        wallet.address, PAY_TO, "39000", str(1_767_225_300 - 60), str(1_767_225_300 + 300))
    assert len(bytes.fromhex(a.nonce[2:])) == 32
    digest = hash_eip3009_authorization(a, 8453, BASE_USDC, "USD Coin", "2")
    assert verify_eoa_signature(digest, bytes.fromhex(evm.signature[2:]), wallet.address)
    assert not verify_eoa_signature(digest, bytes.fromhex(evm.signature[2:]), PAY_TO)


def test_service_402_without_extra_signs_with_known_domain(wallet):
    """The service omits extra/maxTimeoutSeconds: we echo `accepted` verbatim and use Base USDC's domain."""
    pr = x402.decode_payment_required(b64(SERVICE_402))
    signed = x402.sign_payment(wallet, pr.accepts[0], pr.resource, now=1_000)
    assert signed.payload["accepted"] == SERVICE_402["accepts"][0]
    a = signed.payload["payload"]["authorization"]
    assert a["validBefore"] == "1300"
    auth = ExactEIP3009Payload.from_dict(signed.payload["payload"]).authorization
    digest = hash_eip3009_authorization(auth, 8453, BASE_USDC, "USD Coin", "2")
    assert verify_eoa_signature(digest, bytes.fromhex(signed.payload["payload"]["signature"][2:]), wallet.address)


def test_reference_sdk_signature_matches_our_typed_data(wallet):
    """The SDK's own client signs the same digest we build (same EIP-712 domain and types)."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    acct = Account.create()
    req = PaymentRequirements(scheme="exact", network="eip155:84532",
                              asset="0x036CbD53842c5426634e7929541eC2318f3dCF7e", amount="10000", pay_to=PAY_TO,
                              max_timeout_seconds=300, extra={"name": "USDC", "version": "2"})
    inner = ExactEvmScheme(acct).create_payment_payload(req)
    ours = x402.typed_data(x402.eip712_domain(x402.parse_requirement(req.model_dump(by_alias=True), 0)),
                           inner["authorization"])
    recovered = Account.recover_message(encode_typed_data(full_message=ours), signature=inner["signature"])
    assert recovered == acct.address


def test_decodes_what_reference_server_emits():
    ref = RefPaymentRequired(
        accepts=[PaymentRequirements(scheme="exact", network="eip155:84532", asset=BASE_USDC, amount="130000",
                                     pay_to=PAY_TO, max_timeout_seconds=60, extra={"name": "USDC", "version": "2"})],
        resource=ResourceInfo(url="http://127.0.0.1/x", description="d"), error="payment required")
    pr = x402.decode_payment_required(encode_payment_required_header(ref))
    assert (pr.accepts[0].amount, pr.accepts[0].max_timeout_seconds, pr.error) == (130000, 60, "payment required")
    tx = "0x" + "ab" * 32
    settle = SettleResponse(success=True, transaction=tx, network="eip155:84532", payer=PAY_TO, amount="130000")
    receipt = x402.decode_settle_response(encode_payment_response_header(settle))
    assert (receipt.success, receipt.transaction, receipt.amount, receipt.network_name) == (
        True, tx, 130000, "Base Sepolia")
    assert receipt.explorer_url == "https://sepolia.basescan.org/tx/" + tx
    odd = settle.model_copy(update={"transaction": "0x1\"><"})
    odd = x402.decode_settle_response(encode_payment_response_header(odd))
    assert odd.explorer_url is None  # only a transaction hash becomes a link


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d["accepts"][0].update(amount="-5"), "amount"),
    (lambda d: d["accepts"][0].update(amount="1e9"), "amount"),
    (lambda d: d["accepts"][0].update(amount="²"), "amount"),
    (lambda d: d["accepts"][0].update(amount="39000\n"), "amount"),
    (lambda d: d["accepts"][0].update(amount=39000), "amount"),
    (lambda d: d["accepts"][0].update(amount=str(2**256)), "uint256"),
    (lambda d: d["accepts"][0].update(network="base"), "CAIP-2"),
    (lambda d: d["accepts"][0].update(maxTimeoutSeconds=-1), "maxTimeoutSeconds"),
    (lambda d: d["accepts"][0].update(maxTimeoutSeconds="300"), "maxTimeoutSeconds"),
    (lambda d: d["accepts"][0].update(extra=[1]), "extra"),
    (lambda d: d.update(x402Version=1), "version 2"),
    (lambda d: d.update(accepts={"a": 1}), "list"),
])
def test_malformed_402_is_a_clear_error(mutate, needle):
    d = json.loads(json.dumps(SERVICE_402))
    mutate(d)
    with pytest.raises(PaymentRequiredError, match=needle):
        x402.decode_payment_required(b64(d))


def test_not_base64_and_missing_header():
    with pytest.raises(PaymentRequiredError, match="not base64 JSON"):
        x402.decode_payment_required("%%%not-base64%%%")
    with pytest.raises(PaymentRequiredError, match="without a PAYMENT-REQUIRED"):
        x402.decode_payment_required(None, {})


@pytest.mark.parametrize("req,needle", [
    ({"scheme": "exact", "network": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "amount": "1", "asset": "EPj",
      "payTo": "x"}, "not an EVM network"),
    ({"scheme": "exact", "network": "eip155:8453", "amount": "1", "asset": BASE_USDC, "payTo": PAY_TO,
      "extra": {"assetTransferMethod": "permit2", "name": "USD Coin", "version": "2"}}, "Permit2"),
    ({"scheme": "upto", "network": "eip155:8453", "amount": "1", "asset": BASE_USDC, "payTo": PAY_TO}, "upto"),
    ({"scheme": "exact", "network": "eip155:1", "amount": "1", "asset": BASE_USDC, "payTo": PAY_TO}, "Unknown asset"),
])
def test_refuses_what_it_cannot_pay(wallet, req, needle):
    with pytest.raises(PaymentRequiredError, match=needle):
        x402.sign_payment(wallet, x402.parse_requirement(req, 0), {})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                              max_leaves=20).map(b64)))
def test_decoder_fuzz_only_raises_typed_errors(value):
    try:
        x402.decode_payment_required(value)
    except PaymentRequiredError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({
    "scheme": st.sampled_from(["exact", "upto", 5, None]),
    "network": st.sampled_from(["eip155:8453", "eip155:84532", "solana:abc", "", 1]),
    "amount": st.one_of(st.integers(-10**80, 10**80).map(str), st.integers(), st.text(max_size=5)),
    "asset": st.sampled_from([BASE_USDC, "0x123", None]),
    "payTo": st.sampled_from([PAY_TO, "nobody", None]),
    "maxTimeoutSeconds": st.one_of(st.integers(-5, 10**6), st.booleans(), st.text(max_size=3)),
}))
def test_requirement_fuzz_sign_or_typed_error(wallet, entry):
    """Any decoded requirement either signs for exactly its amount or fails with a typed error."""
    try:
        pr = x402.decode_payment_required(b64({"x402Version": 2, "accepts": [entry]}))
        signed = x402.sign_payment(wallet, pr.accepts[0], {})
    except PaymentRequiredError:
        return
    assert signed.payload["payload"]["authorization"]["value"] == entry["amount"]
    assert 0 <= int(entry["amount"]) < 2**256


# --- SIWX ---------------------------------------------------------------------------------------

def info(**kw):
    base = {"domain": "stablestudio.dev", "uri": "https://stablestudio.dev/api/jobs/cmn1", "version": "1",
            "chainId": "eip155:8453", "nonce": "abcDEF123456", "issuedAt": "2026-11-24T10:00:00.000Z",
            "expirationTime": "2026-11-24T10:05:00.000Z"}
    return {**base, **kw}


@pytest.mark.parametrize("extra", [{}, {"statement": "Sign in to StableStudio"},
                                   {"resources": ["https://stablestudio.dev/api/jobs/cmn1"], "notBefore":
                                    "2026-11-24T10:00:00.000Z", "requestId": "r1"}])
def test_siwe_text_matches_reference_byte_for_byte(wallet, extra):
    i = info(**extra)
    assert siwx.message_text(i, wallet.address.lower()) == format_siwe_message(i, wallet.address)


def test_siwx_header_verified_by_reference_sdk(wallet):
    header, _ = siwx.sign(wallet, siwx.own_info("https://stablestudio.dev/api/jobs/cmn1?x=1", "eip155:8453"))
    payload = SIWxPayload.model_validate(json.loads(base64.b64decode(header)))
    assert payload.uri == "https://stablestudio.dev/api/jobs/cmn1" and payload.domain == "stablestudio.dev"
    result = asyncio.run(verify_siwx_signature(payload))
    assert result.is_valid and result.payer == wallet.address
    tampered = payload.model_copy(update={"uri": "https://stablestudio.dev/api/jobs/other"})
    assert not asyncio.run(verify_siwx_signature(tampered)).is_valid


def test_domain_includes_non_default_port():
    assert siwx.host_of("http://127.0.0.1:8123/api/jobs") == "127.0.0.1:8123"
    assert siwx.host_of("https://stablestudio.dev:443/api") == "stablestudio.dev"


def test_challenge_for_another_domain_is_refused(wallet):
    ext = {"sign-in-with-x": {"info": info(domain="evil.example"), "supportedChains": [
        {"chainId": "eip155:8453", "type": "eip191"}]}}
    with pytest.raises(AuthError, match="evil.example"):
        siwx.challenge_info(ext, url="https://stablestudio.dev/api/jobs/cmn1", chains=["eip155:8453"])


def test_challenge_signed_exactly(wallet):
    """What the router sends (its statement, the full request URL as uri, the host name as domain)
    is signed as sent; the uri is the request's."""
    fresh = {"issuedAt": siwx.iso_now(), "expirationTime": siwx.iso_now(300)}
    ext = {"sign-in-with-x": {"info": info(statement=siwx.ROUTER_STATEMENT, **fresh,
                                           uri="https://stablestudio.dev/api/jobs?limit=20"),
                              "supportedChains": [{"chainId": "eip155:84532", "type": "eip191"},
                                                  {"chainId": "eip155:8453", "type": "eip191"}]}}
    i = siwx.challenge_info(ext, url="https://stablestudio.dev/api/jobs?limit=20", chains=["eip155:8453"])
    header, payload = siwx.sign(wallet, i)
    assert payload["nonce"] == "abcDEF123456" and payload["chainId"] == "eip155:8453"
    assert payload["statement"] == siwx.ROUTER_STATEMENT and payload["issuedAt"] == fresh["issuedAt"]
    assert payload["uri"] == "https://stablestudio.dev/api/jobs"
    ref = SIWxPayload.model_validate(json.loads(base64.b64decode(header)))
    assert asyncio.run(verify_siwx_signature(ref)).is_valid


def test_wallet_never_shows_its_key():
    import copy
    import pickle

    from eth_account import Account
    acct = Account.create()
    key = acct.key.hex().removeprefix("0x")
    w = Wallet.from_key("0x" + key)
    assert w.address == acct.address and key not in repr(w) and key not in str(w)
    for attempt in (lambda: pickle.dumps(w), lambda: copy.copy(w), lambda: copy.deepcopy(w)):
        with pytest.raises(TypeError) as e:
            attempt()
        assert key not in str(e.value)
    assert not hasattr(w, "__dict__")
    from stablestudio_widgets.errors import WalletError
    with pytest.raises(WalletError) as e:
        Wallet.from_key("0x" + key[:-2] + "zz")
    assert key[:-2] not in str(e.value) and e.value.__cause__ is None


def test_wallet_sources_env_and_keystore(tmp_path, monkeypatch):
    from stablestudio_widgets.errors import WalletError

    w = Wallet.generate()
    store = tmp_path / "k.json"
    store.write_text(json.dumps(w.export_keystore("correct horse")))
    assert "correct horse" not in store.read_text()
    monkeypatch.setenv("STABLESTUDIO_KEYSTORE", str(store))
    monkeypatch.setenv("STABLESTUDIO_KEYSTORE_PASSWORD", "correct horse")
    assert Wallet.from_env().address == w.address and not Wallet.from_env().sandbox
    monkeypatch.setenv("STABLESTUDIO_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(WalletError, match="wrong password"):
        Wallet.from_env()
    from eth_account import Account
    acct = Account.create()
    monkeypatch.setenv("STABLESTUDIO_PRIVATE_KEY", acct.key.hex())  # the key wins over the keystore
    assert Wallet.from_env().address == acct.address
    monkeypatch.delenv("STABLESTUDIO_PRIVATE_KEY")
    monkeypatch.delenv("STABLESTUDIO_KEYSTORE")
    with pytest.raises(WalletError, match="No wallet configured"):
        Wallet.from_env()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=100),
                 st.dictionaries(st.sampled_from(["success", "transaction", "network", "payer", "amount",
                                                  "errorReason", "x"]),
                                 st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                                 max_size=7).map(b64)))
def test_settle_response_fuzz_decodes_or_raises_typed(value):
    """A receipt header is decoded into typed fields or refused with a typed error, never a crash."""
    try:
        r = x402.decode_settle_response(value)
    except PaymentRequiredError:
        return
    assert isinstance(r.success, bool) and (r.amount is None or r.amount >= 0)
    assert r.transaction is None or isinstance(r.transaction, str)


@pytest.mark.parametrize("network", ["eip155:84_532", "eip155: 84532", "eip155:084532", "eip155:8453\n", "eip155:"])
def test_a_chain_id_is_read_only_as_caip2_writes_it(network):
    """int() would read most of these as a chain id; the signature would then bind to a chain the terms
    never plainly named."""
    with pytest.raises(PaymentRequiredError, match="Nothing was signed"):  # when read, or before signing
        x402.eip712_domain(x402.parse_requirement(
            {"scheme": "exact", "network": network, "amount": "1000",
             "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
             "payTo": "0x1111111111111111111111111111111111111111", "maxTimeoutSeconds": 60,
             "extra": {"name": "USDC", "version": "2"}}, 0))
