"""Paying on Solana, piece by piece: keys, the transaction, the sign-in text, the method seam,
each checked against the reference x402 SDK (``x402[svm]``, a test-only dependency) where it has
an opinion, with its chain calls stubbed offline."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import subprocess
import sys
import time

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction

from stablestudio_widgets import Wallet
from stablestudio_widgets.errors import PaymentRequiredError, WalletError
from stablestudio_widgets.ledger import Ledger
from stablestudio_widgets.methods import SvmExact, preference_rank
from stablestudio_widgets.networks import SOLANA, SOLANA_DEVNET, explorer_url
from stablestudio_widgets.policy import SpendingPolicy
from stablestudio_widgets.svm import COMPUTE_BUDGET_PROGRAM, MEMO_PROGRAM, TOKEN_PROGRAM, sign_transfer
from stablestudio_widgets.x402 import Receipt, parse_requirement

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
DEVNET_USDC = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"
FEE_PAYER, MERCHANT = Keypair(), Keypair()
BLOCKHASH = str(Hash.new_unique())


def requirement(**changes):
    raw = {"scheme": "exact", "network": SOLANA, "amount": "39000", "asset": USDC, "payTo": str(MERCHANT.pubkey()),
           "maxTimeoutSeconds": 60, "extra": {"feePayer": str(FEE_PAYER.pubkey())}}
    raw.update(changes)
    return parse_requirement(raw, 0)


# --- keys ------------------------------------------------------------------------------------------

def test_solana_keys_load_from_every_form_and_never_show(tmp_path, monkeypatch):
    kp = Keypair()
    address = str(kp.pubkey())
    (tmp_path / "id.json").write_text(kp.to_json())
    forms = [str(kp), kp.to_json(), list(bytes(kp)), bytes(kp), tmp_path / "id.json", str(tmp_path / "id.json")]
    assert {Wallet.from_solana_key(f).solana_address for f in forms} == {address}
    monkeypatch.setenv("STABLESTUDIO_SOLANA_KEY", str(kp))
    w = Wallet.from_env()
    assert (w.address, w.evm_address, w.addresses) == (address, None, {"solana": address})
    monkeypatch.setenv("STABLESTUDIO_PRIVATE_KEY", "0x" + "11" * 32)
    both = Wallet.from_env()
    assert both.solana_address == address and both.evm_address.startswith("0x")
    assert str(kp) not in repr(both) and address in repr(both)
    with pytest.raises(TypeError):
        pickle.dumps(both)
    for bad in (str(kp)[:-3], "[1,2,3]", bytes(kp)[:32] + bytes(Keypair().pubkey()), tmp_path / "missing.json"):
        with pytest.raises(WalletError) as e:
            Wallet.from_solana_key(bad)
        assert str(kp)[:20] not in str(e.value) and "not shown" in str(e.value) or "Cannot read" in str(e.value)
    with pytest.raises(WalletError, match="no EVM key"):
        Wallet.from_solana_key(str(kp)).sign_message("hi")
    with pytest.raises(WalletError, match="no Solana key"):
        Wallet.generate().sign_solana(b"hi")


def test_the_evm_path_never_imports_solders():
    code = ("import sys; sys.modules['solders'] = None\n"  # as if the solana extra were not installed
            "from stablestudio_widgets import StableStudio\n"
            "ss = StableStudio.sandbox(time_scale=0.002)\n"
            "job = ss.generate('nano-banana', 'no solders here'); job.wait(); ss.close()\n"
            "print(job.status)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "complete", out.stderr[-2000:]
    code = ("import sys; sys.modules['solders'] = None\n"
            "from stablestudio_widgets import Wallet\nWallet.from_solana_key('x')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'stablestudio-widgets[solana]'" in out.stderr


# --- the transaction ---------------------------------------------------------------------------------

def test_transaction_is_the_reference_layout():
    wallet = Wallet.from_solana_key(str(payer := Keypair()))
    signed = sign_transfer(wallet, requirement(), BLOCKHASH)
    wire = base64.b64decode(signed.transaction)
    assert len(signed.transaction) == 664 and wire[0] == 2 and wire[1:65] == bytes(64) and wire[129] == 0x80
    tx = VersionedTransaction.from_bytes(wire)
    m = tx.message
    keys = list(m.account_keys)
    assert (keys[0], keys[1]) == (FEE_PAYER.pubkey(), payer.pubkey())
    assert m.header.num_required_signatures == 2 and str(m.recent_blockhash) == BLOCKHASH
    assert tx.verify_with_results() == [False, True]  # the fee payer's slot is left for the facilitator
    assert str(tx.signatures[1]) == signed.signature
    ixs = [(str(keys[ix.program_id_index]), [keys[a] for a in ix.accounts], bytes(ix.data)) for ix in m.instructions]
    assert [p for p, _, _ in ixs] == [COMPUTE_BUDGET_PROGRAM, COMPUTE_BUDGET_PROGRAM, TOKEN_PROGRAM, MEMO_PROGRAM]
    assert ixs[0][2] == bytes([2]) + (20_000).to_bytes(4, "little")
    assert ixs[1][2] == bytes([3]) + (1).to_bytes(8, "little")
    mint = Pubkey.from_string(USDC)
    assert ixs[2][1] == [get_associated_token_address(payer.pubkey(), mint), mint,
                         get_associated_token_address(MERCHANT.pubkey(), mint), payer.pubkey()]
    assert ixs[2][2] == bytes([12]) + (39000).to_bytes(8, "little") + bytes([6])
    assert len(ixs[3][2]) == 32 and int(ixs[3][2], 16) >= 0  # a random nonce, hex
    again = sign_transfer(wallet, requirement(), BLOCKHASH)
    assert again.signature != signed.signature  # the memo keeps two equal payments apart
    memo = sign_transfer(wallet, requirement(extra={"feePayer": str(FEE_PAYER.pubkey()), "memo": "pi_3abc"}),
                         BLOCKHASH)
    assert bytes(VersionedTransaction.from_bytes(base64.b64decode(memo.transaction)).message.instructions[3].data) \
        == b"pi_3abc"


@pytest.mark.parametrize("changes, why", [
    ({"extra": {}}, "feePayer is missing"),
    ({"asset": DEVNET_USDC}, "not USDC on Solana"),
    ({"network": SOLANA_DEVNET}, "not USDC on Solana Devnet"),
    ({"scheme": "upto"}, "only 'exact'"),
    ({"extra": {"feePayer": str(FEE_PAYER.pubkey()), "memo": "two\nlines"}}, "extra.memo"),
    ({"extra": {"feePayer": str(FEE_PAYER.pubkey()), "memo": "x" * 257}}, "extra.memo"),
    ({"payTo": "0x" + "1" * 40}, "not a Solana address"),
])
def test_hostile_terms_are_refused_before_signing(changes, why):
    wallet = Wallet.from_solana_key(str(Keypair()))
    with pytest.raises(PaymentRequiredError, match=why) as e:
        sign_transfer(wallet, requirement(**changes), BLOCKHASH)
    assert "Nothing was signed" in str(e.value)


def test_a_fee_payer_that_is_the_wallet_is_refused():
    kp = Keypair()
    req = requirement(extra={"feePayer": str(kp.pubkey())})
    assert "sign twice" in SvmExact().refuse(req, Wallet.from_solana_key(str(kp)))


def _sdk_facilitator():
    from x402 import x402FacilitatorSync
    from x402.mechanisms.svm import FacilitatorKeypairSigner
    from x402.mechanisms.svm.exact.facilitator import ExactSvmScheme

    class Offline(FacilitatorKeypairSigner):
        """The SDK's signer with its chain calls done here: simulation checks every signature."""

        def simulate_transaction(self, tx_base64, network):
            tx = VersionedTransaction.from_bytes(base64.b64decode(tx_base64))
            if not all(tx.verify_with_results()):
                raise RuntimeError("signature verification failed")

        def send_transaction(self, tx_base64, network):
            return str(VersionedTransaction.from_bytes(base64.b64decode(tx_base64)).signatures[0])

        def confirm_transaction(self, signature, network, timeout_seconds=30):
            return None

    return x402FacilitatorSync().register([SOLANA], ExactSvmScheme(Offline(FEE_PAYER)))


