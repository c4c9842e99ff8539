"""Finished generations: :class:`Result` and the downloads behind ``read()``, ``save()`` and
``save_results``, made with the client's pooled connections and its timeouts.

A result URL is the service's word, so a download is bounded and typed: only https (http to a
loopback sandbox), redirects checked hop by hop, a size cap per media kind, an overall time limit
(a server dripping a byte a minute cannot hold a download for hours), a content type that
matches the media, and a file suffix from an allow-list — never from the URL. Files are created
inside the directory asked for, never through a symlink and never over an existing file.

A result shown in a notebook embeds a small JPEG of itself, so the saved notebook still shows it
when the URL has expired or the sandbox that served it is gone (nbviewer and GitHub too).
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .boundary import file_stem, result_url
from .errors import ServiceError
from .service import default_transport, tls_context

if TYPE_CHECKING:
    from .service import Service

MAX_REDIRECTS = 5
#: What a result of each media kind may be, and the suffix a saved copy gets for it.
MEDIA_TYPES = {
    "image": {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"},
    "video": {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov"},
}
#: Download caps: bytes per media kind, and seconds for any one download, redirects included
#: (``AsyncStableStudio(download_limits=…)`` changes them).
DEFAULT_LIMITS = {"image": 64 * 2**20, "video": 1024 * 2**20, "seconds": 600}
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def sniff(head: bytes) -> str | None:
    """The media type of a file from its first bytes (for servers that say only octet-stream)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str
    suffix: str


class _Body:
    """One download as it streams in: its status and declared type checked first, its size capped
    at every chunk, its real type decided at the end."""

    def __init__(self, r: httpx.Response, media: str, limit: int, deadline: float):
        where = f"{r.url.scheme}://{r.url.host}"
        if r.status_code != 200:
            raise ServiceError(f"Downloading the {media} from {where} got HTTP {r.status_code}.", status=r.status_code)
        self.allowed, self.media, self.limit, self.where = MEDIA_TYPES[media], media, limit, where
        self.deadline = deadline
        self.declared = r.headers.get("content-type", "").split(";")[0].strip().lower()
        if self.declared not in self.allowed and self.declared not in _GENERIC_TYPES:
            raise ServiceError(f"Refusing the download from {where}: it says it is {self.declared[:60]!r}, "
                               f"not an {media} ({', '.join(self.allowed)}).", status=200)
        length = r.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            self._too_big(int(length))
        self.chunks: list[bytes] = []
        self.size = 0

    def _too_big(self, size: int) -> None:
        raise ServiceError(f"Refusing the {self.media} from {self.where}: {size / 2**20:.0f} MB or more, above the "
                           f"{self.limit / 2**20:.0f} MB cap for {self.media}s (download_limits=… changes it).",
                           status=200)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self._too_big(self.size)
        if time.monotonic() > self.deadline:
            raise ServiceError(f"Gave up downloading the {self.media} from {self.where}: {self.size / 2**20:.1f} MB "
                               "arrived before the time limit for one download ran out (download_limits="
                               "{'seconds': …} changes it).", status=200)
        self.chunks.append(chunk)

    def done(self) -> Download:
        data = b"".join(self.chunks)
        kind = self.declared if self.declared in self.allowed else sniff(data[:16])
        if kind not in self.allowed:
            raise ServiceError(f"Refusing the download from {self.where}: it is not an {self.media} we know "
                               f"({', '.join(self.allowed)}).", status=200)
        return Download(data, kind, self.allowed[kind])


def _past_limit(media: str, seconds: float) -> ServiceError:
    return ServiceError(f"Gave up downloading the {media}: the time limit for one download ({seconds:g} s) ran out "
                        "(download_limits={'seconds': …} changes it).", status=200)


