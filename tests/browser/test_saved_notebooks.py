"""Kernels that go away and notebooks that are reopened: what a user still sees.

One notebook (a bare job's card, its result, a Gallery) is run in JupyterLab, then its kernel is
restarted (the widgets say so and stop acting), saved with widget state, and reopened after the
kernel and its sandbox are gone: from saved widget state, without it, and as static HTML (what
nbviewer and GitHub render).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import nbformat
import pytest
from playwright.sync_api import expect

from .conftest import new_page
from .lab import ARTIFACTS, Notebook

pytestmark = pytest.mark.browser

PROMPT = "a fox in a notebook saved for later"
SETUP = f"""\
from stablestudio_widgets import Gallery, StableStudio

ss = StableStudio.sandbox(time_scale=0.05)
job = ss.generate("grok", {PROMPT!r}, aspect_ratio="16:9")
result = job.wait()
job"""


@pytest.fixture
def saved_notebook(lab):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell("result"),
                nbformat.v4.new_code_cell("Gallery(ss)")]
    nbformat.write(nb, lab.root / "saved.ipynb")
    return "saved.ipynb"


def run_until_thumbnails(nb: Notebook) -> None:
    """Run All; wait until the card is complete and its embedded thumbnail has reached the page."""
    nb.run_all()
    card = nb.output(0).get_by_test_id("job-card")
    expect(card).to_have_attribute("data-status", "complete")
    static = nb.output(0).locator(".ssw-static img[src^='data:image/jpeg']")
    expect(static).to_have_count(1, timeout=30_000)  # the kernel rewrote the copy with the thumbnail


def test_kernel_restart_says_so_and_disables_actions(open_notebook, saved_notebook, screenshot):
    nb = open_notebook(saved_notebook)
    nb.run_all()
    card = nb.output(0).locator(".ssw-jobcard")
    gallery = nb.output(2).locator(".ssw-gallery")
    expect(card.get_by_test_id("job-card")).to_have_attribute("data-status", "complete")
    expect(card.get_by_test_id("disconnected")).to_be_hidden()
    expect(nb.output(0).locator(".ssw-static")).to_be_hidden()  # the live view hides its static copy
    nb.menu("Kernel", "Restart Kernel…")
    nb.page.locator(".jp-Dialog .jp-mod-accept").click()
    for widget in (card, gallery):
        banner = widget.get_by_test_id("disconnected")
        expect(banner).to_be_visible()
        expect(banner).to_have_text(re.compile(r"^Kernel disconnected — re-run this cell"))
        expect(widget.locator("fieldset.ssw-body")).to_have_attribute("disabled", "")
    expect(card.get_by_test_id("copy-url")).to_be_disabled()
    expect(gallery.get_by_test_id("show-ledger")).to_be_disabled()
    expect(card.get_by_test_id("result-image")).to_be_visible()  # what it showed stays
    screenshot(nb.output(0).first, "disconnected")


@pytest.fixture
def fresh_page(browser):
    """``fresh_page()``: a page in a new browser context (no HTTP cache from an earlier visit)."""
    pages = []

    def make():
        pages.append(new_page(browser))
        return pages[-1]
    yield make
    for pg in pages:
        if not pg.is_closed():
            pg.context.close()


def test_reopened_notebook_shows_its_results(page, fresh_page, lab, saved_notebook, screenshot):
    nb = Notebook(page, lab, saved_notebook).open()
    run_until_thumbnails(nb)
    nb.panel.locator(".jp-Cell").first.click()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    path = lab.root / saved_notebook
    deadline = time.monotonic() + 30
    while not (path.read_text().count("ssw-static") and "widgets" in json.loads(path.read_text())["metadata"]):
        assert time.monotonic() < deadline, "the notebook was not saved with its outputs and widget state"
        time.sleep(0.2)  # polling interval of a deadline loop, not a synchronisation
    saved = nbformat.read(path, as_version=4)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / "saved-with-widget-state.ipynb")
    size = path.stat().st_size
    assert size < 400_000, f"the saved notebook is {size} bytes"
    assert "PRIVATE" not in path.read_text() and "base64,iVBOR" not in path.read_text()  # no key, no full PNGs
    lab.shutdown_kernels()  # the kernel and its sandbox are gone: every media URL is dead now

    # 1. JupyterLab, saved widget state: the widgets render from it, say the kernel is gone, and
    #    show the embedded thumbnails where the media no longer load.
    page = fresh_page()
    nb = Notebook(page, lab, saved_notebook).open()
    card = nb.output(0).locator(".ssw-jobcard")
    expect(card.get_by_test_id("job-card")).to_have_attribute("data-status", "complete")
    expect(card.get_by_test_id("disconnected")).to_be_visible()
    image = card.get_by_test_id("result-image")
    expect(image).to_have_attribute("data-degraded", "true")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    expect(card.get_by_test_id("cost-amount")).to_have_text("$0.07")
    expect(nb.output(2).locator(".ssw-gallery [data-testid=job-card]")).to_have_count(1)
    expect(nb.output(1).locator("img")).to_be_visible()  # the Result embeds its picture
    screenshot(nb.panel, "reopened-with-widget-state")
    lab.shutdown_kernels()

    # 2. JupyterLab, no widget state ("model not found"): the static copies show the results.
    del saved.metadata["widgets"]
    nbformat.write(saved, path)
    page = fresh_page()
    nb = Notebook(page, lab, saved_notebook).open()
    copy = nb.output(0).locator(".ssw-static")
    expect(copy).to_be_visible()
    expect(copy).to_contain_text(PROMPT)
    expect(copy).to_contain_text("$0.07")
    expect(copy).to_contain_text("Base Sepolia")
    thumb = copy.locator("img")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    expect(nb.output(2).locator(".ssw-static")).to_contain_text(PROMPT)  # the Gallery's copy
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=nb.output(1).locator("img").element_handle())
    screenshot(nb.panel, "reopened-without-widget-state")
    lab.shutdown_kernels()

    # 3. Static HTML, as nbviewer and GitHub render it (no kernel, no widget JavaScript).
    html = ARTIFACTS / "saved-notebook.html"
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(path), "--output",
                    str(html.with_suffix(""))], check=True, capture_output=True, timeout=120)
    page = fresh_page()
    page.goto(html.as_uri())
    copy = page.locator(".ssw-static").first
    expect(copy).to_be_visible()
    expect(copy).to_contain_text(PROMPT)
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=copy.locator("img").element_handle())
    screenshot(page, "static-html")