def test_the_reference_facilitator_accepts_our_payment_and_refuses_it_tampered():
    from x402.schemas import PaymentPayload, PaymentRequirements

    payer = Keypair()
    wallet = Wallet.from_solana_key(str(payer))
    req = requirement()
    method = SvmExact()
    required = type("R", (), {"resource": {"url": "http://127.0.0.1/x", "description": "", "mimeType": ""}})()
    http = type("NoRpc", (), {"post": None})()  # a fresh blockhash in extra: no RPC call may happen
    fresh = requirement(extra={**req.extra, "recentBlockhash": BLOCKHASH})
    cred = asyncio.run(method.sign(wallet, fresh, required, learned_at=time.time(), http=http))
    assert cred.headers.keys() == {"PAYMENT-SIGNATURE"} and cred.payer == str(payer.pubkey())
    fac = _sdk_facilitator()
    reqs = PaymentRequirements.model_validate(fresh.raw)
    result = fac.verify(PaymentPayload.model_validate(cred.payload), reqs)
    assert result.is_valid, result.invalid_reason
    assert result.payer == str(payer.pubkey())
    settled = fac.settle(PaymentPayload.model_validate(cred.payload), reqs)
    assert settled.success and Signature.from_string(settled.transaction)
    # Tampered: less (re-signed by the payer; this SDK accepts paying more), another payee, a broken signature.
    for tampered_req, why in ((requirement(amount="38999"), "amount"), (requirement(payTo=str(Keypair().pubkey())),
                                                                         "recipient")):
        other = sign_transfer(wallet, tampered_req, BLOCKHASH)
        bad = {**cred.payload, "payload": {"transaction": other.transaction}}
        assert why in fac.verify(PaymentPayload.model_validate(bad), reqs).invalid_reason
    wire = bytearray(base64.b64decode(cred.payload["payload"]["transaction"]))
    wire[100] ^= 1  # inside the payer's signature
    bad = {**cred.payload, "payload": {"transaction": base64.b64encode(bytes(wire)).decode()}}
    assert not fac.verify(PaymentPayload.model_validate(bad), reqs).is_valid


