"""Local images for edit and image-to-video calls: the paid three-step upload flow (token,
blob PUT, signed-in confirm) that turns a file, bytes or a PIL image into a blob URL.

An upload is paid once per kernel: the same bytes to the same service reuse its blob URL until
the upload's ``expiresAt`` (never past a day, whatever the service says).
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .boundary import is_web_url, json_object
from .catalog import Route
from .errors import InvalidParams, ServiceError
from .payments import Payments
from .policy import Consent
from .service import DEFAULT_BASE_URL, Service

PRODUCTION_BLOB_PUT = "https://vercel.com/api/blob/"
PLACEHOLDER_URL = "https://upload.invalid/pending.png"  # stands in for a local image when quoting
REUSE_MARGIN_S = 120  # stop reusing a blob this long before it expires: a job must still read it
REUSE_MAX_S = 24 * 3600


def media_params(route: Route, wire: dict[str, Any]) -> list[str]:
    """The parameters of ``wire`` that carry images (image, images, lastFrame, referenceImages …)."""
    return [n for n in wire if n in route.params and route.params[n].is_media]


def placeholder_uploads(route: Route, wire: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The body to quote with (local images stand in as placeholder URLs) and the images to upload."""
    body, uploads = dict(wire), []
    for name in media_params(route, wire):
        value = wire[name]
        if isinstance(value, list):
            uploads.extend(v for v in value if not is_web_url(v))
            body[name] = [v if is_web_url(v) else PLACEHOLDER_URL for v in value]
        elif not is_web_url(value):
            uploads.append(value)
            body[name] = PLACEHOLDER_URL
    return body, uploads


class Uploads:
    """The upload flow for one client, and the blobs it already paid for."""

    def __init__(self, service: Service, payments: Payments):
        self.service, self.payments = service, payments
        self._paid: dict[tuple[str, str], tuple[str, float]] = {}  # (sha256, base URL) -> (blob URL, usable until)

    def _reusable(self, data: bytes) -> str | None:
        hit = self._paid.get((hashlib.sha256(data).hexdigest(), self.service.base_url))
        return hit[0] if hit is not None and time.time() < hit[1] else None

    def needed(self, images: list[Any]) -> list[Any]:
        """The local images of a call that would be paid for (those not uploaded already)."""
        return [v for v in images if self._reusable(read_image(v)[0]) is None]

    async def upload(self, source: Any, *, consent: Consent) -> str:
        """Upload a local image (path, bytes or PIL image); returns the blob URL to use in calls."""
        return (await self.upload_recorded(source, consent=consent))["url"]

    async def upload_recorded(self, source: Any, *, consent: Consent) -> dict[str, Any]:
        """Upload (or reuse) one image: ``{name, url, cost_usd, reused}`` for the job's card."""
        data, filename, mime = read_image(source)
        reused = self._reusable(data)
        if reused is not None:
            return {"name": filename, "url": reused, "cost_usd": 0.0, "reused": True}
        body = {"filename": filename, "contentType": mime, "size": len(data)}
        paid = await self.payments.post("/api/upload", body, ("upload",), kind="upload", route=None, consent=consent)
        token, usd_ = paid.data, paid.signed.requirement.amount_usd
        try:
            upload_id, client_token, pathname = token["uploadId"], token["clientToken"], token["pathname"]
        except (KeyError, TypeError):
            raise ServiceError(f"The upload token answer lacks uploadId/clientToken/pathname: {str(token)[:200]}",
                               status=200, body=str(token), paid_usd=usd_) from None
        self.payments.ledger.update_payment(paid.signed.nonce, upload_id=upload_id)
        base = self.service.base_url
        put_url = PRODUCTION_BLOB_PUT if base == DEFAULT_BASE_URL else f"{base}/api/blob/"
        r = await self.service.retrying(lambda: self.service.http.put(
            put_url, params={"pathname": pathname}, content=data,
            headers={"authorization": f"Bearer {client_token}", "x-content-type": mime, "x-api-version": "11"}))
        if r.status_code != 200:
            raise ServiceError(f"Uploading {filename} to blob storage failed with HTTP {r.status_code} after the "
                               f"upload token was paid: {r.text[:200]}", status=r.status_code, body=r.text,
                               paid_usd=usd_)
        blob_url = (json_object(r) or {}).get("url")
        c = await self.service.signed_in("POST", "/api/upload/confirm", as_=paid.signed.payer,
                                         json={"uploadId": upload_id, "blobUrl": blob_url})
        if c.status_code != 200:
            raise ServiceError(f"Confirming upload {upload_id} failed with HTTP {c.status_code}: {c.text[:200]}",
                               status=c.status_code, body=c.text, paid_usd=usd_)
        upload = (json_object(c) or {}).get("upload")
        confirmed = (upload.get("blobUrl") if isinstance(upload, dict) else None) or blob_url
        if not is_web_url(confirmed):
            raise ServiceError(f"The upload of {filename} came back without an http(s) URL; it is not used.",
                               status=200, body=str(confirmed)[:200], paid_usd=usd_)
        until = _usable_until(token.get("expiresAt"))
        if until is not None:
            self._paid[(hashlib.sha256(data).hexdigest(), base)] = (confirmed, until)
        return {"name": filename, "url": confirmed, "cost_usd": usd_, "reused": False}

    async def upload_inputs(self, route: Route, wire: dict[str, Any], *,
                            consent: Consent) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``wire`` with every local image replaced by its blob URL, and what each upload cost."""
        out, records = dict(wire), []

        async def one(value: Any) -> str:
            records.append(await self.upload_recorded(value, consent=consent))
            return records[-1]["url"]
        for name in media_params(route, wire):
            value = wire[name]
            if isinstance(value, list):
                out[name] = [v if is_web_url(v) else await one(v) for v in value]
            elif not is_web_url(value):
                out[name] = await one(value)
        return out, records

    async def extra_cost(self, uploads: list[Any], path: str, consented: bool) -> tuple[int, Consent]:
        """What the uploads a call needs will cost, checked against the policy (0 without uploads),
        and the consent each of them gets: its quoted price when the user consented to the call. An
        image uploaded already in this kernel is not counted: it is reused, not paid again."""
        uploads = self.needed(uploads)
        if not uploads:
            return 0, Consent()
        req = (await self.payments.upload_terms()).requirement
        self.payments.check(req, "/api/upload")
        return req.amount * len(uploads), Consent(req.amount if consented else None, req.pay_to)


def _usable_until(expires_at: Any) -> float | None:
    """When to stop reusing a blob, from the service's ``expiresAt`` (hostile input: checked)."""
    if not isinstance(expires_at, str):
        return None
    try:
        when = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return min(when, time.time() + REUSE_MAX_S) - REUSE_MARGIN_S


def read_image(source: Any) -> tuple[bytes, str, str]:
    """Bytes, a file name and a content type for a path, bytes or a PIL image."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "image.png", "image/png"
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise InvalidParams(f"{p} is not a file.", field="image")
        return p.read_bytes(), p.name, mimetypes.guess_type(p.name)[0] or "image/png"
    if type(source).__module__.startswith("PIL."):
        buf = io.BytesIO()
        source.save(buf, format="PNG")
        return buf.getvalue(), "image.png", "image/png"
    raise InvalidParams(f"Cannot upload a {type(source).__name__}: give a path, bytes or a PIL image.", field="image")
