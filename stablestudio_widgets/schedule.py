"""When to poll a job: soon after it is likely done, without hammering an unreliable service.

A job's finish is uncertain, so each job's :class:`PollPlan` keeps a belief about it: a
log-normal around the best estimate at hand. Best first, that is what the service says now (a
``Retry-After`` on a running job, or its ``progress``: two readings give its rate), how long
this user's finished jobs of the same route and price-setting parameters took (learned, kept in
the ledger), or the route table's typical time. Polls go where the belief says completion is
likely: the poll density at time t is sqrt(h(t) / 2λ), h being the belief's hazard rate, which
balances the wait for a result against the cost of a poll. λ is set so a job needs fewer polls
than the service's own advice (images every 3 s, videos every 10 s) would spend on it. Every
delay is jittered, so jobs submitted together do not poll together; a job that outlives its
belief is polled at the service's interval, backing off to it from a brisk start.

Everything from the service is bounded before it is used: progress must be a number in 0..100,
``Retry-After`` is capped by the route's timeout, learned durations by the route's range.
"""

from __future__ import annotations

import functools
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

from .boundary import finite_number
from .catalog import Route

ROUTE_SPREAD = 0.35  # how far a job strays from the route table's typical time (log-normal sigma)
JOB_SPREAD = 0.25  # how far one job strays from this user's usual time for its kind (until measured)
MIN_SPREAD, MAX_SPREAD = 0.05, 0.8
POLL_BUDGET = 0.9  # share of the polls the service's fixed interval would spend on a job
# Polls a job still running at the first look costs after it, when the service reports progress:
# a reading through a learned map tells the finish (one more poll, sometimes two); without, a guess.
LATER_POLLS, LATER_POLLS_MAPPED = 1.4, 1.1
LAST_LOOK_Q = 0.93  # the one look a budget has left comes when the job is this likely done
TAIL = 0.03  # storing the output after the work is done takes about 3% of the job
JITTER = 0.03  # each delay is stretched or shrunk by up to 3%: enough to part jobs paid together
OVERDUE_Q = 0.995  # past this quantile of the belief a job is overdue: poll at the service's interval
LEARNED = 20  # recent durations that shape the belief
_STANDARD = statistics.NormalDist()
MIN_SCATTER = 0.002  # a learned progress map is never trusted closer than 0.2% of the run
ROUGH = 0.02  # an estimate from progress without a learned map is never trusted closer than 2%
ROUGH_BOUND = 0.1  # ... and a wider one only bounds the finish
MIN_PROGRESS_SPAN = 0.25  # a learned map's 0-99% covers at least this share of a run
SLOPE_PRIOR = 100.0  # how hard a progress map's slope leans to 1%/percent (as one point 10 percent off the mean)


@dataclass(frozen=True)
class ProgressMap:
    """Where in its run a job is when the service says ``p`` percent, learned from this user's
    finished jobs of the route: the share of the run gone is about ``start + per * p`` (a line
    fitted to what their readings said, whatever the service counts as 0 and 100), give or take
    ``scatter``. With it one reading tells the finish."""

    start: float
    per: float
    scatter: float

    @classmethod
    def fit(cls, points: Sequence[Any]) -> ProgressMap | None:
        """The line through (percent, share) points of earlier jobs; None when they cannot carry one.
        Its slope leans towards 1% of the run per percent until the points span enough of the range."""
        pts = [(p, s) for s, p in _pairs(points) if 0 < s <= 1 and 0 < p < 99]
        if len(pts) < 4:
            return None
        mp, ms = statistics.fmean(p for p, _ in pts), statistics.fmean(s for _, s in pts)
        sxx = sum((p - mp) ** 2 for p, _ in pts)
        per = (sum((p - mp) * (s - ms) for p, s in pts) + SLOPE_PRIOR * 0.01) / (sxx + SLOPE_PRIOR)
        start = ms - per * mp
        # A map must be one a run can have: progress moving through at least a quarter of it (a "map"
        # that puts every reading at the very end, as a tampered ledger could, would poll at the
        # shortest stride from the first look on).
        if not (per * 99 >= MIN_PROGRESS_SPAN and 0 <= start < 1 and start + per * 99 <= 1.05):
            return None
        scatter = math.sqrt(sum((s - start - per * p) ** 2 for p, s in pts) / (len(pts) - 2))
        return cls(start, per, max(scatter, MIN_SCATTER))

    def finish(self, t: float, p: float) -> Belief:
        """When a job read at ``p`` percent at ``t`` finishes."""
        share = min(self.start + self.per * p, 0.999)
        return Belief(t / share, self.scatter / share, "progress")

    def finishing(self, t: float) -> float:
        """The latest a job first seen finishing (99%) at ``t`` can finish."""
        return t / min(max(self.start + self.per * 99 - 2 * self.scatter, 0.5), 0.999)