# --- sign-in ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [{}, {"statement": "Sign in"}, {"resources": ["http://127.0.0.1:8402/api/jobs/a"]},
                                   {"statement": "S", "notBefore": "2026-01-01T00:00:00.000Z", "requestId": "r1",
                                    "resources": ["a", "b"]}])
def test_solana_sign_in_text_and_signature_match_the_reference(extra):
    from x402.extensions.sign_in_with_x import create_siwx_message, parse_siwx_header, verify_siwx_signature

    from stablestudio_widgets import siwx

    wallet = Wallet.from_solana_key(str(Keypair()))
    info = {**siwx.own_info("http://127.0.0.1:8402/api/jobs/a", SOLANA_DEVNET), **extra}
    header, payload = siwx.sign(wallet, info)
    assert siwx.solana_text(payload, wallet.solana_address) == create_siwx_message(payload, wallet.solana_address)
    assert payload["type"] == "ed25519" and "\n\nURI:" in siwx.text_for(payload)
    result = asyncio.run(verify_siwx_signature(parse_siwx_header(header)))
    assert result.is_valid and result.payer == wallet.solana_address, result.invalid_reason


def test_a_challenge_is_answered_with_the_family_and_type_it_offers():
    from stablestudio_widgets import siwx

    url = "http://127.0.0.1:8402/api/jobs/a"
    ext = {"sign-in-with-x": {"info": {"domain": "127.0.0.1", "nonce": "abcdef123456", "issuedAt": siwx.iso_now(),
                                       "expirationTime": siwx.iso_now(300), "uri": url,
                                       "chainId": "eip155:84532", "type": "eip191"},  # the router's default: the first
                              "supportedChains": [{"chainId": "eip155:84532", "type": "eip191"},
                                                  {"chainId": SOLANA_DEVNET, "type": "ed25519"}]}}
    assert siwx.challenge_info(ext, url=url, chains=[SOLANA_DEVNET, SOLANA])["chainId"] == SOLANA_DEVNET
    ext["sign-in-with-x"]["supportedChains"][1]["type"] = "eip191"  # a Solana chain with the wrong type
    with pytest.raises(Exception, match="this wallet signs in on"):
        siwx.challenge_info(ext, url=url, chains=[SOLANA_DEVNET, SOLANA])


# --- choice and policy -----------------------------------------------------------------------------

def test_policy_covers_solana_usdc_by_network_and_host():
    p = SpendingPolicy()
    main, dev = requirement(), requirement(network=SOLANA_DEVNET, asset=DEVNET_USDC)
    assert p.refuse_terms(main, "https://stablestudio.dev/api") is None
    assert "not allowed" in p.refuse_terms(main, "https://evil.example/api")
    assert p.refuse_terms(dev, "http://127.0.0.1:9/api") is None
    assert "local sandbox" in p.refuse_terms(dev, "https://stablestudio.dev/api")
    assert "USDC mint" in p.refuse_terms(requirement(asset=str(Keypair().pubkey())), "https://stablestudio.dev/api")
    # base58 is case-sensitive: a mint that differs only in case is another mint
    assert "USDC mint" in p.refuse_terms(requirement(asset=USDC.lower()), "https://stablestudio.dev/api")


def test_preference_ranks_networks_by_id_short_name_or_family():
    assert preference_rank(SOLANA_DEVNET, ["solana"]) == 0 == preference_rank(SOLANA_DEVNET, ["solana-devnet"])
    assert preference_rank("eip155:84532", ["solana"]) == 1
    assert preference_rank("eip155:84532", ["solana", "base"]) == 1
    assert preference_rank(SOLANA, ["solana-devnet"]) == 1


