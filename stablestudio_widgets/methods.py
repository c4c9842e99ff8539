"""Payment methods: one per scheme and network family, each pluggable into :mod:`payments`.

A method says which offers it can pay with a given wallet, signs one into a
:class:`~stablestudio_widgets.x402.Credential` (the request headers, the single-use id the ledger
keys it by, the deadline after which resending is pointless, the payer), reads its receipt off
the answer, rebuilds a credential from a ledger row (to resend after a restart), and recognises
a refusal that means "already settled". :mod:`payments` does everything else the same way for
every method: policy, reservation, ledger, resend, one outcome and its bookkeeping.

Today: x402 ``exact`` on EVM networks (EIP-3009) and on Solana (a partially signed transaction),
and MPP ``tempo``/``charge`` on Tempo (``WWW-Authenticate`` challenges beside x402's header, an
``Authorization: Payment`` credential carrying a Tempo transaction), which overrides
:meth:`PaymentMethod.offers` and :meth:`PaymentMethod.receipt`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

from . import mpp, networks, svm, tempo, tempo_charge
from .errors import PaymentRequiredError
from .x402 import (
    X402_VERSION,
    Credential,
    PaymentRequired,
    Receipt,
    Requirement,
    b64json_encode,
    decode_settle_response,
    parse_requirement,
    refuse_unsupported,
    sign_payment,
)

if TYPE_CHECKING:
    import httpx

    from .wallet import Wallet


class PaymentMethod:
    """How to pay one kind of offer. Subclasses set ``name`` and ``family`` and fill in the rest."""

    name = ""
    family = ""  # the key family that signs: networks.EVM or networks.SVM
    #: Re-send the same credential after a timeout or a 5xx? (MPP: no: behind the router a re-sent
    #: credential runs the handler again before it is refused, so only finding the job is left.)
    resend_when_ambiguous = True

    def offers(self, required: PaymentRequired, response: httpx.Response | None = None) -> list[Requirement]:
        """The offers in a 402 that this method handles (whether or not it can pay them)."""
        return [req for req in required.accepts if self.handles(req)]

    def handles(self, req: Requirement) -> bool:
        raise NotImplementedError

    def refuse(self, req: Requirement, wallet: Wallet) -> str | None:
        """Why ``wallet`` cannot pay ``req`` this way (None: it can)."""
        raise NotImplementedError

    def usable_until(self, req: Requirement, learned_at: float) -> float:
        """Until when terms learned at ``learned_at`` can still be signed (then they are learned again)."""
        return math.inf

    async def sign(self, wallet: Wallet, req: Requirement, required: PaymentRequired, *, learned_at: float,
                   http: httpx.AsyncClient) -> Credential:
        raise NotImplementedError

    def receipt(self, response: httpx.Response) -> Receipt | None:
        raise NotImplementedError

    def restore(self, row: dict[str, Any]) -> Credential:
        """The credential of a ledger row, to resend exactly what was signed."""
        raise NotImplementedError

    def is_replay(self, error: str | None) -> bool:
        """Does this refusal say the credential was already used (so it may have bought something)?"""
        raise NotImplementedError

    def reason(self, response: httpx.Response) -> str | None:
        """Why a refusal refused, when this method's protocol says it outside ``PAYMENT-REQUIRED``."""
        return None

    def max_fee(self, req: Requirement) -> int:
        """The most the payer's network fees can add to ``req`` (x402: none, the facilitator pays)."""
        return 0


class X402Exact(PaymentMethod):
    """What every x402 method shares: ``PAYMENT-SIGNATURE`` out, ``PAYMENT-RESPONSE`` back."""

    header = "PAYMENT-SIGNATURE"
    replay_words: tuple[str, ...] = ()

    def receipt(self, response: httpx.Response) -> Receipt | None:
        value = response.headers.get("payment-response")
        if not value:
            return None
        try:
            return decode_settle_response(value)
        except PaymentRequiredError:
            return None

    def restore(self, row: dict[str, Any]) -> Credential:
        payload = json.loads(base64.b64decode(row["payload"]))
        return Credential(parse_requirement(payload["accepted"], 0), {self.header: row["payload"]}, row["nonce"],
                          float(row["valid_before"]), row["payer"], payload, row["signed_at"], self.name)

    def is_replay(self, error: str | None) -> bool:
        e = (error or "").lower()
        return any(all(w in e for w in words.split()) for words in self.replay_words)


