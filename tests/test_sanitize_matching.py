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


def stripped(notebook: nbformat.NotebookNode, which=lambda cell: True) -> nbformat.NotebookNode:
    """The notebook as an editor that drops cell metadata saves it."""
    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    for cell in notebook.cells:
        if which(cell):
            cell.metadata = {}
    return notebook


def graded_view(notebook):
    return [(c.source, c.metadata.get("nbgrader"), c.metadata["grader"]["origin"]) for c in notebook.cells]


@pytest.mark.parametrize("assignment", ["ps1", "ps2", "ps3", "ps4", "ps5"])
def test_stripped_metadata_grades_as_the_labelled_notebook_and_blames_no_one(assignment):
    source = load_source(REPO / "solutions" / assignment / f"{assignment}.ipynb")
    release = nbformat.read(str(REPO / "exercises" / assignment / f"{assignment}.ipynb"), as_version=4)
    labelled = Submission("s", f"{assignment}.ipynb", nbformat.writes(release).encode())
    bare = Submission("s", f"{assignment}.ipynb", nbformat.writes(stripped(release)).encode())
    assert graded_view(sanitize(bare, source, assignment)[0]) == graded_view(sanitize(labelled, source, assignment)[0])
    [note] = bare.notes
    assert "grading metadata" in note and "stripped" in note and "delete" not in note.lower()


def test_stripped_answer_cell_keeps_the_students_answer(source):
    graded, notes = run(source, stripped(released(), lambda c: c.metadata.get("nbgrader", {}).get("solution")))
    [answer] = [c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "attention_scores"]
    assert answer.source == ANSWER and answer.metadata["grader"]["origin"] == "student"
    assert len(notes) == 1 and "attention_scores" in notes[0] and "delete" not in notes[0].lower()


def test_stripped_notebook_with_a_scratch_cell_and_an_edited_test_keeps_every_test(source):
    notebook = stripped(released())
    notebook.cells.insert(4, nbformat.v4.new_code_cell("print(attention_scores(torch.eye(2), torch.eye(2)))"))
    for cell in notebook.cells:
        if cell.source.startswith("# Two identical keys"):
            cell.source = "assert True  # my test now"
    graded, notes = run(source, notebook)
    sources = [c.source for c in graded.cells]
    for cell in source.cells:       # every test, hidden parts included, runs as the instructor wrote it
        if cell.metadata.get("nbgrader", {}).get("grade"):
            assert cell.source in sources
    [answer] = [c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "attention_scores"]
    assert answer.source == ANSWER
    assert "Cells that could not be found were restored from the assignment: test_scaled_dot_product." in notes
    assert not any("Deleted" in note for note in notes)


def test_cells_really_deleted_are_still_called_deleted(source):
    notebook = released()
    notebook.cells = [c for c in notebook.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    _, notes = run(source, notebook)
    assert notes == ["Deleted cells were restored from the assignment: test_attention_scores, "
                     "test_scaled_dot_product, test_self_attention."]


def test_answers_pasted_into_a_new_notebook_are_still_the_wrong_assignment(source):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(ANSWER)])
    with pytest.raises(Rejected) as refused:
        run(source, notebook)
    assert refused.value.status == "wrong_assignment"
