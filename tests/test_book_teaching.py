"""The part "Teaching with this course" (book/teaching/), as built: every page is in the site and its search index,
the statuses table is rendered whole, and the pages link each other. Uses the `built_book` fixture (full tier)."""
from __future__ import annotations

import html
import re
from pathlib import Path

from conftest import REFERENCE_PART, toc_files


def pages() -> list[str]:
    return [d for d in toc_files() if d.startswith(REFERENCE_PART)]


def test_every_teaching_page_is_built_and_searchable(built_book: Path):
    index = (built_book / "searchindex.js").read_text()
    for docname in pages():
        assert (built_book / f"{docname}.html").is_file(), docname
        assert f'"{docname}"' in index, f"{docname} is not in the site's search index"


def test_the_statuses_table_is_rendered_with_every_status(built_book: Path):
    from grader.pipeline import STATUSES

    page = (built_book / REFERENCE_PART / "grading.html").read_text()
    cells = {html.unescape(c) for c in re.findall(r"<td><p><code[^>]*><span[^>]*>(\w+)</span></code></p></td>", page)}
    if not cells:  # docutils writes inline code either way, depending on its version
        cells = set(re.findall(r"<td><p><code[^>]*>(\w+)</code></p></td>", page))
    assert set(STATUSES) <= cells, set(STATUSES) - cells


def test_the_part_index_links_every_page(built_book: Path):
    page = (built_book / REFERENCE_PART / "index.html").read_text()
    for docname in pages():
        name = Path(docname).name
        if name != "index":
            assert f'href="{name}.html"' in page, f"the part's index does not link {name}"
