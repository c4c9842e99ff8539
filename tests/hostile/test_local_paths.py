"""Server data is never a local path: listed jobs, the ledger and restored grids name files the
attacker would like uploaded. Assert what the attacker received."""

from __future__ import annotations

import json

import pytest

from stablestudio_widgets import Compare, InvalidParams, StableStudio, Wallet

from ..conftest import until
from .conftest import outcome

pytestmark = pytest.mark.anyio
SECRET = b"STABLESTUDIO_PRIVATE_KEY=0xdeadbeef-not-really"


@pytest.fixture
def secret(tmp_path, monkeypatch):
    """A key file in the working directory, as a user's project has one."""
    (tmp_path / ".env").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".env"


def leaked(hostile) -> list[str]:
    """Requests that carried the file, or paid for an upload, or put a blob."""
    return [f"{s.method} {s.path}" for s in hostile.received if SECRET in s.body or s.path.startswith("/api/blob")
            or (s.path.startswith("/api/upload") and s.payment is not None)]


@pytest.mark.parametrize("params", [
    {"type": "seedance-i2v", "params": {"prompt": "x", "image": ".env"}},
    {"type": "seedance-i2v", "params": {"prompt": "x", "image": "/etc/passwd"}},
    {"type": "grok-edit", "params": {"prompt": "x", "images": ["https://cdn.example/a.png", ".env"]}},
])
async def test_retrying_a_listed_job_uploads_no_local_file(hostile, client, secret, params):
    hostile.listed = [{"id": "cmlisted0000000000000001", "status": "failed", "error": "boom", **params}]
    ss = client()
    (listed,) = await ss.jobs()
    err = await outcome(listed.retry(confirm=True))
    assert leaked(hostile) == []
    assert all(not isinstance(v, str) or v.startswith("https://") for v in listed.params.get("images", []))
    assert listed.params.get("image") is None
    assert err is None or isinstance(err, InvalidParams)


async def test_a_ledger_row_naming_a_local_file_is_not_uploaded(hostile, client, secret):
    ss = client()
    ss.ledger.record_job(id="cmledger00000000000000001", base_url=hostile.url, route="veo-3.1/generate",
                         model="veo-3.1", media="video", prompt="x", params={"prompt": "x", "image": str(secret)},
                         status="failed", amount=1, nonce=None, payer=None, session="s", created_at=0.0)
    hostile.job = lambda job_id: {"id": job_id, "status": "failed", "error": "boom"}
    job = await ss.job("cmledger00000000000000001")
    await outcome(job.retry(confirm=True))
    assert leaked(hostile) == []
    assert "image" not in job.params


def test_a_comparison_restored_from_the_ledger_uploads_no_local_file(hostile, tmp_path, secret):
    ss = StableStudio(hostile.url, Wallet.generate(), ledger=tmp_path / "l.db", time_scale=0.002,
                      confirm_above_usd=None)
    try:
        ss.ledger.save_comparison("cmp1", {
            "prompts": ["x"], "models": ["veo-3.1"], "params": {"image": str(secret)}, "overrides": {}, "repeats": 1,
            "blind": False, "transpose": False, "vote_mode": "pairwise", "order": ["veo-3.1"], "revealed": False,
            "state": "ready"}, [{"key": "k1", "prompt_index": 0, "model": "veo-3.1", "repeat": 0,
                                 "route_id": "veo-3.1/generate", "job_id": None}])
        grid = Compare.load("cmp1", client=ss)
        grid.run().wait(timeout=60)
        assert leaked(hostile) == []
        until(lambda: "not an http(s) URL" in json.dumps(grid.cells))  # the cell's card says why
        grid.close()
    finally:
        ss.close()