class Downloads:
    """Fetches result media for one client.

    Async callers share the client's ``httpx.AsyncClient`` (with no client, one made on first use per
    event loop: a pool belongs to the loop it was made on). Sync callers on another thread run the
    same coroutine on the client's loop; on the loop's own thread (or with no loop known) a sync
    client with the same timeouts is made once and pooled.
    """

    def __init__(self, service: Service | None = None, limits: dict[str, int] | None = None):
        self.service = service
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the sync facade
        self._sync: httpx.Client | None = None
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @property
    def service_url(self) -> str:
        return self.service.base_url if self.service is not None else ""

    @property
    def timeout(self) -> httpx.Timeout:
        return self.service.http.timeout if self.service is not None else httpx.Timeout(60.0)

    def _checked(self, url: str) -> str:
        if result_url(url, self.service_url) is None:
            scheme = url.split(":", 1)[0][:20] if isinstance(url, str) else type(url).__name__
            raise ServiceError(f"Refusing to download from a {scheme!r} URL: results come only over https "
                               "(http only from a local sandbox).", status=200)
        return url

    def _redirect(self, r: httpx.Response) -> str | None:
        return self._checked(str(r.url.join(r.headers["location"]))) if r.is_redirect else None

    async def fetch(self, url: str, media: str) -> Download:
        if self.service is not None:
            return await self._fetch(self.service.http, url, media)
        loop = asyncio.get_running_loop()
        http = self._by_loop.get(loop)
        if http is None or http.is_closed:
            http = self._by_loop[loop] = httpx.AsyncClient(timeout=self.timeout, transport=default_transport(),
                                                           verify=tls_context())
        return await self._fetch(http, url, media)

    async def _fetch(self, http: httpx.AsyncClient, url: str, media: str) -> Download:
        """The download within its time limit as a whole: a stalled server sends no chunk to check
        the clock on, and its read timeout may be longer."""
        seconds = self.limits["seconds"]
        try:
            return await asyncio.wait_for(self._stream(http, url, media, time.monotonic() + seconds), seconds)
        except asyncio.TimeoutError:
            raise _past_limit(media, seconds) from None

    async def _stream(self, http: httpx.AsyncClient, url: str, media: str, deadline: float) -> Download:
        url = self._checked(url)
        for _ in range(MAX_REDIRECTS + 1):
            async with http.stream("GET", url, follow_redirects=False) as r:
                nxt = self._redirect(r)
                if nxt is None:
                    body = _Body(r, media, self.limits[media], deadline)
                    async for chunk in r.aiter_bytes():
                        body.add(chunk)
                    return body.done()
            url = nxt
        raise ServiceError(f"Gave up downloading the {media} after {MAX_REDIRECTS} redirects.", status=200)

    def fetch_blocking(self, url: str, media: str) -> Download:
        loop = self.loop
        if loop is not None and loop.is_running() and not _on_loop(loop):
            return asyncio.run_coroutine_threadsafe(self.fetch(url, media), loop).result()
        with self._lock:
            if self._sync is None:
                self._sync = httpx.Client(timeout=self.timeout, verify=tls_context())
        url, deadline = self._checked(url), time.monotonic() + self.limits["seconds"]
        for _ in range(MAX_REDIRECTS + 1):
            # No task to cancel here: no single wait may outlast the time left (a stall), and each
            # chunk checks the clock (a drip).
            left, usual = max(deadline - time.monotonic(), 0.001), self.timeout
            timeout = httpx.Timeout(min(usual.read or left, left), connect=min(usual.connect or left, left))
            try:
                with self._sync.stream("GET", url, follow_redirects=False, timeout=timeout) as r:
                    nxt = self._redirect(r)
                    if nxt is None:
                        body = _Body(r, media, self.limits[media], deadline)
                        for chunk in r.iter_bytes():
                            body.add(chunk)
                        return body.done()
            except httpx.TimeoutException:
                if time.monotonic() < deadline - 0.05:
                    raise  # the service's own timeout, well before the limit
                raise _past_limit(media, self.limits["seconds"]) from None
            url = nxt
        raise ServiceError(f"Gave up downloading the {media} after {MAX_REDIRECTS} redirects.", status=200)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()


THUMB_PX = 112  # a card's embedded thumbnail (~1.5–2 KB): saved notebooks stay small
PREVIEW_PX = 512  # a result shown on its own in a cell: about the size it is displayed at


