"""Payment methods: one per scheme and network family, each pluggable into :mod:`payments`.

A method says which offers it can pay with a given wallet, signs one into a
:class:`~stablestudio_widgets.x402.Credential` (the request headers, the single-use id the ledger
keys it by, the deadline after which resending is pointless, the payer), reads its receipt off
the answer, rebuilds a credential from a ledger row (to resend after a restart), and recognises
a refusal that means "already settled". :mod:`payments` does everything else the same way for
every method: policy, reservation, ledger, resend, one outcome and its bookkeeping.

Today: x402 ``exact`` on EVM networks (EIP-3009) and on Solana (a partially signed transaction).
A method for another protocol (MPP on Tempo: ``WWW-Authenticate`` challenges, an
``Authorization: Payment`` credential whose id is a transaction hash) plugs in the same way, by
overriding :meth:`PaymentMethod.offers` and :meth:`PaymentMethod.receipt`.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import TYPE_CHECKING, Any

from . import networks, svm
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


def default_methods(*, solana_rpc_url: str | dict[str, str] | None = None,
                    solana_validity_s: float = svm.BLOCKHASH_VALIDITY_S) -> list[PaymentMethod]:
    """EVM and Solana ``exact``; ``solana_rpc_url`` (one URL, or one per network) for blockhashes."""
    urls = solana_rpc_url if isinstance(solana_rpc_url, dict) else (
        {n: solana_rpc_url for n in svm.DEFAULT_RPC} if solana_rpc_url else None)
    return [EvmExact(), SvmExact(rpc_urls=urls, validity_s=solana_validity_s)]


def preference_rank(network: str, prefer: list[str]) -> int:
    """Where ``network`` stands in ``prefer`` (CAIP-2 ids, short names, or a family such as
    ``solana``, which also covers its testnets); unlisted networks come after, in server order."""
    net = networks.NETWORKS.get(network)
    for i, p in enumerate(prefer):
        if p in (network, networks.family(network)) or (net and (p == net.short or net.short.startswith(p + "-"))):
            return i
    return len(prefer)
