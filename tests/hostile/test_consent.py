"""Consent is an amount, not a flag: what the attacker can get signed after the user said yes."""

from __future__ import annotations

import pytest

from stablestudio_widgets import (
    BudgetExceeded,
    Compare,
    ConfirmationRequired,
    PaymentRequiredError,
    StableStudio,
    Wallet,
)
from stablestudio_widgets.errors import fmt_usd

from .conftest import outcome
from .server import CATALOG, SEPOLIA, Seen

pytestmark = pytest.mark.anyio
VEO = "veo-3.1/generate"


def reprice(hostile, key: str):
    """The attacker's trick: refuse anything below the price it asks now (with the new terms)."""
    def answer(seen: Seen):
        if int(seen.authorization["value"]) < hostile.prices[key] or seen.authorization["to"] != hostile.pay_to:
            return hostile.payment_required(key, error="price changed")
        return hostile.accept(seen)
    return answer


async def test_confirm_consents_to_the_quoted_price_not_more(hostile, client):
    """confirm=True after seeing $1.60; the next 402 says $3.20 (still inside the route's range)."""
    ss = client()
    hostile.prices[VEO] = 1_600_000
    await ss.generate("veo-3.1", "a wave", durationSeconds="4", confirm=True)
    hostile.prices[VEO] = 3_200_000
    hostile.on_paid = reprice(hostile, VEO)
    err = await outcome(ss.generate("veo-3.1", "another wave", durationSeconds="4", confirm=True))
    assert hostile.amounts() == [1_600_000, 1_600_000]  # never $3.20
    assert isinstance(err, ConfirmationRequired) and err.price_usd == 3.2
    assert "$1.60 you agreed to" in str(err)


async def test_confirm_usd_is_a_ceiling(hostile, client):
    ss = client()
    hostile.prices[VEO] = 3_200_000
    err = await outcome(ss.generate("veo-3.1", "a wave", confirm_usd=1.60))
    assert hostile.paid() == []
    assert isinstance(err, ConfirmationRequired) and "agreed to" in str(err)
    await ss.generate("veo-3.1", "a wave", confirm_usd=3.20)
    assert hostile.amounts() == [3_200_000]


@pytest.mark.parametrize("route,model,asked,confirm", [
    ("nano-banana/generate", "nano-banana", 990_000, False),  # $0.99 for a $0.045–$0.151 route, under the threshold
    (VEO, "veo-3.1", 500_000_000, True),                     # $500 with the user's blanket confirm=True
])
async def test_a_first_402_above_the_route_table_is_refused(hostile, client, route, model, asked, confirm):
    ss = client(max_usd_per_request=None)  # the route table alone must stop it
    hostile.prices[route] = asked
    err = await outcome(ss.generate(model, "a fox", confirm=confirm))
    assert hostile.paid() == []
    top = fmt_usd(CATALOG.price_range(route)[1] / 1e6)
    assert isinstance(err, PaymentRequiredError) and f"${asked / 1e6:.2f}" in str(err) and top in str(err)


async def test_a_changed_payee_needs_new_consent(hostile, client):
    ss = client()
    key = "grok/generate"
    hostile.prices[key] = 70_000
    await ss.generate("grok", "first", confirm=True)
    hostile.pay_to = "0x2222222222222222222222222222222222222222"
    hostile.on_paid = reprice(hostile, key)
    err = await outcome(ss.generate("grok", "second", confirm=True))
    assert {s.authorization["to"] for s in hostile.paid()} == {"0x1111111111111111111111111111111111111111"}
    assert isinstance(err, ConfirmationRequired) and err.pay_to == hostile.pay_to and "0x2222" in str(err)


async def test_a_finite_per_request_cap_by_default(hostile, client):
    ss = client()
    err = await outcome(ss.generate("sora-2-pro", "an epic", seconds="12", size="1792x1024", confirm=True))
    assert hostile.paid() == []  # $6.00, inside the route table's range, asked with confirm=True
    assert isinstance(err, BudgetExceeded) and "per-request cap of $5.00" in str(err)


def test_compare_run_in_code_respects_the_confirmation_threshold(hostile, tmp_path):
    hostile.network = SEPOLIA
    ss = StableStudio(hostile.url, Wallet.generate(), ledger=tmp_path / "l.db", time_scale=0.002)
    try:
        grid = Compare(prompts=["a", "b"], models=["veo-3.1"], client=ss)  # 2 × $3.20, above $1.00
        err = None
        try:
            grid.run().wait(timeout=60)
        except Exception as e:  # noqa: BLE001 - what the server saw is asserted first
            err = e
        assert hostile.paid() == []
        assert isinstance(err, ConfirmationRequired) and "$6.40" in str(err)
        grid.run(confirm=True).wait(timeout=60)
        assert hostile.amounts() == [3_200_000, 3_200_000]
        grid.close()
    finally:
        ss.close()
