"""Feedback pages: readable markup, nothing executable from the student, one folder per student id."""
from __future__ import annotations

import re

import nbformat

from grader.pipeline import Result, TaskResult
from grader.pipeline.report import feedback_folder, write_feedback


def _result(student_id: str, markdown: str) -> Result:
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Problem set 1\n\nSome *course* text.\n\n## Task 1"),
        nbformat.v4.new_markdown_cell(markdown),
        nbformat.v4.new_code_cell("print(42)"),
    ])
    return Result(student_id=student_id, assignment="ps1", status="graded", message="", max_score=2,
                  tasks=[TaskResult(task="attention_scores", score=2, max_score=2, message="passed")],
                  feedback_nb=notebook)


def test_headings_and_paragraphs_render_as_markup(tmp_path):
    page = write_feedback(tmp_path, _result("ada", "Plain notes."), "ps1").read_text()
    assert re.search(r"<h1[ >]", page) and re.search(r"<h2[ >]", page) and "<p>" in page
    assert "&lt;h1" not in page and "&lt;h2" not in page and "&lt;p&gt;" not in page
    assert "attention_scores" in page and "Score: 2 / 2" in page


def test_student_markup_cannot_run_code_in_the_page(tmp_path):
    evil = ('<script>alert("student")</script>\n\n<img src="x" onerror="alert(2)">\n\n'
            '<a href="javascript:alert(3)">click</a>')
    page = write_feedback(tmp_path, _result("eve", evil), "ps1").read_text()
    assert 'alert("student")</script>' not in page
    assert "onerror" not in page
    assert "javascript:alert(3)" not in page


def test_ids_that_sanitize_alike_get_their_own_folders(tmp_path):
    ids = ["jo doe", "jo_doe", "zoë", "zoé", "../up", "ada"]
    folders = [feedback_folder(i) for i in ids]
    assert len(set(folders)) == len(ids), folders
    assert feedback_folder("ada") == "ada" and feedback_folder("jo_doe") == "jo_doe"
    for folder in folders:
        assert "/" not in folder and not folder.startswith(".")
    assert feedback_folder("jo doe") == feedback_folder("jo doe")  # the same on every run
    for sid in ("jo doe", "jo_doe"):
        write_feedback(tmp_path, _result(sid, f"work of {sid}"), "ps1")
    pages = sorted((tmp_path / "feedback").glob("*/ps1.html"))
    assert len(pages) == 2
    assert sum("work of jo doe" in p.read_text() for p in pages) == 1
