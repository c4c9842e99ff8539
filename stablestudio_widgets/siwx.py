"""Sign-In-With-X (CAIP-122) for job and upload-confirm routes: EIP-4361 text with an EIP-191
signature for an EVM account, the Solana text with an Ed25519 signature (base58) for a Solana one.

Servers accept each proof once, so we sign a fresh message of our own for every request, or the
info of a server challenge — after checking it says only what a sign-in to this very request
should say: our URL and host, our chain, a fresh short-lived window, no text of the server's own
and no control characters that could forge another line.
"""

from __future__ import annotations

import functools
import re
import secrets
import string
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import AuthError, PaymentRequiredError
from .networks import EVM, SVM, family
from .x402 import b64json_decode, b64json_encode

if TYPE_CHECKING:
    from .wallet import Wallet

HEADER = "SIGN-IN-WITH-X"
EXTENSION = "sign-in-with-x"
_NONCE = re.compile(r"^[A-Za-z0-9]{8,64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # line breaks of any kind, and other controls
_ALNUM = string.ascii_letters + string.digits
_CHALLENGE_KEYS = ("domain", "nonce", "issuedAt")  # a challenge without them is only a declaration
#: Our own messages say they were issued this many seconds ago: the router refuses an ``issuedAt``
#: in its future with no tolerance, so a clock a little ahead of the server's still signs in.
ISSUED_AT_SLACK_S = 5.0
#: The only statements a server may put in what we sign: the x402 router's and our own sandbox's.
ROUTER_STATEMENT = "Sign in to verify your wallet identity"
KNOWN_STATEMENTS = frozenset({ROUTER_STATEMENT, "Sign in to StableStudio sandbox"})
MAX_CLOCK_SKEW_S = 300  # a challenge's issuedAt may be this far from our clock, either way
MAX_LIFETIME_S = 3600  # a challenge's expirationTime may be at most this far away
SIGNATURE_TYPES = {EVM: "eip191", SVM: "ed25519"}  # the ``type`` of a chain in ``supportedChains``


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


@functools.lru_cache(maxsize=64)
def _checksummed(address: str) -> str:
    """EIP-55 spelling (a keccak and a walk over the digits: once per address, not per poll)."""
    from eth_utils import to_checksum_address  # the signing stack loads on first use, not on import

    return to_checksum_address(address)


def message_text(info: dict[str, Any], address: str) -> str:
    """The EIP-4361 message for ``info`` (keys as on the wire: ``chainId``, ``issuedAt``, …)."""
    chain = str(info["chainId"])
    chain_num = chain.split(":", 1)[1] if ":" in chain else chain
    head = f"{info['domain']} wants you to sign in with your Ethereum account:\n{_checksummed(address)}"
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


def solana_text(info: dict[str, Any], address: str) -> str:
    """The Solana sign-in text (the SIWX extension's ``formatSIWSMessage``): unlike EIP-4361, one
    blank line after the address when there is no statement, and only the genesis-hash reference
    as the chain id."""
    lines = [f"{info['domain']} wants you to sign in with your Solana account:", address, ""]
    if info.get("statement"):
        lines += [info["statement"], ""]
    lines += [f"URI: {info['uri']}", f"Version: {info.get('version', '1')}",
              f"Chain ID: {str(info['chainId']).split(':', 1)[-1]}", f"Nonce: {info['nonce']}",
              f"Issued At: {info['issuedAt']}"]
    for key, label in (("expirationTime", "Expiration Time"), ("notBefore", "Not Before"), ("requestId", "Request ID")):
        if info.get(key):
            lines.append(f"{label}: {info[key]}")
    if info.get("resources"):
        lines += ["Resources:", *(f"- {r}" for r in info["resources"])]
    return "\n".join(lines)


def text_for(payload: dict[str, Any]) -> str:
    """The text a payload's signature covers, by the family of its chain."""
    if family(str(payload.get("chainId"))) == SVM:
        return solana_text(payload, payload["address"])
    return message_text(payload, payload["address"])


def sign(wallet: Wallet, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Sign ``info`` with the wallet's key for its chain's family; return (header value, payload)."""
    fields = ("domain", "uri", "version", "statement", "nonce", "issuedAt", "expirationTime",
              "notBefore", "requestId", "resources")
    payload = {k: info[k] for k in fields if info.get(k) is not None}
    _refuse_control(payload)  # a last line of defence: nothing we sign can carry a forged line
    payload.setdefault("version", "1")
    fam = family(str(info["chainId"]))
    address = wallet.address_for(fam)
    if fam not in SIGNATURE_TYPES or address is None:
        raise AuthError(f"This wallet cannot sign in on {info['chainId']}. Nothing was signed.")
    payload.update(address=address, chainId=str(info["chainId"]), type=SIGNATURE_TYPES[fam])
    if fam == SVM:
        from solders.signature import Signature  # the Solana key exists, so solders is installed

        payload["signature"] = str(Signature.from_bytes(wallet.sign_solana(solana_text(payload, address).encode())))
    else:
        payload["signature"] = wallet.sign_message(message_text(payload, address))
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
    ``issuedAt``). Raises :class:`AuthError` (nothing signed) unless it is for this very request
    (``uri`` = the URL, ``domain`` = its host), on a chain we sign for (one of ``chains``, one
    family's, in our order, with that family's signature ``type``), issued within minutes of now,
    expiring within the hour, and says nothing of the server's own making."""
    ext = extensions.get(EXTENSION)
    if not isinstance(ext, dict) or not isinstance(ext.get("info"), dict):
        return None
    info = dict(ext["info"])
    supported = ext.get("supportedChains") or info.get("supportedChains") or []
    if not isinstance(supported, list) or not supported or not all(info.get(k) for k in _CHALLENGE_KEYS):
        return None
    info.pop("supportedChains", None)
    _refuse_control(info)
    _refuse_other_request(info, url)
    if not isinstance(info.get("nonce"), str) or not _NONCE.match(info["nonce"]):
        raise AuthError("The sign-in challenge has no valid nonce (8 to 64 letters or digits). Nothing was signed.")
    offered = [c.get("chainId") for c in supported if isinstance(c, dict) and isinstance(c.get("chainId"), str)
               and c.get("type", SIGNATURE_TYPES.get(family(c["chainId"]) or "")) ==
               SIGNATURE_TYPES.get(family(c["chainId"]) or "")]
    choice = next((c for c in chains if c in offered), None)
    # Its own default chain (the first it supports) may be another family's: we sign on ours.
    if choice is None or info.get("chainId", choice) not in (*chains, *offered):
        raise AuthError(f"The sign-in challenge is for chain {info.get('chainId')!r} (offering {offered}); this "
                        f"wallet signs in on {chains}. Nothing was signed.")
    _refuse_odd_times(info)
    _refuse_server_text(info)
    info["chainId"] = choice
    info["uri"] = url.split("?", 1)[0]
    return info


def _refuse(why: str) -> AuthError:
    return AuthError(f"Refusing to sign in: {why}. Nothing was signed.")


def _refuse_control(fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and _CONTROL.search(v):
                raise _refuse(f"the challenge's {key} holds control characters (they could forge a line of the "
                              "message)")


def _refuse_other_request(info: dict[str, Any], url: str) -> None:
    """The challenge must be for the request we made: its URL (with or without the query), its host
    (the router writes the host name without the port)."""
    parts = urlsplit(url)
    if info.get("domain") not in (host_of(url), parts.hostname):
        raise _refuse(f"the challenge is for {str(info.get('domain'))[:80]!r} but we are talking to {host_of(url)!r}")
    uri = info.get("uri", url)
    if uri not in (url, url.split("?", 1)[0]):
        raise _refuse(f"the challenge names the URI {str(uri)[:120]!r}, not the one we requested ({url})")
    if str(info.get("version", "1")) != "1":
        raise _refuse(f"the challenge asks for message version {str(info.get('version'))[:10]!r}, not 1")


def _refuse_odd_times(info: dict[str, Any]) -> None:
    now = datetime.now(timezone.utc)
    try:
        issued = parse_iso(str(info["issuedAt"]))
        expires = parse_iso(str(info["expirationTime"])) if info.get("expirationTime") else None
        not_before = parse_iso(str(info["notBefore"])) if info.get("notBefore") else None
    except ValueError:
        raise _refuse("the challenge's times are not ISO 8601") from None
    if any(t is not None and t.tzinfo is None for t in (issued, expires, not_before)):
        raise _refuse("the challenge's times carry no time zone")
    if abs((now - issued).total_seconds()) > MAX_CLOCK_SKEW_S:
        raise _refuse(f"the challenge was issued at {info['issuedAt']}, more than {MAX_CLOCK_SKEW_S // 60} minutes "
                      "from now")
    if expires is not None and not 0 < (expires - now).total_seconds() <= MAX_LIFETIME_S:
        raise _refuse(f"the challenge expires at {info['expirationTime']}: in the past or more than an hour away")
    if not_before is not None and (not_before - now).total_seconds() > MAX_CLOCK_SKEW_S:
        raise _refuse(f"the challenge is not valid before {info['notBefore']}")


def _refuse_server_text(info: dict[str, Any]) -> None:
    """What the message says is ours to write: no statement but a known one, no resources, and a
    request id only as a plain token."""
    if info.get("statement") is not None and info["statement"] not in KNOWN_STATEMENTS:
        raise _refuse(f"the challenge wants us to sign the statement {str(info['statement'])[:120]!r}")
    if info.get("resources"):
        raise _refuse("the challenge wants us to sign a list of resources")
    if info.get("requestId") is not None and not _REQUEST_ID.match(str(info["requestId"])):
        raise _refuse("the challenge's request id is not a plain token")
