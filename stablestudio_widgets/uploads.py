"""Local images for edit and image-to-video calls: the paid three-step upload flow (token,
blob PUT, signed-in confirm) that turns a file, bytes or a PIL image into a blob URL.
"""

from __future__ import annotations

import io
import mimetypes
import os
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
    """The upload flow for one client."""

    def __init__(self, service: Service, payments: Payments):
        self.service, self.payments = service, payments

    async def upload(self, source: Any, *, consent: Consent) -> str:
        """Upload a local image (path, bytes or PIL image); returns the blob URL to use in calls."""
        data, filename, mime = read_image(source)
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
        return confirmed

    async def upload_inputs(self, route: Route, wire: dict[str, Any], *, consent: Consent) -> dict[str, Any]:
        """``wire`` with every local image replaced by its uploaded blob URL."""
        out = dict(wire)
        for name in media_params(route, wire):
            value = wire[name]
            if isinstance(value, list):
                out[name] = [v if is_web_url(v) else await self.upload(v, consent=consent) for v in value]
            elif not is_web_url(value):
                out[name] = await self.upload(value, consent=consent)
        return out

    async def extra_cost(self, uploads: list[Any], path: str, consented: bool) -> tuple[int, Consent]:
        """What the uploads a call needs will cost, checked against the policy (0 without uploads),
        and the consent each of them gets: its quoted price when the user consented to the call."""
        if not uploads:
            return 0, Consent()
        req = (await self.payments.upload_terms()).requirement
        self.payments.check(req, "/api/upload")
        return req.amount * len(uploads), Consent(req.amount if consented else None, req.pay_to)


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
