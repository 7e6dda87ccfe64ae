"""Stage 5, record: the results into nbgrader's gradebook (``nbgrader.api.Gradebook``).

SQLite in OUT by default; ``--db`` takes any SQLAlchemy URL (PostgreSQL for a course team). Each run replaces the
student's previous submission of this assignment, so grading twice leaves the same gradebook. ``nbgrader export``
and formgrader read it as usual; an autograded cell is recorded as nbgrader's own autograder records it
(``auto_score`` set, ``needs_manual_grade`` False, nbgrader's ``SaveAutoGrades``), so formgrader does not list every
submission as waiting for a person.

PostgreSQL (checked with nbgrader 0.9.6, SQLAlchemy 2, psycopg 3, PostgreSQL 15; FACTS.md): SQLAlchemy 2 reads
``postgresql://`` as the psycopg2 driver, so a plain URL is rewritten to ``postgresql+psycopg://`` (psycopg 3)
when psycopg2 is not installed; nbgrader asks the ``alembic`` program for its schema's revision when it creates
a new database (a subprocess: about 4.5 s of CPU, and it needs the program on PATH), which is read here
in-process with alembic's own ScriptDirectory instead; and several ``grade`` runs that write one database at once
(a course team) take turns through a PostgreSQL advisory lock, so that two runs never both create the tables or
the same student.
"""
from __future__ import annotations

import contextlib
import hashlib
import warnings

import nbgrader.api as nbgrader_api
from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SAWarning

from grader.pipeline.types import Result
from grader.pipeline.types import GradedCell


class BadDatabaseURL(ValueError):
    """The --db URL cannot be used; the message says what to write instead."""


def gradebook_url(db_url: str, log=print) -> str:
    """The URL the gradebook is opened with: `db_url`, with ``postgresql://`` (or ``postgres://``) rewritten to
    ``postgresql+psycopg://`` when psycopg 3 is installed and psycopg2 is not (said through `log`). Raises
    BadDatabaseURL for a URL SQLAlchemy cannot parse or a PostgreSQL URL whose driver is not installed."""
    try:
        url = make_url(db_url)
    except ArgumentError as err:
        raise BadDatabaseURL(f"--db {db_url!r} is not a database URL ({err}); e.g. sqlite:////abs/path/gradebook.db "
                             "or postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE") from None
    if url.get_backend_name() == "postgres":      # Heroku's spelling, which SQLAlchemy 1.4+ no longer reads
        url = url.set(drivername="postgresql" + url.drivername[len("postgres"):])
        db_url = url.render_as_string(hide_password=False)
    if url.get_backend_name() != "postgresql":
        return db_url
    has_psycopg, has_psycopg2 = _importable("psycopg"), _importable("psycopg2")
    if url.drivername == "postgresql" and not has_psycopg2:
        if not has_psycopg:
            raise BadDatabaseURL("--db names PostgreSQL but no PostgreSQL driver is installed: pip install "
                                 "'psycopg[binary]' (requirements.txt pins it), then use postgresql+psycopg://...")
        new = url.set(drivername="postgresql+psycopg")
        log("--db: postgresql:// means the psycopg2 driver to SQLAlchemy 2, which is not installed; using "
            "psycopg 3 (postgresql+psycopg://) instead")
        return new.render_as_string(hide_password=False)
    driver = url.get_driver_name()
    if not _importable({"psycopg": "psycopg", "psycopg2": "psycopg2"}.get(driver, driver)):
        raise BadDatabaseURL(f"--db asks for the {driver!r} driver, which is not installed; with psycopg 3 "
                             "(requirements.txt) write postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE")
    return db_url


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def alembic_head() -> str:
    """The revision nbgrader stamps a new gradebook with: what ``nbgrader.api.get_alembic_version`` gets by running
    ``alembic heads`` as a program (nbgrader 0.9.6), read in this process from nbgrader's migration scripts with
    alembic's ScriptDirectory. The program costs about 4.5 s of CPU per new gradebook (measured on the course's
    machine: 3 ms in-process) and fails with FileNotFoundError where the interpreter's bin/ is not on PATH."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR

    config = Config()
    config.set_main_option("script_location", ALEMBIC_DIR)
    return ScriptDirectory.from_config(config).get_heads()[0]


nbgrader_api.get_alembic_version = alembic_head      # Gradebook.__init__ calls it by this module-level name


# One number for every grader run: PostgreSQL advisory locks are keyed by a 64-bit integer per database.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"mha-course grader gradebook writer").digest()[:8], "big", signed=True)


@contextlib.contextmanager
def one_writer(db_url: str):
    """On PostgreSQL, hold the grader's advisory lock while the gradebook is written, so that runs writing one
    database at once take turns (nbgrader creates tables and students by "find, else add", which two writers at
    once would both do). SQLite serialises writers itself; other servers are used as they are."""
    if make_url(db_url).get_backend_name() != "postgresql":
        yield
        return
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def prepare(db_url: str, assignment: str, notebook: str, cells: list[GradedCell]) -> None:
    """The assignment, its notebook and graded cells. Run in a thread while grading starts: a new gradebook
    creates nbgrader's tables, which then overlaps the kernels."""
    with one_writer(db_url), Gradebook(db_url) as gb:
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
    with warnings.catch_warnings(), one_writer(db_url), Gradebook(db_url) as gb:
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
        grade.needs_manual_grade = False     # as nbgrader's SaveAutoGrades: an auto score and no manual one


def gradebook_totals(db_url: str, assignment: str) -> dict[str, float]:
    """Student id -> total score of `assignment` as the gradebook holds it (for checks and the README)."""
    with Gradebook(db_url) as gb:
        return {sub.student.id: float(sub.score) for sub in gb.find_assignment(assignment).submissions}
