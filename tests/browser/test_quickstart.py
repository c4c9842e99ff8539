"""quickstart.ipynb in JupyterLab: run it top to bottom, then use the Studio as a person would.

The notebook is run once for the module (Run All Cells, ~10 s); each test then works on its own
new cards, found by key, so the tests do not depend on each other's jobs.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from stablestudio_widgets.status import VOCABULARY

from .conftest import new_page, save_failure
from .lab import Notebook

pytestmark = pytest.mark.browser

RUNNING = {status for status, spec in VOCABULARY["job_status"].items() if spec["kind"] == "running"}

# Records every data-status each job card of `root` takes, by data-key, from now on: a fast
# job can pass through "processing" between two polls of an expect(), a MutationObserver cannot
# miss it.
WATCH_STATUSES = """(root) => {
  const seen = (window.__sswStatuses ??= {});
  const record = (card) => {
    const key = card.dataset.key, status = card.dataset.status;
    if (!key || !status) return;
    const list = (seen[key] ??= []);
    if (list[list.length - 1] !== status) list.push(status);
  };
  const scan = (node) => {
    if (node.nodeType !== 1) return;
    if (node.matches('[data-testid=job-card]')) record(node);
    node.querySelectorAll('[data-testid=job-card]').forEach(record);
  };
  scan(root);
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      if (m.type === 'attributes') scan(m.target);
      else m.addedNodes.forEach(scan);
    }
  }).observe(root, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-status', 'data-key'] });
}"""

NEW_CARD = """([root, known]) => {
  const cards = [...root.querySelectorAll('[data-testid=job-card]')];
  const card = cards.find((c) => c.dataset.key && !known.includes(c.dataset.key));
  return card ? card.dataset.key : null;
}"""


@pytest.fixture(scope="module")
def quickstart(browser, lab):
    page = new_page(browser)
    try:
        nb = Notebook(page, lab, "quickstart.ipynb").open()
        nb.run_all()
    except Exception:
        save_failure(page, "quickstart-run-all")
        raise
    yield nb
    page.context.close()
    lab.shutdown_kernels()


@pytest.fixture
def studio(quickstart):
    root = quickstart.output(1).locator(".ssw-studio")
    root.scroll_into_view_if_needed()
    expect(root).to_be_visible()
    root.evaluate(WATCH_STATUSES)
    return root


def card_keys(root) -> list[str]:
    return root.locator("[data-testid=job-card]").evaluate_all("(cards) => cards.map((c) => c.dataset.key)")


def generate(studio, *, model: str, prompt: str, price: str, params: dict[str, str] | None = None,
             keyboard: bool = False) -> str:
    """Pick the model, fill the form, wait for the exact price, press Generate (a click, or Enter
    on the focused button); the new card's key."""
    page = studio.page
    studio.get_by_test_id("model-select").select_option(model)
    for name, value in (params or {}).items():
        studio.locator(f"[data-testid=param-form] select[data-param={name}]").select_option(value)
    studio.get_by_test_id("prompt").fill(prompt)
    expect(studio.get_by_test_id("cost")).to_have_text(price)
    known = card_keys(studio)
    button = studio.get_by_test_id("generate")
    expect(button).to_be_enabled()
    if keyboard:
        button.focus()
        page.keyboard.press("Enter")
    else:
        button.click()
    return page.wait_for_function(NEW_CARD, arg=[studio.element_handle(), known]).json_value()


def session_total(studio):
    # The Studio's header total; its embedded gallery has its own (hidden) `total-spent` too.
    return studio.locator(".ssw-studio__header [data-testid=total-spent]")


def statuses(studio, key: str) -> list[str]:
    return studio.page.evaluate("(key) => window.__sswStatuses[key] ?? []", key)


def expect_image_loaded(img) -> None:
    img.scroll_into_view_if_needed()  # the card's images are loading="lazy"
    expect(img).to_be_visible()
    img.page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=img.element_handle())


