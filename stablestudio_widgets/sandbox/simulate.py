"""The sandbox's jobs on a virtual clock: a poll plan (or the service's fixed interval) polling jobs
whose durations are drawn as the sandbox draws them and whose answers are the sandbox's own
(:meth:`Job.view`), with no HTTP and no waiting.

This measures a schedule alone, apart from the machine it runs on: ``bench/bench_polling.py``
prints it beside the same jobs over real HTTP, and ``tests/test_schedule.py`` holds the plan to it.
``latency`` (the service's seconds) delays every poll's arrival, as a busy client or network does.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass

from ..catalog import Route
from ..schedule import LEARNED, PollPlan
from .jobs import MAX_Z, Job, Timing, draw_duration_s


@dataclass(frozen=True)
class Polled:
    """One job as a policy saw it: how long after it completed the policy saw it, and its polls."""

    duration: float
    delay: float
    polls: int


def required_params(route: Route) -> dict:
    """What a route needs besides a prompt: each required choice's default, or its first value."""
    return {n: p.default if p.default is not None else p.values[0]
            for n, p in route.params.items() if p.required and p.type == "enum"}


def poll_with_plan(plan: PollPlan, job: Job, progress: bool, latency: float = 0.0) -> tuple[Polled, float | None]:
    """Poll ``job`` (created at 0) with ``plan`` until complete, as ``AsyncJob.wait()`` does (a poll
    leaves at its age and reaches the service ``latency`` later); also returns how long the plan
    says it ran (what the client learns)."""
    sent, polls, running = plan.next_delay(0.0), 0, 0.0
    while True:
        polls, arrived = polls + 1, sent + latency
        if arrived >= job.duration_s:
            job.final_status, job.finished_at = "complete", job.duration_s
            seen = Polled(job.duration_s, arrived - job.duration_s, polls)
            return seen, plan.duration(running, arrived + latency, job.view(arrived, loading=progress))
        answer = job.view(arrived, loading=progress)
        running = sent
        plan.observe(sent, answer["status"], answer.get("progress"))
        back = arrived + latency
        sent = back + plan.next_delay(back)


def poll_fixed(duration: float, interval: float, latency: float = 0.0) -> Polled:
    """The service's advice: a poll every ``interval`` seconds from payment on."""
    polls = max(1, math.ceil((duration - latency) / interval))
    return Polled(duration, polls * interval + latency - duration, polls)


def simulate(route: Route, *, jobs: int, progress: bool, spread: float = 0.2, seed: int = 1,
             learn: bool = True, latency: float = 0.0) -> list[tuple[Polled, Polled]]:
    """``jobs`` jobs of one route, one after another, each polled by a fresh plan (learning from the
    earlier ones, as one client does, when ``learn``) and by the fixed interval: (ours, fixed) each."""
    params = required_params(route)
    timing, draws, jitter = Timing(spread, seed), random.Random(seed), random.Random(seed + 1)
    runs: list[float] = []
    shapes: list[list[list[float]]] = []
    out = []
    for i in range(jobs):
        job = Job(id=f"sim{i}", route=route, params=params, payer="", base_url="", created_at=0.0,
                  duration_s=draw_duration_s(route, params, timing, draws))
        plan = PollPlan(route, 1.0, runs if learn else [], shapes=shapes if learn else [],
                        progress_expected=progress, rng=jitter)
        ours, run_s = poll_with_plan(plan, job, progress, latency)
        out.append((ours, poll_fixed(job.duration_s, route.poll_interval_s, latency)))
        if run_s is not None:
            runs[:] = [*runs, run_s][-LEARNED:]
        if plan.shape(run_s):
            shapes[:] = [*shapes, plan.shape(run_s)][-LEARNED:]
    return out


def ratios(rows: list[tuple[Polled, Polled]]) -> tuple[float, float]:
    """Mean delay ratio and mean polls ratio, ours over the fixed interval's."""
    mean = statistics.fmean
    return (mean(o.delay for o, _ in rows) / mean(f.delay for _, f in rows),
            mean(o.polls for o, _ in rows) / mean(f.polls for _, f in rows))




def best_blind_ratio(centre: float, spread: float, interval: float, polls_share: float = 1.0,
                     grid: int = 240) -> float:
    """The least mean delay, over the fixed interval's, that any schedule of poll times chosen in
    advance reaches with ``polls_share`` of the fixed interval's polls, on jobs drawn as the sandbox
    draws them (log-normal around ``centre``, cut at MAX_Z): an oracle that knows the distribution
    exactly but reads nothing from the running job, the best a plan without progress readings
    could do (the switch from pending at 15% of a run comes before any poll worth making).

    A dynamic programme over ``grid`` candidate poll times across the durations' range finds the
    best schedule for a given price of a poll; the price is bisected until its polls fit the
    budget. Expectations are taken on a grid 8 times finer."""
    fine = 8 * grid
    lo, hi = centre * math.exp(-spread * MAX_Z), centre * math.exp(spread * MAX_Z)
    normal = statistics.NormalDist()
    cut = normal.cdf(-MAX_Z)
    xs = [lo + (hi - lo) * k / fine for k in range(fine + 1)]
    cdf = [min(max((normal.cdf(math.log(x / centre) / spread) - cut) / (1 - 2 * cut), 0.0), 1.0) for x in xs]
    mids = [(xs[k] + xs[k + 1]) / 2 for k in range(fine)]
    probs = [cdf[k + 1] - cdf[k] for k in range(fine)]
    partial = [0.0]  # E[D; D <= x] at each fine point
    for x, p in zip(mids, probs, strict=True):
        partial.append(partial[-1] + x * p)
    # The fixed interval on the same distribution: polls at interval, 2 * interval, ...
    fixed_polls = sum(math.ceil(x / interval) * p for x, p in zip(mids, probs, strict=True))
    fixed_delay = sum((math.ceil(x / interval) * interval - x) * p for x, p in zip(mids, probs, strict=True))
    t, F, G = xs[::8], cdf[::8], partial[::8]  # the candidate poll times
    n = len(t)

    def best(price: float) -> tuple[float, float]:
        # cost[i]: least delay + price * polls still to come for a job not done at t[i] (unnormalised)
        cost, nxt = [0.0] * n, [n - 1] * n
        for i in range(n - 2, -1, -1):
            left, c_best = 1.0 - F[i], math.inf
            for j in range(i + 1, n):  # the next poll at t[j] sees the jobs done in (t[i], t[j]]
                c = t[j] * (F[j] - F[i]) - (G[j] - G[i]) + price * left + cost[j]
                if c < c_best:
                    c_best, nxt[i] = c, j
            cost[i] = c_best
        delay = polls = 0.0
        i = 0  # t[0] is the start (no job is done by then), not a poll
        while i < n - 1:
            j = nxt[i]
            delay, polls, i = delay + t[j] * (F[j] - F[i]) - (G[j] - G[i]), polls + 1.0 - F[i], j
        return delay, polls

    low, high = 0.0, hi  # a poll's price in seconds of delay: free .. dearer than any wait
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if best(mid)[1] > polls_share * fixed_polls else (low, mid)
    return best(high)[0] / fixed_delay
