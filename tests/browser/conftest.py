"""Browser tier: one JupyterLab and one headless Chromium for the package, a fresh page per test.

Screenshots land in ``test-artifacts/`` (gitignored): each test saves its own, and a failing test
also gets ``<test>-failure.png`` plus the page's console log. The server's log is
``test-artifacts/jupyterlab.log``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import playwright.sync_api as playwright_api
import pytest

from .lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPO, Notebook, start_lab

NOTEBOOKS = REPO / "notebooks"
DOCS = REPO / "docs"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test leaves <test>-failure.png and <test>-console.log (taken before teardown)."""
    report = yield
    if report.failed and report.when in ("call", "setup"):
        for value in getattr(item, "funcargs", {}).values():
            pg = value if isinstance(value, playwright_api.Page) else getattr(value, "page", None)
            if isinstance(pg, playwright_api.Page):
                save_failure(pg, item.name)
                break
    return report


def save_failure(pg, test_name: str) -> None:
    if pg.is_closed():
        return
    name = re.sub(r"[^\w.-]+", "_", test_name)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        pg.screenshot(path=ARTIFACTS / f"{name}-failure.png")
    except playwright_api.Error:
        pass
    (ARTIFACTS / f"{name}-console.log").write_text("\n".join(getattr(pg, "console_log", [])))


# Package scope: the server and the browser go away when the last browser test has run. A live
# sync_playwright() keeps an asyncio loop marked as running on the main thread, which would break
# every later test that runs a loop of its own ("Cannot run the event loop while another loop is
# running").
@pytest.fixture(scope="package")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    for nb in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    server = start_lab(root)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def browser():
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def new_page(browser, width: int = 1400, height: int = 1000):
    """A fresh context (light scheme, 1400×1000 unless told); its page keeps its console in ``page.console_log``."""
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme="light")
    context.set_default_timeout(30_000)
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    pg.console_log = console
    return pg


@pytest.fixture
def page(browser, lab):
    pg = new_page(browser)
    yield pg
    pg.context.close()
    lab.shutdown_kernels()  # the next test starts from a clean server: no kernel left running


def capture(target, path: Path) -> None:
    """Screenshot a page or one element with transitions finished (a progress bar filling up is
    shown full); an element taller than the window is shot in a window tall enough to hold it
    (else the notebook's scroller clips it)."""
    pg = target if isinstance(target, playwright_api.Page) else target.page
    if target is pg:
        pg.screenshot(path=path, animations="disabled")
        return
    size = pg.viewport_size
    box = target.bounding_box()
    tall = box is not None and box["height"] > size["height"] - 150
    if tall:
        pg.set_viewport_size({"width": size["width"], "height": min(int(box["height"]) + 300, 6000)})
    try:
        target.scroll_into_view_if_needed()
        target.screenshot(path=path, animations="disabled")
    finally:
        if tall:
            pg.set_viewport_size(size)


@pytest.fixture
def screenshot(request):
    """``screenshot(page_or_locator, "label")`` saves test-artifacts/<test>-<label>.png.

    With ``docs="studio.png"`` and SSW_DOCS_SCREENSHOTS=1 in the environment, the same picture is
    also copied to docs/, for the README.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", request.node.name)

    def take(target, label: str, *, docs: str | None = None) -> Path:
        path = ARTIFACTS / f"{name}-{label}.png"
        capture(target, path)
        if docs and os.environ.get("SSW_DOCS_SCREENSHOTS"):
            DOCS.mkdir(exist_ok=True)
            shutil.copy(path, DOCS / docs)  # Chromium's PNG is smaller than PIL's optimize=True
        return path

    return take


@pytest.fixture
def open_notebook(page, lab):
    def open_(name: str) -> Notebook:
        return Notebook(page, lab, name).open()

    return open_
