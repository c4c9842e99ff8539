"""Small wire-format helpers shared by the sandbox modules: header base64, timestamps, ids, JSON
bodies in and errors out.

Kept separate so that the payment and sign-in verifiers decode headers exactly the same way
(tolerant on input, strict on output), as PROTOCOL.md asks of every x402 peer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import string
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import InvalidParams

_ALNUM = string.ascii_lowercase + string.digits
_ALNUM_MIXED = string.ascii_letters + string.digits
_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)


class HeaderError(ValueError):
    """A header that is not base64 of a JSON object."""


def encode_header(obj: Any) -> str:
    """Standard, padded base64 of compact UTF-8 JSON (what every x402 header carries)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_header(value: str) -> dict[str, Any]:
    """Decode base64 JSON, accepting padded, unpadded and URL-safe base64 (servers differ)."""
    raw = value.strip().replace("-", "+").replace("_", "/")
    raw += "=" * (-len(raw) % 4)
    try:
        data = json.loads(base64.b64decode(raw, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HeaderError(f"not base64 of JSON ({e})") from None
    if not isinstance(data, dict):
        raise HeaderError(f"expected a JSON object, got {type(data).__name__}")
    return data


def iso(ts: float) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` (the service's timestamp style)."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """An ISO 8601 timestamp with a zone as epoch seconds (any fraction length; 3.10-safe)."""
    m = _ISO.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not an ISO 8601 timestamp with a time zone: {text!r:.60}")
    day, clock, frac, zone = m.groups()
    zone = "+00:00" if zone.upper() == "Z" else zone
    if len(zone) == 5:  # +hhmm
        zone = zone[:3] + ":" + zone[3:]
    frac = (frac or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{day}T{clock}.{frac}{zone}").timestamp()


def job_id() -> str:
    """A cuid-like id, as the service hands out (``cm`` + 23 lowercase alphanumerics)."""
    return "cm" + "".join(secrets.choice(_ALNUM) for _ in range(23))


def alnum(n: int) -> str:
    """``n`` random alphanumerics (SIWX nonces, blob client tokens)."""
    return "".join(secrets.choice(_ALNUM_MIXED) for _ in range(n))


def json_error(status: int, message: str, field: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if status == 400:
        body["field"] = field
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status)


def json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`InvalidParams` saying why not."""
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidParams(f"The request body is not valid JSON ({e}).") from None
    if not isinstance(body, dict):
        raise InvalidParams("The request body must be a JSON object of parameters.")
    return body


def base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"
