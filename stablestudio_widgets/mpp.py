"""The MPP ("Machine Payments Protocol") HTTP wire: ``WWW-Authenticate: Payment`` challenges,
``Authorization: Payment`` credentials and ``Payment-Receipt`` headers.

Parsing follows mppx (``Challenge.deserialize``), the implementation servers run: several
challenges may share one header value (beside other schemes such as x402's), parameters are
quoted-strings with ``\\``-escapes and mppx's ``\\uXXXX`` extension, duplicates are errors and
unknown parameters are ignored. Everything here is hostile input: a challenge that fails a check
is set aside with the reason, never half-read. See /work/notes/tempo.md §1.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import PaymentRequiredError

SCHEME = "Payment"
MAX_HEADER = 64 * 1024
MAX_REQUEST = 16 * 1024
MAX_CHALLENGES = 16
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_METHOD = re.compile(r"^[a-z][a-z0-9:_-]*$")
_EXPIRES = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
#: The parameters a challenge may carry; others are ignored (spec: "Unknown parameters MUST be ignored").
PARAMS = ("id", "realm", "method", "intent", "request", "description", "digest", "expires", "opaque")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_json(value: str, what: str) -> Any:
    """Decode base64url (or standard, padded or not: decoders are lenient) of UTF-8 JSON."""
    s = value.strip().replace("+", "-").replace("/", "_")
    try:
        raw = base64.b64decode(s + "=" * (-len(s) % 4), altchars=b"-_", validate=True)
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise PaymentRequiredError(f"{what} is not base64url JSON ({e}). Nothing was signed.") from None


@dataclass(frozen=True)
class Challenge:
    """One ``Payment`` challenge. ``request`` is the string as received (echoed verbatim);
    ``decoded`` is its JSON."""

    id: str
    realm: str
    method: str
    intent: str
    request: str
    decoded: dict[str, Any] = field(repr=False)
    expires: str | None = None
    description: str | None = None
    digest: str | None = None
    opaque: str | None = None

    @property
    def expires_at(self) -> float | None:
        if self.expires is None:
            return None
        return datetime.fromisoformat(self.expires.replace("Z", "+00:00")).timestamp()

    def echo(self) -> dict[str, str]:
        """The challenge as a credential carries it back: every parameter exactly as received."""
        names = ("id", "realm", "method", "intent", "request", "expires", "description", "digest", "opaque")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


# --- parsing WWW-Authenticate ------------------------------------------------------------------

def _scheme_starts(value: str) -> list[int]:
    """Where each ``Payment`` challenge starts: the token outside quoted-strings, followed by
    whitespace, at the start of the value or after a comma (mppx ``findSchemeStarts``)."""
    starts, quoted, escaped, n = [], False, False, len(SCHEME)
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
            continue
        if value[i:i + n].lower() != SCHEME.lower() or i + n >= len(value) or not value[i + n].isspace():
            continue
        j = i - 1
        while j >= 0 and value[j].isspace():
            j -= 1
        if j < 0 or value[j] == ",":
            starts.append(i)
    return starts


def _quoted(s: str, i: int) -> tuple[str, int]:
    """The quoted-string starting after the opening quote at ``i``; returns (value, next index)."""
    out = []
    while True:
        if i >= len(s):
            raise ValueError("unterminated quoted-string")
        ch = s[i]
        i += 1
        if ch == '"':
            return "".join(out), i
        if ch != "\\":
            out.append(ch)
            continue
        nxt = s[i] if i < len(s) else ""
        if nxt == "u" and _HEX4.fullmatch(s[i + 1:i + 5]):
            out.append(chr(int(s[i + 1:i + 5], 16)))
            i += 5
        else:
            out.append(nxt)
            i += 1


def _params(s: str) -> dict[str, str]:
    """``key=value`` pairs up to the first token that is not followed by ``=``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(s):
        while i < len(s) and (s[i].isspace() or s[i] == ","):
            i += 1
        m = _KEY.match(s, i)
        if m is None:
            if i < len(s):
                raise ValueError(f"malformed parameter at {s[i:i + 20]!r}")
            break
        key, i = m.group().lower(), m.end()
        while i < len(s) and s[i].isspace():
            i += 1
        if i >= len(s) or s[i] != "=":
            break  # the next scheme
        i += 1
        while i < len(s) and s[i].isspace():
            i += 1
        if i < len(s) and s[i] == '"':
            value, i = _quoted(s, i + 1)
        else:
            end = s.find(",", i)
            end = len(s) if end < 0 else end
            value, i = s[i:end].strip(), end
        if key in out:
            raise ValueError(f"duplicate parameter {key!r}")
        out[key] = value
    return out