def expect_video_loaded(video, seconds: float) -> None:
    video.scroll_into_view_if_needed()
    expect(video).to_be_visible()
    video.page.wait_for_function("(v) => v.readyState >= 1 && v.duration > 0", arg=video.element_handle())
    duration = video.evaluate("(v) => v.duration")
    assert duration == pytest.approx(seconds, abs=0.25), f"video lasts {duration} s, asked for {seconds} s"


def usd(text: str) -> float:
    return float(re.search(r"\$([\d.]+)", text).group(1))


def format_usd(v: float) -> str:
    """js/components/format.js formatUsd: the fewest decimals (2 to 6) that show the amount exactly."""
    for d in range(2, 7):
        if abs(v * 10**d - round(v * 10**d)) < 1e-6:
            return f"${v:.{d}f}"
    return f"${v:.6f}"


def test_notebook_outputs_render(quickstart, screenshot):
    nb = quickstart
    studio = nb.output(1).locator(".ssw-studio")
    expect(studio.get_by_test_id("sandbox-banner")).to_be_visible()
    expect(studio.get_by_test_id("sandbox-banner")).to_contain_text("Sandbox")

    # `image` (a bare job) is a live JobCard; `image.wait()` is the result inline.
    card = nb.output(2).get_by_test_id("job-card")
    expect(card).to_have_attribute("data-status", "complete")
    expect_image_loaded(card.get_by_test_id("result-image"))
    expect_image_loaded(nb.output(3).locator("img"))

    card = nb.output(4).get_by_test_id("job-card")
    expect(card).to_have_attribute("data-status", "complete")
    expect_video_loaded(card.get_by_test_id("result-video"), 4)
    expect_video_loaded(nb.output(5).locator("video"), 4)

    gallery = nb.output(6).locator(".ssw-gallery")
    gallery.scroll_into_view_if_needed()
    expect(gallery.get_by_test_id("job-card")).to_have_count(2)
    expect(gallery.locator("[data-testid=job-card][data-status=complete]")).to_have_count(2)
    expect(gallery.get_by_test_id("total-spent")).to_contain_text("$0.467")  # $0.067 image + $0.40 video
    expect(nb.output(7).locator("table tbody tr")).to_have_count(2)  # the ledger DataFrame
    screenshot(gallery, "gallery")


def test_lone_jobcard_fits_its_image(quickstart):
    """`image` alone in a cell: the card's media area should hug the 16:9 picture, not letterbox it."""
    card = quickstart.output(2).get_by_test_id("job-card")
    card.scroll_into_view_if_needed()
    box = card.locator(".ssw-card__media").bounding_box()
    img = card.get_by_test_id("result-image")
    w, h = img.evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
    shown = min(box["width"], box["height"] * w / h) * h / w  # height of the picture, object-fit: contain
    assert box["height"] <= 1.1 * shown, f"media box {box['width']:.0f}x{box['height']:.0f} for a {w}x{h} image"


def test_studio_generates_an_image(studio, quickstart, screenshot):
    spent = usd(session_total(studio).inner_text())
    key = generate(studio, model="nano-banana-pro", prompt="a lighthouse on a cliff at dawn, watercolour",
                   price="$0.13")
    card = studio.locator(f"[data-testid=job-card][data-key='{key}']")
    # Only the kernel's reply to this click frees Generate (no timer does): the round trip worked.
    expect(studio.get_by_test_id("generate")).to_be_enabled()
    expect(studio.get_by_test_id("generate-error")).to_be_hidden()
    expect(card).to_have_attribute("data-status", "complete", timeout=30_000)
    seen = statuses(studio, key)
    assert RUNNING & set(seen), f"never seen running: {seen}"
    assert seen[-1] == "complete"
    expect(card.get_by_test_id("prompt-text")).to_have_text("a lighthouse on a cliff at dawn, watercolour")
    expect(card.get_by_test_id("cost-amount")).to_have_text("$0.13")
    expect_image_loaded(card.get_by_test_id("result-image"))
    expect(session_total(studio)).to_have_text(f"This session: {format_usd(spent + 0.13)}")
    studio.scroll_into_view_if_needed()
    screenshot(studio, "studio", docs="studio.png")


