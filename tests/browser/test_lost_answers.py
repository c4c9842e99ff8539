"""Payments whose answers were lost, as the next kernel's Gallery shows them in real Chromium.

One kernel pays twice and stops while each paid request is out: once after the service settled it
and made the job, once before the request left. Another client on the same wallet and ledger (the
next kernel) opens a Gallery of the ledger; by then the second payment's authorization has run out.
Everything after that is a click: Resume finds the settled payment's job (its card turns complete,
nothing is paid again) and finds nothing for the other (expired unsettled: nothing was paid,
Retry or Dismiss); Dismiss closes that card for good.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time

import nbformat
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PAID = "a lighthouse paid for, then the kernel stopped"
NEVER_SENT = "a fox whose payment never left"

# The kernel that stops (a transport standing in for it: the paid request's answer never reaches
# the client), then the next one: a new client on the same wallet and ledger, after the second
# payment's authorization ran out (its ledger row says so: the clock moved on).
SETUP = f"""\
import json, time
import httpx
from stablestudio_widgets import Gallery, StableStudio, Wallet
from stablestudio_widgets.sandbox import Sandbox


class KernelStops(httpx.AsyncHTTPTransport):
    after_the_service_answered = True

    async def handle_async_request(self, request):
        if request.method == "POST" and "payment-signature" in request.headers:
            if self.after_the_service_answered:
                await (await super().handle_async_request(request)).aread()
            raise RuntimeError("the kernel stopped")
        return await super().handle_async_request(request)


sandbox = Sandbox(time_scale=0.05).start()
wallet, stops = Wallet.generate(), KernelStops()
gone = StableStudio(sandbox.url, wallet, ledger="lost.db", time_scale=0.05, transport=stops)
for prompt, stops.after_the_service_answered in [({PAID!r}, True), ({NEVER_SENT!r}, False)]:
    try:
        gone.generate("grok", prompt, aspect_ratio="16:9")
    except RuntimeError:
        pass
gone.close()
print(len(sandbox.settlements), "settled")"""

NEXT_KERNEL = f"""\
later = StableStudio(sandbox.url, wallet, ledger="lost.db", time_scale=0.05)
for p in later.ledger.payments():
    if {NEVER_SENT!r} in p["body"]:
        later.ledger.update_payment(p["nonce"], valid_before=int(time.time()) - 60)
