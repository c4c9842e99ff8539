"""quickstart.ipynb in Notebook 7 (the classic notebook's successor), not only in JupyterLab: Run All,
every widget renders, and the Studio pays for an image from a click."""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect

from .conftest import NOTEBOOKS, new_page, save_failure
from .lab import Notebook, start_lab
from .test_quickstart import expect_image_loaded, expect_video_loaded, generate

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb7")
    shutil.copy(NOTEBOOKS / "quickstart.ipynb", root / "quickstart.ipynb")
    server = start_lab(root, app="notebook")
    yield server
    server.stop()


def test_quickstart_in_notebook_7(browser, notebook7, screenshot):
    page = new_page(browser)
    try:
        nb = Notebook(page, notebook7, "quickstart.ipynb").open()
        assert "/notebooks/" in page.url and page.locator("#jp-main-dock-panel, .jp-LabShell").count() <= 1
        nb.run_all()
        studio = nb.output(1).locator(".ssw-studio")
        expect(studio.get_by_test_id("sandbox-banner")).to_contain_text("Sandbox")
        card = nb.output(2).get_by_test_id("job-card")
        expect(card).to_have_attribute("data-status", "complete")
        expect_image_loaded(card.get_by_test_id("result-image"))
        expect_video_loaded(nb.output(4).get_by_test_id("result-video"), 4)
        gallery = nb.output(6).locator(".ssw-gallery")
        expect(gallery.locator("[data-testid=job-card][data-status=complete]")).to_have_count(2)
        expect(nb.output(1).locator(".ssw-static")).to_be_hidden()  # live views hide their static copies

        studio.scroll_into_view_if_needed()
        key = generate(studio, model="grok", prompt="a lighthouse in Notebook 7", price="$0.07")
        made = studio.locator(f"[data-testid=job-card][data-key='{key}']")
        expect(made).to_have_attribute("data-status", "complete", timeout=30_000)
        expect(made.get_by_test_id("cost-amount")).to_have_text("$0.07")
        expect_image_loaded(made.get_by_test_id("result-image"))
        screenshot(studio, "studio")
    except Exception:
        save_failure(page, "notebook7-quickstart")
        raise
    finally:
        page.context.close()