def jpeg_data_uri(data: bytes, px: int = THUMB_PX, quality: int = 50) -> str | None:
    """A JPEG data URI of an image, fitted in ``px``×``px`` (None if the bytes are no image)."""
    try:
        from PIL import Image

        img = Image.open(io.BytesIO(data)).convert("RGB")
        img.thumbnail((px, px))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, optimize=True)
    except Exception:  # not an image we can read (or a truncated download): no thumbnail
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def write_new(directory: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Create a new file ``stem+suffix`` in ``directory`` (``stem-1`` … when taken): never through a
    symlink, never over an existing file, never outside ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    for i in range(1000):
        path = root / (f"{stem}{suffix}" if i == 0 else f"{stem}-{i}{suffix}")
        if path.parent != root:  # stems are sanitised; this keeps it so
            raise ValueError(f"{path} is not inside {root}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:  # also a symlink planted there: O_EXCL never follows one
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path
    raise FileExistsError(f"No free file name for {stem}{suffix} in {root}")


def _write_over(path: Path, data: bytes) -> None:
    """The file the user named: replaced if it exists, but never written through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


_standalone = Downloads()


@dataclass
class Result:
    """A finished generation: URLs (which expire) and, when cached, a local copy."""

    url: str
    media: str
    thumbnail_url: str | None = None
    local_path: str | None = None
    name: str | None = None  # the job id: what a saved copy is called
    downloads: Downloads | None = field(default=None, repr=False, compare=False)
    thumb: str | None = field(default=None, repr=False, compare=False)  # small JPEG data URI, once made
    _preview: str | None = field(default=None, repr=False, compare=False)

    @property
    def _still_url(self) -> str | None:
        """Where a still of the result is: the image itself, or a video's thumbnail."""
        return self.url if self.media == "image" else self.thumbnail_url

    async def athumbnail(self) -> str | None:
        """The small embedded thumbnail (made once; None when the media cannot be fetched)."""
        if self.thumb is None and self._still_url:
            try:
                data = await self.aread() if self.media == "image" else (
                    await self._downloads.fetch(self._still_url, "image")).data
            except (httpx.HTTPError, OSError, ServiceError):
                return None
            self.thumb = jpeg_data_uri(data)
        return self.thumb

    @property
    def _downloads(self) -> Downloads:
        return self.downloads or _standalone

    def download(self) -> Download:
        """The result's bytes, type and file suffix, checked (see the module docstring)."""
        if self.local_path and Path(self.local_path).exists():
            data = Path(self.local_path).read_bytes()
            return Download(data, "", Path(self.local_path).suffix)
        return self._downloads.fetch_blocking(self.url, self.media)

    def read(self) -> bytes:
        """The bytes: from the local copy when there is one, else downloaded."""
        return self.download().data

    async def adownload(self) -> Download:
        """``download()`` on the client's loop."""
        if self.local_path and Path(self.local_path).exists():
            return Download(Path(self.local_path).read_bytes(), "", Path(self.local_path).suffix)
        return await self._downloads.fetch(self.url, self.media)

    async def aread(self) -> bytes:
        return (await self.adownload()).data

    @property
    def stem(self) -> str:
        return file_stem(self.name) if self.name else "result"

    def save(self, path: str | Path | None = None) -> Path:
        """Write the result to ``path``: a file you name, or a directory (default: the current one)
        to create ``<job id>.<suffix>`` in; returns the file."""
        download = self.download()
        target = Path(path) if path is not None else Path.cwd()
        if target.is_dir():
            return write_new(target, self.stem, download.suffix, download.data)
        _write_over(target, download.data)
        return target

    def image(self) -> Any:
        """A PIL image (for videos: the thumbnail)."""
        from PIL import Image

        if self.media == "image":
            return Image.open(io.BytesIO(self.read()))
        if not self.thumbnail_url:
            raise ValueError("This video has no thumbnail; use read() or save() for the video itself.")
        return Image.open(io.BytesIO(self._downloads.fetch_blocking(self.thumbnail_url, "image").data))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {"text/html": self.html(), "text/plain": repr(self)}

    def html(self) -> str:
        """The result inline, with an embedded still (the image at display size, a video's poster),
        so it still shows when its URL no longer answers."""
        if self._preview is None and self._still_url:
            try:
                data = self.read() if self.media == "image" else (
                    self._downloads.fetch_blocking(self._still_url, "image").data)
            except (httpx.HTTPError, OSError, ServiceError):
                data = b""
            self._preview = jpeg_data_uri(data, PREVIEW_PX, 80) or ""
        u = html.escape(self.url, quote=True)
        link = f'<br><a href="{u}" target="_blank" rel="noopener">{html.escape(self.url)}</a>'
        if self.media == "video":
            poster = self._preview or self.thumbnail_url
            attr = f' poster="{html.escape(poster, quote=True)}"' if poster else ""
            return (f'<video src="{u}"{attr} controls muted playsinline preload="metadata" '
                    f'style="max-width:100%;max-height:480px"></video>{link}')
        src = html.escape(self._preview or self.url, quote=True)
        return f'<img src="{src}" style="max-width:100%;max-height:480px" alt="generated image">{link}'
