"""Sign-In-With-X (CAIP-122, EIP-4361 text, EIP-191 signature) for job and upload-confirm routes.

Servers accept each proof once, so we sign a fresh message of our own for every request, or
exactly the info of a server challenge, and only ever for the host we are talking to.
"""

from __future__ import annotations

import re
import secrets
import string
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eth_utils import to_checksum_address

from .errors import AuthError, PaymentRequiredError
from .x402 import b64json_decode, b64json_encode

if TYPE_CHECKING:
    from .wallet import Wallet

HEADER = "SIGN-IN-WITH-X"
EXTENSION = "sign-in-with-x"
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")
_ALNUM = string.ascii_letters + string.digits
_CHALLENGE_KEYS = ("domain", "nonce", "issuedAt")  # a challenge without them is only a declaration
#: Our own messages say they were issued this many seconds ago: the router refuses an ``issuedAt``
#: in its future with no tolerance, so a clock a little ahead of the server's still signs in.
ISSUED_AT_SLACK_S = 5.0


def iso_now(offset_s: float = 0.0) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as EIP-4361 examples and JS ``toISOString`` write it."""
    t = datetime.now(timezone.utc) + timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def host_of(url: str) -> str:
    """The EIP-4361 ``domain`` for a URL: host, plus the port when it is not the default."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port and parts.port != default else host


def message_text(info: dict[str, Any], address: str) -> str:
    """The EIP-4361 message for ``info`` (keys as on the wire: ``chainId``, ``issuedAt``, …)."""
    chain = str(info["chainId"])
    chain_num = chain.split(":", 1)[1] if ":" in chain else chain
    head = f"{info['domain']} wants you to sign in with your Ethereum account:\n{to_checksum_address(address)}"
    statement = info.get("statement")
    head = f"{head}\n\n{statement}" if statement is not None else head + "\n"
    lines = [f"URI: {info['uri']}", f"Version: {info.get('version', '1')}", f"Chain ID: {chain_num}",
             f"Nonce: {info['nonce']}", f"Issued At: {info['issuedAt']}"]
    if info.get("expirationTime"):
        lines.append(f"Expiration Time: {info['expirationTime']}")
    if info.get("notBefore"):
        lines.append(f"Not Before: {info['notBefore']}")
    if info.get("requestId") is not None:
        lines.append(f"Request ID: {info['requestId']}")
    if info.get("resources") is not None:
        lines.append("\n".join(["Resources:", *(f"- {r}" for r in info["resources"])]))
    return head + "\n\n" + "\n".join(lines)


def sign(wallet: Wallet, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Sign ``info`` and return (header value, payload)."""
    fields = ("domain", "uri", "version", "statement", "nonce", "issuedAt", "expirationTime",
              "notBefore", "requestId", "resources")
    payload = {k: info[k] for k in fields if info.get(k) is not None}
    payload.setdefault("version", "1")
    payload.update(address=wallet.address, chainId=str(info["chainId"]), type="eip191")
    payload["signature"] = wallet.sign_message(message_text(payload, wallet.address))
    return b64json_encode(payload), payload


def own_info(url: str, chain_id: str, ttl_s: float = 300.0) -> dict[str, Any]:
    """Fields of a message we choose ourselves for one request URL."""
    return {"domain": host_of(url), "uri": url.split("?", 1)[0], "version": "1", "chainId": chain_id,
            "nonce": "".join(secrets.choice(_ALNUM) for _ in range(16)),
            "issuedAt": iso_now(-ISSUED_AT_SLACK_S), "expirationTime": iso_now(ttl_s)}


def refusal(header: str | None, body: Any) -> tuple[str | None, dict[str, Any]]:
    """The ``error`` and ``extensions`` of a 402 on a sign-in route. A bare 402 (a re-used or
    expired proof, as routers answer it) may carry neither: that is not a payment request."""
    data: Any = None
    if header:
        try:
            data = b64json_decode(header, "PAYMENT-REQUIRED")
        except PaymentRequiredError:
            data = None
    if not isinstance(data, dict):
        data = body if isinstance(body, dict) else {}
    error, extensions = data.get("error"), data.get("extensions")
    return (error if isinstance(error, str) else None), (extensions if isinstance(extensions, dict) else {})


def challenge_info(extensions: dict[str, Any], *, url: str, chains: list[str]) -> dict[str, Any] | None:
    """The server's challenge to sign, checked; ``None`` when there is none to answer (no
    extension, or a bare declaration without ``supportedChains``, ``domain``, ``nonce`` and
    ``issuedAt``). Its domain must be the host we talk to, and it must offer an EVM chain we
    can sign for (the first of ``chains`` it supports)."""
    ext = extensions.get(EXTENSION)
    if not isinstance(ext, dict) or not isinstance(ext.get("info"), dict):
        return None
    info = dict(ext["info"])
    supported = ext.get("supportedChains") or info.get("supportedChains") or []
    if not isinstance(supported, list) or not supported or not all(info.get(k) for k in _CHALLENGE_KEYS):
        return None
    expected = host_of(url)
    # Routers write the bare hostname in their challenges (and accept it, or host:port, back).
    if info.get("domain") not in (expected, urlsplit(url).hostname):
        raise AuthError(f"Refusing to sign in: the challenge is for {info.get('domain')!r} but we are "
                        f"talking to {expected!r}. Nothing was signed.")
    if not isinstance(info.get("nonce"), str) or not _NONCE.match(info["nonce"]):
        raise AuthError("The sign-in challenge has no valid nonce (8+ letters or digits). Nothing was signed.")
    offered = [c.get("chainId") for c in supported if isinstance(c, dict) and c.get("type", "eip191") == "eip191"]
    choice = next((c for c in chains if c in offered), None)
    if choice is None:
        raise AuthError(f"The sign-in challenge offers chains {offered}; this wallet signs for {chains}.")
    info["chainId"] = choice
    info.setdefault("uri", url.split("?", 1)[0])
    info.pop("supportedChains", None)
    return info
