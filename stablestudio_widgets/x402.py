"""x402 v2 codecs, the signed-payment and receipt types every payment method shares, and
EIP-3009 ``exact`` payments on EVM networks (see ../shared/PROTOCOL.md).

Decoding is strict and hostile-input safe: a malformed 402 raises
:class:`~stablestudio_widgets.errors.PaymentRequiredError` before anything is signed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import PaymentRequiredError, fmt_usd, usd
from .networks import NETWORK_NAMES, TESTNETS, explorer_url  # noqa: F401  (TESTNETS: re-exported)

if TYPE_CHECKING:
    from .wallet import Wallet

X402_VERSION = 2
DEFAULT_TIMEOUT_S = 300
#: The longest an authorization we sign stays valid, whatever ``maxTimeoutSeconds`` asks: a signed
#: authorization is bearer money until it expires.
MAX_VALIDITY_S = 600
#: ``validAfter`` lies this far in the past, so a verifier whose clock is a little behind accepts it.
VALID_AFTER_SKEW_S = 60
MAX_UINT256 = 2**256 - 1
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_CHAIN_ID = re.compile(r"eip155:([1-9][0-9]{0,17})\Z")  # decimal, as CAIP-2 writes it: int() also takes "8_453"
MAX_DOMAIN_TEXT = 64
_DOMAIN_TEXT = re.compile(rf"[^\ud800-\udfff]{{1,{MAX_DOMAIN_TEXT}}}\Z")  # no lone surrogates: UTF-8 can spell it
_NETWORK = re.compile(r"^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,64}$")
_UINT = re.compile(r"[0-9]{1,78}")  # ASCII digits only: str.isdigit() accepts '²'


#: EIP-712 domains of the stablecoins we know, used when a 402 omits ``extra``.
KNOWN_ASSETS: dict[tuple[str, str], dict[str, str]] = {
    ("eip155:8453", "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"): {"name": "USD Coin", "version": "2"},
    ("eip155:84532", "0x036cbd53842c5426634e7929541ec2318f3dcf7e"): {"name": "USDC", "version": "2"},
}


def b64json_encode(obj: Any) -> str:
    """Standard padded base64 of compact UTF-8 JSON, as x402 headers carry it."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(text.encode()).decode("ascii")


