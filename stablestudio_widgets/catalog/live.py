"""The live route table: the service's ``/openapi.json`` read into a :class:`~.Catalog`, kept on
disk (with the time it was read) so a restart starts from it, and the fallbacks when it cannot be
read: the disk copy, then the bundled ``routes.json``.

The disk copy is the document as the service sent it, parsed again on every load: a file read back
is untrusted input like the answer it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import Catalog
from .openapi import NotUnderstood, catalog_data

MAX_DOC_BYTES = 2_000_000
#: A disk copy older than this is not used when a client starts (a refresh still falls back to it).
CACHE_FRESH_S = 7 * 24 * 3600
CACHE_VERSION = 1

__all__ = ["MAX_DOC_BYTES", "RouteTableWarning", "cache_file", "from_document", "load_cached", "save"]


class RouteTableWarning(UserWarning):
    """The live route table could not be used; an older copy or the bundled table stands in."""


def cache_file(directory: Path, base_url: str) -> Path:
    """One file per service, named so a person can tell which."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", urlsplit(base_url).netloc)[:80] or "service"
    digest = hashlib.sha256(base_url.encode()).hexdigest()[:12]
    return directory / "catalog" / f"{host}-{digest}.json"


def from_document(raw: bytes, bundled: Catalog, *, fetched_at: float, source: str = "live") -> Catalog:
    """A catalog from the bytes of an OpenAPI document; :class:`NotUnderstood` if unusable."""
    if len(raw) > MAX_DOC_BYTES:
        raise NotUnderstood(f"the document is larger than {MAX_DOC_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise NotUnderstood(f"not JSON ({type(e).__name__})") from None
    try:
        data, notes = catalog_data(doc, bundled)
    except RecursionError:
        raise NotUnderstood("nested too deeply") from None
    for note in notes:
        warnings.warn(f"Route table: {note}.", RouteTableWarning, stacklevel=2)
    return Catalog(data, source=source, fetched_at=fetched_at, notes=notes)


def save(directory: Path, base_url: str, raw: bytes, fetched_at: float) -> None:
    """Write the document atomically (a crash leaves the old copy or the new one, never half)."""
    path = cache_file(directory, base_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"version": CACHE_VERSION, "base_url": base_url, "fetched_at": fetched_at,
              "document": raw.decode("utf-8", errors="replace")}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalog-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cached(directory: Path, base_url: str, bundled: Catalog, *, max_age_s: float | None) -> Catalog | None:
    """The disk copy for ``base_url`` as a catalog (source "cache"), or None (absent, too old,
    unreadable)."""
    path = cache_file(directory, base_url)
    try:
        if path.stat().st_size > MAX_DOC_BYTES * 2:
            return None
        record: Any = json.loads(path.read_text("utf-8"))
        fetched_at = float(record["fetched_at"])
        if record.get("version") != CACHE_VERSION or record.get("base_url") != base_url:
            return None
        if max_age_s is not None and not 0 <= time.time() - fetched_at <= max_age_s:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RouteTableWarning)  # said when it was fetched
            return from_document(record["document"].encode("utf-8"), bundled, fetched_at=fetched_at, source="cache")
    except (OSError, ValueError, KeyError, TypeError, NotUnderstood):
        return None
