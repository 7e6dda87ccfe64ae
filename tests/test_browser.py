"""Every page of the built site in headless Chromium, with the network off (only localhost is reachable).

Every page is opened at 1280 px (a laptop) and at 390 px (a phone): nothing may be wider than the screen, no table
cut off, no code line hidden behind a sideways scroll. The shape explorer's table must follow its sliders with no
kernel behind the page. Screenshots of every page are saved under _build/screenshots/ as test artifacts.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from browser_support import PageLog, chromium_browser, serve
from conftest import REPO, toc_files

pytestmark = pytest.mark.browser
SCREENSHOTS = REPO / "_build" / "screenshots"
WIDGET_CONTROLS = (".widget-slider, .widget-dropdown, .widget-toggle-button, .widget-checkbox, "
                   ".widget-toggle-buttons, .widget-text, .widget-button, .widget-inline-hbox")


@pytest.fixture(scope="module")
def site(built_book: Path):
    with serve(built_book) as url:
        yield url


# Module scope: Playwright's sync API keeps an event loop running on this thread while it is open, which would
# break later tests that call asyncio.run() (the grading pipeline does).
@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


PHONE_WIDTH = 390  # CSS pixels of a current phone held upright
# Tables whose right edge passes the edge of a box that clips (overflow hidden) or of the text column, with no
# scrolling box around them that would let a reader reach the rest.
CLIPPED_TABLES = """() => {
  const column = document.querySelector('article').getBoundingClientRect();
  const clipped = [];
  for (const table of document.querySelectorAll('article table')) {
    const right = table.getBoundingClientRect().right;
    let reachable = false, cut = right > column.right + 1;
    for (let box = table.parentElement; box && box.tagName !== 'ARTICLE'; box = box.parentElement) {
      const overflow = getComputedStyle(box).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') { reachable = true; break; }
      if ((overflow === 'hidden' || overflow === 'clip') && right > box.getBoundingClientRect().right + 1) cut = true;
    }
    if (cut && !reachable) clipped.push(table.innerText.slice(0, 80));
  }
  return clipped;
}"""
# Code blocks and outputs whose lines run past the block's right edge (a sideways scroll bar inside the block).
# Tables printed as text (cells tagged output-table) scroll in their own focusable box on purpose: their columns
# must stay aligned, so they are left out here.
SIDEWAYS_CODE = """() => [...document.querySelectorAll('article pre')]
  .filter(pre => !pre.closest('.tag_output-table'))
  .filter(pre => pre.offsetParent !== null && pre.scrollWidth > pre.clientWidth + 1)
  .map(pre => pre.innerText.split('\\n').sort((a, b) => b.length - a.length)[0].slice(0, 100))"""


def open_page(browser, url: str, base: str, width: int = 1280):
    context = browser.new_context(viewport={"width": width, "height": 900}, service_workers="block")
    page = context.new_page()
    log = PageLog(base)
    log.attach(page)
    page.goto(url, wait_until="networkidle", timeout=60_000)
    return context, page, log


@pytest.mark.parametrize("docname", toc_files())
def test_page_in_browser(browser, site: str, built_book: Path, docname: str):
    html = (built_book / f"{docname}.html").read_text()
    context, page, log = open_page(browser, site + f"{docname}.html", site)
    try:
        if 'class="math' in html:
            page.wait_for_function(
                "() => [...document.querySelectorAll('.math')].every(e => e.querySelector('mjx-container'))",
                timeout=30_000)
            body_text = page.inner_text("article")
            assert "$$" not in body_text and "\\frac" not in body_text, "raw LaTeX left on the page"
        if "application/vnd.jupyter.widget-view+json" in html:
            page.wait_for_selector(WIDGET_CONTROLS, state="visible", timeout=30_000)
            assert page.locator(".jupyter-widgets").count() > 0
            assert "Error displaying widget" not in page.inner_text("article")
        page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
        images = page.evaluate(
            "() => [...document.querySelectorAll('article img')].map(i => "
            "({src: i.getAttribute('src'), width: i.naturalWidth, alt: i.getAttribute('alt') || ''}))")
        for image in images:
            assert image["width"] > 0, f"image {image['src']} did not load"
            assert image["alt"].strip(), f"image {image['src']} has no alt text"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / (docname.replace("/", "__") + ".png")), full_page=True)
        assert not log.problems(), "\n".join(log.problems())
        clipped = page.evaluate(CLIPPED_TABLES)
        assert not clipped, f"{docname}: tables cut off at 1280 px: {clipped}"
        sideways = page.evaluate(SIDEWAYS_CODE)
        assert not sideways, f"{docname}: code lines hidden behind a sideways scroll at 1280 px: {sideways}"
    finally:
        context.close()


@pytest.mark.parametrize("docname", toc_files())
def test_page_fits_a_phone(browser, site: str, built_book: Path, docname: str):
    """At 390 px nothing makes the page wider than the screen: wide content wraps or scrolls in its own box."""
    html = (built_book / f"{docname}.html").read_text()
    assert "_static/course.css" in html, (
        f"{docname} does not link the course stylesheet: book/_static_course/course.css must be registered in "
        "_config.yml (html_static_path and html_css_files)")
    context, page, log = open_page(browser, site + f"{docname}.html", site, width=PHONE_WIDTH)
    try:
        if "application/vnd.jupyter.widget-view+json" in html:
            page.wait_for_selector(WIDGET_CONTROLS, state="visible", timeout=30_000)
        page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
        # Rendered math can be wide too: measure after MathJax is done.
        if 'class="math' in html:
            page.wait_for_function(
                "() => [...document.querySelectorAll('.math')].every(e => e.querySelector('mjx-container'))",
                timeout=30_000)
        widths = page.evaluate("() => ({document: document.documentElement.scrollWidth, screen: innerWidth})")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / (docname.replace("/", "__") + f"_{PHONE_WIDTH}px.png")))
        assert widths["document"] <= widths["screen"], (
            f"{docname} is {widths['document']} px wide on a {widths['screen']} px screen: "
            f"{page.evaluate(WIDER_THAN_SCREEN)}")
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()


# The elements that stick out past the right edge of the screen, for the failure message.
WIDER_THAN_SCREEN = """() => {
  const scrolls = e => { for (let box = e.parentElement; box && box !== document.body; box = box.parentElement)
    if (['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(box).overflowX)) return true; return false; };
  return [...document.querySelectorAll('article *')]
    .filter(e => e.getBoundingClientRect().right > innerWidth + 1 && !scrolls(e))
    .slice(0, 5).map(e => `${e.tagName.toLowerCase()}.${e.className}: ${(e.innerText || '').slice(0, 60)}`);
}"""


def explorer_reference(built_book: Path):
    """explorer_rows from the shape explorer's executed notebook (the Python half of the explorer), run here."""
    notebook = json.loads((built_book / "_notebooks" / "book" / "shape_explorer.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and ("import torch" in source or "def attention_shapes" in source
                                            or "def explorer_rows" in source):
            # Magics are not Python; the cell's last line displays the explorer and is not needed here.
            lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "HTML("))]
            exec(compile("\n".join(lines), "shape_explorer.ipynb", "exec"), namespace)
    return namespace["explorer_rows"]


def test_shape_explorer_table_follows_the_sliders(browser, site: str, built_book: Path):
    """The published page has no kernel; its table must still follow the controls, and say what attention_shapes
    (PyTorch on the meta device, run here) says for the same sizes."""
    explorer_rows = explorer_reference(built_book)
    sizes = dict(batch=8, context_length=1024, d_in=768, d_out=768, num_heads=12, divide=True,
                 final_projection=True)
    context, page, log = open_page(browser, site + "book/shape_explorer.html", site)

    def shown():
        rows = page.eval_on_selector_all(".mha-explorer-table tbody tr",
                                         "trs => trs.map(tr => [...tr.cells].map(td => td.innerText.trim()))")
        summary = page.eval_on_selector_all(".mha-explorer-summary li", "lis => lis.map(li => li.innerText.trim())")
        return [tuple(row) for row in rows], summary

    def expected():
        rows, summary = explorer_rows(**sizes)
        return [tuple(row) for row in rows], summary

    try:
        explorer = page.locator(".mha-explorer")
        explorer.scroll_into_view_if_needed()
        assert shown() == expected(), "the first table is not attention_shapes' at the default sizes"
        # Move the num_heads slider with the keyboard, four steps right: 12 -> 16 heads of 48.
        slider = page.locator("input[name=num_heads_slider]")
        slider.focus()
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        sizes["num_heads"] = 16
        assert page.locator("input[name=num_heads]").input_value() == "16"
        rows, summary = shown()
        assert ("queries", "torch.Size([8, 16, 1024, 48])") in rows and "attention weights 512.0 MiB (float32)" in summary
        assert (rows, summary) == expected()
        # Drag the context-length slider with the mouse to its far right end: 16384 tokens.
        slider = page.locator("input[name=context_length_slider]")
        box = slider.bounding_box()
        page.mouse.click(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2)
        sizes["context_length"] = int(page.locator("input[name=context_length]").input_value())
        assert sizes["context_length"] > 15000, sizes
        assert shown() == expected()
        # The 9216 bug: no division, no projection.
        sizes.update(num_heads=12, context_length=1024, divide=False, final_projection=False)
        page.locator("input[name=num_heads]").fill("12")
        page.locator("input[name=context_length]").fill("1024")
        page.locator("input[name=divide]").uncheck()
        page.locator("input[name=final_projection]").uncheck()
        rows, summary = shown()
        assert ("output", "torch.Size([8, 1024, 9216])") in rows and "parameters 21,233,664" in summary
        assert (rows, summary) == expected()
        # A head count that does not divide d_out: the same message as the Python ValueError, and no table.
        page.locator("input[name=divide]").check()
        page.locator("input[name=num_heads]").fill("7")
        with pytest.raises(ValueError) as error:
            explorer_rows(**{**sizes, "divide": True, "num_heads": 7})
        assert page.inner_text(".mha-explorer-error").strip() == str(error.value)
        assert shown() == ([], [])
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()


def test_sidebar_navigation(browser, site: str):
    context, page, log = open_page(browser, site + "book/index.html", site)
    try:
        link = page.locator("nav.bd-links a", has_text="One attention head").first
        link.click()
        page.wait_for_load_state("networkidle")
        assert page.url.endswith("book/01_one_head.html")
        assert "One attention head" in page.inner_text("h1")
        # And onward: the "next" link at the foot of the chapter leads to chapter 2.
        page.locator("a.right-next").first.click()
        page.wait_for_load_state("networkidle")
        assert page.url.endswith("book/02_causal_attention.html")
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()


def test_search_page_finds_chapters(browser, site: str):
    context, page, log = open_page(browser, site + "search.html?q=softmax", site)
    try:
        page.wait_for_selector("ul.search li", timeout=30_000)
        hits = page.locator("ul.search li a").all_inner_texts()
        assert hits, "the search page found nothing for 'softmax'"
        assert any(re.search(r"attention|head", h, re.I) for h in hits), hits
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()


def test_search_finds_a_number(browser, site: str):
    """The book's headline number is a word a reader searches for (Sphinx's search page drops digit-only words;
    book/_static_course/course.js puts them back)."""
    context, page, log = open_page(browser, site + "search.html?q=9216", site)
    try:
        page.wait_for_selector("ul.search li", timeout=30_000)
        hits = page.locator("ul.search li a").all_inner_texts()
        assert any("Bug clinic I: 9216" in h for h in hits), f"searching for 9216 did not find chapter 7: {hits}"
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()


def test_notebook_download_link(browser, site: str, built_book: Path):
    context, page, log = open_page(browser, site + "book/01_one_head.html", site)
    try:
        href = page.locator("a:has-text('.ipynb')").first.get_attribute("href")
        assert href and href.endswith("_notebooks/book/01_one_head.ipynb"), href
        response = page.request.get(site + "book/" + href)
        assert response.ok
        notebook = response.json()
        assert notebook["nbformat"] == 4 and notebook["cells"], "the downloaded notebook is empty"
    finally:
        context.close()


# Each text table (a cell tagged output-table) as a reader at 390 px meets it.
TEXT_TABLES = """() => [...document.querySelectorAll('article .cell.tag_output-table .cell_output pre')].map(pre => ({
  whiteSpace: getComputedStyle(pre).whiteSpace, overflowX: getComputedStyle(pre).overflowX,
  tabindex: pre.getAttribute('tabindex'), role: pre.getAttribute('role'), label: pre.getAttribute('aria-label') || '',
  scrolls: pre.scrollWidth > pre.clientWidth, first: pre.innerText.split('\\n')[0].slice(0, 60)}))"""


@pytest.mark.parametrize("docname", ["book/09_performance_lab", "book/11_masks_in_the_wild"])
def test_text_tables_keep_their_columns_on_a_phone(browser, site: str, docname: str):
    """The race tables and the polarity clinic's diagnostics: lines never wrap (columns stay aligned); the table
    scrolls sideways in its own box, which a keyboard can reach and a screen reader can name."""
    context, page, log = open_page(browser, site + f"{docname}.html", site, width=PHONE_WIDTH)
    try:
        tables = page.evaluate(TEXT_TABLES)
        assert tables, f"{docname} has no cell tagged output-table"
        for table in tables:
            assert table["whiteSpace"] == "pre" and table["overflowX"] in ("auto", "scroll"), table
            assert table["tabindex"] == "0" and table["role"] == "region" and table["label"].strip(), table
        assert any(t["scrolls"] for t in tables), "no table is wider than a phone: the test no longer tests"
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()


def test_figures_open_full_size(browser, site: str):
    """On a phone a reader opens a figure at full size: every figure's picture links to the image file itself."""
    context, page, log = open_page(browser, site + "book/04_splitting_heads.html", site, width=PHONE_WIDTH)
    try:
        links = page.evaluate("""() => [...document.querySelectorAll('article figure img')].map(img => ({
            src: img.src, href: img.closest('a') ? img.closest('a').href : null,
            hint: !!img.closest('figure').querySelector('.course-open-hint')}))""")
        assert links, "no figure on the page"
        for link in links:
            assert link["href"] == link["src"] and link["hint"], link
            assert page.request.get(link["href"]).ok, link
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()