def _challenge(p: dict[str, str]) -> Challenge:
    for name in ("id", "realm", "method", "intent", "request"):
        if not p.get(name):
            raise ValueError(f"missing {name}")
    if not _METHOD.match(p["method"]):
        raise ValueError(f"method {p['method']!r:.40} is not a method name")
    if len(p["request"]) > MAX_REQUEST:
        raise ValueError("request is larger than 16 KiB")
    if p.get("expires") is not None and not _EXPIRES.match(p["expires"]):
        raise ValueError(f"expires {p['expires']!r:.40} is not an RFC 3339 time")
    try:
        decoded = b64url_json(p["request"], "request")
    except PaymentRequiredError as e:
        raise ValueError(str(e)) from None
    if not isinstance(decoded, dict):
        raise ValueError("request is not a JSON object")
    return Challenge(p["id"], p["realm"], p["method"], p["intent"], p["request"], decoded,
                     **{k: p.get(k) for k in ("expires", "description", "digest", "opaque")})


def parse_challenges(values: list[str] | str | None) -> tuple[list[Challenge], list[str]]:
    """Every ``Payment`` challenge in one or more ``WWW-Authenticate`` values, and why each of
    the others was set aside (so an error can say what was offered)."""
    if isinstance(values, str):
        values = [values]
    found: list[Challenge] = []
    problems: list[str] = []
    for value in values or []:
        if len(value) > MAX_HEADER:
            problems.append("a WWW-Authenticate header longer than 64 KiB")
            continue
        starts = _scheme_starts(value)
        for n, start in enumerate(starts[:MAX_CHALLENGES]):
            end = starts[n + 1] if n + 1 < len(starts) else len(value)
            chunk = re.sub(r",\s*$", "", value[start:end])[len(SCHEME):]
            try:
                found.append(_challenge(_params(chunk)))
            except ValueError as e:
                problems.append(f"an MPP challenge that is malformed ({e})")
    return found, problems


# --- credentials and receipts -------------------------------------------------------------------

def source_did(chain_id: int, address: str) -> str:
    """The payer as a ``did:pkh`` (routers take the payer from it: always send it)."""
    return f"did:pkh:eip155:{chain_id}:{address}"


def credential(challenge: Challenge, payload: dict[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    """The ``Authorization`` header value (exactly ``Payment `` then base64url JSON) and its JSON."""
    body = {"challenge": challenge.echo(), "payload": payload, "source": source}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return f"{SCHEME} {b64url_encode(text.encode('utf-8'))}", body


@dataclass(frozen=True)
class MppReceipt:
    """A decoded ``Payment-Receipt``: ``reference`` is the transaction hash (or, for a proof,
    the challenge id)."""

    method: str | None
    reference: str | None
    status: str | None
    timestamp: str | None
    external_id: str | None = None

    @property
    def success(self) -> bool:
        return self.status == "success"


def decode_receipt(header: str | None) -> MppReceipt | None:
    """The receipt, or None when there is none or it cannot be read (a bad receipt is not a
    failed payment: the 2xx said it settled)."""
    if not header or len(header) > MAX_HEADER:
        return None
    try:
        data = b64url_json(header, "Payment-Receipt")
    except PaymentRequiredError:
        return None
    if not isinstance(data, dict):
        return None

    def text(key: str) -> str | None:
        v = data.get(key)
        return v[:200] if isinstance(v, str) else None

    return MppReceipt(text("method"), text("reference"), text("status"), text("timestamp"), text("externalId"))
