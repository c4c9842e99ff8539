"""Jobs and results: the status machine and a polling schedule that finds completion quickly
without hammering an unreliable service.
"""

from __future__ import annotations

import asyncio
import html
import io
import mimetypes
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .catalog import Route
from .errors import (
    AuthError,
    JobFailed,
    JobNotFound,
    JobTimeout,
    ServiceError,
    StableStudioError,
    fmt_usd,
    usd,
)
from .x402 import Receipt

if TYPE_CHECKING:
    from .client import AsyncStableStudio

RUNNING = ("pending", "processing")
DONE = ("complete", "failed")
NOT_FOUND_GRACE_S = 30.0
MIN_TIMEOUT_S = 30.0
MAX_AUTH_REFUSALS = 3


@dataclass
class Result:
    """A finished generation: URLs (which expire) and, when cached, a local copy."""

    url: str
    media: str
    thumbnail_url: str | None = None
    local_path: str | None = None

    def read(self) -> bytes:
        """The bytes: from the local copy when there is one, else downloaded."""
        if self.local_path and Path(self.local_path).exists():
            return Path(self.local_path).read_bytes()
        r = httpx.get(self.url, timeout=60, follow_redirects=True)
        r.raise_for_status()
        return r.content

    async def aread(self) -> bytes:
        if self.local_path and Path(self.local_path).exists():
            return Path(self.local_path).read_bytes()
        async with httpx.AsyncClient(timeout=60, follow_redirects=True) as c:
            r = await c.get(self.url)
            r.raise_for_status()
            return r.content

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

    def image(self):
        """A PIL image (for videos: the thumbnail)."""
        from PIL import Image

        if self.media == "image":
            return Image.open(io.BytesIO(self.read()))
        if not self.thumbnail_url:
            raise ValueError("This video has no thumbnail; use read() or save() for the video itself.")
        return Image.open(io.BytesIO(httpx.get(self.thumbnail_url, timeout=60).content))

    def _repr_html_(self) -> str:
        u = html.escape(self.url, quote=True)
        if self.media == "video":
            poster = f' poster="{html.escape(self.thumbnail_url, quote=True)}"' if self.thumbnail_url else ""
            return (f'<video src="{u}"{poster} controls muted playsinline preload="metadata" '
                    f'style="max-width:100%;max-height:480px"></video>')
        return f'<img src="{u}" style="max-width:100%;max-height:480px" alt="generated image">'


def next_delay(route: Route, elapsed: float, scale: float) -> float:
    """Seconds to the next poll: first near the route's typical time, then briskly around it,
    then at the service's recommended interval (3 s images, 10 s videos)."""
    typical = route.typical_s * scale
    interval = route.poll_interval_s * scale
    if elapsed < 0.9 * typical:
        return min(0.9 * typical - elapsed, max(interval, 0.25 * typical)) or interval
    if elapsed < 2 * typical:
        return min(interval, max(interval / 3, 0.1 * typical))
    return interval


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


@dataclass
class InspectorStep:
    """One step of how a job was paid for and fetched, for the teaching inspector."""

    step: str
    summary: str
    data: dict[str, Any]
    at: float
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "summary": self.summary, "data": self.data,
                "at_ms": int(self.at * 1000), "duration_ms": round(self.duration_ms, 1)}


