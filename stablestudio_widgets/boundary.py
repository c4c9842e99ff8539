"""The trust boundary: every value the service (or the ledger, which keeps what the service said)
hands us crosses here before it is used — job ids that go into URL paths and file names, params
that could be mistaken for local files, result URLs that go to downloads, the ledger and widgets.

402 terms are checked where they are decoded and paid (``x402.py``, ``policy.py``, the catalog
price check in ``payments.py``) and sign-in challenges in ``siwx.py``; this module holds the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Any
from urllib.parse import quote, urlsplit

from .catalog import Route
from .errors import InvalidParams, ServiceError
from .policy import is_loopback

MAX_ID_CHARS = 256
_PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def json_object(r: Any) -> dict[str, Any] | None:
    """An answer's body if it is a JSON object; None for anything else (bad JSON, a list, a number)."""
    try:
        data = r.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def finite_number(value: Any) -> float | None:
    """A finite float out of an int or float (exactly: not bool), else None: a 400-digit integer
    from JSON is too big for a float and must not raise where it is read."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


MAX_ATOMIC = 10**12  # a million dollars: above any generation's price, so not an amount anyone paid


def atomic_amount(value: Any) -> int | None:
    """An amount of atomic units as the ledger should hold it (a whole number, 0..MAX_ATOMIC), else
    None: a file edited by hand may hold text, a fraction, a negative or an absurd number there."""
    return value if type(value) is int and 0 <= value <= MAX_ATOMIC else None


def job_id(value: Any) -> str:
    """A job id the service named: a short string (it ends up in URLs, the ledger and file names)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise ServiceError(f"The service named a job with an unusable id ({type(value).__name__}, "
                           f"{len(value) if isinstance(value, str) else '-'} characters).", status=200)
    return value


def job_path(value: str) -> str:
    """``/api/jobs/{id}`` with the id as one path segment, whatever characters it holds (dots too:
    a ``..`` segment would otherwise climb out of ``/api/jobs/``)."""
    return "/api/jobs/" + quote(value, safe="").replace(".", "%2E")


def file_stem(value: str) -> str:
    """A file name for a job id: the id itself when it is plainly one, otherwise a hash of it."""
    if _PLAIN_ID.match(value):
        return value
    return "job-" + hashlib.sha256(value.encode()).hexdigest()[:16]


def is_web_url(value: Any) -> bool:
    """An http(s) URL with a host: what a param may hold when it did not come from the user."""
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        return False
    return bool(urlsplit(value).hostname)


def result_url(value: Any, service_url: str) -> str | None:
    """``value`` if we may fetch and show it: https, or http to loopback from a loopback service
    (the sandbox). Anything else — ``javascript:``, ``file:``, ``data:``, plain http elsewhere — is
    refused before it reaches a download, the ledger or widget state."""
    if not isinstance(value, str) or len(value) > 4096:
        return None
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and is_loopback(value) and is_loopback(service_url):
        return value
    return None


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet cell a formula


def spreadsheet_text(value: Any) -> Any:
    """``value`` for a CSV cell: text a spreadsheet would run as a formula (CSV injection: a job id
    or an error the service wrote, starting with = + - @) gets a leading apostrophe, shown as text."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def ledger_params(route: Route, text: Any) -> dict[str, Any]:
    """The params a ledger row kept (JSON text), checked like the service's; unreadable: none."""
    try:
        return wire_params(route, json.loads(text or "{}"))
    except (TypeError, ValueError, RecursionError):
        return {}


def wire_params(route: Route, params: Any) -> dict[str, Any]:
    """Params the service or the ledger describes: plain JSON values, and for image inputs only
    http(s) URLs — never something that could be opened as a local file."""
    if not isinstance(params, dict):
        return {}
    out: dict[str, Any] = {}
    for name, value in params.items():
        p = route.params.get(name)
        if p is not None and p.is_media:
            if isinstance(value, list):
                value = [v for v in value if is_web_url(v)]
            elif not is_web_url(value):
                continue
        elif not isinstance(value, (str, int, float, bool, type(None))):
            continue
        out[str(name)] = value
    return out


def refuse_local_files(route: Route, params: dict[str, Any]) -> None:
    """Params of a call the user did not make with their own files (a retry, a listed job, a
    comparison restored from the ledger): a path is never uploaded, only URLs and in-memory images."""
    for name, value in params.items():
        p = route.params.get(name)
        if p is None or not p.is_media:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and not is_web_url(v):
                raise InvalidParams(
                    f"{route.id}: {name!r} holds {os.fspath(v)!r:.60}, which is not an http(s) URL. Local files are "
                    "uploaded only when you pass them in the call itself, never from a retried, listed or "
                    "restored job.", route=route.id, field=name)
