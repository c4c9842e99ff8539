"""Sandbox jobs: how long each one takes, a status that follows the clock, and media rendered
when the job finishes.

Real jobs do not take exactly a route's typical time, so a schedule tuned to that time must not
be flattered here: each job's duration is drawn (seeded, :class:`Timing`) from a log-normal
spread around its centre, and longer or bigger outputs take longer (the centre is the route's
typical time times the square root of the parameters' price factor).

A job is ``pending`` for the first 15% of its duration (its queue), then running: in router mode
``loading`` with a ``progress`` of 0-99, as StableStudio reports it (linear over the work, holding
at 99 for the last 5% while the output is stored), in spec mode ``processing`` with no progress
(PROTOCOL.md's vocabulary). At the end a worker renders its media in a thread
and only then marks it ``complete`` (or ``failed``, if the fault dice said so). The status is
computed from timestamps plus that one terminal transition, made on the event loop, so every
reader sees a consistent job and ``complete`` always comes with fetchable media.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from ..catalog import Route
from .wire import iso

PENDING_SHARE = 0.15
FINISHING_SHARE = 0.05  # progress holds at 99 while the output is encoded and stored
#: How far a draw may stray from a job's centre, in standard deviations.
MAX_Z = 2.5


@dataclass(frozen=True)
class Timing:
    """How long sandbox jobs take and what they report while they run."""

    #: Standard deviation of a job's log-duration (0.2: most jobs within ±40% of their centre);
    #: 0 makes every job take exactly its centre.
    spread: float = 0.2
    #: Seed of the duration draws; ``None`` draws from the OS.
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.spread <= 1:
            raise ValueError(f"Timing.spread must be between 0 and 1, got {self.spread!r}")


def centre_s(route: Route, params: dict[str, Any]) -> float:
    """A request's usual duration: the route's typical time (for its default parameters) times the
    square root of how much dearer these parameters make it (12 s of video takes longer than 4 s)."""
    return route.typical_s * math.sqrt(route.price_atomic(params) / max(route.price_atomic({}), 1))


def draw_duration_s(route: Route, params: dict[str, Any], timing: Timing, rng: random.Random) -> float:
    """One job's duration in the service's seconds, spread around its centre."""
    z = max(-MAX_Z, min(MAX_Z, rng.gauss(0.0, 1.0)))
    return centre_s(route, params) * math.exp(timing.spread * z)


@dataclass
class Job:
    id: str
    route: Route
    params: dict[str, Any]
    payer: str
    base_url: str
    created_at: float
    duration_s: float
    fate_error: str | None = None  # decided at creation: the job will fail with this
    inputs: list[bytes] = field(default_factory=list, repr=False)
    seq: int = 0
    final_status: str | None = None  # "complete" | "failed", set once by the worker
    finished_at: float | None = None
    result: dict[str, str] | None = None
    error: str | None = None
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict, repr=False)  # name -> (bytes, mime)

    @property
    def type(self) -> str:
        return f"{self.route.model}-{self.route.operation}"

    def status(self, now: float | None = None) -> str:
        if self.final_status:
            return self.final_status
        now = time.time() if now is None else now
        return "pending" if now < self.created_at + PENDING_SHARE * self.duration_s else "processing"

    def progress(self, now: float) -> int:
        """Percent of the work done: linear over the work, 99 while the output is finished."""
        work = (1 - PENDING_SHARE - FINISHING_SHARE) * self.duration_s
        done = (now - self.created_at - PENDING_SHARE * self.duration_s) / work if work > 0 else 1.0
        return max(0, min(99, int(100 * done)))

    def updated_at(self, now: float | None = None) -> float:
        status = self.status(now)
        if status in ("complete", "failed"):
            return self.finished_at or self.created_at
        if status == "processing":
            return self.created_at + PENDING_SHARE * self.duration_s
        return self.created_at

    def view(self, now: float | None = None, *, loading: bool = False) -> dict[str, Any]:
        """The job object the API answers with; ``loading``: say "loading" with a ``progress``
        percentage while it works, as StableStudio does now, instead of "processing"."""
        now = time.time() if now is None else now
        status = self.status(now)
        out: dict[str, Any] = {
            "id": self.id, "jobId": self.id, "type": self.type, "route": self.route.id,
            "status": status, "createdAt": iso(self.created_at), "updatedAt": iso(self.updated_at(now)),
            "params": self.params,
        }
        if loading and status == "processing":
            out["status"] = "loading"
            out["progress"] = self.progress(now)
        if status == "complete" and self.result:
            out["result"] = dict(self.result)
        if status == "failed":
            out["error"] = self.error
        return out


def _render(job: Job) -> dict[str, tuple[bytes, str]]:
    """Synthesise the job's media (runs in a worker thread; imports media lazily)."""
    from . import media

    common = dict(prompt=str(job.params.get("prompt", "")), model=job.route.model,
                  route_id=job.route.id, params=job.params, inputs=job.inputs, route=job.route)
    if job.route.operation == "vectorize":
        return {f"{job.id}.svg": (media.render_svg(**common), "image/svg+xml")}
    if job.route.media == "video":
        video, mime, thumb = media.render_video(**common)
        ext = "webm" if "webm" in mime else "mp4"
        return {f"{job.id}.{ext}": (video, mime), f"{job.id}.thumb.png": (thumb, "image/png")}
    return {f"{job.id}.png": (media.render_image(**common), "image/png")}


async def run(job: Job, executor: Executor) -> None:
    """Wait out the job's duration, then fail it or render its media and complete it."""
    await asyncio.sleep(max(0.0, job.created_at + job.duration_s - time.time()))
    if job.fate_error is None:
        try:
            files = await asyncio.get_running_loop().run_in_executor(executor, _render, job)
        except Exception as e:  # a renderer bug must not leave the job running forever
            job.error = f"Generation failed: the renderer raised {type(e).__name__}: {e}"
        else:
            job.media = files
            urls = {name: f"{job.base_url}/media/{name}" for name in files}
            if job.route.media == "video":
                thumb = f"{job.id}.thumb.png"
                video = next(n for n in files if n != thumb)
                job.result = {"videoUrl": urls[video], "thumbnailUrl": urls[thumb]}
            else:
                job.result = {"imageUrl": next(iter(urls.values()))}
    else:
        job.error = job.fate_error
    job.finished_at = time.time()
    job.final_status = "complete" if job.result else "failed"
    job.inputs = []
