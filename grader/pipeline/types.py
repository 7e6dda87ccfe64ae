"""The types the pipeline's stages pass along, and the statuses a row can have.

Every stage imports these from here (never from another stage), so the stages depend on this module and on
nothing of each other; ``grader.grade`` composes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Every status a row of grades.csv can have, and what it means (book/teaching/grading.md's table is checked against it).
STATUSES = {
    "graded": "The notebook ran to the end within every limit; the score is the sum of the tasks.",
    "timeout": "A cell ran longer than the per-cell limit or the notebook ran longer than its total limit; the "
               "cells before it were graded.",
    "crashed": "The kernel died while running the notebook (os._exit, a segfault, ...); the cells before were graded.",
    "memory_limit": "The notebook used more memory than the cap and was stopped; the cells before were graded.",
    "process_limit": "The notebook started more processes than the cap and was stopped; the cells before were graded.",
    "invalid_notebook": "The file is not a notebook that can be read (empty, not JSON, not nbformat, or beyond what "
                        "any notebook holds: too large, too many cells, nested too deep); score 0.",
    "wrong_assignment": "The notebook belongs to another assignment (none of this assignment's cells are in it); "
                        "score 0.",
    "missing_notebook": "The student's folder holds no notebook; score 0.",
    "grader_error": "The grader itself failed on this submission, not the student's code; the others are "
                    "unaffected. When the message names a machine problem (a kernel that did not start, a full "
                    "disk), grading again may pass; any other failure is a fault in the grader that a retry repeats: "
                    "report it with the message.",
}


@dataclass
class Submission:
    """What collect found for one student: the notebook's bytes, never a path into SUBMISSIONS that is used later."""
    student_id: str
    notebook_name: str = ""        # the file name the student used
    notebook_bytes: bytes | None = None
    extra_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # said to the student in the message column
    # What the download said about the student (collect.RULES names the rules): kept for the LMS files.
    found_by: str = ""             # the rule that found the student: canvas, moodle, blackboard, folder, ...
    name: str = ""                 # the name the LMS wrote (Canvas "doejane", Moodle "Jane Doe"), else ""
    late: bool = False             # the LMS marked the submission late (Canvas _LATE)
    submitted_at: str = ""         # the LMS's or nbgrader's time stamp, as written there
    source: str = ""               # where the graded notebook was inside SUBMISSIONS


@dataclass
class TaskResult:
    task: str
    score: float
    max_score: float
    message: str
    grade_cell: str = ""      # the test cell's grade id (the gradebook's name for the task)


@dataclass
class Result:
    student_id: str
    assignment: str
    status: str
    message: str
    max_score: float
    tasks: list[TaskResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    feedback_nb: object = None     # the executed notebook for feedback (nbformat node), hidden code removed later

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tasks)


# ---------------------------------------------------------------------------- nbgrader's cell metadata, read safely
def nbgrader_meta(cell: dict) -> dict:
    """The cell's ``metadata.nbgrader`` dict, or {} when it is missing or not a dict (a student may edit it)."""
    metadata = cell.get("metadata", {})
    meta = metadata.get("nbgrader", {}) if isinstance(metadata, dict) else {}
    return meta if isinstance(meta, dict) else {}


def grade_id(cell: dict) -> str | None:
    """nbgrader's ``grade_id`` of the cell, or None."""
    gid = nbgrader_meta(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


@dataclass(frozen=True)
class GradedCell:
    """One autograded test cell of the instructor's source: the task it grades and its points."""
    task: str          # the task's name (grade id without "test_")
    grade_id: str      # the test cell's grade id, as in nbgrader's gradebook
    points: float


def graded_cells(source) -> list[GradedCell]:
    """The autograded test cells of the instructor's source notebook (an nbformat node), in order."""
    cells = []
    for cell in source.cells:
        meta = nbgrader_meta(cell)
        if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            gid = grade_id(cell)
            task = gid[len("test_"):] if gid.startswith("test_") else gid
            cells.append(GradedCell(task, gid, float(meta.get("points", 0) or 0)))
    return cells
