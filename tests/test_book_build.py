"""The book builds from scratch with no warning, and an unexpected cell error really fails the build."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import jupyter_book_build, toc_files


def test_every_toc_page_is_built(built_book: Path):
    for name in toc_files():
        page = built_book / f"{name}.html"
        assert page.exists(), f"{name} is in _toc.yml but {page} was not built"


def test_site_has_no_solution_exercise_or_source_files(built_book: Path):
    leaked = []
    for path in built_book.rglob("*"):
        rel = path.relative_to(built_book).as_posix()
        if rel.startswith(("solutions", "_sources")) or "/solutions/" in rel:
            leaked.append(rel)
    assert not leaked, f"the site publishes instructor or source files: {leaked[:10]}"
    # No page of the site carries nbgrader's solution markers either.
    for page in built_book.rglob("*.html"):
        text = page.read_text(errors="replace")
        assert "### BEGIN SOLUTION" not in text and "### BEGIN HIDDEN TESTS" not in text, page


def test_no_cell_error_in_built_pages(built_book: Path):
    """Tracebacks may appear only in cells tagged raises-exception (rendered with that tag's class)."""
    for name in toc_files():
        html = (built_book / f"{name}.html").read_text()
        # A cell's own div is class="cell" or "cell tag_..."; its cell_input/cell_output divs must not start a match.
        errors = re.findall(r'<div class="cell(?: [^"]*)?"[^>]*>(?:(?!<div class="cell[ "]).)*?output\s+traceback',
                            html, flags=re.S)
        for err in errors:
            assert "tag_raises-exception" in err, f"{name} shows a traceback from a cell not tagged raises-exception"


def _broken_page(book: Path) -> None:
    (book / "book" / "broken.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "# Broken\n\n```{code-cell} ipython3\nraise RuntimeError('this cell is broken on purpose')\n```\n"
    )
    (book / "_toc.yml").write_text("format: jb-book\nroot: book/broken\n")


def test_unexpected_cell_error_fails_the_build(scratch_copy: Path, tmp_path: Path):
    _broken_page(scratch_copy)
    # Without -W: the failure must come from execute.raise_on_error, not from a warning.
    proc = jupyter_book_build(scratch_copy, tmp_path / "out", timeout=600, warnings_as_errors=False)
    assert proc.returncode != 0, "a cell raising an error did not fail the build: raise_on_error is not biting"
    assert "this cell is broken on purpose" in proc.stdout + proc.stderr


def test_tagged_error_cell_does_not_fail_the_build(scratch_copy: Path, tmp_path: Path):
    _broken_page(scratch_copy)
    page = scratch_copy / "book" / "broken.md"
    page.write_text(page.read_text().replace("```{code-cell} ipython3\nraise",
                                             "```{code-cell} ipython3\n:tags: [raises-exception]\nraise"))
    proc = jupyter_book_build(scratch_copy, tmp_path / "out", timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    html = (tmp_path / "out" / "_build" / "html" / "book" / "broken.html").read_text()
    assert "this cell is broken on purpose" in html
