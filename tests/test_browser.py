"""Every page of the built site in headless Chromium, with the network off (only localhost is reachable).

Screenshots of every page are saved under _build/screenshots/ as test artifacts.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser_support import CHROMIUM_ARGS, PageLog, require_browser, serve
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
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def open_page(browser, url: str, base: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
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
