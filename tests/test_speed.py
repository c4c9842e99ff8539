"""What the speed work must keep true, tested for behaviour (the figures are in bench/): finished
jobs teach the next ones how long they take, across kernels; the poll plan uses what the service
says; connections and TLS set-up are made once per client, not per call."""

from __future__ import annotations

import json

import pytest

from stablestudio_widgets import AsyncStableStudio, Wallet
from stablestudio_widgets.ledger import Ledger
from stablestudio_widgets.sandbox import Sandbox, Timing

pytestmark = pytest.mark.anyio
SCALE = 0.01


@pytest.fixture
def timed_sandbox():
    with Sandbox(time_scale=SCALE, timing=Timing(seed=3)) as sb:
        yield sb


async def test_finished_jobs_teach_the_next_ones_how_long_they_take(timed_sandbox, tmp_path):
    wallet, path = Wallet.generate(), tmp_path / "ledger.sqlite3"
    async with AsyncStableStudio(timed_sandbox.url, wallet, ledger=Ledger(path), time_scale=SCALE) as ss:
        jobs = []
        for i in range(3):
            jobs.append(await ss.generate("nano-banana", f"a fox {i}"))
            await jobs[-1].wait()
        for job in jobs:  # what the job measured is what the sandbox ran (render included), in service seconds
            served = timed_sandbox.jobs[job.id]
            assert job.run_s == pytest.approx((served.finished_at - served.created_at) / SCALE, rel=0.1, abs=0.5)
        assert jobs[0].reported_progress  # the first was seen loading (later ones may be looked at only when done)
        rows = ss.ledger.jobs()
        assert {r["variant"] for r in rows} == {"{}"} and all(r["run_s"] for r in rows)

    # A new kernel on the same ledger starts from those durations, per kind of job.
    async with AsyncStableStudio(timed_sandbox.url, wallet, ledger=Ledger(path), time_scale=SCALE) as ss:
        same = ss.tracker.new_job("nano-banana/generate", {"prompt": "x"})
        runs, progress = ss.tracker.learned(same)
        assert sorted(runs) == sorted(j.run_s for j in jobs) and progress is any(j.reported_progress for j in jobs)
        other = ss.tracker.new_job("sora-2/generate", {"prompt": "x", "seconds": "12"})
        assert ss.tracker.learned(other) == ([], True)  # another kind: no durations, but the service reports progress
        elsewhere = AsyncStableStudio("http://127.0.0.1:9", wallet, ledger=ss.ledger, time_scale=SCALE)
        assert elsewhere.tracker.learned(same) == ([], False)  # another service: nothing learned there
        await elsewhere.aclose()


async def test_a_card_shows_how_far_along_the_service_says_the_job_is(tmp_path):
    with Sandbox(time_scale=0.01, timing=Timing(spread=0)) as sb:  # a 2.1 s video
        async with AsyncStableStudio(sb.url, Wallet.generate(), ledger=":memory:", time_scale=0.01) as ss:
            job = await ss.generate("wan-2.6", "a fox")
            seen: list[str] = []
            ss.on_job(lambda j: seen.append(j.detail))
            await job.wait()
    percents = [int(d.split("%")[0]) for d in seen if d.endswith("% done")]
    assert percents and percents == sorted(percents) and job.percent is None and job.status == "complete"


async def test_the_ledger_migrates_a_file_made_before_durations_were_kept(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE jobs (id TEXT PRIMARY KEY, base_url TEXT NOT NULL, route TEXT NOT NULL, model TEXT,"
                     " media TEXT, prompt TEXT, params TEXT, status TEXT NOT NULL, amount INTEGER, nonce TEXT,"
                     " payer TEXT, result_url TEXT, thumbnail_url TEXT, local_path TEXT, error TEXT, session TEXT,"
                     " created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL);"
                     "INSERT INTO jobs (id, base_url, route, params, status, created_at, updated_at)"
                     " VALUES ('old', 'http://x', 'nano-banana/generate', '{}', 'complete', 1, 1);")
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert ledger.job("old")["run_s"] is None and ledger.run_times("http://x", "nano-banana/generate", "{}") == []
    ledger.update_job("old", variant=json.dumps({}), run_s=4.2, reported_progress=True)
    assert ledger.run_times("http://x", "nano-banana/generate", "{}") == [(4.2, True)]
    ledger.close()