@dataclass(eq=False)
class AsyncJob:
    """A paid generation. ``await job.wait()`` polls it to completion."""

    route: Route
    params: dict[str, Any]
    id: str | None = None
    status: str = "pending"
    detail: str = ""
    amount: int | None = None  # atomic units paid
    receipt: Receipt | None = None
    result: Result | None = None
    error: StableStudioError | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    inspector: list[InspectorStep] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    _client: AsyncStableStudio | None = field(default=None, repr=False)
    _poller: asyncio.Task | None = field(default=None, repr=False)
    _listeners: list[Callable[[AsyncJob], None]] = field(default_factory=list, repr=False)
    _ledger_row: dict[str, Any] | None = field(default=None, repr=False)  # what the ledger last got

    @property
    def prompt(self) -> str | None:
        return self.params.get("prompt")

    @property
    def cost_usd(self) -> float | None:
        return usd(self.amount) if self.amount is not None else None

    @property
    def done(self) -> bool:
        """Finished for good (complete or failed); a timed-out or not-yet-found job is not."""
        return self.status in DONE

    # --- change notification (widgets listen here) ------------------------------------------
    def on_change(self, callback: Callable[[AsyncJob], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _changed(self) -> None:
        for cb in list(self._listeners):
            cb(self)

    def _update(self, **fields: Any) -> None:
        for k, v in fields.items():
            setattr(self, k, v)
        self._changed()

    def add_step(self, step: str, summary: str, data: dict[str, Any], started: float) -> None:
        now = time.time()
        self.inspector.append(InspectorStep(step, summary, data, started, (now - started) * 1000))
        self._changed()

    # --- polling ------------------------------------------------------------------------------
    def apply(self, data: dict[str, Any]) -> None:
        """Take the server's view of the job (status verbatim; result URLs when complete)."""
        status = data.get("status") if isinstance(data.get("status"), str) else self.status
        res = data.get("result") if isinstance(data.get("result"), dict) else {}
        url = res.get("imageUrl") or res.get("videoUrl") or res.get("url")
        # What the service says now replaces an earlier timeout or not-found verdict.
        fields: dict[str, Any] = {"status": status, "raw": data, "detail": "", "error": None}
        if status == "complete" and url:
            fields["result"] = Result(url=url, media=self.route.media, thumbnail_url=res.get("thumbnailUrl"))
            fields["finished_at"] = time.time()
        elif status == "failed":
            reason = data.get("error") or data.get("message") or "the service gave no reason"
            fields["error"] = JobFailed(
                f"Job {self.id} ({self.route.id}) failed: {reason}. It cost {fmt_usd(self.cost_usd or 0)}. "
                "Retry with job.retry() (a new payment) or try another model.",
                job_id=self.id or "", paid_usd=self.cost_usd or 0.0)
            fields["finished_at"] = time.time()
        self._update(**fields)

    async def wait(self, timeout: float | None = None) -> Result:
        """Poll until complete; raises JobFailed / JobTimeout / JobNotFound with the job id.

        Several waiters share one poller. A timeout leaves the job in the ledger: ``wait()``
        again or ``resume()`` later picks it up.
        """
        if self.result is not None:
            return self.result
        if isinstance(self.error, JobFailed):
            raise self.error
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll(timeout))
        return await asyncio.shield(self._poller)

    async def _poll(self, timeout: float | None) -> Result:
        client = self._client
        assert client is not None and self.id is not None
        scale = client.time_scale
        # A scaled-down service (the sandbox) still renders media in real time: keep a real floor.
        limit = timeout if timeout is not None else max(self.route.poll_timeout_s * scale, MIN_TIMEOUT_S)
        started = time.monotonic()
        grace = NOT_FOUND_GRACE_S * scale
        age_at_start = max(time.time() - self.created_at, 0.0)
        polls = auth_refusals = 0
        first = next_delay(self.route, age_at_start, scale)
        if age_at_start < 0.9 * self.route.typical_s * scale and first < limit:
            self._update(detail="")
            await asyncio.sleep(first)  # nothing to see before the route's typical time is near
        while True:
            elapsed = time.monotonic() - started
            age = age_at_start + elapsed
            poll_started = time.time()
            try:
                r = await client._siwx_request("GET", f"/api/jobs/{self.id}")
                auth_refusals = 0
            except (httpx.TransportError, ServiceError) as e:
                r = None
                self._update(detail=f"Poll failed ({type(e).__name__}); retrying")
            except AuthError:
                # A refused sign-in can be a clock or load hiccup; a persistent one is a real error.
                auth_refusals += 1
                if auth_refusals >= MAX_AUTH_REFUSALS:
                    raise
                r = None
                self._update(detail="Sign-in refused; signing in again")
            polls += 1
            delay = next_delay(self.route, age, scale)
            if r is not None and polls == 1:
                signed = client.siwx_signed.get(f"{client.base_url}/api/jobs/{self.id}", {})
                self.add_step("Sign-In-With-X", f"polled GET /api/jobs/{self.id} → HTTP {r.status_code}, signed in "
                              "as the payer (EIP-4361 message, EIP-191 signature)",
                              {"SIGN-IN-WITH-X": signed, "message": _siwe_text(signed)}, poll_started)
            if r is not None:
                if r.status_code == 200:
                    self.apply(r.json())
                    client._job_changed(self)
                    if self.status == "complete" and self.result is not None:
                        await client._after_complete(self)
                        self.add_step("Result", f"complete after {polls} polls",
                                      {"url": self.result.url, "thumbnail_url": self.result.thumbnail_url},
                                      time.time())
                        return self.result
                    if self.status == "failed":
                        raise self.error  # type: ignore[misc]
                elif r.status_code == 404:
                    if age > grace:
                        err = JobNotFound(
                            f"Job {self.id} is unknown to the service {age:.0f} s after it was paid for "
                            f"({fmt_usd(self.cost_usd or 0)}). It stays in the ledger; ss.resume() will look "
                            "again, and the receipt proves the payment.", job_id=self.id,
                            paid_usd=self.cost_usd or 0.0)
                        self._update(error=err, status="lost")
                        client._job_changed(self)
                        raise err
                    self._update(detail=f"Job not visible yet (404) — still polling, {age:.0f} s of "
                                        f"{grace:.0f} s grace")
                elif r.status_code == 429 or r.status_code >= 500:
                    delay = parse_retry_after(r.headers.get("retry-after")) or delay
                    self._update(detail=f"Service busy ({r.status_code}); polling again in {delay:.1f} s")
                else:
                    raise ServiceError(f"Polling job {self.id} got HTTP {r.status_code}: {r.text[:200]}",
                                       status=r.status_code, body=r.text, job_id=self.id)
            if time.monotonic() - started + delay > limit:
                remaining = limit - (time.monotonic() - started)
                if remaining > 0:
                    await asyncio.sleep(remaining)
                    continue
                err = JobTimeout(
                    f"Job {self.id} ({self.route.id}) is still {self.status} after {limit:.0f} s. It was paid "
                    f"({fmt_usd(self.cost_usd or 0)}) and is kept in the ledger: call job.wait() again or "
                    "ss.resume() later.", job_id=self.id, paid_usd=self.cost_usd or 0.0)
                self._update(error=err, status="timeout" if self.status in RUNNING else self.status)
                client._job_changed(self)
                raise err
            await asyncio.sleep(delay)

    async def retry(self, *, confirm: bool = False) -> AsyncJob:
        """Pay again for the same route and parameters (a new payment, at your request)."""
        assert self._client is not None
        return await self._client.submit(self.route.id, dict(self.params), confirm=confirm)

    def to_record(self, *, masked: bool = False, inspector: bool = True) -> dict[str, Any]:
        """The JSON job record the widgets render (URLs only, no bytes, nothing secret);
        ``masked`` hides everything that names or prices the model (blind comparisons)."""
        err = self.error
        record = {
            "key": self.key, "id": self.id, "route": self.route.id, "model": self.route.model,
            "label": self.route.label,
            "media": self.route.media, "prompt": self.prompt or "", "params": _jsonable(self.params),
            "status": self.status, "detail": self.detail, "created_at": int(self.created_at * 1000),
            "finished_at": int(self.finished_at * 1000) if self.finished_at else None,
            "typical_s": self.route.typical_s * (self._client.time_scale if self._client else 1.0),
            "cost_usd": self.cost_usd, "receipt": self.receipt.to_dict() if self.receipt else None,
            "result": ({"url": self.result.url, "thumbnail_url": self.result.thumbnail_url,
                        "local_path": self.result.local_path} if self.result else None),
            "error": ({**err.to_dict(), **self._recovery(err)} if err else None),
            "inspector": [s.to_dict() for s in self.inspector] if inspector else [],
        }
        return mask_record(record) if masked else record

    def _recovery(self, err: StableStudioError) -> dict[str, bool]:
        """What a card may offer. A request whose payment may have settled (no job id yet, money
        possibly moved) is resumable, never retryable: a retry would sign a second payment."""
        maybe_paid = self.id is None and err.paid_usd > 0
        return {"retryable": isinstance(err, (JobFailed, JobNotFound)) or (self.id is None and not maybe_paid),
                "resumable": isinstance(err, JobTimeout) or (self.id is not None and not self.done) or maybe_paid}

    def __repr__(self) -> str:
        cost = f" {fmt_usd(self.cost_usd)}" if self.cost_usd is not None else ""
        return f"<Job {self.id or '(unpaid)'} {self.route.id} {self.status}{cost}>"


def mask_record(record: dict[str, Any]) -> dict[str, Any]:
    """A job record with nothing that names or prices its model: route, label, parameters (their
    names differ per model), cost, receipt, inspector and error text (it may quote the route)."""
    err = record.get("error")
    return {**record, "route": "", "model": "", "label": "", "params": {"prompt": record.get("prompt", "")},
            "cost_usd": None, "receipt": None, "inspector": [], "typical_s": None,
            "error": {**err, "message": "This cell failed; details are shown after the reveal."} if err else None}


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Params as JSON: local files and images become their names, never bytes."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (str, int, float, bool)) else _label(x) for x in v]
        else:
            out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else _label(v)
    return out


def _label(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    return f"<{type(v).__name__}>" if not hasattr(v, "__fspath__") else str(v)


def _siwe_text(payload: dict[str, Any]) -> str:
    from .siwx import message_text

    return message_text(payload, payload["address"]) if payload.get("address") else ""


def guess_mime(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "image/png"