def test_explorer_links_per_network_and_only_for_well_formed_ids():
    sig = str(Signature.new_unique())
    assert explorer_url(SOLANA, sig) == f"https://explorer.solana.com/tx/{sig}"
    assert explorer_url(SOLANA_DEVNET, sig).endswith(f"/tx/{sig}?cluster=devnet")
    assert explorer_url("eip155:8453", "0x" + "ab" * 32) == "https://basescan.org/tx/0x" + "ab" * 32
    assert explorer_url(SOLANA, sig + "/../../evil") is None and explorer_url(SOLANA, "javascript:x") is None
    receipt = Receipt(True, sig, SOLANA, str(MERCHANT.pubkey()), 39000)
    assert receipt.network_name == "Solana" and receipt.to_dict()["explorer_url"] == explorer_url(SOLANA, sig)


def test_an_older_ledger_gains_the_payment_method_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE payments (nonce TEXT PRIMARY KEY, kind TEXT NOT NULL, route TEXT, method TEXT NOT NULL,"
               " url TEXT NOT NULL, body TEXT, amount INTEGER NOT NULL, asset TEXT, network TEXT, pay_to TEXT,"
               " payer TEXT, valid_before INTEGER, payload TEXT NOT NULL, status TEXT NOT NULL, tx TEXT, receipt TEXT,"
               " job_id TEXT, upload_id TEXT, error TEXT, session TEXT, signed_at REAL NOT NULL,"
               " updated_at REAL NOT NULL)")
    db.execute("INSERT INTO payments VALUES ('0xn','generate',NULL,'POST','u',NULL,1,'a','eip155:8453','p','q',1,"
               "'x','sent',NULL,NULL,NULL,NULL,NULL,'s',1,1)")
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert ledger.payment("0xn")["pay_method"] is None  # read as an EVM payment
    ledger.record_payment(nonce="sig", kind="generate", route=None, method="POST", url="u", body={}, amount=1,
                          asset=USDC, network=SOLANA, pay_to="p", payer="q", valid_before=2, payload="x",
                          session="s", pay_method="exact-svm")
    assert json.loads(json.dumps(ledger.payment("sig")))["pay_method"] == "exact-svm"


def test_methods_plug_in_offers_from_elsewhere_in_the_answer(tmp_path):
    """The seam another protocol uses (MPP: a challenge in WWW-Authenticate, not in accepts)."""
    import httpx

    from stablestudio_widgets import AsyncStableStudio
    from stablestudio_widgets.methods import EvmExact, PaymentMethod
    from stablestudio_widgets.x402 import decode_payment_required

    class FromHeader(PaymentMethod):
        name, family = "toy-charge", "evm"

        def offers(self, required, response=None):
            raw = response.headers.get("www-authenticate", "") if response is not None else ""
            return [requirement(scheme="charge", network="eip155:4217", asset="0x" + "20" * 20,
                                payTo="0x" + "1" * 40)] if raw.startswith("Payment ") else []

        def handles(self, req):
            return req.scheme == "charge"

        def refuse(self, req, wallet):
            return None

    base = {"scheme": "exact", "amount": "1", "maxTimeoutSeconds": 60}
    evm = {**base, "network": "eip155:84532", "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
           "payTo": "0x" + "2" * 40}
    sol = {**base, "network": SOLANA_DEVNET, "asset": DEVNET_USDC, "payTo": str(MERCHANT.pubkey()),
           "extra": {"feePayer": str(FEE_PAYER.pubkey())}}
    odd = {**base, "scheme": "upto", "network": "eip155:84532", "asset": evm["asset"], "payTo": evm["payTo"]}
    required = decode_payment_required(None, {"x402Version": 2, "accepts": [odd, evm, sol]})
    answer = httpx.Response(402, headers={"WWW-Authenticate": 'Payment id="x", method="toy"'})
    ss = AsyncStableStudio("http://127.0.0.1:9", Wallet.generate(solana=True), ledger=tmp_path / "l.db",
                           methods=[EvmExact(), SvmExact(), FromHeader()])
    offers = ss.payments.offers(required, answer)
    assert [(r.scheme, r.network, m and m.name) for r, m in offers] == [
        ("upto", "eip155:84532", "exact-evm"), ("exact", "eip155:84532", "exact-evm"),
        ("exact", SOLANA_DEVNET, "exact-svm"), ("charge", "eip155:4217", "toy-charge")]
    req, method = ss.payments.choose(required, "/x", ("upload",), answer)
    assert (req.network, method.name) == ("eip155:84532", "exact-evm")  # the server's first usable offer
    ss.payments.prefer = ["solana"]
    assert ss.payments.choose(required, "/x", ("upload",), answer)[1].name == "exact-svm"
    ss.payments.methods = [SvmExact()]
    with pytest.raises(PaymentRequiredError, match="no payment method for scheme 'exact' on eip155:84532"):
        ss.payments.choose(decode_payment_required(None, {"x402Version": 2, "accepts": [evm]}), "/x", ("upload",))
    ss.ledger.close()