def b64json_decode(value: str, what: str) -> Any:
    """Decode a base64-JSON header; accepts unpadded and URL-safe base64 (servers differ)."""
    if not isinstance(value, str) or not value.strip():
        raise PaymentRequiredError(f"The {what} header is empty.")
    s = value.strip().replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return json.loads(base64.b64decode(s, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise PaymentRequiredError(f"The {what} header is not base64 JSON ({e}). Nothing was signed.") from None


def _str(d: dict, key: str, where: str, *, required: bool = True) -> str | None:
    v = d.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise PaymentRequiredError(f"{where}.{key} must be a non-empty string, got {v!r:.60}. Nothing was signed.")
    return v


@dataclass(frozen=True)
class Requirement:
    """One entry of ``accepts``: what the server will take as payment."""

    scheme: str
    network: str
    amount: int
    asset: str
    pay_to: str
    max_timeout_seconds: int
    extra: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def amount_usd(self) -> float:
        return usd(self.amount)

    def describe(self) -> str:
        name = NETWORK_NAMES.get(self.network, self.network)
        return f"{self.scheme} {fmt_usd(self.amount_usd)} on {name} to {self.pay_to}"


@dataclass(frozen=True)
class PaymentRequired:
    """A decoded ``PAYMENT-REQUIRED`` header."""

    accepts: list[Requirement]
    resource: dict[str, Any]
    error: str | None
    extensions: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)


def parse_requirement(d: Any, i: int) -> Requirement:
    where = f"accepts[{i}]"
    if not isinstance(d, dict):
        raise PaymentRequiredError(f"{where} is not an object. Nothing was signed.")
    scheme, network = _str(d, "scheme", where), _str(d, "network", where)
    if not _NETWORK.match(network):
        raise PaymentRequiredError(f"{where}.network {network!r:.60} is not a CAIP-2 id. Nothing was signed.")
    amount_s = _str(d, "amount", where)
    if not _UINT.fullmatch(amount_s) or int(amount_s) > MAX_UINT256:
        raise PaymentRequiredError(f"{where}.amount {amount_s!r:.60} is not a non-negative integer that fits "
                                   "uint256. Nothing was signed.")
    asset, pay_to = _str(d, "asset", where), _str(d, "payTo", where)
    timeout = d.get("maxTimeoutSeconds", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        raise PaymentRequiredError(f"{where}.maxTimeoutSeconds must be 1..86400 seconds, got {timeout!r:.40}. "
                                   "Nothing was signed.")
    extra = d.get("extra") or {}
    if not isinstance(extra, dict):
        raise PaymentRequiredError(f"{where}.extra must be an object. Nothing was signed.")
    return Requirement(scheme, network, int(amount_s), asset, pay_to, timeout, extra, d)


def decode_payment_required(header: str | None, body: Any = None) -> PaymentRequired:
    """Decode the 402's header (or, failing that, a body that repeats it)."""
    if header:
        data = b64json_decode(header, "PAYMENT-REQUIRED")
    elif isinstance(body, dict) and "accepts" in body:
        data = body
    else:
        raise PaymentRequiredError("The server answered 402 without a PAYMENT-REQUIRED header. Nothing was signed.")
    if not isinstance(data, dict):
        raise PaymentRequiredError("PAYMENT-REQUIRED is not a JSON object. Nothing was signed.")
    if data.get("x402Version") != X402_VERSION:
        raise PaymentRequiredError(f"Only x402 version 2 is supported; the server sent "
                                   f"{data.get('x402Version')!r:.20}. Nothing was signed.")
    accepts = data.get("accepts", [])
    if not isinstance(accepts, list) or len(accepts) > 64:
        raise PaymentRequiredError("PAYMENT-REQUIRED.accepts must be a list. Nothing was signed.")
    resource = data.get("resource") or {}
    extensions = data.get("extensions") or {}
    error = data.get("error")
    if not isinstance(resource, dict) or not isinstance(extensions, dict):
        raise PaymentRequiredError("PAYMENT-REQUIRED.resource/extensions must be objects. Nothing was signed.")
    return PaymentRequired([parse_requirement(a, i) for i, a in enumerate(accepts)], resource,
                           error if isinstance(error, str) else None, extensions, data)


def eip712_domain(req: Requirement) -> dict[str, Any]:
    """The token's EIP-712 domain: from ``extra`` or, when omitted, the known-asset table."""
    if not _ADDRESS.match(req.asset) or not _ADDRESS.match(req.pay_to):
        raise PaymentRequiredError(f"asset/payTo of {req.describe()} are not EVM addresses. Nothing was signed.")
    known = KNOWN_ASSETS.get((req.network, req.asset.lower()))
    name, version = req.extra.get("name"), req.extra.get("version")
    if name is None and version is None and known:
        name, version = known["name"], known["version"]
    if not isinstance(name, str) or not isinstance(version, str):
        raise PaymentRequiredError(
            f"Unknown asset {req.asset} on {req.network} and the server gave no EIP-712 name/version "
            "in extra. Nothing was signed.")
    if not all(_DOMAIN_TEXT.match(text) for text in (name, version)):
        raise PaymentRequiredError(
            f"The EIP-712 name/version in the terms for {req.asset} on {req.network} are not a token's "
            f"(at most {MAX_DOMAIN_TEXT} characters with a UTF-8 spelling). Nothing was signed.")
    chain = _CHAIN_ID.match(req.network)
    if chain is None:
        raise PaymentRequiredError(f"{req.network!r} is not an EVM chain id (eip155:<decimal>). Nothing was signed.")
    return {"name": name, "version": version, "chainId": int(chain[1]), "verifyingContract": req.asset}


TRANSFER_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"},
    ],
}


def typed_data(domain: dict[str, Any], authorization: dict[str, str]) -> dict[str, Any]:
    """The EIP-712 ``TransferWithAuthorization`` message for an authorization (decimal strings)."""
    a = authorization
    return {"types": TRANSFER_TYPES, "primaryType": "TransferWithAuthorization", "domain": domain,
            "message": {"from": a["from"], "to": a["to"], "value": int(a["value"]),
                        "validAfter": int(a["validAfter"]), "validBefore": int(a["validBefore"]),
                        "nonce": bytes.fromhex(a["nonce"][2:])}}


def transfer_message(domain: dict[str, Any], authorization: dict[str, str]) -> Any:
    """:func:`typed_data` encoded for signing (eth-account's ``SignableMessage``), without parsing
    the types on every payment: the domain separator is made once per token."""
    from eth_account.messages import SignableMessage
    from eth_utils import keccak

    a = authorization
    body = keccak(_TRANSFER_TYPEHASH + _address32(a["from"]) + _address32(a["to"]) + _uint256(a["value"])
                  + _uint256(a["validAfter"]) + _uint256(a["validBefore"]) + bytes.fromhex(a["nonce"][2:]))
    separator = _domain_separator(domain["name"], domain["version"], domain["chainId"], domain["verifyingContract"])
    return SignableMessage(b"\x01", separator, body)


# keccak256 of "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256
# validBefore,bytes32 nonce)" and of "EIP712Domain(string name,string version,uint256 chainId,address
# verifyingContract)" (a test recomputes them, and the whole message against eth-account's encoder)
_TRANSFER_TYPEHASH = bytes.fromhex("7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267")
_DOMAIN_TYPEHASH = bytes.fromhex("8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f")


@functools.lru_cache(maxsize=32)
def _domain_separator(name: str, version: str, chain_id: int, contract: str) -> bytes:
    from eth_utils import keccak

    return keccak(_DOMAIN_TYPEHASH + keccak(name.encode()) + keccak(version.encode()) + _uint256(chain_id)
                  + _address32(contract))


