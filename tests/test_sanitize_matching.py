"""Sanitizing notebooks that Jupyter did not save as the course released them (grader.pipeline.sanitize): the old
nbformat 3, and cells whose grading metadata an editor stripped. Fast: no kernel is started.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from grader.pipeline import Submission
from grader.pipeline.sanitize import Rejected, load_source, sanitize

REPO = Path(__file__).resolve().parents[1]
EXERCISE = REPO / "exercises" / "ps1" / "ps1.ipynb"
ANSWER = "def attention_scores(queries, keys):\n    return queries @ keys.mT\n"


@pytest.fixture(scope="module")
def source():
    return load_source(REPO / "solutions" / "ps1" / "ps1.ipynb")


def released(answer: str = ANSWER) -> nbformat.NotebookNode:
    notebook = nbformat.read(str(EXERCISE), as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "attention_scores":
            cell.source = answer
    return notebook


def run(source, notebook, sid: str = "student"):
    sub = Submission(sid, "ps1.ipynb", nbformat.writes(notebook).encode() if not isinstance(notebook, bytes)
                     else notebook)
    graded, _ = sanitize(sub, source, "ps1")
    return graded, sub.notes


def test_nbformat_3_is_converted_and_said_so(source):
    v3 = nbformat.writes(nbformat.convert(released(), 3)).encode()
    graded, notes = run(source, v3)
    reference, reference_notes = run(source, released())
    assert [c.source for c in graded.cells] == [c.source for c in reference.cells]
    assert notes == ["The notebook was saved in the old nbformat 3; it was converted to nbformat 4."]
    assert not reference_notes


@pytest.mark.parametrize("content", [{"nbformat": 3}, {"nbformat": 3, "worksheets": "x"},
                                     {"nbformat": 3, "worksheets": [{"cells": [{"cell_type": "code", "input": 5}]}]}])
def test_broken_nbformat_3_is_an_invalid_notebook(source, content):
    with pytest.raises(Rejected) as refused:
        run(source, json.dumps(content).encode())
    assert refused.value.status == "invalid_notebook" and "nbformat 3" in refused.value.message
