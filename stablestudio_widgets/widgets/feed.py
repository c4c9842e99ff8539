"""Live job records for widgets: many job changes, coalesced into few trait updates that carry only
the records that changed; every job a widget shows that runs on the service is followed (polled)."""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import anywidget
import traitlets

from ..errors import InvalidParams, StableStudioError
from ..jobs import AsyncJob
from ..results import Result
from ..status import LOCAL, VOCABULARY, JobStatus, kind
from ._runtime import Bridge, report
from .records import as_history, job_record, may_be_paid, recovery
from .static import page_html

FLUSH_S = 0.05  # a burst of changes (dozens of jobs polling) becomes one update per 50 ms
STATIC_EVERY_S = 1.0  # the static copy under a widget is rewritten at most this often
STATIC_CARDS = 24  # the newest cards in a static copy (older ones: a count; all are in the ledger)


class JobFeed:
    """Keeps ``widget.<trait>`` (a list of job records, newest first) in step with live jobs.

    Changes arrive on the client's loop thread; they are batched and written with
    ``hold_sync`` so the front end sees one consistent message per flush.
    """

    def __init__(self, widget: Any, bridge: Bridge, trait: str = "jobs", *, mask: Any = None,
                 inspector: bool | int = True, follow_all: bool = False):
        self.widget, self.bridge, self.trait = widget, bridge, trait
        self.jobs: dict[str, AsyncJob] = {}
        self.extra: dict[str, dict[str, Any]] = {}  # records not backed by a live job (ledger history)
        self.follow_all = follow_all  # show every job of the client, including ones made elsewhere
        self._unsubscribe = bridge.aio.on_job(self._on_job)  # the client's one change channel
        self._dirty = False
        self._stale: set[str] | None = None  # keys whose record must be rebuilt; None: all of them
        self._cache: dict[str, tuple[bool, dict[str, Any]]] = {}  # key -> (with inspector, record)
        self._lock = threading.Lock()
        self.mask = mask  # callable(job) -> bool: hide model identity (blind comparisons)
        # Payment-inspector steps in records: all (True), none (False) or the newest N (they are ~3.5 KB
        # each and a saved notebook keeps them).
        self.inspector = inspector
        self.dismiss = True  # a card whose payment expired unsettled may be closed (Compare: its cell keeps it)
        self.on_flush: list[Any] = []
        self.dismissed: set[str] = set()  # cards the user closed: not followed again
        self.on_found: list[Callable[[AsyncJob], None]] = []  # a resume found a job (Compare links its cell)
        self.on_retried: list[Callable[[AsyncJob, AsyncJob], None]] = []  # (failed job, its new attempt)
        self._thumbing: set[str] = set()  # results whose embedded thumbnail is made or being made

    def track(self, job: AsyncJob) -> None:
        with self._lock:
            if job.key in self.jobs:
                return
            self.jobs[job.key] = job
        self._changed(job)

    def lost(self, job: AsyncJob) -> None:
        """Show a lost answer's card (``Recovery.lost_answer``); when its payment's authorization runs
        out, its words say so (whether it settled stays unknown until a Resume looks)."""
        self.track(job)
        self.bridge.call_soon(self._restate, job)

    def _restate(self, job: AsyncJob) -> None:
        valid_before = self.bridge.aio.recovery.restate(job)
        if valid_before is not None:
            self.bridge.loop.call_later(valid_before - time.time() + 0.5, self._restate, job)

    def follow(self, job: AsyncJob) -> None:
        """Poll ``job`` to the end unless someone already does: a card shows the job's real state
        without anybody calling ``wait()`` (jobs share one poller, so feeds never poll twice)."""
        if job.id and not job.done and not job.polling:
            self.bridge.spawn(self.guard(job.wait(), job))

    def _on_job(self, job: AsyncJob) -> None:
        if job.key in self.jobs:
            self._changed(job)
        elif self.follow_all and job.key not in self.dismissed:
            self.track(job)

    def _changed(self, job: AsyncJob | None = None) -> None:
        """Mark ``job`` (or, with no job, every record: e.g. a blind comparison was revealed) for
        rebuilding at the next flush; a job the service is working on is followed."""
        if job is not None and kind(job.status) == "running" and job.status not in LOCAL:
            self.follow(job)
        with self._lock:
            if job is None:
                self._stale = None
            elif self._stale is not None:
                self._stale.add(job.key)
            if self._dirty:
                return
            self._dirty = True
        self.bridge.loop.call_soon_threadsafe(self.bridge.loop.call_later, FLUSH_S, self.flush)

    def records(self, stale: set[str] | None = None) -> list[dict[str, Any]]:
        """Every record, newest first, rebuilding only the ``stale`` ones (None: all)."""
        newest = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
        keep = {j.key for j in newest[: self.inspector if self.inspector is not True else len(newest)]}
        live, registry, retried = [], self.bridge.aio.tracker.jobs, self.bridge.aio.tracker.retried
        for j in self.jobs.values():
            if j.id and registry.get(j.id, j) is not j:
                continue  # one card per job: a listing's copy gave way to the card the job was paid for
            if j.result is not None and j.result.thumb is None and j.key not in self._thumbing:
                self._thumbing.add(j.key)
                self.bridge.spawn(self.guard(self._thumbnail(j)))
            cached = self._cache.get(j.key)
            if stale is None or j.key in stale or cached is None or cached[0] != (j.key in keep):
                masked = bool(self.mask and self.mask(j))
                cached = (j.key in keep, job_record(j, masked=masked, inspector=j.key in keep, dismiss=self.dismiss))
                self._cache[j.key] = cached
            live.append(as_history(cached[1]) if j.key in retried else cached[1])
        shown = {j.id for j in self.jobs.values() if j.id}
        rows = live + [r for k, r in self.extra.items() if k not in shown]  # a live job hides its ledger row
        return sorted(rows, key=lambda r: r["created_at"], reverse=True)

    async def _thumbnail(self, job: AsyncJob) -> None:
        """A small JPEG of the result in its record: what a saved notebook shows when the media
        URL no longer answers (an expired URL, a sandbox that is gone)."""
        if job.result is not None and await job.result.athumbnail():
            self._changed(job)

    def flush(self) -> None:
        with self._lock:
            self._dirty = False
            stale, self._stale = self._stale, set()
        records = self.records(stale)
        with self.widget.hold_sync():
            setattr(self.widget, self.trait, records)
            for cb in self.on_flush:
                cb()

    def close(self) -> None:
        self._unsubscribe()

    # --- the actions every job card offers (Studio, Gallery, JobCard and Compare's cells) --------
    def act(self, kind: str, key: Any, amount_usd: float | None = None) -> Awaitable[Any] | None:
        """Retry, resume, dismiss or download a card's job: one path for every widget's cards.

        A paid job is never paid again: an unfinished one (timed out, not found, interrupted) is
        polled again, one whose answer was lost is looked for (a resume of the ledger), whichever
        button was pressed. Only a job that failed, or a request that ended before anything was
        paid, is paid again: a retry, of at most ``amount_usd`` (what its Retry button showed).
        Returns what to finish before the request is answered (None: nothing); raises with the
        reason when there is nothing to do. A retry is answered once its new card exists.
        """
        job = self.jobs.get(key)
        if kind == "download":
            return self._download(job, key)
        if job is None:
            if kind == "resume" and key in self.extra:
                return self.resume_all()  # a past job from the ledger
            raise InvalidParams(f"No job card {key!r} here.", field="key")
        if kind == "dismiss":
            return self._dismiss(job)
        if may_be_paid(job, job.error):
            return self.resume_all()  # paid, answer lost: find the job, never pay again
        if job.id and not job.done:
            self.follow(job)  # paid and unfinished: poll it again
            return None
        if kind == "retry" and job.key in self.bridge.aio.tracker.retried:  # here or in another widget
            raise InvalidParams("This job was retried already: the newer card is its new attempt.", field="key")
        if kind == "retry" and job.error is not None and job.status != JobStatus.COMPLETE:
            self.retry(job, amount_usd)
            return None
        label = VOCABULARY["job_status"].get(job.status, {}).get("label", job.status)
        raise InvalidParams(f"Job {job.id or job.key} is {label}: nothing to {kind}.", field="key")

    async def _download(self, job: AsyncJob | None, key: Any) -> Reply:
        """The result's bytes for the browser to save (it cannot save a cross-origin URL itself)."""
        result = job.result if job is not None else None
        if result is None:
            url = ((self.extra.get(key) or {}).get("result") or {}).get("url")
            if not url:
                raise InvalidParams(f"Job card {key!r} has no result to download.", field="key")
            result = Result(url=url, media=self.extra[key]["media"], downloads=self.bridge.aio.tracker.downloads)
        got = await result.adownload()  # bounded and typed: its suffix comes from the content, not the URL
        name = f"stablestudio-{job.id if job and job.id else key}{got.suffix}"
        return Reply({"name": name, "mime": got.content_type or "application/octet-stream"}, [got.data])

    def _dismiss(self, job: AsyncJob) -> None:
        """Close a card that holds nothing paid: a cancelled one, or one whose payment expired
        unsettled (the ledger remembers: the next kernel's Gallery does not show it again)."""
        closable = job.error is not None and recovery(job, job.error, self.dismiss)["dismissable"]
        if kind(job.status) != "cancelled" and not closable:
            raise InvalidParams("Only a cancelled card, or one whose payment expired unsettled, can be dismissed: "
                                "this one has a job to keep.", field="key")
        self.bridge.aio.recovery.closed(job)
        self.forget([job.key])

    def forget(self, keys: Any) -> None:
        """Stop showing these cards, and following their jobs here (``track`` shows one again)."""
        with self._lock:
            for key in keys:
                self.jobs.pop(key, None)
                self._cache.pop(key, None)
                self.dismissed.add(key)
        self._changed()

    def retry(self, job: AsyncJob, confirm_usd: float | None) -> AsyncJob:
        """Pay again for a card's job: at most the amount its Retry button showed (without one, the
        confirmation threshold decides), never reading a local file by path. The new attempt gets
        its own card; the failed one stays, as history."""
        tracker = self.bridge.aio.tracker
        fresh = tracker.new_job(job.route.id, dict(job.params))
        self.bridge.aio.recovery.closed(job)
        tracker.retried.add(job.key)
        self._changed(job)
        self.bridge.call_soon(tracker.changed, job)  # every other widget showing it: its Retry is done
        self.track(fresh)
        for hook in self.on_retried:
            hook(job, fresh)
        self.bridge.spawn(self.pay(fresh, confirm_usd))
        return fresh

    async def pay(self, job: AsyncJob, confirm_usd: float | None, *, local_files: bool = False) -> None:
        """Pay for ``job`` (at most ``confirm_usd``) and poll it to the end; its card says how it went."""
        async def pay_and_poll() -> None:
            await self.bridge.aio.submit(job.route.id, dict(job.params), confirm_usd=confirm_usd, job=job,
                                         local_files=local_files)
            await job.wait()
        await self.guard(pay_and_poll(), job)

    def resume_all(self) -> None:
        """Resume the ledger (``resume()``): answered as soon as it starts, or at once with why there
        is nothing to do; the jobs take their cards as they are found and show live while polled."""
        recovery = self.bridge.aio.recovery
        if not recovery.pending():
            raise InvalidParams("Nothing to resume: every paid job in the ledger has finished.", field="key")
        self.bridge.spawn(self.guard(recovery.resume(self._found)))

    def _found(self, job: AsyncJob) -> None:
        """A job a resume found (or polls again): it takes its card here (a lost answer's card is
        the job itself; a ledger row gives way to the live job)."""
        for hook in self.on_found:
            hook(job)
        if job.key in self.jobs or job.id in self.extra or self.follow_all:
            self.track(job)

    def show_ledger(self, records: dict[str, dict[str, Any]]) -> None:
        """Show past jobs from the ledger beside the live ones. Those last seen running are followed
        like the session's own (a new kernel picks them up by itself); a timed-out or lost one waits
        for its Resume, like a session's job."""
        self.extra = records
        self._changed()
        if records:
            self.bridge.call_soon(self.follow_unfinished, set(records))

    def follow_unfinished(self, shown: set[str]) -> None:
        """Follow the ledger's jobs among ``shown`` (ids) that were running when last seen (on the loop)."""
        for job in self.bridge.aio.recovery.unfinished(running=True):
            if job.id in shown:
                self._found(job)

    async def guard(self, coro: Awaitable[Any], *jobs: AsyncJob) -> Any:
        """Run a background task of this widget (its request was answered already) so that however
        it ends, the cards it is about tell the truth: an error of ours is on its card already (or
        is put there); any other is logged with its traceback and put on the card too, as what
        happened, what it cost and what to do (``AsyncJob.interrupted``). Never a card left running."""
        try:
            return await coro
        except StableStudioError as e:
            for job in jobs:
                if kind(job.status) == "running":
                    job.interrupted(e)
        except Exception as e:
            report(e, "A widget's background task")
            for job in jobs:
                job.interrupted(e)
        return None