def test_studio_generates_a_video(studio, screenshot):
    key = generate(studio, model="veo-3.1-fast", prompt="a paper boat sailing across a puddle, slow motion",
                   params={"durationSeconds": "4"}, price="$0.40")
    card = studio.locator(f"[data-testid=job-card][data-key='{key}']")
    expect(card).to_have_attribute("data-status", "complete", timeout=60_000)
    seen = statuses(studio, key)
    assert RUNNING & set(seen), f"never seen running: {seen}"
    expect_video_loaded(card.get_by_test_id("result-video"), 4)
    screenshot(card, "video-card")


def test_studio_asks_before_paying_above_threshold(studio, screenshot):
    """Veo 3.1 for 4 s costs $1.60, above the $1.00 threshold. Generate pressed from the keyboard:
    the question takes the focus (on Cancel); Cancel signs nothing and the card can be dismissed;
    Pay runs the job."""
    spent = session_total(studio).inner_text()
    key = generate(studio, model="veo-3.1", prompt="waves at night", params={"durationSeconds": "4"}, price="$1.60",
                   keyboard=True)
    panel = studio.get_by_test_id("confirm-panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("This costs $1.60")
    expect(panel).not_to_contain_text("confirm=True")
    expect(studio.get_by_test_id("confirm-pay")).to_have_text("Pay $1.60")
    expect(studio.get_by_test_id("cancel-pay")).to_be_focused()  # keyboard focus moved to the question
    card = studio.locator(f"[data-testid=job-card][data-key='{key}']")
    expect(card).to_have_attribute("data-status", "awaiting_confirmation")
    expect(card.get_by_test_id("progress")).to_be_hidden()  # nobody works on it yet: no clock
    screenshot(studio, "confirm")
    studio.page.keyboard.press("Enter")  # on the focused Cancel
    expect(card).to_have_attribute("data-status", "cancelled")
    expect(card.get_by_test_id("status")).to_have_class(re.compile(r"ssw-pill--cancelled"))  # neutral, not failed
    expect(card.get_by_test_id("detail")).to_contain_text("nothing was signed")
    expect(panel).to_be_hidden()
    expect(session_total(studio)).to_have_text(spent)
    card.get_by_test_id("dismiss").click()  # a cancelled request is dismissible
    expect(card).to_have_count(0)

    key = generate(studio, model="veo-3.1", prompt="waves at night", params={"durationSeconds": "4"}, price="$1.60")
    expect(panel).to_be_visible()
    studio.get_by_test_id("confirm-pay").click()
    card = studio.locator(f"[data-testid=job-card][data-key='{key}']")
    expect(card).to_have_attribute("data-status", "complete", timeout=60_000)
    assert "awaiting_confirmation" in statuses(studio, key)
    expect(card.get_by_test_id("cost-amount")).to_have_text("$1.60")
    expect_video_loaded(card.get_by_test_id("result-video"), 4)


# Records, while it runs, every price the bar shows with Generate enabled: window.__sswOffers.
WATCH_OFFERS = """(root) => {
  const offers = (window.__sswOffers = []);
  const look = () => {
    const gen = root.querySelector('[data-testid=generate]');
    const cost = root.querySelector('[data-testid=cost]').textContent;
    const form = [...root.querySelectorAll('[data-testid=param-form] select')].map((s) => s.value).join('/');
    if (!gen.disabled) offers.push(form + ' ' + cost);
  };
  new MutationObserver(look).observe(root, { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def test_stale_price_is_never_paid(studio, screenshot):
    """Seedance Fast at 4 s/480p costs $0.04, at 12 s/720p $0.24. Change the settings and press
    Generate at once: the old price is gone and Generate disabled until the new one has arrived; the
    card then charges exactly the price shown."""
    page = studio.page
    spent = usd(session_total(studio).inner_text())
    studio.get_by_test_id("model-select").select_option("seedance-fast")
    form = studio.locator("[data-testid=param-form]")
    form.locator("select[data-param=duration]").select_option("4")
    form.locator("select[data-param=outputResolution]").select_option("480p")
    studio.get_by_test_id("prompt").fill("a slow wave, price check")
    expect(studio.get_by_test_id("cost")).to_have_text("$0.04")
    button = studio.get_by_test_id("generate")
    expect(button).to_be_enabled()
    studio.evaluate(WATCH_OFFERS)
    known = card_keys(studio)
    form.locator("select[data-param=duration]").select_option("12")
    form.locator("select[data-param=outputResolution]").select_option("720p")
    button.click(force=True)  # at once: on a disabled button, nothing happens
    expect(button).to_be_disabled()
    expect(studio.get_by_test_id("cost")).not_to_have_text("$0.04")
    screenshot(studio.locator(".ssw-studio__bar"), "stale")
    expect(studio.get_by_test_id("cost")).to_have_text("$0.24")
    assert card_keys(studio) == known, "a card was made from the stale price"
    offers = page.evaluate("() => window.__sswOffers")
    # Generate was never enabled with the 4 s price beside 12 s settings, nor with a stale 12 s/720p price.
    assert not [o for o in offers if o.startswith("12/") and o.endswith("$0.04")], offers
    assert not [o for o in offers if o.startswith("12/") and "/720p" in o and not o.endswith("$0.24")], offers
    expect(button).to_be_enabled()
    button.click()
    key = page.wait_for_function(NEW_CARD, arg=[studio.element_handle(), known]).json_value()
    card = studio.locator(f"[data-testid=job-card][data-key='{key}']")
    expect(card.get_by_test_id("cost-amount")).to_have_text("$0.24", timeout=30_000)
    expect(card.get_by_test_id("param-chips")).to_contain_text("Duration: 12")
    expect(session_total(studio)).to_have_text(f"This session: {format_usd(spent + 0.24)}")


def test_keystrokes_stay_in_the_widget(studio, quickstart):
    """In command mode JupyterLab maps plain keys to notebook actions (A inserts a cell, D D deletes
    one, X cuts, arrows move the selection): typed into the widget they must only edit the widget."""
    cells = quickstart.panel.locator(".jp-Cell")
    count = cells.count()
    active = "(cells) => cells.findIndex((c) => c.classList.contains('jp-mod-active'))"
    prompt = studio.get_by_test_id("prompt")
    prompt.fill("")
    selected = cells.evaluate_all(active)
    prompt.press_sequentially("a dd x z, ok")
    expect(prompt).to_have_value("a dd x z, ok")
    select = studio.get_by_test_id("model-select")
    select.focus()
    before = select.input_value()
    select.press("ArrowDown")
    expect(select).not_to_have_value(before)
    select.press("ArrowUp")
    expect(select).to_have_value(before)
    assert cells.count() == count
    assert cells.evaluate_all(active) == selected


# Every visible text in `root` whose contrast with what is behind it is below WCAG AA (4.5:1, or
# 3:1 for large text); disabled controls are exempt, as WCAG says.
LOW_CONTRAST = """(root) => {
  const parse = (c) => {  // rgb()/rgba(), or color(srgb …) as color-mix() computes
    const m = c && c.match(/rgba?\\(([^)]+)\\)/);
    const s = c && c.match(/color\\(srgb ([^)]+)\\)/);
    if (!m && !s) return null;
    const [r, g, b, a = 1] = (m || s)[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return m ? [r, g, b, a] : [r * 255, g * 255, b * 255, a];
  };
  const lum = ([r, g, b]) => {
    const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
  const behind = (el) => {
    const layers = [];
    for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c[3] > 0) layers.push(c);
      if (c && c[3] >= 1) break;
    }
    return layers.reverse().reduce((bg, layer) => over(layer, bg), [255, 255, 255, 1]);
  };
  const bad = [];
  for (const el of root.querySelectorAll("*")) {
    if (!el.checkVisibility?.() || el.closest(":disabled, [aria-disabled=true], img, video, .ssw-ab")) continue;
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const cs = getComputedStyle(el);
    let opacity = 1;
    for (let n = el; n && n !== root.parentElement; n = n.parentElement) opacity *= Number(getComputedStyle(n).opacity);
    const fgRaw = parse(cs.color);
    const bg = behind(el);
    const fg = over([fgRaw[0], fgRaw[1], fgRaw[2], fgRaw[3] * opacity], bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(cs.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
    const what = `${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}"`;
    if (ratio < (large ? 3 : 4.5)) bad.push(`${ratio.toFixed(2)} ${what}`);
  }
  return [...new Set(bad)];
}"""


def use_theme(page, name: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Settings$")).click()
    page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel", has_text=re.compile("^Theme$")).first.hover()
    page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(name)}$")).first.click()
    light = "false" if "Dark" in name else "true"
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", light)


def test_text_contrast_in_light_and_dark_themes(studio, quickstart, screenshot):
    """Every text the Studio shows (header, form, price, confirmation-free cards of every status)
    reads at WCAG AA contrast in JupyterLab Light and Dark; progress bars and videos have names."""
    page = studio.page
    low = studio.evaluate(LOW_CONTRAST)
    assert low == [], "\n".join(low)
    names = studio.locator("[role=progressbar]").evaluate_all("(bars) => bars.map((b) => b.getAttribute('aria-label'))")
    assert names and all(names)
    videos = studio.locator("video").evaluate_all("(vs) => vs.map((v) => v.getAttribute('aria-label'))")
    assert videos and all(videos)
    try:
        use_theme(page, "JupyterLab Dark")
        page.wait_for_function("() => !['#ffffff', 'white'].includes("
                               "getComputedStyle(document.body).getPropertyValue('--jp-layout-color1').trim())")
        low = studio.evaluate(LOW_CONTRAST)
        assert low == [], "\n".join(low)
        studio.scroll_into_view_if_needed()
        screenshot(studio, "dark")
    finally:
        use_theme(page, "JupyterLab Light")


# Runs last in this module: it changes the sandbox's route table (and puts it back).
SWAP_TABLE = ('import copy; from stablestudio_widgets.catalog import load; table = copy.deepcopy(load().data); '
              'new = dict(next(r for r in table["routes"] if r["id"] == "nano-banana/generate"), '
              'id="aurora-1/generate", model="aurora-1", label="Aurora 1"); '
              'table["routes"] = [r for r in table["routes"] if r["model"] != "grok"] + [new]; '
              'ss.aio._sandbox.set_catalog(table); ss.refresh_routes()')
RESTORE_TABLE = "ss.aio._sandbox.set_catalog(load().data); ss.refresh_routes()"


def test_studio_follows_a_refreshed_route_table(studio, quickstart, screenshot):
    """The service adds a model and drops one; refresh_routes() in another cell: the open Studio's
    picker follows at once, and the new model is quoted and generated like any other."""
    picker = studio.get_by_test_id("model-select")
    expect(picker.locator("option[value=grok]")).to_have_count(1)
    quickstart.append_and_run(SWAP_TABLE)
    expect(picker.locator("option[value='aurora-1']")).to_have_count(1)
    expect(picker.locator("option[value=grok]")).to_have_count(0)
    key = generate(studio, model="aurora-1", prompt="a fox from a model added after the release", price="$0.067")
    card = studio.locator(f"[data-testid=job-card][data-key='{key}']")
    expect(card).to_have_attribute("data-status", "complete", timeout=60_000)
    screenshot(studio, "refreshed")
    quickstart.append_and_run(RESTORE_TABLE)
    expect(picker.locator("option[value=grok]")).to_have_count(1)
    expect(picker.locator("option[value='aurora-1']")).to_have_count(0)
    expect(picker).not_to_have_value("aurora-1")  # the removed model gave way
