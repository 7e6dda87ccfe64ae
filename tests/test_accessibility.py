"""WCAG 2.1 A and AA, measured: axe-core in headless Chromium on every page of the built site and on a student's
feedback page, at 1280 px (a laptop) and 390 px (a phone). No serious or critical violation may remain.

US public universities must meet WCAG 2.1 AA for course material (ADA Title II); a course that fails it cannot be
adopted there. axe-core is vendored (tests/vendor/axe-core, pinned in tests/vendor/package.json), so the test runs
offline. axe finds only what a program can find (about half of WCAG's failures); it is a floor, not a certificate.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from browser_support import (BLOCKING_IMPACTS, PageLog, axe_violations, chromium_browser, describe_violations,
                             serve)
from conftest import REPO, toc_files

pytestmark = pytest.mark.browser
WIDTHS = (1280, 390)
# Pages Sphinx writes beside the chapters: a reader reaches both from every page.
SITE_EXTRAS = ("search", "genindex")


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def site(built_book: Path):
    with serve(built_book) as url:
        yield url


def settled_page(browser, url: str, base: str, width: int):
    """A page at `width` px once its math, widgets and images are done (axe must see what a reader sees)."""
    context = browser.new_context(viewport={"width": width, "height": 900}, service_workers="block")
    page = context.new_page()
    log = PageLog(base)
    log.attach(page)
    page.goto(url, wait_until="networkidle", timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('.math')].every(e => e.querySelector('mjx-container'))",
                           timeout=30_000)
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
    return context, page, log


def assert_no_blocking(violations: list[dict], where: str) -> None:
    blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
    assert not blocking, f"{where}: serious or critical WCAG 2.1 A/AA violations (axe-core):\n" + \
        describe_violations(blocking)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("docname", [*toc_files(), *SITE_EXTRAS])
def test_site_page_meets_wcag_aa(browser, site: str, docname: str, width: int):
    query = "?q=attention" if docname == "search" else ""
    context, page, log = settled_page(browser, f"{site}{docname}.html{query}", site, width)
    try:
        if docname == "search":
            page.wait_for_selector("ul.search li", timeout=30_000)
        assert_no_blocking(axe_violations(page), f"{docname} at {width} px")
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()


def graded_result():
    """A student's ps1 as the grader sees it: the released notebook, run, one task right, one failing with a
    traceback in colour (nbconvert renders ANSI colours as spans), one hidden test failing."""
    from grader.pipeline import Result, TaskResult

    notebook = nbformat.read(REPO / "exercises" / "ps1" / "ps1.ipynb", as_version=4)
    red_traceback = ["\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
                     "\x1b[0;31mNotImplementedError\x1b[0m                       Traceback (most recent call last)",
                     "Cell \x1b[0;32mIn[3], line 5\x1b[0m\n\x1b[0;32m----> 5\x1b[0m \x1b[38;5;28;01mraise\x1b[39;00m "
                     "\x1b[38;5;167;01mNotImplementedError\x1b[39;00m()",
                     "\x1b[0;31mNotImplementedError\x1b[0m: "]
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if grade_id == "scaled_dot_product":
            cell.outputs = [nbformat.v4.new_output("error", ename="NotImplementedError", evalue="",
                                                   traceback=red_traceback)]
        elif grade_id.startswith("test_self"):
            cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError",
                                                   evalue="rows of the weights must sum to 1", traceback=[])]
        else:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="tensor([[0.4421, 0.5579]])\n")]
    tasks = [TaskResult(task="attention_scores", score=2, max_score=2, message="passed"),
             TaskResult(task="scaled_dot_product", score=0, max_score=3,
                        message="NotImplementedError: the function is not written yet"),
             TaskResult(task="self_attention", score=0, max_score=5, message="AssertionError: rows of the weights "
                        "must sum to 1")]
    return Result(student_id="ada", assignment="ps1", status="graded", message="", max_score=10, tasks=tasks,
                  flags=["a cell ran for more than 10 s"], feedback_nb=notebook)


@pytest.fixture(scope="module")
def feedback_site(tmp_path_factory):
    from grader.pipeline.report import write_feedback

    out = tmp_path_factory.mktemp("grading-out")
    page = write_feedback(out, graded_result(), "ps1")
    with serve(out) as url:
        yield url, page.relative_to(out).as_posix()


# nbconvert's lab theme fails 4.5:1 contrast on prompts, comments, numbers and ANSI traceback colours; the
# feedback template's notebook_css block (grader/pipeline/report.py) sets accessible colours.
@pytest.mark.parametrize("width", WIDTHS)
def test_feedback_page_meets_wcag_aa(browser, feedback_site, width: int):
    base, path = feedback_site
    context, page, log = settled_page(browser, base + path, base, width)
    try:
        assert "NotImplementedError" in page.inner_text("body"), "the feedback page does not show the failure"
        assert_no_blocking(axe_violations(page), f"a feedback page ({path}) at {width} px")
        assert not log.problems(), "\n".join(log.problems())
    finally:
        context.close()
