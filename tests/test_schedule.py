"""The poll plan: where it looks, what it learns from, and what it refuses to believe.

Jobs here are simulated (a duration drawn around the route's typical time, pending for 15%, then
progress that is linear over the work and holds at 99 while the output is stored, as the
sandbox does), so every test is exact and instant; bench/bench_polling.py measures the same
against the sandbox over real HTTP.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest

from stablestudio_widgets.catalog import load
from stablestudio_widgets.sandbox.jobs import FINISHING_SHARE, PENDING_SHARE
from stablestudio_widgets.schedule import PollPlan, parse_retry_after, prior

CATALOG = load()


def answer(duration: float, t: float, progress: bool) -> tuple[str, int | None]:
    """What a sandbox-like service says about a job of ``duration`` at age ``t``."""
    if t >= duration:
        return "complete", None
    if t < PENDING_SHARE * duration:
        return "pending", None
    work = (1 - PENDING_SHARE - FINISHING_SHARE) * duration
    return ("loading", min(99, int(100 * (t - PENDING_SHARE * duration) / work))) if progress else ("processing", None)


def poll_until_done(plan: PollPlan, duration: float, progress: bool) -> tuple[float, int]:
    """(wait after completion, polls) for one job polled by ``plan``."""
    t, polls = plan.next_delay(0.0), 0
    while True:
        polls += 1
        status, percent = answer(duration, t, progress)
        if status == "complete":
            return t - duration, polls
        plan.observe(t, status, percent)
        t += plan.next_delay(t)


def fixed_interval(duration: float, interval: float) -> tuple[float, int]:
    """The service's advice: poll every ``interval`` seconds."""
    polls = max(1, math.ceil(duration / interval))
    return polls * interval - duration, polls


def compare(route_id: str, *, progress: bool, learn: bool, jobs: int = 200, spread: float = 0.2):
    route = CATALOG.route(route_id)
    draws, rng = random.Random(7), random.Random(8)
    history: list[float] = []
    ours, theirs = [], []
    for _ in range(jobs):
        duration = route.typical_s * math.exp(max(-2.5, min(2.5, draws.gauss(0, spread))))
        plan = PollPlan(route, 1.0, history if learn else [], progress_expected=progress, rng=rng)
        ours.append(poll_until_done(plan, duration, progress))
        theirs.append(fixed_interval(duration, route.poll_interval_s))
        history.append(duration)
    mean = lambda rows, i: statistics.mean(r[i] for r in rows)  # noqa: E731
    return mean(ours, 0), mean(ours, 1), mean(theirs, 0), mean(theirs, 1)


@pytest.mark.parametrize("route_id", ["nano-banana/generate", "nano-banana-pro/generate", "gpt-image-2/generate",
                                      "veo-3.1-fast/generate", "sora-2/generate"])
@pytest.mark.parametrize("progress", [True, False])
def test_finds_completion_sooner_than_the_fixed_interval_with_no_more_polls(route_id, progress):
    wait, polls, fixed_wait, fixed_polls = compare(route_id, progress=progress, learn=True)
    assert polls <= fixed_polls * 1.05
    assert wait < 0.9 * fixed_wait


def test_progress_reports_make_it_sooner_still():
    with_progress = compare("sora-2/generate", progress=True, learn=True)
    without = compare("sora-2/generate", progress=False, learn=True)
    assert with_progress[0] < without[0] and with_progress[1] < without[1]


def test_learned_durations_move_the_first_look():
    route = CATALOG.route("veo-3.1/generate")  # typical 90 s
    cold = PollPlan(route, rng=random.Random(1)).next_delay(0.0)
    slow = PollPlan(route, learned=[180.0, 175.0, 190.0, 185.0], rng=random.Random(1)).next_delay(0.0)
    fast = PollPlan(route, learned=[40.0, 42.0, 38.0, 41.0], rng=random.Random(1)).next_delay(0.0)
    assert fast < 50 < cold < slow
    assert prior(route, [180.0, 175.0, 190.0, 185.0]).source == "learned"
    assert prior(route).source == "route"


