"""x402 v2 ``exact`` payments on Base Sepolia, verified the way a facilitator would.

The sandbox never trusts the client: it rebuilds the EIP-712 ``TransferWithAuthorization`` from
the payload, recovers the signer with eth-account and compares it with ``authorization.from``,
and checks every term (network, asset, payee, amount, validity window) against what it would ask
for right now. It does not import the package's own client code, so a bug there cannot hide here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data

from .wire import HeaderError, decode_header

NETWORK = "eip155:84532"
CHAIN_ID = 84532
ASSET = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
TOKEN_NAME, TOKEN_VERSION = "USDC", "2"
MAX_TIMEOUT_S = 300
#: Accepted ``validBefore`` horizon when the 402 did not say ``maxTimeoutSeconds`` (``omit_extra``):
#: clients then fall back to their own default (the reference SDK uses 3600 s).
FALLBACK_TIMEOUT_S = 3600
CLOCK_SKEW_S = 60
#: Like the reference facilitator: an authorization must stay valid a few seconds longer than
#: "now", or it could expire before the settlement transaction is mined.
SETTLE_BUFFER_S = 6

_HEX32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIG = re.compile(r"^0x[0-9a-fA-F]{130}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_UINT = re.compile(r"^[0-9]{1,78}$")

_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
}


class PaymentInvalid(Exception):
    """Why a payment was refused; ``reason`` goes verbatim into the 402's ``error``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def requirement(amount: int, pay_to: str, *, omit_extra: bool = False) -> dict[str, Any]:
    """One ``accepts`` entry: USDC on Base Sepolia, exact amount, to the sandbox merchant."""
    req: dict[str, Any] = {"scheme": "exact", "network": NETWORK, "amount": str(amount),
                           "asset": ASSET, "payTo": pay_to}
    if not omit_extra:
        req["maxTimeoutSeconds"] = MAX_TIMEOUT_S
        req["extra"] = {"name": TOKEN_NAME, "version": TOKEN_VERSION}
    return req


@dataclass(frozen=True)
class Payment:
    """A payment whose terms and signature check out (its nonce and time window not yet)."""

    payer: str  # EIP-55
    nonce: str  # 0x + 64 lowercase hex
    amount: str
    pay_to: str
    network: str
    asset: str
    valid_after: int
    valid_before: int
    max_timeout_s: int
    signature: str
    transaction: str | None = None  # the settlement's transaction id when it is known up front (Solana)

    @property
    def key(self) -> tuple[str, str]:
        """EIP-3009 nonces are single-use per authorizer, as on chain."""
        return self.payer.lower(), self.nonce

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """Identifies the very same signed authorization (for idempotent replays)."""
        return (*self.key, self.amount, self.pay_to.lower(), self.valid_after, self.valid_before,
                self.signature.lower())


