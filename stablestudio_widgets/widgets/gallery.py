"""The session's jobs (and, on request, the ledger's past jobs) as one responsive grid widget."""

from __future__ import annotations

import json
from typing import Any

import traitlets

from ..catalog import load
from ..jobs import AsyncJob
from ..ledger import TERMINAL_JOBS
from ._runtime import Bridge, css, esm
from .feed import FeedWidget, JobFeed


class Gallery(FeedWidget):
    """One widget rendering many cards from a list trait (not a widget per card)."""

    _esm = esm("gallery")
    _css = css("gallery")
    jobs = traitlets.List(traitlets.Dict()).tag(sync=True)
    filter_model = traitlets.Unicode("").tag(sync=True)
    filter_status = traitlets.Unicode("").tag(sync=True)
    total_spent_usd = traitlets.Float(0.0).tag(sync=True)
    title = traitlets.Unicode("Gallery").tag(sync=True)
    show_ledger = traitlets.Bool(False).tag(sync=True)

    def __init__(self, client: Any = None, jobs: list[Any] | None = None, *, session: bool = True,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self._bridge = Bridge.for_client(client)
        self._feed = JobFeed(self, self._bridge, inspector=False)  # one card's inspector is JobCard's job
        self._feed.on_flush.append(self._update_total)
        aio = self._bridge.aio
        for job in jobs or []:
            self._feed.track(getattr(job, "_inner", job))
        if session:
            for job in list(aio._jobs.values()):
                self._feed.track(job)
            aio.on_job(self._feed.track)
        self.on_msg(self._on_msg)
        self._feed.flush()

    def _update_total(self) -> None:
        self.total_spent_usd = round(self._bridge.aio.spending.spent / 1e6, 6)

    @traitlets.observe("show_ledger")
    def _toggle_ledger(self, change: dict[str, Any]) -> None:
        self._feed.extra = ledger_records(self._bridge.aio, limit=500) if change["new"] else {}
        self._feed._changed()



def ledger_records(aio: Any, limit: int = 500) -> dict[str, dict[str, Any]]:
    """Past jobs from the ledger as job records (keyed by job id), for any base URL."""
    catalog = load()
    out: dict[str, dict[str, Any]] = {}
    for row in aio.ledger.jobs(limit=limit):
        if row["route"] not in catalog.routes:
            continue
        job = AsyncJob(route=catalog.route(row["route"]), params=json.loads(row["params"] or "{}"), id=row["id"],
                       status=row["status"], amount=row["amount"], created_at=row["created_at"],
                       finished_at=row["finished_at"], key=row["id"])
        rec = job.to_record()
        if row["result_url"]:
            rec["result"] = {"url": row["result_url"], "thumbnail_url": row["thumbnail_url"],
                             "local_path": row["local_path"]}
        unfinished = row["status"] not in TERMINAL_JOBS and row["base_url"] == aio.base_url
        if row["error"] or unfinished:
            rec["error"] = {"type": "Unfinished" if unfinished else "Error", "retryable": False,
                            "resumable": unfinished,
                            "message": row["error"] or "Paid but never finished here: Resume polls it to the end."}
        rec["detail"] = "from the ledger"
        out[row["id"]] = rec
    return out
