"""The sandbox's upload flow: a paid client token (``POST /api/upload``), the blob PUT, and the
signed-in confirm (``POST /api/upload/confirm``) that makes the blob URL usable in a generation.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..catalog import Param
from ..errors import InvalidParams
from .payments import Payment
from .state import Blob, Upload, same_payer
from .wire import alnum, base_url, iso, json_body, json_error

if TYPE_CHECKING:
    from .server import Api

UPLOAD_TTL_S = 3600


class UploadRoutes:
    """Upload handlers over the :class:`~.server.Api` (its payment exchange and sign-in check)."""

    def __init__(self, api: Api):
        self.api, self.state = api, api.state

    def _params(self, raw: bytes) -> tuple[str, str]:
        body = json_body(raw)
        spec = {n: Param.from_json(n, p) for n, p in self.state.catalog.upload["params"].items()}
        unknown = [k for k in body if k not in spec]
        if unknown:
            raise InvalidParams(f"/api/upload has no parameter {unknown[0]!r}; it takes "
                                f"{', '.join(spec)}.", field=unknown[0], allowed=list(spec))
        filename, content_type = body.get("filename"), body.get("contentType")
        if not isinstance(filename, str) or not filename.strip() or len(filename) > 255 \
                or any(c in filename for c in "/\\\x00") or filename in (".", ".."):
            raise InvalidParams("/api/upload needs 'filename': a plain file name (no slashes, at most "
                                "255 characters).", field="filename")
        for name, p in spec.items():
            if name != "filename" and (body.get(name) is not None or p.required):
                p.check("/api/upload", body.get(name), uploadable=False)
        return filename, content_type

    async def upload(self, request: Request) -> Response:
        raw = await request.body()
        try:
            filename, content_type = self._params(raw)
        except InvalidParams as e:
            return self.state.mode.invalid_body(str(e), e.field, e.allowed)

        def make(payment: Payment) -> tuple[dict[str, Any], dict[str, Any]]:
            up = Upload(id=str(uuid.uuid4()), client_token="vercel_blob_client_" + alnum(32),
                        pathname="", filename=filename, content_type=content_type, payer=payment.payer,
                        expires_at=time.time() + UPLOAD_TTL_S)
            up.pathname = f"uploads/{up.id}/{filename}"
            with self.state.lock:
                self.state.uploads[up.id] = up
            return ({"uploadId": up.id, "clientToken": up.client_token, "pathname": up.pathname,
                     "expiresAt": iso(up.expires_at)}, {"upload_id": up.id})

        return await self.api.paid(request, "upload", int(self.state.catalog.upload["price"]),
                                   "StableStudio - upload", make)

    async def put_blob(self, request: Request) -> Response:
        pathname = request.query_params.get("pathname", "")
        up = next((u for u in list(self.state.uploads.values()) if u.pathname == pathname), None)
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if up is None or not token or token != up.client_token:
            return json_error(403, "Forbidden: the client token does not grant this pathname.")
        if time.time() > up.expires_at:
            return json_error(403, "Forbidden: the client token has expired; request a new upload.")
        limit = self.state.blob_limit_bytes
        too_big = json_error(413, f"Payload too large: the limit is {limit} bytes.")
        if int(request.headers.get("content-length") or 0) > limit:
            return too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return too_big
            chunks.append(chunk)
        content_type = request.headers.get("x-content-type") or up.content_type
        url = f"{base_url(request)}/blob/{quote(pathname)}"
        with self.state.lock:
            self.state.blobs[pathname] = Blob(b"".join(chunks), content_type, url)
            up.blob_url = url
        return JSONResponse({"url": url, "downloadUrl": url + "?download=1", "pathname": pathname,
                             "contentType": content_type})

    async def get_blob(self, request: Request) -> Response:
        blob = self.state.blobs.get(request.path_params["pathname"])
        if blob is None:
            return json_error(404, "Blob not found.")
        return Response(blob.data, media_type=blob.content_type)

    async def confirm(self, request: Request) -> Response:
        who = self.api.signed_in(request)
        if isinstance(who, Response):
            return who
        try:
            body = json_body(await request.body())
        except InvalidParams as e:
            return json_error(400, str(e))
        upload_id, blob_url = body.get("uploadId"), body.get("blobUrl")
        if not isinstance(upload_id, str) or not isinstance(blob_url, str):
            return json_error(400, "Confirm needs 'uploadId' and 'blobUrl' strings.",
                              "uploadId" if not isinstance(upload_id, str) else "blobUrl")
        up = self.state.uploads.get(upload_id)
        if up is None or not same_payer(up.payer, who):
            return json_error(404, "Upload not found.")
        if up.blob_url is None:
            return json_error(409, "Nothing was uploaded for this upload yet: PUT the file to the blob "
                                   "store first.")
        if urlsplit(blob_url).path != urlsplit(up.blob_url).path:
            return json_error(400, f"blobUrl does not belong to this upload (expected {up.blob_url}).", "blobUrl")
        up.confirmed = True
        return JSONResponse({"success": True, "upload": {"id": up.id, "blobUrl": blob_url}})