class EvmExact(X402Exact):
    """x402 ``exact`` on ``eip155:*``: an EIP-3009 ``TransferWithAuthorization`` (single-use nonce)."""

    name, family = "exact-evm", networks.EVM
    replay_words = ("nonce used", "nonce replay", "nonce already")

    def handles(self, req: Requirement) -> bool:
        return networks.family(req.network) == networks.EVM

    def refuse(self, req: Requirement, wallet: Wallet) -> str | None:
        if wallet.evm_address is None:
            return "this wallet has no EVM key"
        return refuse_unsupported(req)

    async def sign(self, wallet: Wallet, req: Requirement, required: PaymentRequired, *, learned_at: float,
                   http: httpx.AsyncClient) -> Credential:
        return sign_payment(wallet, req, required.resource)


class SvmExact(X402Exact):
    """x402 ``exact`` on ``solana:*``: a transfer transaction signed by the payer, completed and
    sent by the facilitator (``extra.feePayer``). Its id is the payer's signature; it can land
    only while its blockhash is valid, which is its deadline.

    The blockhash comes from the terms' ``extra.recentBlockhash`` while they are fresh (terms
    reused later are learned again); without one, from ``getLatestBlockhash`` at ``rpc_urls``.
    """

    name, family = "exact-svm", networks.SVM
    replay_words = ("duplicate", "already processed", "alreadyprocessed", "already used", "already_used")

    def __init__(self, *, rpc_urls: dict[str, str] | None = None, validity_s: float = svm.BLOCKHASH_VALIDITY_S):
        self.rpc_urls = {**svm.DEFAULT_RPC, **(rpc_urls or {})}
        self.validity_s = validity_s

    def handles(self, req: Requirement) -> bool:
        return networks.family(req.network) == networks.SVM

    def refuse(self, req: Requirement, wallet: Wallet) -> str | None:
        return svm.refuse(req, wallet.solana_address)

    def usable_until(self, req: Requirement, learned_at: float) -> float:
        return learned_at + self.validity_s / 3 if svm.extra_blockhash(req) else math.inf

    async def sign(self, wallet: Wallet, req: Requirement, required: PaymentRequired, *, learned_at: float,
                   http: httpx.AsyncClient) -> Credential:
        now = time.time()
        blockhash = svm.extra_blockhash(req) if now <= self.usable_until(req, learned_at) else None
        fresh_at = learned_at
        if blockhash is None:
            url = self.rpc_urls.get(req.network)
            if url is None:
                raise PaymentRequiredError(f"No Solana RPC URL for {req.network} to get a blockhash from "
                                           "(solana_rpc_url=…). Nothing was signed.")
            blockhash, fresh_at = await svm.latest_blockhash(http, url), now
        signed = svm.sign_transfer(wallet, req, blockhash)
        payload = {"x402Version": X402_VERSION, "resource": required.resource, "accepted": req.raw,
                   "payload": {"transaction": signed.transaction}}
        return Credential(req, {self.header: b64json_encode(payload)}, signed.signature,
                          fresh_at + self.validity_s, wallet.solana_address or "", payload, time.time(), self.name)


