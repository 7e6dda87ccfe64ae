"""Feedback pages (grader.pipeline.report.write_feedback) are the same bytes on a regrade and load nothing from
outside OUT: MathJax is the course's vendored copy under OUT/feedback/_static/, named by a relative path. Written
without a kernel; the last test opens a page in headless Chromium with the network off.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
from grader.pipeline import Result, TaskResult
from grader.pipeline.report import write_feedback

MATH = "The scores are $q_i \\cdot k_j / \\sqrt{d_k}$, and\n\n$$\\mathrm{softmax}(x)_i = \\frac{e^{x_i}}{\\sum_j e^{x_j}}$$"


def result(student_id: str = "ada") -> Result:
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Problem set 1\n\n" + MATH + "\n\nSee [the paper](https://arxiv.org/abs/1706.03762)."),
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