class History(NamedTuple):
    """What a job's plan starts from: how long this user's recent jobs of its kind ran, the progress
    readings of the route's recent jobs (see :meth:`PollPlan.shape`), and whether the service
    reports progress at all."""

    runs: list[float]
    shapes: list[Any]
    reports_progress: bool


@dataclass(frozen=True)
class Belief:
    """Where a job's finish is expected: ``median_s`` after submission, ``spread`` its log-sigma."""

    median_s: float
    spread: float
    source: str  # route | learned | progress | server

    def z(self, t: float) -> float:
        return math.log(max(t, 1e-9) / self.median_s) / self.spread

    def quantile(self, q: float) -> float:
        return self.median_s * math.exp(self.spread * _STANDARD.inv_cdf(q))

    def hazard(self, t: float) -> float:
        """Chance per second of finishing at ``t``, given it has not finished before."""
        z = self.z(t)
        if z > 8:  # the survival function underflows; its Mills-ratio limit is exact enough here
            return z / (self.spread * max(t, 1e-9))
        pdf = math.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * self.spread * max(t, 1e-9))
        return pdf / max(0.5 * math.erfc(z / math.sqrt(2)), 1e-300)


def combine(a: Belief, b: Belief, floor: float = MIN_SCATTER) -> Belief:
    """Two independent estimates of one finish, weighted by their precision (in log space)."""
    wa, wb = a.spread**-2, b.spread**-2
    mu = (wa * math.log(a.median_s) + wb * math.log(b.median_s)) / (wa + wb)
    return Belief(math.exp(mu), max((wa + wb) ** -0.5, floor), b.source)


def prior(route: Route, learned: Sequence[float] = ()) -> Belief:
    """The belief before the job says anything: this user's recent durations for the same kind of
    job when there are any, else the route table's typical time."""
    lo, hi = route.typical_s / 20, route.poll_timeout_s
    runs = [min(max(float(r), lo), hi) for r in learned[-LEARNED:] if isinstance(r, (int, float)) and r > 0]
    if not runs:
        return Belief(route.typical_s, _route_spread(route), "route")
    logs = [math.log(r) for r in runs]
    centre = sum(logs) / len(logs)  # (not statistics.stdev: exact fractions, a tenth of a ms per job)
    job = JOB_SPREAD if len(runs) < 3 else math.sqrt(sum((x - centre) ** 2 for x in logs) / (len(logs) - 1))
    job = min(max(job, MIN_SPREAD), MAX_SPREAD)
    # The spread of one job plus the doubt about the centre itself (less with every measurement).
    return Belief(math.exp(centre), math.sqrt(job**2 + job**2 / len(runs)), "learned")


def _route_spread(route: Route) -> float:
    if route.typical_range_s:  # "1-3 min": about ±2 sigma
        lo, hi = route.typical_range_s
        return max(ROUTE_SPREAD, math.log(hi / lo) / 4)
    return ROUTE_SPREAD


