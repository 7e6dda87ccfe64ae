"""The feedback page's HTML cleaning (grader.pipeline.clean_html): nh3, not bleach; links keep only the schemes a
page needs, and a data: URI survives only as an image's source."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grader.pipeline.clean_html import clean_feedback_html

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("link", ["data:text/html,<script>alert(1)</script>", " DATA:text/html,x",
                                  "&#100;ata:text/html,x", "javascript:alert(1)", "vbscript:x", "file:///etc/passwd"])
def test_links_with_other_schemes_lose_their_href(link):
    cleaned = clean_feedback_html(f'<a href="{link}">click</a>')
    assert "href" not in cleaned and "click" in cleaned


@pytest.mark.parametrize("link", ["https://arxiv.org/abs/1706.03762", "http://example.org/", "mailto:ta@uni.edu",
                                  "paper.pdf", "#section-2"])
def test_links_a_page_needs_stay(link):
    assert f'href="{link}"' in clean_feedback_html(f'<a href="{link}">read</a>')


def test_a_pasted_image_stays_an_image_but_no_other_data_uri_does():
    png = "data:image/png;base64,iVBORw0KGgo="
    assert f'src="{png}"' in clean_feedback_html(f'<img src="{png}" alt="plot">')
    assert "data:" not in clean_feedback_html('<img src="data:text/html;base64,PHNjcmlwdD4=">')


def test_scripts_styles_and_handlers_are_removed_and_markup_kept():
    cleaned = clean_feedback_html(b'<h1 id="t" onclick="x()">Title</h1><script>alert(1)</script>'
                                  b'<style>body{display:none}</style><p>text</p><iframe src="https://x"></iframe>')
    assert cleaned == '<h1 id="t">Title</h1><p>text</p>'


def test_writing_feedback_no_longer_imports_bleach_from_our_code():
    """nbconvert itself still imports bleach (its filters and SanitizeHTML preprocessor); the grader's own modules
    must not: the only import of it in grader/ would be ours."""
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "grader").rglob("*.py")
                 if "import bleach" in p.read_text() or "from bleach" in p.read_text()]
    assert offenders == []
    code = ("import sys; from grader.pipeline import report; "
            "print(report.clean_feedback_html.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "grader.pipeline.clean_html"