Handler = Callable[[dict[str, Any], list], Awaitable[Any] | None]


def _by_key(records: Any) -> dict[Any, Any]:
    return {r.get("key"): r for r in records or ()}


def consented_usd(value: Any) -> float | None:
    """The amount a button consented to, as the front end sent it (a number, or nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        return None
    return float(value)


class Reply(NamedTuple):
    """What a handler may give back beyond "done": fields for the reply and binary buffers."""

    fields: dict[str, Any]
    buffers: list[bytes]


class FeedWidget(anywidget.AnyWidget):
    """A widget whose cards come from a :class:`JobFeed`: requests answered, card actions, its
    static copy (static.py), clean closing, and record lists that travel as what changed, once for
    every widget.

    A synced list of keyed records (``_record_lists``: ``jobs``, Compare's ``cells``) goes to the
    front end in full only when it asks for the whole state (a view opens, the page reloads); after
    that each change is a ``{"type": "records", trait, changed, removed, order}`` message with only
    the records that changed (``order``: the keys, when they moved), which the front end applies to
    its copy of the model (``js/components/records.js``). At 500 cards that is a card's 0.7 KB
    instead of the whole list's 340 KB.
    """

    _feed: JobFeed
    _bridge: Bridge
    _static_id = traitlets.Unicode().tag(sync=True)  # names this widget's static copy: its live view hides it
    _copies: list[Any]
    _static_due: bool = False
    _record_lists: tuple[str, ...] = ()
    _sent: dict[str, dict[Any, Any]]  # per record list: what the front end has, by key

    @traitlets.default("_static_id")
    def _new_static_id(self) -> str:
        return uuid.uuid4().hex[:12]

    # --- how it shows in a notebook: the live widget, then its static copy ----------------------
    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        plain = f"{type(self).__name__} widget: live while its kernel runs; a static copy of its results follows."
        display({**data, "text/plain": plain}, metadata=metadata, raw=True)
        if not hasattr(self, "_copies"):
            self._copies = []
            self._feed.on_flush.append(self._refresh_static)
        self._shown_html = self.static_html()
        self._copies.append(display({"text/html": self._shown_html}, raw=True, display_id=True))

    def static_html(self) -> str:
        return page_html(self._static_id, self._static_heading(), self._static_cards(), self._static_notes())

    def _static_heading(self) -> str:
        return f"StableStudio {type(self).__name__}"

    def _static_cards(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(None, r) for r in getattr(self, "jobs", [])[:STATIC_CARDS]]

    def _static_notes(self) -> list[str]:
        return []

    def _older_note(self) -> list[str]:
        older = len(getattr(self, "jobs", [])) - STATIC_CARDS
        return [f"The newest {STATIC_CARDS} jobs; {older} older ones are in the ledger."] if older > 0 else []

    def _refresh_static(self) -> None:
        """Rewrite the static copy (at most once a second) when what it shows has changed."""
        if not getattr(self, "_copies", None) or self._static_due:
            return
        self._static_due = True
        self._bridge.loop.call_soon_threadsafe(self._bridge.loop.call_later, STATIC_EVERY_S, self._push_static)

    def _push_static(self) -> None:
        """Rewrite the static copy now (if it changed)."""
        self._static_due = False
        page = self.static_html()
        if page != getattr(self, "_shown_html", None):
            self._shown_html = page
            for handle in getattr(self, "_copies", []):
                handle.update({"text/html": page}, raw=True)

    # --- record lists: what changed, not the whole list --------------------------------------
    def open(self) -> None:
        super().open()
        self._sent = {name: _by_key(getattr(self, name)) for name in self._record_lists}

    def send_state(self, key: Any = None) -> None:
        if key is None:  # the whole state (a view asked for it): the lists go in full
            super().send_state()
            self._sent = {name: _by_key(getattr(self, name)) for name in self._record_lists}
            return
        keys = {key} if isinstance(key, str) else set(key)
        if keys - set(self._record_lists):
            super().send_state(keys - set(self._record_lists))
        for name in keys & set(self._record_lists):
            self._send_changes(name)

    def _send_changes(self, name: str) -> None:
        sent = self.__dict__.setdefault("_sent", {})
        before, now = sent.get(name, {}), _by_key(getattr(self, name))
        changed = [r for k, r in now.items() if before.get(k) != r]  # unchanged records are the same objects
        removed = [k for k in before if k not in now]
        order = list(now) if list(now) != [k for k in before if k in now] else None
        sent[name] = now
        if changed or removed or order is not None:
            self.send({"type": "records", "trait": name, "changed": changed, "removed": removed, "order": order})

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """The front end's copy of a record list comes back with its other changes: the kernel's is
        the one that counts."""
        super().set_state({k: v for k, v in sync_data.items() if k not in self._record_lists})

    def _handlers(self) -> dict[str, Handler]:
        """The front end's requests this widget answers, by ``type``; each handler may return an
        awaitable to finish before the reply, and raises to refuse the request."""
        return {"retry": self._card_action, "resume": self._card_action, "dismiss": self._card_action,
                "download": self._card_action}

    def _card_action(self, content: dict[str, Any], _buffers: list) -> Awaitable[Any] | None:
        return self._feed.act(content["type"], content.get("key"), consented_usd(content.get("amount_usd")))

    def _on_msg(self, _widget: Any, content: dict[str, Any], buffers: list) -> None:
        # Front-end messages may arrive on a kernel subshell thread: answer on the client's loop.
        self._bridge.spawn(self._answer(content, buffers))

    async def _answer(self, content: dict[str, Any], buffers: list) -> None:
        """Run the handler for one request and send exactly one reply with its ``request_id``:
        ``ok: true``, or ``ok: false`` with the error's type and message (and field, if any).
        Cards the handler changed are flushed first, so the front end sees them with the reply."""
        reply: dict[str, Any] = {"type": "reply", "request_id": content.get("request_id"), "ok": True}
        out: list[bytes] = []
        try:
            handler = self._handlers().get(content.get("type"))
            if handler is None:
                raise InvalidParams(f"Unknown request {content.get('type')!r}.", field="type")
            result = handler(content, buffers)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, Reply):
                reply.update(result.fields)
                out = result.buffers
        except Exception as e:  # every request is answered, whatever went wrong
            error = {"type": type(e).__name__, "message": str(e)}
            if getattr(e, "field", None):
                error["field"] = e.field
            reply.update(ok=False, error=error)
        self._feed.flush()
        self.send(reply, out or None)

    def close(self) -> None:
        if hasattr(self, "_feed"):  # also when __init__ stopped early on invalid input
            self._feed.close()
            self._bridge.cancel_all()  # a shared job poller survives: waiters hold it through a shield
        super().close()
