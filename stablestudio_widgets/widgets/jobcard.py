"""One live card per job: status, elapsed vs typical time, cost and receipt, the result inline."""

from __future__ import annotations

from typing import Any

import traitlets

from ..jobs import AsyncJob
from ._runtime import Bridge, as_async, css, esm
from .feed import FeedWidget, JobFeed
from .records import job_record


class JobCard(FeedWidget):
    """A live card for one job; it polls the job itself, so a bare ``job`` in a cell stays live."""

    _esm = esm("jobcard")
    _css = css("jobcard")
    job = traitlets.Dict().tag(sync=True)

    def __init__(self, job: Any, client: Any = None, **kwargs: Any):
        inner: AsyncJob = as_async(job)
        super().__init__(**kwargs)
        self._bridge = Bridge.for_client(client) if client is not None else Bridge.for_job(job)
        self._feed = JobFeed(self, self._bridge, "_records")
        self._feed.on_flush.append(self._show_latest)
        self._feed.track(inner)
        self.job = job_record(inner)
        self.on_msg(self._on_msg)
        self._feed.follow(inner)  # a timed-out job too: showing it is asking for it

    _records = traitlets.List()  # not synced: the feed's output, of which the card shows the one job

    def _static_cards(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(None, self.job)] if self.job else []

    def _show_latest(self) -> None:
        if self._records:
            self.job = self._records[0]


def show_card(job: Any) -> None:
    """A bare ``job`` in a notebook cell: its live card (and the card's static copy)."""
    JobCard(job)._ipython_display_()