class PollPlan:
    """One job's polls. Ages and delays are real seconds since the job was paid for (the plan
    converts with the client's ``scale``, so a scaled sandbox polls on the same schedule)."""

    def __init__(self, route: Route, scale: float = 1.0, learned: Sequence[float] = (), *,
                 shapes: Sequence[Any] = (), progress_expected: bool = False, rng: random.Random | None = None):
        self.route, self.scale = route, max(scale, 1e-6)
        self.start = prior(route, learned)
        recent = [shape for shape in shapes[-LEARNED:] if isinstance(shape, (list, tuple))]
        self.map = ProgressMap.fit([pt for shape in recent for pt in shape[:8]])  # (ours hold 3 points each)
        self.belief = self.start
        interval = route.poll_interval_s
        self._gap = max(min(0.03 * self.start.median_s, 0.1 * interval), 0.05)  # the shortest stride
        self._interval = interval
        self._fixed = fixed = _fixed_polls(self.start, interval)
        # A service that reports progress tells us the finish at the first look: look as early as the
        # poll budget allows, so as many jobs as it can pay for are still running then.
        later = LATER_POLLS_MAPPED if self.map is not None else LATER_POLLS
        self._first_q = min(max(1 - (POLL_BUDGET * fixed - 1) / later, 0.001), 0.9) if progress_expected else None
        self._rng = rng or random.Random()
        self._readings: list[tuple[float, float]] = []
        self._pending_at: float | None = None
        self._finishing_at: float | None = None  # when progress first read 99
        self._not_before = 0.0  # a server's Retry-After, as an age
        self._overdue_stride = 0.0
        self._first = True
        self.polls = 0

    # --- what the service says ------------------------------------------------------------------
    def observe(self, age: float, status: str, progress: Any = None, retry_after: float | None = None) -> None:
        """A poll at ``age`` found the job still running (``status``, maybe ``progress`` 0-100)."""
        t = age / self.scale
        if status == "pending":
            self._pending_at = t
        if retry_after is not None:  # the server says when to come back: believe it, and wait that long
            wait = min(max(retry_after / self.scale, 0.0), self.route.poll_timeout_s)
            self._not_before = t + wait
            self.belief = Belief(max(t + wait, t + self._gap), 0.1, "server")
            return
        p = finite_number(progress)  # a reading as the service sent it
        if p is None or not 0 < p < 100:
            return
        if p >= 99:  # the work is done and the output is being finished: the rate says nothing more
            self._finishing_at = t if self._finishing_at is None else self._finishing_at
        elif not self._readings or (p > self._readings[-1][1] and t > self._readings[-1][0]):
            self._readings.append((t, p))  # a stall or a rewind says nothing about the rate
        self.belief = combine(self.start, self._from_progress(t), MIN_SCATTER if self.map else ROUGH)

    def _from_progress(self, t: float) -> Belief:
        """When the job should finish, from its progress. With a learned map: from its latest
        reading (and, once it is finishing, no later than the map allows). Without: two readings
        give the work's rate; one reading only bounds it (the work began at the latest when the job
        was last seen pending, so it ends by the time that rate would take), and a little is added to
        store the output."""
        if self.map is not None:
            if self._finishing_at is None:
                return self.map.finish(*self._readings[-1])
            # Finishing: done by the latest the map allows. Look then (rather than twice inside it).
            latest = self.map.finishing(self._finishing_at)
            window = Belief(latest, max(math.log(latest / t) / 4, MIN_SCATTER), "progress")
            read = self.map.finish(*self._readings[-1]) if self._readings else window
            return min(window, read, key=lambda b: b.spread)
        if not self._readings:  # only ever seen finishing
            return Belief(t * (1 + TAIL), 0.05, "progress")
        (a1, p1), (a2, p2) = self._readings[0], self._readings[-1]
        if self._finishing_at is not None or p2 - p1 >= 5:
            work = a2 + (100 - p2) * (a2 - a1) / (p2 - p1) if p2 - p1 >= 5 else self._finishing_at
            work = max(work, self._finishing_at or 0.0)
            return Belief(max(work * (1 + TAIL), t + self._gap), 0.1 * (1 - p2 / 100) + 0.03, "progress")
        began = min(self._pending_at or 0.0, a2)
        latest = max((began + (a2 - began) * 100 / p2) * (1 + TAIL), t + self._gap)
        return Belief(math.sqrt(t * latest), math.log(latest / t) / 4 + 0.03, "progress")

    # --- when to look next ----------------------------------------------------------------------
    def next_delay(self, age: float) -> float:
        """Real seconds from ``age`` to the next poll."""
        t = age / self.scale
        if t < self._not_before:
            return (self._not_before - t) * self.scale
        b = self.belief
        if t >= b.quantile(OVERDUE_Q):  # later than believed: brisk at first, then the service's interval
            self._overdue_stride = min(max(self._overdue_stride * 1.6, self._gap), self._interval)
            stride = self._overdue_stride
        elif self._first and self._first_q is not None:
            stride = max(b.quantile(self._first_q) - t, self._gap)
        else:
            self._overdue_stride = 0.0
            lam = self._lam  # (a job done at its first look never needs it)
            left, told = POLL_BUDGET * self._fixed - self.polls, b.source in ("progress", "server")
            u = _cdf(b, t)
            if told and left < 2 and (self.map is not None or self._fixed < 4):
                # The service narrowed it down and the budget has one look left: make it count (without a
                # map only on a short job's budget: a long one can afford to look again after a rough guess).
                stride = max(b.quantile(u + LAST_LOOK_Q * (1 - u)) - t, self._gap)
            else:
                if told:  # spend what is left of the budget around the service's estimate
                    lam = min(lam, b.spread * b.median_s / (2 * max(left, 1.0) ** 2))
                stride = _stride(b, t, lam, self._gap, self._interval)
                if told and self.map is None and b.spread > ROUGH_BOUND:  # one reading bounds it: look again
                    # halfway to its estimate, and two readings give the rate
                    stride = min(stride, max(0.5 * (b.median_s - t), self._gap))
        self._first = False
        self.polls += 1
        return stride * (1 + JITTER * (2 * self._rng.random() - 1)) * self.scale

    @functools.cached_property
    def _lam(self) -> float:
        """The poll cost that spends the budget on the starting belief (made when first needed)."""
        return _calibrate(self.start, self._interval, self._gap)

    # --- what a finished job teaches ------------------------------------------------------------
    @property
    def saw_progress(self) -> bool:
        return bool(self._readings) or self._finishing_at is not None

    def shape(self, run_s: float | None) -> list[list[float]]:
        """This job's progress readings as [share of its run, percent] (the first, a middle one and
        the last): what teaches the next jobs of the route where a reading puts them."""
        if not run_s or not self._readings:
            return []
        picks = {0, len(self._readings) // 2, len(self._readings) - 1}
        return [[round(self._readings[i][0] / run_s, 4), self._readings[i][1]] for i in sorted(picks)]

    def duration(self, last_running_age: float, done_age: float, data: dict[str, Any]) -> float | None:
        """How long the finished job ran, in the service's seconds: the service's own timestamps when
        they agree with what we saw, else the middle of the window in which it finished (None when
        that window is too wide to teach anything: the job was done long before we looked)."""
        low, high = last_running_age / self.scale, done_age / self.scale
        told = _span(data.get("createdAt"), data.get("updatedAt"))
        slack = 1.0 / self.scale  # clocks and the answer's own trip
        if told is not None and low - slack <= told / self.scale <= high + slack:
            return max(told / self.scale, 0.0)
        return (low + high) / 2 if high - low <= 0.25 * high else None


def _stride(b: Belief, t: float, lam: float, gap: float, interval: float) -> float:
    """Walk forward from ``t`` until one poll's worth of density, sqrt(h / 2λ), has accumulated."""
    start = max(t, b.quantile(1e-4))  # before that nothing is likely: nothing to accumulate
    x, acc = start, 0.0
    cap = max(3 * b.median_s, 2 * interval)
    while x - t < cap:
        rate = math.sqrt(b.hazard(x) / (2 * lam))  # polls per second here
        step = min(max(0.25 / max(rate, 1e-9), gap / 4), interval, 0.25 * b.spread * x)  # never over a narrow belief
        if acc + rate * step >= 1.0:
            return max(x - t + (1.0 - acc) / max(rate, 1e-9), gap)
        acc += rate * step
        x += step
    return cap


def _bucket(b: Belief) -> tuple[float, float]:
    """Beliefs within 15% of median and 0.1 of spread share a calibration (it changes slowly with them)."""
    return math.exp(round(math.log(b.median_s) / 0.15) * 0.15), max(round(b.spread, 1), MIN_SPREAD)


def _fixed_polls(b: Belief, interval: float) -> float:
    return _fixed_polls_cached(*_bucket(b), interval)


@functools.lru_cache(maxsize=256)
def _fixed_polls_cached(median_s: float, spread: float, interval: float) -> float:
    """Expected polls of the service's fixed interval on a job finishing as the belief says."""
    return _expected_polls(Belief(median_s, spread, ""), lambda t: (math.floor(t / interval) + 1) * interval)


def _calibrate(b: Belief, interval: float, gap: float) -> float:
    return _calibrate_cached(*_bucket(b), interval, round(gap, 2))


@functools.lru_cache(maxsize=256)
def _calibrate_cached(median_s: float, spread: float, interval: float, gap: float) -> float:
    """The poll cost λ at which the plan, on this belief alone, expects POLL_BUDGET times the polls of
    the service's fixed interval (bisection; cached: jobs of a kind share a belief)."""
    b, fixed = Belief(median_s, spread, ""), _fixed_polls_cached(median_s, spread, interval)
    lo, hi = 1e-4 * median_s, 10.0 * median_s
    for _ in range(8):  # λ within 5%: plenty
        lam = math.sqrt(lo * hi)
        polls = _expected_polls(b, lambda t, lam=lam: t + _stride(b, t, lam, gap, interval))
        lo, hi = (lam, hi) if polls > POLL_BUDGET * fixed else (lo, lam)
    return math.sqrt(lo * hi)


def _expected_polls(b: Belief, next_poll: Any) -> float:
    """Expected polls for a job finishing as ``b`` believes, polled at ``next_poll(t)`` after ``t``:
    a poll happens while the job is not done yet."""
    polls, t, k = 0.0, 0.0, 0
    while _cdf(b, t) < 0.999 and k < 200:
        polls += 1 - _cdf(b, t)
        t, k = next_poll(t), k + 1
    return polls


def _cdf(b: Belief, t: float) -> float:
    return 0.5 * math.erfc(-b.z(t) / math.sqrt(2)) if t > 0 else 0.0


def _pairs(points: Any) -> list[tuple[float, float]]:
    """Two-number pairs out of whatever the ledger held (anything else is dropped)."""
    out = []
    for pt in points if isinstance(points, (list, tuple)) else ():
        if isinstance(pt, (list, tuple)) and len(pt) == 2:
            a, b = (finite_number(v) for v in pt)
            if a is not None and b is not None:
                out.append((a, b))
    return out



def _span(created: Any, updated: Any) -> float | None:
    """Seconds between two ISO 8601 timestamps of the service, or None if either is not one."""
    try:
        a, b = (datetime.fromisoformat(str(v).replace("Z", "+00:00")) for v in (created, updated))
        return (b - a).total_seconds()
    except (TypeError, ValueError):
        return None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