def _address32(address: str) -> bytes:
    raw = bytes.fromhex(address[2:])
    if len(raw) != 20:
        raise PaymentRequiredError(f"{address!r} is not an EVM address. Nothing was signed.")
    return raw.rjust(32, b"\0")


def _uint256(value: str | int) -> bytes:
    return int(value).to_bytes(32, "big")  # (OverflowError on anything past 2**256, like eth-abi)


@dataclass(frozen=True)
class Credential:
    """A signed payment of any method, kept so a resend carries the very same bytes.

    ``id`` is what makes it single-use (an EIP-3009 nonce, a Solana transaction signature, a
    transaction hash): the ledger's key. After ``deadline`` it can no longer settle, so resending
    it is pointless and only finding the job it may have bought is left.
    """

    requirement: Requirement
    headers: dict[str, str]  # what goes on the paid request
    id: str
    deadline: float
    payer: str
    payload: dict[str, Any] = field(repr=False)  # what was signed, for the inspector
    signed_at: float
    method: str
    transaction: str | None = None  # the on-chain hash, when known before sending (Tempo, self-paid)

    @property
    def header(self) -> str:
        """The credential as it goes over the wire (and into the ledger, to resend after a restart)."""
        return next(iter(self.headers.values()))

    @property
    def nonce(self) -> str:
        return self.id

    @property
    def valid_before(self) -> int:
        return int(self.deadline)


def refuse_unsupported(req: Requirement) -> str | None:
    """Why we cannot pay this requirement with EIP-3009, or None when we can."""
    if req.scheme != "exact":
        return f"scheme {req.scheme!r} is not supported (only 'exact')"
    if not req.network.startswith("eip155:"):
        return f"network {req.network} is not an EVM network"
    if req.extra.get("assetTransferMethod") == "permit2":
        return "Permit2 transfers are not supported (only EIP-3009)"
    return None


def sign_payment(wallet: Wallet, req: Requirement, resource: dict[str, Any], *,
                 now: float | None = None) -> Credential:
    """Sign an EIP-3009 ``TransferWithAuthorization`` for exactly ``req`` and wrap it as
    a ``PaymentPayload``; the nonce is 32 CSPRNG bytes, fresh for every call, and the validity
    window at most :data:`MAX_VALIDITY_S` long."""
    why = refuse_unsupported(req)
    if why:
        raise PaymentRequiredError(f"Cannot pay {req.describe()}: {why}. Nothing was signed.")
    domain = eip712_domain(req)
    now = time.time() if now is None else now
    payer = wallet.evm_address
    if payer is None:
        raise PaymentRequiredError(f"Cannot pay {req.describe()}: this wallet has no EVM key. Nothing was signed.")
    authorization = {"from": payer, "to": req.pay_to, "value": str(req.amount),
                     "validAfter": str(int(now) - VALID_AFTER_SKEW_S),
                     "validBefore": str(int(now) + min(req.max_timeout_seconds, MAX_VALIDITY_S)),
                     "nonce": "0x" + secrets.token_bytes(32).hex()}
    signature = wallet.sign_encoded(transfer_message(domain, authorization))
    payload = {"x402Version": X402_VERSION, "resource": resource, "accepted": req.raw,
               "payload": {"signature": signature, "authorization": authorization}}
    return Credential(req, {"PAYMENT-SIGNATURE": b64json_encode(payload)}, authorization["nonce"],
                      float(authorization["validBefore"]), payer, payload, now, "exact-evm")


@dataclass(frozen=True)
class Receipt:
    """A decoded ``PAYMENT-RESPONSE``: the user's proof of what settled."""

    success: bool
    transaction: str | None
    network: str | None
    payer: str | None
    amount: int | None
    error_reason: str | None = None
    on_chain: bool = True  # False for the sandbox: its settlements exist only on the local server

    @property
    def network_name(self) -> str | None:
        return NETWORK_NAMES.get(self.network or "", self.network)

    @property
    def explorer_url(self) -> str | None:
        return explorer_url(self.network, self.transaction) if self.on_chain else None

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "transaction": self.transaction, "network": self.network,
                "network_name": self.network_name, "payer": self.payer, "amount": self.amount,
                "explorer_url": self.explorer_url, "error_reason": self.error_reason}


def decode_settle_response(header: str) -> Receipt:
    data = b64json_decode(header, "PAYMENT-RESPONSE")
    if not isinstance(data, dict):
        raise PaymentRequiredError("PAYMENT-RESPONSE is not a JSON object.")
    amount = data.get("amount")
    return Receipt(
        success=data.get("success") is True,
        transaction=data.get("transaction") if isinstance(data.get("transaction"), str) else None,
        network=data.get("network") if isinstance(data.get("network"), str) else None,
        payer=data.get("payer") if isinstance(data.get("payer"), str) else None,
        amount=int(amount) if isinstance(amount, str) and _UINT.fullmatch(amount) else None,
        error_reason=data.get("errorReason") if isinstance(data.get("errorReason"), str) else None,
    )
