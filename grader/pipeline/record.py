"""Stage 5, record: the results into nbgrader's gradebook (``nbgrader.api.Gradebook``).

SQLite in OUT by default; ``--db`` takes any SQLAlchemy URL (PostgreSQL for a course team). Each run replaces the
student's previous submission of this assignment, so grading twice leaves the same gradebook. ``nbgrader export``
and formgrader read it as usual.
"""
from __future__ import annotations

import warnings

from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning

from grader.pipeline.types import Result
from grader.pipeline.types import GradedCell


def prepare(db_url: str, assignment: str, notebook: str, cells: list[GradedCell]) -> None:
    """The assignment, its notebook and graded cells. Run in a thread while grading starts: a new gradebook
    costs nbgrader an ``alembic`` subprocess (seconds), which then overlaps the kernels."""
    with Gradebook(db_url) as gb:
        gb.update_or_create_assignment(assignment)
        gb.update_or_create_notebook(notebook, assignment)
        for cell in cells:
            gb.update_or_create_grade_cell(cell.grade_id, notebook, assignment, max_score=cell.points,
                                           cell_type="code")


class NotRecorded(RuntimeError):
    """Some students' results could not be written to the gradebook; every other student's were."""


def record(db_url: str, assignment: str, notebook: str, cells: list[GradedCell], results: list[Result]) -> None:
    """Every result as the student's submission of `assignment` (after ``prepare``). Each student is one
    transaction: one that the database refuses (an id longer than nbgrader's 128 characters on a server that
    checks it) is rolled back and named in NotRecorded at the end, and the others are recorded all the same."""
    failed = []
    with warnings.catch_warnings(), Gradebook(db_url) as gb:
        # nbgrader's add_submission trips SQLAlchemy 2's autoflush warnings; harmless, and not ours to fix.
        warnings.simplefilter("ignore", category=SAWarning)
        for result in results:
            try:
                _record_one(gb, assignment, notebook, cells, result)
                gb.db.commit()
            except Exception as err:
                gb.db.rollback()
                failed.append(f"{result.student_id!r} ({type(err).__name__}: {' '.join(str(err).split())[:200]})")
    if failed:
        raise NotRecorded(f"{len(failed)} of {len(results)} student(s) not recorded: {'; '.join(failed)}")


def _record_one(gb: Gradebook, assignment: str, notebook: str, cells: list[GradedCell], result: Result) -> None:
    gb.update_or_create_student(result.student_id)
    try:
        gb.remove_submission(assignment, result.student_id)
    except MissingEntry:
        pass
    gb.add_submission(assignment, result.student_id)
    by_cell = {t.grade_cell: t for t in result.tasks}
    for cell in cells:
        grade = gb.find_grade(cell.grade_id, notebook, assignment, result.student_id)
        task = by_cell.get(cell.grade_id)
        grade.auto_score = task.score if task else 0.0
        grade.manual_score = None


def gradebook_totals(db_url: str, assignment: str) -> dict[str, float]:
    """Student id -> total score of `assignment` as the gradebook holds it (for checks and the README)."""
    with Gradebook(db_url) as gb:
        return {sub.student.id: float(sub.score) for sub in gb.find_assignment(assignment).submissions}
