"""how_x402_pays.ipynb in JupyterLab: the JobCard's payment inspector and its lightbox."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

STEPS = ["402 Payment Required", "Signed authorization", "Settlement", "Sign-In-With-X"]


def test_jobcard_payment_inspector(open_notebook, screenshot):
    nb = open_notebook("how_x402_pays.ipynb")
    nb.run_all()
    card = nb.output(3).get_by_test_id("job-card")  # JobCard(job)
    card.scroll_into_view_if_needed()
    expect(card).to_have_attribute("data-status", "complete")
    expect(card.get_by_test_id("cost-amount")).to_have_text("$0.067")
    expect(card.get_by_test_id("receipt")).to_have_text(re.compile(r"^tx 0x[0-9a-f]{4}…[0-9a-f]{4}$"))
    expect(card.get_by_test_id("cost-badge")).to_contain_text("Base Sepolia")

    inspector = card.get_by_test_id("inspector")
    expect(inspector).to_contain_text("Payment inspector (")
    card_width = card.bounding_box()["width"]
    inspector.click()
    dialog = card.get_by_test_id("inspector-dialog")  # a panel over the page, not inside the card
    expect(dialog).to_be_visible()
    steps = dialog.get_by_test_id("inspector-step")
    expect(steps.first).to_be_visible()
    titles = steps.locator("strong").all_inner_texts()
    assert all(step in titles for step in STEPS), titles
    # The signed authorization is shown (public data); the kernel's printed steps agree.
    expect(steps.filter(has_text="Signed authorization")).to_contain_text("PAYMENT-SIGNATURE")
    expect(nb.output(4)).to_contain_text("Signed authorization")
    expect(steps.first).to_contain_text(re.compile(r"at \d\d:\d\d:\d\d\.\d{3}"))  # a readable clock time
    # It fits its content in the window: no 2,000 px wide JSON columns, and the card keeps its width.
    width = nb.page.viewport_size["width"]
    box = dialog.bounding_box()
    assert box["width"] <= width and dialog.evaluate("(d) => d.scrollWidth <= d.clientWidth + 1")
    assert card.bounding_box()["width"] == card_width
    screenshot(nb.page, "inspector")
    dialog.get_by_test_id("inspector-close").click()
    expect(dialog).to_be_hidden()

    # Download saves the file (the sandbox's URL is cross-origin: the kernel fetches the bytes).
    with nb.page.expect_download() as download:
        card.get_by_test_id("download").click()
    saved = download.value
    assert saved.suggested_filename.endswith(".png")
    assert open(saved.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # The image opens in a modal <dialog> lightbox (top layer) and Escape closes it.
    image = card.get_by_test_id("result-image")
    image.scroll_into_view_if_needed()
    nb.page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    cells = nb.panel.locator(".jp-Cell").count()
    image.click()
    lightbox = nb.page.get_by_test_id("lightbox")
    expect(lightbox).to_be_visible()
    big = lightbox.get_by_test_id("lightbox-image")
    nb.page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=big.element_handle())
    nb.page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    expect(nb.panel.locator(".jp-Cell")).to_have_count(cells)
