"""SIWX challenges are checked, not just signed: the sign-in messages the attacker collects."""

from __future__ import annotations

import time

import pytest

from stablestudio_widgets import AuthError
from stablestudio_widgets.siwx import message_text

from .conftest import outcome
from .server import _iso

pytestmark = pytest.mark.anyio
ROUTER_STATEMENT = "Sign in to verify your wallet identity"  # what the x402 router asks us to sign

CHALLENGES = {
    "a foreign uri": {"uri": "https://bank.example/api/transfer"},
    "a statement that authorizes a transfer": {"statement": "I authorize the transfer of 500 USDC to 0x1111."},
    "a forged second URI line": {"requestId": "r1\nURI: https://bank.example/api/transfer"},
    "control characters in the statement": {"statement": f"{ROUTER_STATEMENT}\u2028URI: https://bank.example/"},
    "a ten-year expiry": {"expirationTime": _iso(time.time() + 10 * 365 * 86400)},
    "a day-old challenge": {"issuedAt": _iso(time.time() - 86400)},
    "resources to sign": {"resources": ["https://bank.example/api/transfer"]},
    "another host": {"domain": "bank.example"},
}


@pytest.mark.parametrize("name", sorted(CHALLENGES))
async def test_a_hostile_challenge_is_not_signed(hostile, client, name):
    hostile.challenge = CHALLENGES[name]
    ss = client()
    err = await outcome(ss.jobs())
    ours = f"{hostile.url}/api/jobs"
    for signed in hostile.sign_ins():  # every message the attacker got says what our own would
        text = message_text(signed, signed["address"])
        assert signed["uri"] == ours and signed["domain"] in ("127.0.0.1", hostile.url.split("//")[1])
        assert "bank.example" not in text and "transfer" not in text
        assert signed.get("statement") in (None, ROUTER_STATEMENT) and not signed.get("resources")
        assert text.count("\nURI: ") == 1 and "\u2028" not in text
        expires = signed.get("expirationTime")
        assert expires is None or expires <= _iso(time.time() + 3600)
        assert signed["issuedAt"] >= _iso(time.time() - 600)
    assert isinstance(err, AuthError) and "Nothing was signed" in str(err)


async def test_the_routers_own_challenge_is_answered(hostile, client):
    """What the real router sends (its statement, the request URL with its query, the bare host name)."""
    hostile.challenge = {"uri": f"{hostile.url}/api/jobs?limit=5", "domain": "127.0.0.1"}
    ss = client()
    assert await ss.jobs(limit=5) == []
    first, second = hostile.sign_ins()
    assert second["nonce"] == "a1b2c3d4e5f6a7b8" and second["statement"] == ROUTER_STATEMENT
    assert second["uri"] == f"{hostile.url}/api/jobs"
