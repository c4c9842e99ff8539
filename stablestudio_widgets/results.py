"""Finished generations: :class:`Result` and the downloads behind ``read()``, ``save()`` and
``save_results``, made with the client's pooled connections and its timeouts.
"""

from __future__ import annotations

import asyncio
import html
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from .service import Service


class Downloads:
    """Fetches result media for one client.

    Async callers share the client's ``httpx.AsyncClient``. Sync callers on another thread run
    the same coroutine on the client's loop; on the loop's own thread (or with no loop known) a
    sync client with the same timeouts is made once and pooled.
    """

    def __init__(self, service: Service):
        self.service = service
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the sync facade
        self._sync: httpx.Client | None = None
        self._lock = threading.Lock()

    async def fetch(self, url: str) -> bytes:
        r = await self.service.http.get(url, follow_redirects=True)
        r.raise_for_status()
        return r.content

    def fetch_blocking(self, url: str) -> bytes:
        loop = self.loop
        if loop is not None and loop.is_running() and not _on_loop(loop):
            return asyncio.run_coroutine_threadsafe(self.fetch(url), loop).result()
        with self._lock:
            if self._sync is None:
                self._sync = httpx.Client(timeout=self.service.http.timeout, follow_redirects=True)
        r = self._sync.get(url)
        r.raise_for_status()
        return r.content

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


@dataclass
class Result:
    """A finished generation: URLs (which expire) and, when cached, a local copy."""

    url: str
    media: str
    thumbnail_url: str | None = None
    local_path: str | None = None
    downloads: Downloads | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        """The bytes: from the local copy when there is one, else downloaded."""
        if self.local_path and Path(self.local_path).exists():
            return Path(self.local_path).read_bytes()
        return self._blocking(self.url)

    async def aread(self) -> bytes:
        if self.local_path and Path(self.local_path).exists():
            return Path(self.local_path).read_bytes()
        if self.downloads is None:
            async with httpx.AsyncClient(timeout=60, follow_redirects=True) as c:
                r = await c.get(self.url)
                r.raise_for_status()
                return r.content
        return await self.downloads.fetch(self.url)

    def _blocking(self, url: str) -> bytes:
        if self.downloads is None:
            r = httpx.get(url, timeout=60, follow_redirects=True)
            r.raise_for_status()
            return r.content
        return self.downloads.fetch_blocking(url)

    @property
    def suffix(self) -> str:
        path = self.url.split("?", 1)[0]
        ext = Path(path).suffix
        return ext if ext else (".png" if self.media == "image" else ".mp4")

    def save(self, path: str | Path | None = None) -> Path:
        """Write the result to ``path`` (a file, or a directory to put it in); returns the file."""
        target = Path(path) if path is not None else Path.cwd()
        if target.is_dir():
            target = target / (Path(self.url.split("?", 1)[0]).name or f"result{self.suffix}")
        target.write_bytes(self.read())
        return target

    def image(self) -> Any:
        """A PIL image (for videos: the thumbnail)."""
        from PIL import Image

        if self.media == "image":
            return Image.open(io.BytesIO(self.read()))
        if not self.thumbnail_url:
            raise ValueError("This video has no thumbnail; use read() or save() for the video itself.")
        return Image.open(io.BytesIO(self._blocking(self.thumbnail_url)))

    def _repr_html_(self) -> str:
        u = html.escape(self.url, quote=True)
        if self.media == "video":
            poster = f' poster="{html.escape(self.thumbnail_url, quote=True)}"' if self.thumbnail_url else ""
            return (f'<video src="{u}"{poster} controls muted playsinline preload="metadata" '
                    f'style="max-width:100%;max-height:480px"></video>')
        return f'<img src="{u}" style="max-width:100%;max-height:480px" alt="generated image">'