def _field(obj: dict[str, Any], name: str, where: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise PaymentInvalid(f"invalid_payload: {where}.{name} is missing")
    return obj[name]


def _uint(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _UINT.match(value):
        return int(value)
    raise PaymentInvalid(f"invalid_payload: {where} must be a decimal string, got {value!r:.40}")


def _address(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise PaymentInvalid(f"invalid_payload: {where} is not an address: {value!r:.50}")
    return value


def _same(network: Any, a: str, b: str) -> bool:
    """EVM hex addresses compare case-blind; base58 (Solana) addresses are case-sensitive."""
    return a.lower() == b.lower() if str(network).startswith("eip155:") else a == b


def _match(accepted: dict[str, Any], accepts: list[dict[str, Any]]) -> dict[str, Any]:
    """The requirement ``accepted`` claims to fulfil, or a refusal naming the first difference."""
    scheme = accepted.get("scheme")
    pool = [r for r in accepts if r["scheme"] == scheme]
    if not pool:
        raise PaymentInvalid(f"unsupported_scheme: {scheme!r} (offered: exact)")
    network = accepted.get("network")
    pool = [r for r in pool if r["network"] == network]
    if not pool:
        raise PaymentInvalid(f"wrong_network: expected {' or '.join(r['network'] for r in accepts)} got {network}")
    asset = str(accepted.get("asset", ""))
    same_asset = [r for r in pool if _same(network, r["asset"], asset)]
    if not same_asset:
        raise PaymentInvalid(f"wrong_asset: expected {pool[0]['asset']} got {asset}")
    pay_to = str(accepted.get("payTo", ""))
    pool = [r for r in same_asset if _same(network, r["payTo"], pay_to)]
    if not pool:
        raise PaymentInvalid(f"wrong_payto: expected {same_asset[0]['payTo']} got {pay_to}")
    amount = str(accepted.get("amount", ""))
    exact = [r for r in pool if r["amount"] == amount]
    if not exact:
        raise PaymentInvalid(f"amount_mismatch: expected {pool[0]['amount']} got {amount}")
    if (accepted.get("extra") or {}).get("assetTransferMethod") == "permit2":
        raise PaymentInvalid("unsupported_transfer_method: permit2 (the sandbox settles EIP-3009 only)")
    return exact[0]


def _recover(auth: dict[str, Any], signature: str, asset: str) -> str:
    message = {
        "types": _TYPES,
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": TOKEN_NAME, "version": TOKEN_VERSION, "chainId": CHAIN_ID,
                   "verifyingContract": asset},
        "message": {"from": auth["from"], "to": auth["to"], "value": auth["value"],
                    "validAfter": auth["validAfter"], "validBefore": auth["validBefore"],
                    "nonce": bytes.fromhex(auth["nonce"][2:])},
    }
    try:
        return Account.recover_message(encode_typed_data(full_message=message), signature=signature)
    except Exception as e:  # eth-account raises several types for bad signatures
        raise PaymentInvalid(f"invalid_signature: cannot recover a signer ({e})") from None


#: ``extra`` fields that change on every 402 (a Solana blockhash hint): x402 servers leave them
#: out when they compare ``accepted`` with the requirement they build again.
DYNAMIC_EXTRA = ("recentBlockhash", "lastValidBlockHeight")


def _static(req: dict[str, Any]) -> dict[str, Any]:
    extra = req.get("extra")
    if not isinstance(extra, dict):
        return req
    return {**req, "extra": {k: v for k, v in extra.items() if k not in DYNAMIC_EXTRA}}


def match(accepted: dict[str, Any], accepts: list[dict[str, Any]], *, deep: bool = False) -> dict[str, Any]:
    """The requirement ``accepted`` claims to fulfil, or a refusal naming the first difference.
    ``deep``: it must equal one in every key and value (but the dynamic ones), as the router compares."""
    if deep:
        found = next((r for r in accepts if _static(r) == _static(accepted)), None)
        if found is None:
            raise PaymentInvalid("requirements_mismatch: Signed payment requirements did not match any "
                                 "server-built requirement")
        accepts = [found]
    return _match(accepted, accepts)


def verify(header: str, accepts: list[dict[str, Any]], *, deep: bool = False) -> Payment:
    """Decode a ``PAYMENT-SIGNATURE`` header and check its terms and signature. ``deep``: the
    echoed ``accepted`` must equal a requirement exactly (every key, unknown ones included).

    The nonce's freshness and the validity window are checked separately (:func:`check_window`),
    after the caller has looked the nonce up: a replay is reported as a replay, not as "expired".
    """
    try:
        payload = decode_header(header)
    except HeaderError as e:
        raise PaymentInvalid(f"invalid_payment_header: {e}") from None
    version = payload.get("x402Version")
    if version != 2:
        raise PaymentInvalid(f"unsupported_x402_version: {version!r} (this server speaks x402 v2)")
    accepted = _field(payload, "accepted", "payment")
    if not isinstance(accepted, dict):
        raise PaymentInvalid("invalid_payload: payment.accepted must be an object")
    req = match(accepted, accepts, deep=deep)
    inner = _field(payload, "payload", "payment")
    signature = _field(inner, "signature", "payload")
    raw = _field(inner, "authorization", "payload")
    auth = {k: _field(raw, k, "authorization")
            for k in ("from", "to", "value", "validAfter", "validBefore", "nonce")}
    _address(auth["from"], "authorization.from")
    _address(auth["to"], "authorization.to")
    if auth["to"].lower() != req["payTo"].lower():
        raise PaymentInvalid(f"wrong_payto: authorization.to is {auth['to']}, expected {req['payTo']}")
    value = _uint(auth["value"], "authorization.value")
    if value != int(req["amount"]):
        raise PaymentInvalid(f"amount_mismatch: expected {req['amount']} got {value} (authorization.value)")
    auth["value"] = value
    auth["validAfter"] = _uint(auth["validAfter"], "authorization.validAfter")
    auth["validBefore"] = _uint(auth["validBefore"], "authorization.validBefore")
    if not isinstance(auth["nonce"], str) or not _HEX32.match(auth["nonce"]):
        raise PaymentInvalid("invalid_nonce: authorization.nonce must be 0x + 32 bytes of hex")
    if not isinstance(signature, str) or not _SIG.match(signature):
        raise PaymentInvalid("invalid_signature: expected a 65-byte ECDSA signature as 0x-hex")
    signer = _recover(auth, signature, req["asset"])
    if signer.lower() != auth["from"].lower():
        raise PaymentInvalid(f"invalid_signature: recovered {signer} != from {auth['from']}")
    return Payment(payer=signer, nonce=auth["nonce"].lower(), amount=str(value), pay_to=req["payTo"],
                   network=req["network"], asset=req["asset"], valid_after=auth["validAfter"],
                   valid_before=auth["validBefore"],
                   max_timeout_s=int(req.get("maxTimeoutSeconds", FALLBACK_TIMEOUT_S)),
                   signature=signature)


def check_window(p: Payment, now: float) -> None:
    """The authorization must be valid now (and long enough to settle), and not for absurdly long."""
    if p.valid_after > now:
        raise PaymentInvalid(f"not_yet_valid: validAfter {p.valid_after} is after now ({int(now)})")
    if p.valid_before < now + SETTLE_BUFFER_S:
        raise PaymentInvalid(f"expired: validBefore {p.valid_before} is not after now ({int(now)}) "
                             f"+ {SETTLE_BUFFER_S}s")
    horizon = now + p.max_timeout_s + CLOCK_SKEW_S
    if p.valid_before > horizon:
        raise PaymentInvalid(f"valid_before_too_far: validBefore {p.valid_before} is more than "
                             f"maxTimeoutSeconds={p.max_timeout_s} (+{CLOCK_SKEW_S}s) ahead")