g = Gallery(later, show_ledger=True)
g"""


@pytest.fixture
def lost_notebook(lab):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(NEXT_KERNEL)]
    nbformat.write(nb, lab.root / "lost_answers.ipynb")
    return "lost_answers.ipynb"


def clock(ts: float) -> str:
    """A time as a card says it: HH:MM, with the date when it is not today."""
    same_day = time.localtime(ts)[:3] == time.localtime()[:3]
    return time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", time.localtime(ts))


def valid_before(lab, prompt: str) -> float:
    """When the authorization of the payment for ``prompt`` runs out, read from the ledger file."""
    with sqlite3.connect(f"file:{lab.root / 'lost.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT body, valid_before FROM payments").fetchall()
    (ts,) = [vb for body, vb in rows if prompt in body]
    return ts


def stdout(cell):
    """What a code cell printed (not a warning on stderr)."""
    return cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")


def buttons(card) -> list[str]:
    return card.locator(".ssw-card__error button").all_inner_texts()


def test_next_kernels_gallery_resumes_and_dismisses_lost_answers(open_notebook, lost_notebook, screenshot):
    nb = open_notebook(lost_notebook)
    nb.run_all()
    expect(stdout(nb.code_cell(0))).to_have_text("1 settled")  # the first payment settled, the second never left
    gallery = nb.output(1).locator(".ssw-gallery")
    cards = gallery.get_by_test_id("job-card")
    expect(cards).to_have_count(2)
    paid, expired = cards.filter(has_text=PAID), cards.filter(has_text=NEVER_SENT)
    for card in (paid, expired):
        expect(card).to_have_attribute("data-status", "failed")
        expect(card.get_by_test_id("resume")).to_be_visible()
        expect(card.get_by_test_id("retry")).to_have_count(0)  # may be paid: never paid again
        expect(card.get_by_test_id("progress")).to_be_hidden()  # no job ever ran here: no clock
    expect(paid.get_by_test_id("error")).to_contain_text(
        f"may have been paid — the authorization stays valid until {clock(valid_before(nb.lab, PAID))}")
    expect(paid.get_by_test_id("error")).to_contain_text("$0.07")
    expect(expired.get_by_test_id("error")).to_contain_text(
        f"may have been paid before its authorization expired at {clock(valid_before(nb.lab, NEVER_SENT))}")
    key = paid.get_attribute("data-key")
    screenshot(gallery, "lost-answers")

    # Resume (a resume of the ledger): the settled payment's job takes its card; the other payment
    # is looked for too, and the service has no job for it.
    paid.get_by_test_id("resume").click()
    expect(paid).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(cards).to_have_count(2)  # the same card got the job: no second one
    expect(paid).to_have_attribute("data-key", key)
    expect(paid.get_by_test_id("error")).to_have_count(0)
    # Its payment's receipt came with it (from the ledger), and the header says whose money it was.
    expect(paid.get_by_test_id("cost-badge")).to_contain_text(re.compile(r"\$0\.07.*Base Sepolia"))
    expect(gallery.get_by_test_id("total-spent")).to_have_text(
        "This session: $0.00 · Paid earlier (shown from the ledger): $0.07")
    image = paid.get_by_test_id("result-image")
    image.scroll_into_view_if_needed()
    nb.page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    expect(expired.get_by_test_id("error")).to_contain_text(
        re.compile(rf"expired unsettled at {re.escape(clock(valid_before(nb.lab, NEVER_SENT)))}.*Nothing was paid"))
    expect(expired.get_by_test_id("retry")).to_have_text("Retry $0.07")
    expect(expired.get_by_test_id("dismiss")).to_have_text("Dismiss")
    expect(expired.get_by_test_id("resume")).to_have_count(0)
    assert buttons(expired) == ["Retry $0.07", "Dismiss"]
    expect(expired.get_by_test_id("progress")).to_be_hidden()
    screenshot(gallery, "resumed-and-expired")

    # The service settled exactly one payment, for the job on the card; the next kernel signed nothing.
    facts = nb.append_and_run(
        "print(json.dumps({'settled': [s['job_id'] for s in sandbox.settlements],\n"
        f"                  'card': next(j['id'] for j in g.jobs if j['prompt'] == {PAID!r}),\n"
        "                  'signatures': later.stats['signatures'],\n"
        "                  'ledger': sorted(p['status'] for p in later.ledger.payments())}))")
    out = stdout(facts)
    expect(out).to_have_text(re.compile(r"^\{.*\}\s*$"))
    seen = json.loads(out.inner_text())
    assert seen == {"settled": [seen["card"]], "card": seen["card"], "signatures": 0,
                    "ledger": ["expired", "settled"]}, seen

    # Dismiss closes the expired card; neither this Gallery shown again nor a new kernel's brings it back.
    expired.get_by_test_id("dismiss").click()
    expect(cards).to_have_count(1)
    expect(gallery).not_to_contain_text(NEVER_SENT)
    screenshot(gallery, "dismissed")
    again = nb.append_and_run(
        "again = StableStudio(sandbox.url, wallet, ledger='lost.db', time_scale=0.05)  # the kernel after\n"
        "display(g)\n"
        "Gallery(again, show_ledger=True)")
    shown = again.locator(".ssw-gallery")
    expect(shown).to_have_count(2)
    for view in (shown.first, shown.last):
        expect(view.get_by_test_id("job-card")).to_have_count(1)
        expect(view.get_by_test_id("job-card")).to_contain_text(PAID)
        expect(view.get_by_test_id("job-card")).to_have_attribute("data-status", "complete")
        expect(view).not_to_contain_text(NEVER_SENT)
    screenshot(shown.last, "next-kernel")