def test_two_progress_readings_put_the_next_look_at_the_finish():
    route = CATALOG.route("sora-2/generate")
    plan = PollPlan(route, rng=random.Random(2))
    plan.observe(40.0, "loading", 20)
    plan.observe(70.0, "loading", 50)  # 1% a second: the work ends at 120 s
    look = 70.0 + plan.next_delay(70.0)
    assert plan.belief.source == "progress" and 118 < plan.belief.median_s < 128
    assert 90 < look < plan.belief.median_s


def test_a_servers_retry_after_is_honoured_and_bounded():
    route = CATALOG.route("nano-banana/generate")
    plan = PollPlan(route, rng=random.Random(3))
    plan.observe(2.0, "loading", None, retry_after=4.0)
    assert plan.next_delay(2.0) == pytest.approx(4.0)
    plan.observe(6.0, "loading", None, retry_after=1e9)  # a hostile wait is capped by the route's timeout
    assert plan.next_delay(6.0) <= route.poll_timeout_s
    assert parse_retry_after("nan") is None and parse_retry_after("inf") is None
    assert parse_retry_after("-3") == 0.0 and parse_retry_after("2") == 2.0 and parse_retry_after("soon") is None


@pytest.mark.parametrize("junk", ["50", True, float("nan"), float("inf"), -5, 250, None, [50], {"p": 1}])
def test_progress_that_is_not_a_percentage_is_ignored(junk):
    route = CATALOG.route("veo-3.1/generate")
    plan = PollPlan(route, rng=random.Random(4))
    before = plan.belief
    plan.observe(30.0, "loading", junk)
    assert plan.belief == before


def test_progress_that_goes_backwards_says_nothing_about_the_rate():
    plan = PollPlan(CATALOG.route("sora-2/generate"), rng=random.Random(5))
    plan.observe(40.0, "loading", 40)
    plan.observe(60.0, "loading", 10)
    assert plan._readings == [(40.0, 40.0)]


def test_learned_durations_from_a_hostile_ledger_are_bounded():
    route = CATALOG.route("nano-banana/generate")
    belief = prior(route, [1e12, -4, float("nan"), "x", 0.0])  # type: ignore[list-item]
    assert route.typical_s / 20 <= belief.median_s <= route.poll_timeout_s
    assert math.isfinite(belief.spread)


def test_jobs_submitted_together_do_not_poll_together():
    route = CATALOG.route("seedance/t2v")
    firsts = {round(PollPlan(route).next_delay(0.0), 3) for _ in range(20)}
    assert len(firsts) > 10 and max(firsts) - min(firsts) > 1.0


def test_an_overdue_job_is_polled_at_the_services_interval():
    route = CATALOG.route("nano-banana/generate")
    plan = PollPlan(route, learned=[5.0] * 10, rng=random.Random(6))
    strides = []
    t = 60.0  # far past anything believed
    for _ in range(8):
        d = plan.next_delay(t)
        strides.append(d)
        plan.observe(t, "loading", None)
        t += d
    assert strides[0] < 1.0 and strides == sorted(strides, key=lambda d: round(d, 0))
    assert strides[-1] == pytest.approx(route.poll_interval_s, rel=0.1)


def test_a_scaled_service_gets_the_same_plan_on_its_clock():
    route = CATALOG.route("veo-3.1/generate")
    real = PollPlan(route, 1.0, rng=random.Random(9)).next_delay(0.0)
    scaled = PollPlan(route, 0.01, rng=random.Random(9)).next_delay(0.0)
    assert scaled == pytest.approx(real * 0.01)


def test_how_long_a_job_ran_believes_the_service_only_when_it_agrees_with_what_was_seen():
    plan = PollPlan(CATALOG.route("nano-banana/generate"), 0.1)
    honest = {"createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.480Z"}
    assert plan.duration(0.45, 0.55, honest) == pytest.approx(4.8)  # its timestamps, in service seconds
    lying = {"createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T09:00:00.000Z"}
    assert plan.duration(0.45, 0.55, lying) == pytest.approx(5.0)  # the middle of what we saw
    assert plan.duration(0.45, 0.55, {"createdAt": 3, "updatedAt": "x"}) == pytest.approx(5.0)
    assert plan.duration(0.0, 3.0, {}) is None  # done long before the first look: nothing to learn
