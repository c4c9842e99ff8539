"""Prompt × model A/B grids with blind voting.

The total exact cost is shown before anything runs (free quotes); nothing is paid until the user
confirms. In blind mode the front end sees opaque keys, "Model A/B/…" labels in a shuffled order
and job records without model, route, price or parameters until the user reveals them. Votes and
the grid itself are kept in the ledger, so ``Compare.load(id)`` restores both after a restart.
"""

from __future__ import annotations

import asyncio
import random
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import traitlets

from ..errors import BudgetExceeded, InvalidParams, PolicyViolation, StableStudioError, fmt_usd
from ..jobs import AsyncJob
from ..policy import Consent
from ..status import JobStatus
from ._runtime import Bridge, css, esm, report
from .feed import FeedWidget, Handler, JobFeed, consented_usd
from .records import job_record, jsonable, ledger_records, mask_record, readable_comparison, retry_price
from .scoring import Tables

VOTE_CHOICES = ("a", "b", "tie", "both_bad")


@dataclass
class Cell:
    key: str
    prompt_index: int
    model: str
    repeat: int
    route_id: str
    params: dict[str, Any]
    job: AsyncJob | None = None
    job_id: str | None = None
    payment: str | None = None  # signed for it while the service had not named its job (a lost answer)
    record: dict[str, Any] | None = field(default=None, repr=False)  # from the ledger, after a restart


