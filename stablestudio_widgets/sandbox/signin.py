"""Sign-In-With-X (CAIP-122): who is asking for a job. EVM accounts sign EIP-4361 text with
EIP-191; Solana accounts sign the Solana text with Ed25519 (base58 signature).

The sandbox rebuilds the message from the header's fields, recovers (EVM, eth-account) or
verifies (Solana, solders) the signer and checks that the message was made for *this* server and
*this* URL, recently.
Rules a client must know, in spec mode (``router=False``) and, where it differs, as the router
checks them (``router=True``, the default; notes/router.md §3):

- ``domain`` must equal the ``Host`` the client addressed (``127.0.0.1:8402``); the router also
  takes the bare hostname (``127.0.0.1``), which is what its own challenges say.
- ``uri`` must be the request URL ``scheme://host:port/path`` (the query string is ignored on
  both sides); the router compares the origin only.
- ``issuedAt`` no older than ``siwx_max_age_s`` (default 600 s) and at most 60 s in the future;
  the router: at most 5 minutes old and never in the future. ``expirationTime`` (if any) in the
  future; ``notBefore`` (if any) in the past.
- Nonces: with a :class:`NonceStore` each is accepted once (the router records it *before* it
  checks the signature, so a bad signature burns it too); without one (spec mode) a sign-in may
  be reused for the same URL until it expires.

Every refusal carries a router code (``siwx_malformed``, ``siwx_expired``, ``siwx_nonce_used``,
``siwx_invalid_signature``) and a detailed reason.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address

from .payments import NETWORK
from .wire import HeaderError, alnum, decode_header, iso, parse_iso

SUPPORTED_CHAINS = (NETWORK,)  # the default; a sandbox that takes Solana adds its chain
SIGNATURE_TYPES = {"eip155": "eip191", "solana": "ed25519"}  # by CAIP-2 namespace, as the router decides
STATEMENT = "Sign in to StableStudio sandbox"
ROUTER_STATEMENT = "Sign in to verify your wallet identity"
CHALLENGE_TTL_S = 300
FUTURE_SKEW_S = 60
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")
_REQUIRED = ("domain", "address", "uri", "version", "chainId", "type", "nonce", "issuedAt", "signature")

#: A small JSON schema of the header payload, as the reference SDK declares it.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        **{k: {"type": "string"} for k in ("domain", "address", "statement", "version", "chainId",
                                           "type", "nonce", "requestId", "signature")},
        "uri": {"type": "string", "format": "uri"},
        **{k: {"type": "string", "format": "date-time"} for k in ("issuedAt", "expirationTime",
                                                                 "notBefore")},
        "resources": {"type": "array", "items": {"type": "string", "format": "uri"}},
    },
    "required": list(_REQUIRED),
}


#: Detailed reasons → the router's codes (everything not expiry, nonce or signature is "malformed").
_CODES = {"invalid_siwx_expired": "siwx_expired", "invalid_siwx_issued_at_too_old": "siwx_expired",
          "siwx_nonce_used": "siwx_nonce_used", "invalid_siwx_signature": "siwx_invalid_signature",
          "invalid_siwx_malformed_signature": "siwx_invalid_signature", "siwx_required": "siwx_required"}


class SignInInvalid(Exception):
    """Why a sign-in was refused: ``reason`` (detailed, the spec-mode challenge's ``error``) and
    ``code`` (the router's)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.code = _CODES.get(reason.split(":", 1)[0], "siwx_malformed")


class NonceStore:
    """Nonces seen in the last ``ttl_s`` seconds (the router's in-memory store: 5 minutes)."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, nonce: str, now: float | None = None) -> bool:
        """True the first time ``nonce`` is seen (and records it); False for a re-use."""
        now = time.time() if now is None else now
        with self._lock:
            if len(self._seen) > 1000:
                self._seen = {n: t for n, t in self._seen.items() if t > now}
            if self._seen.get(nonce, 0.0) > now:
                return False
            self._seen[nonce] = now + self.ttl_s
            return True

    def __len__(self) -> int:
        return len(self._seen)


def siwe_message(fields: dict[str, Any], address: str) -> str:
    """The EIP-4361 text for ``fields`` (header names), exactly as ``siwe.prepare_message``.

    Deliberately not shared with the client's ``siwx.message_text``: the server's builder is its
    own so it cannot be tuned to our client's reading; both are tested byte for byte against ``siwe``.
    """
    chain = int(str(fields["chainId"]).split(":", 1)[1])
    prefix = f"{fields['domain']} wants you to sign in with your Ethereum account:\n{address}"
    suffix = [f"URI: {fields['uri']}", f"Version: {fields['version']}", f"Chain ID: {chain}",
              f"Nonce: {fields['nonce']}", f"Issued At: {fields['issuedAt']}"]
    if fields.get("expirationTime"):
        suffix.append(f"Expiration Time: {fields['expirationTime']}")
    if fields.get("notBefore"):
        suffix.append(f"Not Before: {fields['notBefore']}")
    if fields.get("requestId") is not None:
        suffix.append(f"Request ID: {fields['requestId']}")
    if fields.get("resources") is not None:
        suffix.append("\n".join(["Resources:", *(f"- {r}" for r in fields["resources"])]))
    statement = fields.get("statement")
    prefix = f"{prefix}\n\n{statement}" if statement is not None else prefix + "\n"
    return prefix + "\n\n" + "\n".join(suffix)


def siws_message(fields: dict[str, Any], address: str) -> str:
    """The Solana sign-in text, as the SIWX extension's ``format_siws_message`` builds it (its own
    builder, like :func:`siwe_message`; tested byte for byte against the reference SDK's)."""
    lines = [f"{fields['domain']} wants you to sign in with your Solana account:", address, ""]
    if fields.get("statement"):
        lines += [fields["statement"], ""]
    lines += [f"URI: {fields['uri']}", f"Version: {fields['version']}",
              f"Chain ID: {str(fields['chainId']).split(':', 1)[1]}", f"Nonce: {fields['nonce']}",
              f"Issued At: {fields['issuedAt']}"]
    if fields.get("expirationTime"):
        lines.append(f"Expiration Time: {fields['expirationTime']}")
    if fields.get("notBefore"):
        lines.append(f"Not Before: {fields['notBefore']}")
    if fields.get("requestId"):
        lines.append(f"Request ID: {fields['requestId']}")
    if fields.get("resources"):
        lines += ["Resources:", *(f"- {r}" for r in fields["resources"])]
    return "\n".join(lines)


def signature_type(chain: str) -> str | None:
    return SIGNATURE_TYPES.get(chain.split(":", 1)[0])


def without_query(url: str) -> str:
    """``scheme://host:port/path``: what a sign-in's ``uri`` is compared on."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.lower(), "", "", ""))


def _time(fields: dict[str, Any], name: str) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        code = {"issuedAt": "issued_at", "expirationTime": "expiration_time", "notBefore": "not_before"}
        raise SignInInvalid(f"invalid_siwx_{code[name]}: {name} {value!r:.40} is not ISO 8601") from None


def _check_fields(f: dict[str, Any], *, host: str, url: str, now: float, max_age_s: float, router: bool,
                  chains: tuple[str, ...]) -> None:
    missing = [k for k in _REQUIRED if not isinstance(f.get(k), str) or not f[k]]
    if missing:
        raise SignInInvalid(f"invalid_siwx_header: missing or non-string field(s) {', '.join(missing)}")
    hosts = (host, urlsplit(f"//{host}").hostname or host) if router else (host,)
    if f["domain"] not in hosts:
        raise SignInInvalid(f"invalid_siwx_domain_mismatch: expected {' or '.join(map(repr, hosts))} got "
                            f"{f['domain']!r}")
    if router and origin(f["uri"]) != origin(url):
        raise SignInInvalid(f"invalid_siwx_uri_mismatch: expected the origin {origin(url)!r} got {f['uri']!r}")
    if not router and without_query(f["uri"]) != without_query(url):
        raise SignInInvalid(f"invalid_siwx_uri_mismatch: expected {without_query(url)!r} got {f['uri']!r}")
    if f["version"] != "1":
        raise SignInInvalid(f"invalid_siwx_version: expected '1' got {f['version']!r}")
    namespaces = {c.split(":", 1)[0] for c in chains}
    chain_ok = f["chainId"].split(":", 1)[0] in namespaces if router else f["chainId"] in chains
    if not chain_ok or f["type"] != signature_type(f["chainId"]):
        raise SignInInvalid(f"invalid_siwx_unsupported_chain: {f['chainId']} / {f['type']} (supported: "
                            + ", ".join(f"{c} with {signature_type(c)}" for c in chains) + ")")
    if not _NONCE.match(f["nonce"]):
        raise SignInInvalid("invalid_siwx_nonce: the nonce must be at least 8 alphanumerics")
    if f.get("statement") is not None and (not isinstance(f["statement"], str) or "\n" in f["statement"]):
        raise SignInInvalid("invalid_siwx_header: statement must be one line of text")
    resources = f.get("resources")
    if resources is not None and (not isinstance(resources, list)
                                  or not all(isinstance(r, str) for r in resources)):
        raise SignInInvalid("invalid_siwx_header: resources must be a list of URIs")
    issued = _time(f, "issuedAt")
    assert issued is not None
    if issued > now + (0 if router else FUTURE_SKEW_S):
        raise SignInInvalid(f"invalid_siwx_issued_at_in_future: issuedAt {f['issuedAt']} is in the future")
    if now - issued > max_age_s:
        raise SignInInvalid(f"invalid_siwx_issued_at_too_old: issued {round(now - issued)}s ago, "
                            f"limit {max_age_s:g}s")
    expires = _time(f, "expirationTime")
    if expires is not None and expires <= now:
        raise SignInInvalid(f"invalid_siwx_expired: expirationTime {f['expirationTime']} has passed")
    not_before = _time(f, "notBefore")
    if not_before is not None and not_before > now:
        raise SignInInvalid(f"invalid_siwx_not_yet_valid: notBefore {f['notBefore']} is in the future")


def verify(header: str | None, *, host: str, url: str, now: float, max_age_s: float, router: bool = False,
           nonces: NonceStore | None = None, chains: tuple[str, ...] = SUPPORTED_CHAINS) -> str:
    """Check a ``SIGN-IN-WITH-X`` header for ``url``; return the signer's address (EIP-55, or base58).

    With ``nonces`` each nonce is accepted once, and recorded before the signature is checked."""
    if not header:
        raise SignInInvalid("siwx_required: this route needs a SIGN-IN-WITH-X header signed for its URL")
    try:
        fields = decode_header(header)
    except HeaderError as e:
        raise SignInInvalid(f"invalid_siwx_header: {e}") from None
    _check_fields(fields, host=host, url=url, now=now, max_age_s=max_age_s, router=router, chains=chains)
    if nonces is not None and not nonces.check(fields["nonce"], now):
        raise SignInInvalid(f"siwx_nonce_used: nonce {fields['nonce']} was used before; sign a new message")
    if fields["type"] == "ed25519":
        return _verify_solana(fields)
    address = fields["address"]
    if not re.match(r"^0x[0-9a-fA-F]{40}$", address):
        raise SignInInvalid(f"invalid_siwx_header: address {address!r:.50} is not an EVM address")
    # The message carries the address as the client wrote it (the reference SDK's way); a client
    # that sent it lowercase but signed the EIP-55 form is accepted too.
    recovered = ""
    for shown in dict.fromkeys((address, to_checksum_address(address))):
        try:
            recovered = Account.recover_message(encode_defunct(text=siwe_message(fields, shown)),
                                                signature=fields["signature"])
        except Exception:
            raise SignInInvalid("invalid_siwx_malformed_signature: not a 65-byte EIP-191 signature") from None
        if recovered.lower() == address.lower():
            return recovered
    raise SignInInvalid(f"invalid_siwx_signature: recovered {recovered} != address {address}")


def _verify_solana(fields: dict[str, Any]) -> str:
    from solders.pubkey import Pubkey
    from solders.signature import Signature

    try:
        address, signature = Pubkey.from_string(fields["address"]), Signature.from_string(fields["signature"])
    except ValueError:
        raise SignInInvalid("invalid_siwx_malformed_signature: a base58 address and a 64-byte signature are "
                            "expected") from None
    if not signature.verify(address, siws_message(fields, fields["address"]).encode()):
        raise SignInInvalid(f"invalid_siwx_signature: the signature is not {fields['address']}'s")
    return fields["address"]


def challenge(*, url: str, host: str, error: str, now: float, router: bool = False,
              chains: tuple[str, ...] = SUPPORTED_CHAINS) -> dict[str, Any]:
    """The 402 ``PaymentRequired`` asking for a sign-in (no payment options, SIWX extension).

    The router's says ``domain`` = the hostname, ``uri`` = the full request URL, and nests the SDK's
    bare declaration (empty ``supportedChains``, no nonce) under ``schema``."""
    if router:
        info = {"domain": urlsplit(url).hostname, "uri": url, "version": "1", "chainId": chains[0],
                "type": signature_type(chains[0]), "nonce": secrets.token_hex(16), "issuedAt": iso(now),
                "expirationTime": iso(now + CHALLENGE_TTL_S), "statement": ROUTER_STATEMENT}
        declaration = {"sign-in-with-x": {"info": {"version": "1"}, "supportedChains": [], "schema": SCHEMA,
                                          "_options": {}}}
        return {"x402Version": 2, "error": "SIWX authentication required",
                "resource": {"url": url, "description": "Poll job status and retrieve results",
                             "mimeType": "application/json"},
                "accepts": [],
                "extensions": {"sign-in-with-x": {"info": info, "supportedChains": [
                    {"chainId": c, "type": signature_type(c)} for c in chains], "schema": declaration}}}
    uri = without_query(url)
    info = {"domain": host, "uri": uri, "version": "1", "nonce": alnum(24), "issuedAt": iso(now),
            "expirationTime": iso(now + CHALLENGE_TTL_S), "statement": STATEMENT}
    return {
        "x402Version": 2,
        "error": error,
        "resource": {"url": url},
        "accepts": [],
        "extensions": {"sign-in-with-x": {
            "info": info,
            "supportedChains": [{"chainId": c, "type": signature_type(c)} for c in chains],
            "schema": SCHEMA,
        }},
    }
