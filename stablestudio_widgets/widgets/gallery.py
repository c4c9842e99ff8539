"""The session's jobs (and, on request, the ledger's past jobs) as one responsive grid widget."""

from __future__ import annotations

from typing import Any

import traitlets

from ..errors import fmt_usd
from ._runtime import Bridge, as_async, css, esm
from .feed import FeedWidget, JobFeed
from .records import ledger_records


class Gallery(FeedWidget):
    """One widget rendering many cards from a list trait (not a widget per card)."""

    _esm = esm("gallery")
    _css = css("gallery")
    jobs = traitlets.List(traitlets.Dict()).tag(sync=True)
    _record_lists = ("jobs",)
    filter_model = traitlets.Unicode("").tag(sync=True)
    filter_status = traitlets.Unicode("").tag(sync=True)
    total_spent_usd = traitlets.Float(0.0).tag(sync=True)  # this session's spending
    # With the ledger shown: what its cards paid in earlier sessions cost (None: not shown). Apart
    # from this session's total, so neither counts a payment twice.
    ledger_total_usd = traitlets.Float(None, allow_none=True).tag(sync=True)
    title = traitlets.Unicode("Gallery").tag(sync=True)
    show_ledger = traitlets.Bool(False).tag(sync=True)

    def __init__(self, client: Any = None, jobs: list[Any] | None = None, *, session: bool = True,
                 show_ledger: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self._bridge = Bridge.for_client(client)
        # One card's inspector is JobCard's job; with ``session`` every job of the client shows.
        self._feed = JobFeed(self, self._bridge, inspector=False, follow_all=session)
        self._feed.on_flush.append(self._update_total)
        # What was paid in earlier sessions: lost answers' cards (by key), the ledger's jobs (by id)
        self._earlier: set[str] = set()
        self._earlier_ids: set[str] = set()
        aio = self._bridge.aio
        for job in [*(jobs or []), *(aio.live_jobs() if session else [])]:
            self._feed.track(as_async(job))
        self.on_msg(self._on_msg)
        self.show_ledger = show_ledger  # once the feed is there to show it in
        self._feed.flush()

    def _static_notes(self) -> list[str]:
        return [total_words(self.total_spent_usd, self.ledger_total_usd), *self._older_note()]

    def _update_total(self) -> None:
        self.total_spent_usd = round(self._bridge.aio.spending.spent / 1e6, 6)
        if self.show_ledger:
            self.ledger_total_usd = round(sum(r["cost_usd"] or 0 for r in self.jobs
                                              if r["key"] in self._earlier or r["id"] in self._earlier_ids), 6)
        else:
            self.ledger_total_usd = None

    @traitlets.observe("show_ledger")
    def _toggle_ledger(self, change: dict[str, Any]) -> None:
        aio = self._bridge.aio
        session = {p["nonce"] for p in aio.ledger.payments(session=aio.session)} if change["new"] else set()
        self._earlier_ids = {row["id"] for row in aio.ledger.jobs(limit=500) if row["nonce"] not in session} \
            if change["new"] else set()
        self._feed.show_ledger(ledger_records(aio.ledger, aio.catalog, aio.base_url) if change["new"] else {})
        if not change["new"]:  # the earlier kernels' lost answers go with the ledger (a found job stays: it is live)
            self._feed.forget(k for k, j in list(self._feed.jobs.items()) if k in self._earlier and j.id is None)
            self._earlier.clear()
        # Payments whose answers were lost (no job row): each shows as the job it paid for, with what
        # is known of it; its Resume finds that job, or its Retry pays anew once it expired unsettled.
        for job in aio.recovery.lost_answers() if change["new"] else ():
            self._earlier.add(job.key)
            self._feed.lost(job)


def total_words(session_usd: float, ledger_usd: float | None) -> str:
    """The header's total: this session's, and apart (so nobody adds a payment twice) what the
    cards shown from the ledger paid in earlier sessions."""
    if ledger_usd is None:
        return f"Total spent: {fmt_usd(session_usd)}"
    return f"This session: {fmt_usd(session_usd)} · Paid earlier (shown from the ledger): {fmt_usd(ledger_usd)}"