class Compare(Tables, FeedWidget):
    """``Compare(prompts=[...], models=[...], params={...})``: a grid, a total, a Run button, votes."""

    _esm = esm("compare")
    _css = css("compare")
    comparison_id = traitlets.Unicode("").tag(sync=True)
    prompts = traitlets.List(traitlets.Unicode()).tag(sync=True)
    models = traitlets.List(traitlets.Unicode()).tag(sync=True)  # masked while blind
    transpose = traitlets.Bool(False).tag(sync=True)
    blind = traitlets.Bool(True).tag(sync=True)
    revealed = traitlets.Bool(False).tag(sync=True)
    vote_mode = traitlets.Unicode("pairwise").tag(sync=True)
    repeats = traitlets.Int(1).tag(sync=True)
    columns = traitlets.List(traitlets.Dict()).tag(sync=True)
    cells = traitlets.List(traitlets.Dict()).tag(sync=True)
    _record_lists = ("cells",)
    state = traitlets.Unicode("quoting").tag(sync=True)
    quote = traitlets.Dict({"status": "loading", "total_usd": None, "per_cell_usd": {}, "message": ""}).tag(sync=True)
    votes = traitlets.List(traitlets.Dict()).tag(sync=True)
    ratings = traitlets.Dict().tag(sync=True)
    summary = traitlets.List(traitlets.Dict()).tag(sync=True)
    run_error = traitlets.Unicode("").tag(sync=True)  # why run() from code did not start (no reply shows it)

    def __init__(self, prompts: list[str], models: list[str], params: dict[str, Any] | None = None, *,
                 overrides: dict[str, dict[str, Any]] | None = None, repeats: int = 1, blind: bool = True,
                 transpose: bool = False, vote_mode: str = "pairwise", client: Any = None,
                 comparison_id: str | None = None, seed: int | None = None, _restore: dict | None = None):
        if not prompts or not models:
            raise InvalidParams("Compare needs at least one prompt and one model.", field="prompts")
        if vote_mode not in ("pairwise", "rating"):
            raise InvalidParams("vote_mode must be 'pairwise' or 'rating'.", field="vote_mode",
                                allowed=["pairwise", "rating"])
        self._bridge = Bridge.for_client(client)
        aio = self._bridge.aio
        self._spec = {"prompts": list(prompts), "models": list(models), "params": dict(params or {}),
                      "overrides": dict(overrides or {}), "repeats": int(repeats), "blind": blind,
                      "transpose": transpose, "vote_mode": vote_mode}
        self._cells = self._plan(aio)  # validates everything before any request
        order = list(models)
        if blind:
            random.Random(seed).shuffle(order)
        self._order = _restore["order"] if _restore else order
        self._local_files = _restore is None  # a grid restored from the ledger never reads a path it names
        super().__init__(comparison_id=comparison_id or uuid.uuid4().hex[:12], prompts=list(prompts),
                         transpose=transpose, blind=blind, vote_mode=vote_mode, repeats=int(repeats))
        self._feed = JobFeed(self, self._bridge, "_records", mask=lambda _job: self.blind and not self.revealed)
        self._feed.dismiss = False  # a cell keeps its card: Retry, never nothing to press
        self._feed.on_flush.append(self._publish)
        self._feed.on_found.append(self._found)
        self._feed.on_retried.append(self._retried)
        if _restore:
            self._restore(_restore)
        else:
            self._save()
        self._publish()
        self.on_msg(self._on_msg)
        self._quoted: Any = None
        if self.state == "quoting":
            self._quoted = self._bridge.spawn(self._quote_all())

    _records = traitlets.List()  # the feed's output; cells are built from the jobs themselves

    # --- plan and quote -------------------------------------------------------------------------
    def _plan(self, aio: Any) -> list[Cell]:
        spec, cells = self._spec, []
        for m in spec["models"]:
            route = aio.catalog.generate_route(m)
            shared = {k: v for k, v in spec["params"].items() if k in route.params}
            for i, prompt in enumerate(spec["prompts"]):
                params = route.validate({**shared, **spec["overrides"].get(m, {}), "prompt": prompt}, uploadable=True)
                for r in range(spec["repeats"]):
                    cells.append(Cell(uuid.uuid4().hex[:10], i, m, r, route.id, params))  # opaque
        return cells

    async def _quote_all(self) -> None:
        aio = self._bridge.aio
        try:
            quotes = await aio.quote_many([(c.route_id, c.params) for c in self._cells])
        except Exception as e:  # no request waits for the quotes: the total's place says why
            self.quote = {"status": "error", "total_usd": None, "per_cell_usd": {}, "message": report(e, "Quotes")}
            return
        per_cell = {c.key: q.total_usd for c, q in zip(self._cells, quotes, strict=True)}
        total = round(sum(per_cell.values()), 6)
        remaining = aio.spending.remaining_usd
        message = f"{len(self._cells)} generations for {fmt_usd(total)} (exact prices from the service)"
        if remaining is not None and total > remaining + 1e-9:
            message += f" — more than the {fmt_usd(remaining)} left in your budget"
        self.quote = {"status": "ok", "total_usd": total,
                      "per_cell_usd": per_cell if not self.blind else {}, "message": message}
        self._per_cell = per_cell
        self.state = "ready"

    @property
    def total_usd(self) -> float | None:
        return self.quote.get("total_usd")

    # --- run ----------------------------------------------------------------------------------
    def run(self, *, confirm: bool = False, confirm_usd: float | None = None) -> Compare:
        """Pay for and run every cell concurrently. Above the confirmation threshold the total needs
        consent: ``confirm=True`` agrees to the quoted total, ``confirm_usd`` to at most that much
        (the Run button sends the total it showed); each cell then pays at most its own quote. A
        refusal (a price not agreed to, over the budget, already run) is shown in the widget; when
        the quotes are in it is known before anything is paid and raised here, else by :meth:`wait`
        (which also raises a cell's own refusal, shown on its card)."""
        if self.state != "quoting":
            self._shown(self._check, confirm, confirm_usd)
        self._ran = self._bridge.spawn(self._run(confirm, confirm_usd))
        return self

    _ran: Any = None

    def wait(self, timeout: float = 600) -> Compare:
        """Block until every cell has finished (call from notebook code, not from the client's loop)."""
        future = self._ran
        if future is None:
            raise RuntimeError("Nothing is running: call run() or press Run first.")
        future.result(timeout)
        return self

    async def _run(self, confirm: bool, confirm_usd: float | None) -> None:
        if self._quoted is not None:
            await asyncio.wrap_future(self._quoted)
        self._shown(self._start, confirm, confirm_usd)
        await self._run_cells()
        self._shown(self._refused)

    def _shown(self, check: Callable[..., None], *args: Any) -> None:
        """Run ``check``; a refusal from code (no button waits for its reply) is shown in the widget too."""
        try:
            check(*args)
        except StableStudioError as e:
            self.run_error = str(e)
            raise

    def _start(self, confirm: bool, confirm_usd: float | None) -> None:
        """On the client's loop, with the quotes in: the last check, then the grid is running."""
        self._check(confirm, confirm_usd)
        self.run_error = ""
        self.state = "running"
        self._save()  # before any cell signs: a restart knows the grid ran, even if no cell's payment was saved

    def _refused(self) -> None:
        """A cell refused before paying (its own price above a limit, a new payee) is on its card;
        run() from code hears of it too, from wait()."""
        for c in self._cells:
            if c.job is not None and c.job.id is None and isinstance(c.job.error, (PolicyViolation, BudgetExceeded)):
                raise c.job.error

    def _check(self, confirm: bool, confirm_usd: float | None) -> None:
        """Refuse to run (nothing signed) unless the exact total is known, consented to and within the budget."""
        if self.state != "ready":
            why = self.quote.get("message") if self.state == "quoting" else f"it is {self.state} already"
            raise InvalidParams(f"This comparison cannot run: {why}.", field="state")
        aio = self._bridge.aio
        total = round((self.total_usd or 0.0) * 1e6)
        Consent.given(confirm, confirm_usd, total, None).check(
            total, aio.policy.confirm_above_usd, "This comparison", "Press Run, or call run(confirm=True),")
        remaining = aio.spending.remaining_usd
        if remaining is not None and (self.total_usd or 0) > remaining + 1e-9:
            raise BudgetExceeded(f"This comparison costs {fmt_usd(self.total_usd or 0)} but only {fmt_usd(remaining)} "
                                 "of the session budget is left. Nothing was signed.",
                                 price_usd=self.total_usd or 0, limit_usd=aio.policy.budget_usd or 0,
                                 limit="budget_usd")

    async def _run_cells(self) -> None:
        pay = self._feed.pay  # the user agreed to the total: each cell to its own quote, no more
        try:
            await asyncio.gather(*(pay(self._new_job(c), self._per_cell[c.key], local_files=self._local_files)
                                   for c in self._cells))
        finally:
            self.state = "done"
            self._save()

    def _new_job(self, cell: Cell) -> AsyncJob:
        job = self._bridge.aio.tracker.new_job(cell.route_id, dict(cell.params))
        self._link(cell, job)
        return job

    def _link(self, cell: Cell, job: AsyncJob) -> None:
        if job.id is None and job.payment is None:  # its payment will name the cell: a restart finds it
            job.ref = f"{self.comparison_id}/{cell.key}"
        cell.job, cell.record = job, None
        self._feed.track(job)

    def _found(self, job: AsyncJob) -> None:
        """A job a resume found, or one a restored grid follows: it takes its cell."""
        for cell in self._cells:
            if cell.job is None and cell.job_id == job.id:
                self._link(cell, job)

    def _retried(self, old: AsyncJob, fresh: AsyncJob) -> None:
        for cell in self._cells:
            if cell.job is old:
                self._link(cell, fresh)

    def retry(self, key: str, confirm_usd: float | None = None) -> None:
        """Run one failed cell again: a new payment of at most ``confirm_usd`` (without it, the
        cell's quote). A cell whose job was paid (lost, unfinished, an answer that never came) is
        looked for or polled again instead: never paid twice."""
        self._card("retry", key, confirm_usd)

    def _card(self, kind: str, key: str, confirm_usd: float | None = None) -> Awaitable[Any] | None:
        """Retry or resume a cell on the path of every job card (``JobFeed.act``). A blind card shows
        no price: its Retry consents to the cell's quote."""
        cell = self._cell(key)
        job = cell.job
        if confirm_usd is None:  # the cell's quote, or (a restored grid) the price its job was last asked
            confirm_usd = getattr(self, "_per_cell", {}).get(cell.key) or (job and retry_price(job, job.error))
        if job is not None:
            return self._feed.act(kind, job.key, confirm_usd)
        record = cell.record or {}
        if not record:
            raise InvalidParams(f"Cell {key} has not run yet: Run pays for every cell.", field="key")
        if kind == "resume" and (record.get("error") or {}).get("resumable"):
            return self._feed.resume_all()  # restored from the ledger, unfinished: its job takes the cell
        if kind == "retry" and record.get("status") == JobStatus.FAILED:
            self._bridge.spawn(self._feed.pay(self._new_job(cell), confirm_usd))
            return None
        raise InvalidParams(f"Cell {key} is {record.get('status')}: nothing to {kind}.", field="key")

    # --- votes --------------------------------------------------------------------------------
    def vote(self, prompt_index: int, a: str, b: str, choice: str) -> None:
        """Record a pairwise vote between two cells of the same prompt."""
        self._still_blind()
        if choice not in VOTE_CHOICES:
            raise InvalidParams(f"choice must be one of {', '.join(VOTE_CHOICES)}.", field="choice",
                                allowed=list(VOTE_CHOICES))
        ca, cb = self._cell(a), self._cell(b)
        if ca.prompt_index != prompt_index or cb.prompt_index != prompt_index or a == b:
            raise InvalidParams("A pairwise vote compares two different cells of the same prompt.", field="a")
        self._bridge.aio.ledger.record_vote(self.comparison_id, prompt_index=prompt_index, a=a, b=b, choice=choice)
        self.votes = [*self.votes, {"prompt_index": prompt_index, "a": a, "b": b, "choice": choice}]
        self._refresh_summary()

    def rate(self, key: str, rating: int) -> None:
        """Record a 1–5 rating of one cell."""
        self._still_blind()
        if not isinstance(rating, int) or not 1 <= rating <= 5:
            raise InvalidParams("A rating is a whole number from 1 to 5.", field="rating", allowed=[1, 2, 3, 4, 5])
        cell = self._cell(key)
        self._bridge.aio.ledger.record_vote(self.comparison_id, job_id=cell.key, rating=rating)
        self.ratings = {**self.ratings, key: rating}
        self._refresh_summary()

    def _still_blind(self) -> None:
        if self.blind and self.revealed:
            raise InvalidParams("The models of this blind comparison were revealed: further votes would not be "
                                "blind, so they are not recorded. Start a new Compare to vote again.", field="vote")

    def reveal(self) -> None:
        """Show the model names (after voting, in blind mode)."""
        self.revealed = True
        self._save()
        self._feed._changed()
        self._publish()

    def _cell(self, key: str) -> Cell:
        for c in self._cells:
            if c.key == key:
                return c
        raise InvalidParams(f"No cell {key!r} in this comparison.", field="key")

    # --- results: rows, DataFrames and CSV (scoring.Tables) ---------------------------------------
    def _refresh_summary(self) -> None:
        self.summary = self.summary_rows() if (self.revealed or not self.blind) else []

    # --- front end ----------------------------------------------------------------------------
    def _letter(self, model: str) -> str:
        return f"Model {string.ascii_uppercase[self._order.index(model)]}"

    def _label(self, model: str) -> str:
        """"Model A" while blind; after the reveal the letter stays beside the name, so the votes
        given to a letter read as votes for that model."""
        name = self._bridge.aio.catalog.generate_route(model).label
        if not self.blind:
            return name
        return self._letter(model) if not self.revealed else f"{self._letter(model)[6:]} · {name}"

    def _record(self, cell: Cell) -> dict[str, Any]:
        if cell.job is not None:
            return job_record(cell.job)
        return cell.record or {}

    def _publish(self) -> None:
        masked = self.blind and not self.revealed
        by_job = {r["key"]: r for r in self._records}
        cols = self._order if self.blind else self._spec["models"]
        cells = []
        for c in self._cells:
            rec = by_job.get(c.job.key) if c.job else (mask_record(c.record) if masked and c.record else c.record)
            col, row = cols.index(c.model), c.prompt_index
            if self.transpose:
                col, row = row, col
            cells.append({"key": c.key, "row": row, "col": col, "prompt_index": c.prompt_index, "repeat": c.repeat,
                          "label": self._label(c.model), "job": rec})
        with self.hold_sync():
            self.models = [self._label(m) for m in cols]
            self.columns = ([{"col": i, "label": p} for i, p in enumerate(self._spec["prompts"])] if self.transpose
                            else [{"col": i, "label": self._label(m)} for i, m in enumerate(cols)])
            self.cells = cells
            if not masked and getattr(self, "_per_cell", None) and self.quote.get("status") == "ok":
                self.quote = {**self.quote, "per_cell_usd": self._per_cell}
            self._refresh_summary()
        if self._links() != getattr(self, "_saved", None):
            self._save()  # a cell's job got its id (paid, found, retried) or its payment: a restart restores it
        self._refresh_static()

    def _links(self) -> list[tuple[str | None, str | None]]:
        """Each cell's job id and the payment signed for it before the service named the job."""
        return [(c.job.id, c.job.payment and c.job.payment[0]) if c.job else (c.job_id, c.payment) for c in self._cells]

    def _static_cards(self) -> list[tuple[str | None, dict[str, Any]]]:
        """The cells as the front end has them (masked while blind), each titled by its column label."""
        prompts = self._spec["prompts"]
        return [(f"{c['label']} — prompt {c['prompt_index'] + 1}", c["job"] or {"prompt": prompts[c["prompt_index"]],
                                                                              "status": "not run"})
                for c in sorted(self.cells, key=lambda c: (c["row"], c["col"]))]

    def _static_notes(self) -> list[str]:
        total = self.quote.get("total_usd")
        notes = [f"{len(self._cells)} generations" + (f" for {fmt_usd(total)}" if total is not None else "")
                 + (" · blind" if self.blind and not self.revealed else "")]
        notes += [f"{r['label']}: {r['wins']} wins, {r['ties']} ties, {r['votes']} votes" for r in self.summary]
        return notes

    def _handlers(self) -> dict[str, Handler]:
        """The front end's requests (answered by FeedWidget._answer); ``key`` is a cell key."""
        return {
            "run": lambda c, _b: self._request_run(consented_usd(c.get("total_usd"))),
            "retry": lambda c, _b: self._card("retry", str(c.get("key")), consented_usd(c.get("amount_usd"))),
            "resume": lambda c, _b: self._card("resume", str(c.get("key"))),
            "vote": lambda c, _b: self.vote(int(c["prompt_index"]), str(c["a"]), str(c["b"]), str(c["choice"])),
            "rate": lambda c, _b: self.rate(str(c["key"]), int(c["rating"])),
            "reveal": lambda _c, _b: self.reveal(),
            "download": lambda c, _b: self._feed.act("download", getattr(self._cell(str(c["key"])).job, "key", None)),
        }

    async def _request_run(self, confirm_usd: float | None) -> None:
        """The Run button, consenting to the total it showed: answered once the cells start (or
        with why not, beside the button); they go on paying and polling."""
        if self._quoted is not None:
            await asyncio.wrap_future(self._quoted)
        self._start(False, confirm_usd)
        self._ran = self._bridge.spawn(self._run_cells())

    # --- persistence -----------------------------------------------------------------------------
    def _save(self) -> None:
        self._saved = self._links()
        cells = [{"key": c.key, "prompt_index": c.prompt_index, "model": c.model, "repeat": c.repeat,
                  "route_id": c.route_id, "job_id": job_id, "payment": payment}
                 for c, (job_id, payment) in zip(self._cells, self._saved, strict=True)]
        spec = {**self._spec, "params": jsonable(self._spec["params"]), "order": self._order,
                "revealed": self.revealed, "state": self.state, "saved_at": time.time()}
        self._bridge.aio.ledger.save_comparison(self.comparison_id, spec, cells)

    @classmethod
    def load(cls, comparison_id: str, client: Any = None) -> Compare:
        """Restore a comparison (grid, results and votes) from the ledger, e.g. after a kernel restart."""
        bridge = Bridge.for_client(client)
        saved = readable_comparison(bridge.aio.ledger.comparison(comparison_id), comparison_id, bridge.aio.ledger.path)
        spec = saved["spec"]
        return cls(spec["prompts"], spec["models"], spec["params"], overrides=spec["overrides"],
                   repeats=spec["repeats"], blind=spec["blind"], transpose=spec["transpose"],
                   vote_mode=spec["vote_mode"], client=client, comparison_id=comparison_id,
                   _restore={**saved, "order": spec["order"]})

    def _restore(self, saved: dict[str, Any]) -> None:
        aio = self._bridge.aio
        ledger = aio.ledger
        records = ledger_records(ledger, aio.catalog, aio.base_url, limit=10_000)
        for cell, stored in zip(self._cells, saved["cells"], strict=True):
            paid = ledger.payment(stored["payment"]) if stored.get("payment") else None
            cell.key, cell.payment = stored["key"], stored.get("payment")
            cell.job_id = stored["job_id"] or (paid or {}).get("job_id")  # a lost answer another resume found
            cell.record = records.get(cell.job_id) if cell.job_id else None
            lost = paid and not cell.job_id and aio.recovery.lost_answer(paid, cell.route_id, cell.params)
            if lost:  # what is known of its payment: Resume while it may be paid, Retry once it expired unsettled
                self._link(cell, lost)
                self._feed.lost(lost)
        votes, ratings = [], {}
        for v in ledger.votes(self.comparison_id):
            if v["rating"] is not None:
                ratings[v["job_id"]] = v["rating"]
            else:
                votes.append({"prompt_index": v["prompt_index"], "a": v["a"], "b": v["b"], "choice": v["choice"]})
        self.votes, self.ratings = votes, ratings
        self.revealed = saved["spec"].get("revealed", False)
        ran = saved["spec"].get("state") in ("running", "done") or any(c.job_id or c.job for c in self._cells)
        lost = aio.recovery.lost_answers() if ran else []
        for cell in [c for c in self._cells if not (c.job_id or c.job)] if ran else ():  # never a cell with no action
            self._link(cell, aio.recovery.no_job(cell.route_id, cell.params, saved["created_at"],
                                                 {c.job.key for c in self._cells if c.job},
                                                 ref=f"{self.comparison_id}/{cell.key}", lost=lost))
            self._feed.lost(cell.job)
        self.state = "done" if ran else "quoting"
        # Cells whose job was running when the grid was saved are followed like the session's jobs.
        self._bridge.call_soon(self._feed.follow_unfinished, {c.job_id for c in self._cells if c.job_id})

