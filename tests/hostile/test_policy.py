"""Policy has no gaps: real money only over https, narrowing network lists, (network, asset) pairs.
Assert what the attacker got signed."""

from __future__ import annotations

import pytest
from eth_account import Account

from stablestudio_widgets import PaymentRequiredError, SpendingPolicy, Wallet

from .conftest import outcome, posing_as
from .server import BASE, BASE_USDC, SEPOLIA

pytestmark = pytest.mark.anyio


@pytest.fixture
def real_wallet():
    return Wallet.from_key(Account.create().key.hex())


async def test_real_money_only_over_https(hostile, client, real_wallet):
    """Plain http to the service's own name (a network that lies about DNS, or strips TLS)."""
    hostile.network, hostile.asset = BASE, BASE_USDC
    ss = client("http://stablestudio.dev", wallet=real_wallet, transport=posing_as(hostile))
    err = await outcome(ss.generate("nano-banana", "a fox"))
    assert hostile.received and hostile.paid() == []  # it was asked, and signed nothing
    assert isinstance(err, PaymentRequiredError) and "only over https" in str(err)


async def test_allowed_networks_narrows_the_host_rules(hostile, client, real_wallet):
    """allowed_networks={Base} must not let a loopback (or any other) host take real money."""
    hostile.network, hostile.asset = BASE, BASE_USDC
    ss = client(wallet=real_wallet, policy=SpendingPolicy(allowed_networks=frozenset({BASE})))
    err = await outcome(ss.generate("nano-banana", "a fox"))
    assert hostile.paid() == []
    assert isinstance(err, PaymentRequiredError) and "real-money payments go only to stablestudio.dev" in str(err)


async def test_the_asset_is_checked_with_its_network(hostile, client):
    """Base's USDC address offered on another chain is not USDC there."""
    hostile.network, hostile.asset = SEPOLIA, BASE_USDC
    ss = client()
    err = await outcome(ss.generate("nano-banana", "a fox"))
    assert hostile.paid() == []
    assert isinstance(err, PaymentRequiredError) and "not a known USDC contract on Base Sepolia" in str(err)


@pytest.mark.parametrize("extra", [
    {"name": "\ud800", "version": "2"},  # a lone surrogate: no UTF-8 spelling to hash
    {"name": "USDC", "version": "2" * 5000},  # no token has a 5000-character version
])
async def test_a_token_domain_that_cannot_be_signed_is_refused_before_signing(hostile, client, extra):
    honest = hostile.requirement
    hostile.requirement = lambda key, body=b"": {**honest(key, body), "extra": extra}
    ss = client()
    err = await outcome(ss.generate("nano-banana", "a fox"))
    assert hostile.paid() == []
    assert isinstance(err, PaymentRequiredError) and "Nothing was signed" in str(err)
