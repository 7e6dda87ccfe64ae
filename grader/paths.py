"""Where the course's files are: the one place the grader computes the repository root.

The instructor's sources live in ``solutions/<assignment>/``: the source notebook ``<assignment>.py`` (jupytext
percent, see :mod:`grader.authoring`), the nbgrader source notebook ``<assignment>.ipynb`` built from it, and, where
an assignment has answers, ``answer_key.json``; what students get is written by ``python -m grader release`` into
``exercises/<assignment>/``.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
EXERCISES = REPO / "exercises"


def source_notebook(assignment: str) -> Path:
    """solutions/<assignment>/<assignment>.ipynb (it may not exist)."""
    return SOLUTIONS / assignment / f"{assignment}.ipynb"


def released_notebook(assignment: str) -> Path:
    """exercises/<assignment>/<assignment>.ipynb (it may not exist)."""
    return EXERCISES / assignment / f"{assignment}.ipynb"
