"""A blind 2 × 3 Compare driven entirely from the browser: total, Run, votes, Reveal, summary.

The notebook only displays the widget (nothing is run from code): everything after that is a
click, and the kernel side is checked at the end by running a new cell.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from playwright.sync_api import expect

from .conftest import new_page, save_failure
from .lab import Notebook

pytestmark = pytest.mark.browser

PROMPTS = ["a red fox in fresh snow, golden hour", "a lighthouse in a storm, oil painting"]
MODELS = ["nano-banana", "grok", "flux-2-pro"]
LABELS = {"Nano Banana", "Grok Imagine", "FLUX.2 [pro]"}
NAMES = re.compile(r"nano.?banana|grok|flux|gemini|xai|black forest", re.IGNORECASE)
TOTAL = 2 * (0.067 + 0.07 + 0.03)  # per prompt: one image from each model (nano-banana, grok, flux-2-pro)

SETUP = f"""\
from stablestudio_widgets import Compare, StableStudio

ss = StableStudio.sandbox(time_scale=0.05)
compare = Compare(prompts={PROMPTS!r}, models={MODELS!r},
                  params={{"aspectRatio": "1:1", "aspect_ratio": "1:1"}}, client=ss, blind=True)
compare"""

# Every bit of text and every attribute value in the widget: a blind grid must not name a model
# anywhere, not only in what is visible (titles, alt texts, data attributes, URLs).
ALL_TEXT = """(root) => {
  const out = [root.innerText];
  for (const el of [root, ...root.querySelectorAll('*')]) {
    for (const a of el.attributes) out.push(a.value);
    if (el.tagName === 'TEMPLATE') out.push(el.innerHTML);
  }
  return out.join('\\n');
}"""

# Keeps every text the widget shows while the cells run (cards pass through several states
# between two checks of the test): window.__sswTexts.
RECORD_TEXTS = """(root) => {
  const texts = (window.__sswTexts = new Set([root.innerText]));
  new MutationObserver(() => texts.add(root.innerText))
    .observe(root, { subtree: true, childList: true, characterData: true, attributes: true });
}"""


@pytest.fixture
def compare_notebook(lab):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP)]
    nbformat.write(nb, lab.root / "blind_compare.ipynb")
    return "blind_compare.ipynb"


def vote(panel, choice: str, then: str) -> None:
    panel.get_by_test_id(f"vote-{choice}").click()
    expect(panel).to_contain_text(then)


def test_blind_compare_from_the_browser(open_notebook, compare_notebook, screenshot):
    nb = open_notebook(compare_notebook)
    nb.run_all()
    root = nb.output(0).locator(".ssw-compare")
    expect(root).to_be_visible()

    # The exact total before anything is paid, and nothing that names a model.
    expect(root.get_by_test_id("compare-total")).to_have_text(f"Total ${TOTAL:.3f}")
    expect(root.get_by_test_id("compare-info")).to_have_text("2 prompts × 3 models · blind")
    expect(root.get_by_test_id("compare-col")).to_have_text(["Model A", "Model B", "Model C"])
    expect(root.get_by_test_id("compare-cell")).to_have_count(6)
    assert not NAMES.search(root.evaluate(ALL_TEXT))
    run = root.get_by_test_id("compare-run")
    expect(run).to_have_text(f"Run 6 generations for ${TOTAL:.3f}")
    expect(root.get_by_test_id("reveal")).to_be_disabled()  # vote first

    root.evaluate(RECORD_TEXTS)
    run.click()
    expect(run).to_be_hidden()
    done = root.locator("[data-testid=compare-cell] [data-testid=job-card][data-status=complete]")
    expect(done).to_have_count(6, timeout=60_000)
    expect(root.get_by_test_id("compare-state")).to_have_text("Done: 6 of 6 complete.")
    images = root.locator("[data-testid=compare-cell] [data-testid=result-image]")
    expect(images).to_have_count(6)
    for i in range(6):
        images.nth(i).scroll_into_view_if_needed()
    nb.page.wait_for_function("(imgs) => imgs.every((i) => i.complete && i.naturalWidth > 0)",
                              arg=images.element_handles())
    # Still blind with the results in: no names, no prices (they would tell the models apart),
    # and none was shown while the cells ran either.
    assert not NAMES.search(root.evaluate(ALL_TEXT))
    seen = nb.page.evaluate("() => [...window.__sswTexts]")
    assert len(seen) > 2 and not any(NAMES.search(t) for t in seen)
    expect(root.locator("[data-testid=compare-cell] [data-testid=cost-badge]")).to_have_count(0)
    expect(root.get_by_test_id("compare-col")).to_have_text(["Model A", "Model B", "Model C"])

    # Three pairs per prompt; vote every pair of prompt 1 and two of prompt 2.
    first, second = (root.locator(f"[data-testid=vote-panel][data-prompt-index='{i}']") for i in (0, 1))
    expect(first).to_contain_text("pair 1 of 3")
    expect(first.get_by_test_id("pair-names")).to_contain_text("Left: Model")
    slider = first.get_by_test_id("ab-slider")
    expect(slider).to_be_visible()
    # The divider follows a drag on the picture itself.
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    nb.page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    nb.page.mouse.down()
    nb.page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] / 2, steps=4)
    nb.page.mouse.up()
    expect(first.get_by_test_id("ab-range")).to_have_value(re.compile(r"^(19|20|21)$"))
    screenshot(root, "voting")
    vote(first, "a", "pair 2 of 3")
    vote(first, "b", "pair 3 of 3")
    vote(first, "tie", "All 3 pairs voted.")
    vote(second, "tie", "pair 2 of 3")
    vote(second, "both-bad", "pair 3 of 3")

    reveal = root.get_by_test_id("reveal")
    expect(reveal).to_be_enabled()
    reveal.click()
    expect(reveal).to_be_hidden()
    cols = root.get_by_test_id("compare-col")
    expect(cols).to_have_count(3)
    expect(cols.first).not_to_have_text("Model A")
    # The letters stay beside the names, in the same columns: the votes for "Model B" are that model's.
    revealed = cols.all_inner_texts()
    assert [c.split(" · ")[0] for c in revealed] == ["A", "B", "C"]
    assert {c.split(" · ")[1] for c in revealed} == LABELS
    summary = root.get_by_test_id("summary")
    expect(summary.locator("tbody tr")).to_have_count(3)
    heads = summary.locator("thead th").all_inner_texts()
    assert "Mean rating" not in heads  # pairwise votes: no empty rating column
    rows = summary.locator("tbody tr").evaluate_all(
        "(rows) => rows.map((r) => [...r.children].map((c) => c.textContent))")
    assert {r[0].split(" · ")[1] for r in rows} == LABELS
    wins, losses, ties, both_bad, votes = (sum(int(r[i]) for r in rows) for i in range(1, 6))
    assert (wins, losses, ties, both_bad, votes) == (2, 2, 4, 2, 10)  # 5 votes, each counted for both cells
    expect(root.locator("[data-testid=compare-cell] [data-testid=cost-badge]")).to_have_count(6)  # prices now
    root.scroll_into_view_if_needed()
    screenshot(root, "revealed", docs="compare.png")

    # The kernel recorded the same votes, in the widget and in the ledger.
    cell = nb.append_and_run(
        'print(len(compare.votes), [v["choice"] for v in compare.votes], len(ss.ledger.votes(compare.comparison_id)))\n'
        "compare.summary_table()")
    out = cell.locator(".jp-OutputArea-output")
    expect(out.first).to_have_text(re.compile(r"5 \['a', 'b', 'tie', 'tie', 'both_bad'\] 5"))
    table = out.locator("table.dataframe")
    expect(table.locator("tbody tr")).to_have_count(3)
    labels = table.locator("tbody tr td:nth-child(3)").all_inner_texts()  # the "label" column
    assert {label.split(" · ")[1] for label in labels} == LABELS


def test_compare_at_800_px_scrolls_inside_the_widget(browser, lab, compare_notebook, screenshot):
    """In an 800 px window the grid scrolls inside the widget: the page does not grow sideways."""
    pg = new_page(browser, width=800)
    try:
        nb = Notebook(pg, lab, compare_notebook).open()
        nb.run_all()
        root = nb.output(0).locator(".ssw-compare")
        expect(root.get_by_test_id("compare-cell")).to_have_count(6)
        root.get_by_test_id("compare-run").click()
        done = root.locator("[data-testid=compare-cell] [data-testid=job-card][data-status=complete]")
        expect(done).to_have_count(6, timeout=60_000)
        scroller = root.locator(".ssw-compare__scroll").first
        widths = scroller.evaluate("(s) => [s.scrollWidth, s.clientWidth, s.getBoundingClientRect().right]")
        assert widths[0] > widths[1], f"the grid fits without scrolling? {widths}"
        assert widths[2] <= 800, f"the grid's box ends at {widths[2]} px, past the 800 px window"
        page_width = pg.evaluate("() => document.scrollingElement.scrollWidth")
        assert page_width <= 800, f"the page is {page_width} px wide"
        panel = nb.output(0).first.evaluate("(o) => [o.scrollWidth, o.clientWidth]")
        assert panel[0] <= panel[1] + 1, f"the output overflows its cell: {panel}"
        screenshot(pg, "800px")
    except Exception:
        save_failure(pg, "compare-800px")
        raise
    finally:
        pg.context.close()
        lab.shutdown_kernels()


def test_ab_compare_notebook_stays_blind_through_run_all(open_notebook, screenshot):
    """Run All of ab_compare.ipynb pays for the grid and prints its tables: until the reveal no output
    of the notebook (widget, its static copy, results, summary) names a model or a per-model cost."""
    nb = open_notebook("ab_compare.ipynb")
    nb.run_all(timeout=180_000)
    root = nb.output(0).locator(".ssw-compare")
    expect(root.locator("[data-testid=compare-cell] [data-testid=job-card][data-status=complete]")).to_have_count(6)
    outputs = nb.panel.locator(".jp-OutputArea")
    text = "\n".join(outputs.evaluate_all(
        "(areas) => areas.map((a) => a.innerText + [...a.querySelectorAll('*')].map((e) => "
        "[...e.attributes].map((x) => x.value).join(' ')).join(' '))"))
    assert not NAMES.search(text), NAMES.search(text)
    assert "Model A" in text and "Total $" in text  # the letters and the total are there
    assert not re.search(r"\$0\.0(39|7|5)\b", text)  # no price of one model (they would tell them apart)
    nb.panel.locator(".jp-Cell").last.scroll_into_view_if_needed()
    screenshot(nb.page, "run-all")
