"""Every button that pays is a ceiling: Studio's Pay, Compare's Run and a card's Retry consent to
the amount they showed. The attacker raises its price after the user looked (on terms the client
had already paid on, so it re-signs on a refusal) and we assert what it got signed."""

from __future__ import annotations

import pytest

from stablestudio_widgets import Compare, JobCard, JobFailed, StableStudio, Studio, Wallet

from ..conftest import until
from ..test_widgets import Replies, generate
from .test_consent import VEO, reprice

CHEAP, DEAR = 1_600_000, 3_200_000


@pytest.fixture
def ss(hostile, tmp_path):
    """A client that already paid for Veo at $1.60: its terms are reused, so a refusal re-signs."""
    client = StableStudio(hostile.url, Wallet.generate(), ledger=tmp_path / "w.db", time_scale=0.002)
    hostile.prices[VEO] = CHEAP
    client.generate("veo-3.1", "the first wave", confirm=True)
    yield client
    client.close()


def raise_price(hostile) -> None:
    hostile.prices[VEO] = DEAR
    hostile.on_paid = reprice(hostile, VEO)


def test_studio_pay_consents_to_the_price_its_panel_showed(hostile, ss):
    st = Studio(ss, model="veo-3.1")
    replies = Replies(st)
    st.prompt = "a wave"
    assert generate(replies, st)["ok"]
    until(lambda: st.pending_confirmation)
    panel = st.pending_confirmation
    assert panel["price_usd"] == 1.6
    raise_price(hostile)
    answer = {"type": "confirm", "confirmation_id": panel["id"], "accept": True, "amount_usd": panel["price_usd"]}
    assert replies.request(answer)["ok"]
    until(lambda: (st.pending_confirmation or {}).get("price_usd") == 3.2 or len(hostile.paid()) > 2)
    assert hostile.amounts() == [CHEAP, CHEAP]  # the $3.20 is asked again, not signed
    assert st.pending_confirmation["id"] != panel["id"] and "agreed to" in st.pending_confirmation["message"]
    st.close()


def test_studio_generate_pays_no_more_than_the_price_beside_it(hostile, ss):
    """Below the confirmation threshold Generate needs no OK, but the price it showed is still a ceiling."""
    key = "gpt-image-1.5/generate"  # $0.009–$0.20 in the route table
    hostile.prices[key] = 9_000
    ss.generate("gpt-image-1.5", "a first fox")
    st = Studio(ss, model="gpt-image-1.5")
    replies = Replies(st)
    st.prompt = "a fox"
    until(lambda: st.quote.get("status") == "ok" and st.quote.get("route_id") == key)
    assert st.quote["amount_usd"] == 0.009
    hostile.prices[key] = 200_000
    hostile.on_paid = reprice(hostile, key)
    assert generate(replies, st)["ok"]
    until(lambda: st.pending_confirmation or len(hostile.paid()) > 3)
    assert hostile.amounts() == [CHEAP, 9_000, 9_000]  # the $0.20 is asked, not signed
    assert st.pending_confirmation["price_usd"] == 0.2
    st.close()


def test_compare_run_consents_to_the_total_it_showed(hostile, ss):
    grid = Compare(prompts=["a"], models=["veo-3.1"], blind=False, client=ss)
    until(lambda: grid.quote.get("status") == "ok")
    assert grid.quote["total_usd"] == 1.6
    raise_price(hostile)
    assert Replies(grid).request({"type": "run", "total_usd": grid.quote["total_usd"]})["ok"]
    until(lambda: (grid.cells[0]["job"] or {}).get("error") or len(hostile.paid()) > 2)
    assert hostile.amounts() == [CHEAP, CHEAP]
    error = grid.cells[0]["job"]["error"]
    assert error["type"] == "ConfirmationRequired" and error["retry_usd"] == 3.2  # its Retry shows the new price
    grid.close()


def test_a_cards_retry_consents_to_the_price_it_showed(hostile, ss):
    hostile.job = lambda job_id: {"id": job_id, "status": "failed", "error": "the model said no"}
    job = ss.generate("veo-3.1", "a wave", confirm=True)
    with pytest.raises(JobFailed):
        job.wait()
    card = JobCard(job)
    until(lambda: (card.job.get("error") or {}).get("retry_usd") == 1.6)
    raise_price(hostile)
    request = {"type": "retry", "key": card.job["key"], "amount_usd": card.job["error"]["retry_usd"]}
    assert Replies(card).request(request)["ok"]
    until(lambda: (card.job.get("error") or {}).get("type") == "ConfirmationRequired" or len(hostile.paid()) > 3)
    assert hostile.amounts() == [CHEAP, CHEAP, CHEAP]
    assert card.job["error"]["retry_usd"] == 3.2
    card.close()
