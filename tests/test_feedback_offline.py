"""Feedback pages (grader.pipeline.report.write_feedback) are the same bytes on a regrade and load nothing from
outside OUT: MathJax is the course's vendored copy under OUT/feedback/_static/, named by a relative path. Written
without a kernel; the last test opens a page in headless Chromium with the network off.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from grader.pipeline import Result, TaskResult
from grader.pipeline.report import STATIC_FOLDER, feedback_folder, write_feedback

MATH = ("The scores are $q_i \\cdot k_j / \\sqrt{d_k}$, and\n\n"
        "$$\\mathrm{softmax}(x)_i = \\frac{e^{x_i}}{\\sum_j e^{x_j}}$$")
PAPER = "https://arxiv.org/abs/1706.03762"


def result(student_id: str = "ada") -> Result:
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(f"# Problem set 1\n\n{MATH}\n\nSee [the paper]({PAPER})."),
        nbformat.v4.new_code_cell("print(42)"),
        nbformat.v4.new_markdown_cell("```mermaid\ngraph TD; A-->B\n```"),
    ])
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    return Result(student_id=student_id, assignment="ps1", status="graded", message="", max_score=2,
                  tasks=[TaskResult(task="attention_scores", score=2, max_score=2, message="passed")],
                  feedback_nb=notebook)


def test_the_same_result_writes_the_same_bytes(tmp_path):
    first = write_feedback(tmp_path / "run1", result(), "ps1")
    second = write_feedback(tmp_path / "run2", result(), "ps1")     # a fresh notebook: new random cell ids
    assert first.read_bytes() == second.read_bytes()
    again = write_feedback(tmp_path / "run1", result(), "ps1")        # a regrade into the same OUT
    assert again.read_bytes() == second.read_bytes()
    assert "cell-id=feedback-001" in first.read_text()


def external_references(page: str) -> list[str]:
    """URLs outside the page's folder that a browser would fetch by itself: script, link, img, iframe sources,
    CSS url(...) and @import, JavaScript import(...). Anchors (<a href>) are not fetched and are not counted."""
    found = re.findall(r"<(?:script|link|img|iframe|source|embed|object)\b[^>]*?\b(?:src|href|data)\s*=\s*"
                       r"[\"']?((?:https?:)?//[^\"'\s>]+)", page, flags=re.I)
    found += re.findall(r"url\(\s*[\"']?((?:https?:)?//[^)\"']+)", page, flags=re.I)
    found += re.findall(r"@import\s+[\"']((?:https?:)?//[^\"']+)", page, flags=re.I)
    found += re.findall(r"import\(\s*[\"']((?:https?:)?//[^\"']+)", page, flags=re.I)
    return found


def test_page_names_no_external_script_or_style_and_its_local_files_exist(tmp_path):
    page_path = write_feedback(tmp_path, result(), "ps1")
    page = page_path.read_text()
    assert external_references(page) == []
    assert "cdnjs" not in page and "require.js" not in page and "require.min.js" not in page
    assert f'href="{PAPER}"' in page          # the student's own link stays a link
    local = re.findall(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", page)
    assert local == ["../_static/mathjax/tex-chtml.js"]
    for reference in local:
        assert (page_path.parent / reference).resolve().is_file(), reference
    fonts = tmp_path / "feedback" / STATIC_FOLDER / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert (fonts / "MathJax_Main-Regular.woff").is_file()
    assert (tmp_path / "feedback" / STATIC_FOLDER / "mathjax" / "ui" / "safe.js").is_file()


def test_static_files_are_copied_once_and_no_student_folder_is_the_static_one(tmp_path):
    write_feedback(tmp_path, result("ada"), "ps1")
    mathjax = tmp_path / "feedback" / STATIC_FOLDER / "mathjax" / "tex-chtml.js"
    stamp = mathjax.stat().st_mtime_ns
    write_feedback(tmp_path, result("bob"), "ps1")
    assert mathjax.stat().st_mtime_ns == stamp
    assert feedback_folder(STATIC_FOLDER) != STATIC_FOLDER
    assert [p.name for p in (tmp_path / "feedback").iterdir() if p.name.startswith(".")] == []


@pytest.mark.browser
def test_page_renders_its_math_with_the_network_off(tmp_path):
    from browser_support import CHROMIUM_ARGS, PageLog, require_browser, serve

    executable = require_browser()
    from playwright.sync_api import sync_playwright

    write_feedback(tmp_path, result(), "ps1")
    with serve(tmp_path / "feedback") as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            log = PageLog(base)
            log.attach(page)
            page.goto(base + "ada/ps1.html", wait_until="networkidle", timeout=60_000)
            page.wait_for_function("() => document.querySelectorAll('mjx-container').length >= 2", timeout=30_000)
            text = page.inner_text("body")
            assert "\\frac" not in text and "$$" not in text
            assert log.problems() == []
        finally:
            browser.close()
