"""What keeps a grading run's results whole and its output honest, whatever happens to the run (issues 23, 25):
the rows on disk as each submission finishes (a killed run leaves every student a row and says how to resume),
student ids that the CSVs could write alike refused before grading, and ids escaped on the instructor's terminal.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from grader.pipeline import Result, Submission
from grader.pipeline.report import write_csvs


def safe_terminal(text: str) -> str:
    """`text` for the instructor's terminal: every character that is not printable (escape sequences, newlines,
    carriage returns, bidirectional overrides) written as its Python escape, so that a student id cannot forge or
    hide a progress line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


class IdClash(ValueError):
    """Two student ids that the spreadsheet-safe CSV cells would write alike (raised before any grading)."""


def refuse_clashing_ids(students: list[Submission]) -> None:
    """Raises IdClash naming every pair of ids whose grades.csv cells would be equal (``=1+1`` is written
    ``'=1+1``, as is the id ``'=1+1`` itself), so that no student's row could stand for another's."""
    from grader.pipeline.lms import spreadsheet_safe

    written: dict[str, list[str]] = {}
    for sub in students:
        written.setdefault(spreadsheet_safe(sub.student_id), []).append(sub.student_id)
    clashes = [ids for ids in written.values() if len(ids) > 1]
    if clashes:
        pairs = "; ".join(" and ".join(repr(i) for i in ids) for ids in clashes)
        raise IdClash(f"student ids {pairs} would be written alike in grades.csv (a leading ' keeps a spreadsheet "
                      "from reading an id as a formula): rename one of the folders (or the LMS entries), then grade "
                      "again; nothing was graded")


NOT_GRADED_YET = ("Not graded: the grading run stopped before this submission was graded (killed, out of memory or "
                  "interrupted); the other rows stand. Grade it again with `grade ... --student ID` (repeatable), "
                  "which replaces only these rows.")
PROGRESS_FOLDER = ".grader-progress"


def write_progress(out: Path, done: list[Result], pending: list[Result], replace: set[str] | None) -> None:
    """OUT/grades.csv and OUT/tasks.csv as the run stands: the rows graded so far and a grader_error row for every
    submission not graded yet, so that a run killed at any moment (the grader out of memory, a machine restart)
    leaves every student a row. Each file is written beside and renamed into place (never half written)."""
    folder = out / PROGRESS_FOLDER
    folder.mkdir(exist_ok=True)
    if replace is not None:           # --student: merged into the earlier run's rows, as the final write does
        for name in ("grades.csv", "tasks.csv"):
            shutil.copyfile(out / name, folder / name)
    write_csvs(folder, [*done, *pending], replace)
    for name in ("tasks.csv", "grades.csv"):
        os.replace(folder / name, out / name)
