"""The grading pipeline, one stage per module, in the order a submission flows through them:

    collect   SUBMISSIONS (folder or LMS zip) -> one Submission per student, bytes read, nothing modified
    sanitize  bytes -> a notebook to run: decoded, parsed, test cells restored from the source, probes appended
    execute   the notebook -> executed cells, in a sandboxed kernel (grader.sandbox) under the limits
    score     executed cells (+ grader.verify when present) -> one TaskResult per task, integrity flags
    record    results -> nbgrader's gradebook (SQLite by default, any SQLAlchemy URL)
    report    results -> grades.csv, tasks.csv, feedback HTML without hidden test code

The stages are composed in one place, ``grader.grade.grade_one`` (one submission) and ``grader.grade.grade_class``
(all of them, in parallel). The types they pass along are defined here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Every status a row of grades.csv can have, and what it means (the README's table is written from this).
STATUSES = {
    "graded": "The notebook ran to the end within every limit; the score is the sum of the tasks.",
    "timeout": "A cell ran longer than the per-cell limit or the notebook ran longer than its total limit; the "
               "cells before it were graded.",
    "crashed": "The kernel died while running the notebook (os._exit, a segfault, ...); the cells before were graded.",
    "memory_limit": "The notebook used more memory than the cap and was stopped; the cells before were graded.",
    "process_limit": "The notebook started more processes than the cap and was stopped; the cells before were graded.",
    "output_limit": "The notebook printed more output than the cap and was stopped; the cells before were graded.",
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