class TempoCharge(PaymentMethod):
    """MPP ``tempo``/``charge`` in pull mode: the server broadcasts the Tempo transaction we sign
    (:mod:`tempo_charge`). Its id is what the sender signed; its deadline the transaction's
    ``valid_before`` (at most 25 s ahead); the one chain call is ``eth_gasPrice`` at ``rpc_urls``."""

    name, family, scheme = "mpp-tempo", networks.EVM, "mpp-tempo-charge"
    resend_when_ambiguous = False
    replay_words = ("already been used", "already used")
    GAS_PRICE_TTL_S = 30.0

    def __init__(self, *, rpc_urls: dict[str, str] | None = None):
        self.rpc_urls = {networks.TEMPO: tempo.RPC_URLS[tempo.MAINNET],
                         networks.TEMPO_TESTNET: tempo.RPC_URLS[tempo.TESTNET], **(rpc_urls or {})}
        self._gas: dict[str, tuple[int, float]] = {}  # network -> (price, when asked)

    def offers(self, required: PaymentRequired, response: httpx.Response | None = None) -> list[Requirement]:
        """Every ``Payment`` challenge in the 402's ``WWW-Authenticate``, as an offer; one that
        cannot be paid carries why in ``extra["refused"]`` (so the error names it)."""
        if response is None:
            return []
        challenges, _ = mpp.parse_challenges(response.headers.get_list("www-authenticate"))
        payees = {r.pay_to.lower() for r in required.accepts if networks.family(r.network) == networks.EVM}
        offers = [_tempo_offer(ch) for ch in challenges]
        # One quote, one merchant: beside x402 terms, a challenge paying someone else is refused.
        return [dataclasses.replace(o, extra={**o.extra, "refused": f"its recipient {o.pay_to} is not the payee "
                                               f"of the x402 terms in the same 402 ({', '.join(sorted(payees))})"})
                if payees and o.pay_to.lower() not in payees and not o.extra.get("refused") else o for o in offers]

    def handles(self, req: Requirement) -> bool:
        return req.scheme == self.scheme

    def refuse(self, req: Requirement, wallet: Wallet) -> str | None:
        if req.extra.get("refused"):
            return req.extra["refused"]
        if wallet.evm_address is None:
            return "this wallet has no EVM key (Tempo is paid with the same key as Base)"
        if req.network not in wallet.networks:
            return f"this wallet may not pay on {networks.name_of(req.network)} (a sandbox wallet: testnets only)"
        if self.usable_until(req, time.time()) <= time.time():
            return "the challenge expires too soon to pay"
        return None

    def usable_until(self, req: Requirement, learned_at: float) -> float:
        """A challenge can be paid until shortly before it expires (then it is learned again)."""
        expires = _challenge(req.raw).expires_at or 0.0
        return expires - 2 * tempo_charge.MIN_VALIDITY_S

    async def sign(self, wallet: Wallet, req: Requirement, required: PaymentRequired, *, learned_at: float,
                   http: httpx.AsyncClient) -> Credential:
        charge = tempo_charge.parse_charge(_challenge(req.raw))
        price = await self._gas_price(http, req.network) if charge.amount else 0
        signed = tempo_charge.sign_charge(wallet, charge, gas_price=price)
        return Credential(req, {"Authorization": signed.header}, signed.key, float(signed.valid_before),
                          signed.payer, signed.credential, signed.signed_at, self.name, transaction=signed.tx_hash)

    async def _gas_price(self, http: httpx.AsyncClient, network: str) -> int:
        price, at = self._gas.get(network, (0, -math.inf))
        if time.time() - at > self.GAS_PRICE_TTL_S:
            url = self.rpc_urls.get(network)
            if url is None:
                raise PaymentRequiredError(f"No Tempo RPC URL for {network} to read the gas price from "
                                           "(tempo_rpc_url=…). Nothing was signed.")
            price = await tempo_charge.gas_price(http, url)
            self._gas[network] = (price, time.time())
        return price

    def max_fee(self, req: Requirement) -> int:
        """Self-paid: the gas limit at the last gas price read (else Tempo's base fee); sponsored: 0."""
        if req.extra.get("feePayer") or not self.handles(req):
            return 0
        price = self._gas.get(req.network, (tempo.BASE_FEE, 0.0))[0]
        return -(-tempo.GAS_LIMIT * price // tempo.ATTO_PER_BASE_UNIT)

    def receipt(self, response: httpx.Response) -> Receipt | None:
        """``Payment-Receipt``: its reference is the transaction hash (a proof's: the challenge id)."""
        got = mpp.decode_receipt(response.headers.get("payment-receipt"))
        if got is None:
            return None
        sent = _sent_credential(response)
        network = sent["challenge_network"] if sent else None
        tx = got.reference if got.reference and re.fullmatch(r"0x[0-9a-fA-F]{64}", got.reference) else None
        return Receipt(got.success, tx, network, sent["payer"] if sent else None, sent["amount"] if sent else None)

    def restore(self, row: dict[str, Any]) -> Credential:
        body = mpp.b64url_json(row["payload"][len(mpp.SCHEME) + 1:], "a ledger credential")
        echo = body["challenge"]
        req = _tempo_offer(_challenge({"challenge": echo, "request": mpp.b64url_json(echo["request"], "request")}))
        return Credential(req, {"Authorization": row["payload"]}, row["nonce"], float(row["valid_before"]),
                          row["payer"], body, row["signed_at"], self.name, transaction=row.get("tx"))

    def is_replay(self, error: str | None) -> bool:
        e = (error or "").lower()
        return any(w in e for w in self.replay_words)

    def reason(self, response: httpx.Response) -> str | None:
        """mppx answers problem+json (``detail``); the router ``{"error": …}`` or nothing."""
        try:
            body = response.json()
        except ValueError:
            return None
        if isinstance(body, dict):
            for key in ("detail", "error"):
                if isinstance(body.get(key), str):
                    return body[key][:300]
        return None


def _challenge(raw: dict[str, Any]) -> mpp.Challenge:
    echo, decoded = raw["challenge"], raw["request"]
    return mpp.Challenge(echo["id"], echo["realm"], echo["method"], echo["intent"], echo["request"], decoded,
                         **{k: echo.get(k) for k in ("expires", "description", "digest", "opaque")})


def _tempo_offer(ch: mpp.Challenge) -> Requirement:
    """An MPP challenge as an offer: what it costs, where, to whom (``raw`` keeps the challenge)."""
    raw = {"challenge": ch.echo(), "request": ch.decoded}
    try:
        c = tempo_charge.parse_charge(ch)
    except PaymentRequiredError as e:
        amount = ch.decoded.get("amount")
        details = ch.decoded.get("methodDetails") if isinstance(ch.decoded.get("methodDetails"), dict) else {}
        return Requirement(f"mpp-{ch.method}-{ch.intent}"[:40], f"eip155:{details.get('chainId', '?')}"[:40],
                           int(amount) if isinstance(amount, str) and amount.isascii() and amount.isdigit() else 0,
                           str(ch.decoded.get("currency"))[:60], str(ch.decoded.get("recipient"))[:60], 1,
                           {"refused": str(e).split(": ", 1)[-1].removesuffix(" Nothing was signed.")}, raw)
    left = int(min(max((c.challenge.expires_at or 0) - time.time(), 1), 86400))
    return Requirement(TempoCharge.scheme, c.network, c.amount, c.currency, c.recipient, left,
                       {"feePayer": c.fee_payer}, raw)


def _sent_credential(response: httpx.Response) -> dict[str, Any] | None:
    """What we sent with ``response``'s request: its network, payer and amount (for the receipt)."""
    header = response.request.headers.get("authorization", "") if response.request else ""
    try:
        body = mpp.b64url_json(header[len(mpp.SCHEME) + 1:], "credential")
        charge = tempo_charge.parse_charge(_challenge({"challenge": body["challenge"],
                                                       "request": mpp.b64url_json(body["challenge"]["request"], "r")}))
    except (PaymentRequiredError, KeyError, TypeError, AttributeError):
        return None
    return {"challenge_network": charge.network, "payer": str(body.get("source", "")).rsplit(":", 1)[-1] or None,
            "amount": charge.amount}


def default_methods(*, solana_rpc_url: str | dict[str, str] | None = None,
                    solana_validity_s: float = svm.BLOCKHASH_VALIDITY_S,
                    tempo_rpc_url: str | dict[str, str] | None = None) -> list[PaymentMethod]:
    """MPP on Tempo, EVM and Solana ``exact``; ``solana_rpc_url`` (one URL, or one per network) for
    blockhashes, ``tempo_rpc_url`` (likewise) for Tempo's gas price."""
    urls = solana_rpc_url if isinstance(solana_rpc_url, dict) else (
        {n: solana_rpc_url for n in svm.DEFAULT_RPC} if solana_rpc_url else None)
    tempo_urls = tempo_rpc_url if isinstance(tempo_rpc_url, dict) else (
        {n: tempo_rpc_url for n in (networks.TEMPO, networks.TEMPO_TESTNET)} if tempo_rpc_url else None)
    return [TempoCharge(rpc_urls=tempo_urls), EvmExact(), SvmExact(rpc_urls=urls, validity_s=solana_validity_s)]


def preference_rank(network: str, prefer: list[str]) -> int:
    """Where ``network`` stands in ``prefer`` (CAIP-2 ids, short names, or a family such as
    ``solana``, which also covers its testnets); unlisted networks come after, in server order."""
    net = networks.NETWORKS.get(network)
    for i, p in enumerate(prefer):
        if p in (network, networks.family(network)) or (net and (p == net.short or net.short.startswith(p + "-"))):
            return i
    return len(prefer)
