"""The gradebook on a real PostgreSQL server, with psycopg 3 (issue 15).

Each test gets a new database on the server named by MHA_POSTGRES_URL (default: the role and database that .ci/run
creates, ``postgresql+psycopg://mha:mha@localhost:5432/mha``; the role may create databases). Without a reachable
server these tests skip, unless MHA_REQUIRE_POSTGRES=1 (CI sets it), where they fail. The URL checks at the end need
no server.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import REPO
from test_grading import read_csv, student, tiny_source, write_student

SERVER_URL = os.environ.get("MHA_POSTGRES_URL", "postgresql+psycopg://mha:mha@localhost:5432/mha")
REQUIRED = os.environ.get("MHA_REQUIRE_POSTGRES") == "1"


def libpq_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def connect_or_skip():
    why = None
    try:
        import psycopg
    except ImportError as err:
        why = f"psycopg is not installed ({err}); pip install -r requirements.txt"
    else:
        try:
            return psycopg.connect(libpq_url(SERVER_URL), autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as err:
            why = f"no PostgreSQL server at {SERVER_URL} ({' '.join(str(err).split())[:300]})"
    if REQUIRED:
        pytest.fail(f"MHA_REQUIRE_POSTGRES=1 but {why}; .ci/run installs and starts Debian's postgresql")
    pytest.skip(why)


@pytest.fixture
def database():
    """A new, empty database on the server; dropped afterwards. Yields its SQLAlchemy URL (psycopg 3)."""
    from sqlalchemy.engine import make_url

    admin = connect_or_skip()
    name = f"mha_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(SERVER_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def grade_command(assignment: str, source: Path, subs: Path, out: Path, db_url: str) -> list[str]:
    return [sys.executable, "-m", "grader", "grade", assignment, str(subs), "--out", str(out), "--source",
            str(source), "--db", db_url, "--jobs", "1", "--timeout", "20", "--no-preload"]   # tiny needs no torch


@pytest.mark.slow
@pytest.mark.postgres
def test_three_grade_runs_at_once_into_one_database_all_land_and_nbgrader_exports_them(database, tmp_path):
    """Two runs of one assignment with different students and a run of another assignment sharing students, all
    started together on a new database (so they race to create nbgrader's tables and the same students). One of
    them names the server with a plain postgresql:// URL, and none has the interpreter's bin/ on PATH (where
    nbgrader finds the alembic program it runs on a new database)."""
    source = tiny_source(tmp_path / "solutions")
    source_b = tmp_path / "solutions" / "tiny_b" / "tiny_b.ipynb"
    source_b.parent.mkdir(parents=True)
    shutil.copy(source, source_b)
    honest, blank = student(source), student(source, honest=False)
    hidden_fail = student(source, answers={"add": "def add(a, b):\n    return abs(a) + b"})
    classes = {("tiny", "a"): {"ana": honest, "bob": blank}, ("tiny", "b"): {"cy": honest, "di": hidden_fail},
               ("tiny_b", "c"): {"ana": blank, "cy": honest}}
    env = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    assert shutil.which("alembic", path=env["PATH"]) is None, "alembic on the reduced PATH: the check is moot"
    plain_url = database.replace("postgresql+psycopg://", "postgresql://", 1)
    runs = []
    for (assignment, run), students in classes.items():
        subs = tmp_path / f"class-{run}"
        for student_id, nb in students.items():
            write_student(subs, student_id, nb, name=f"{assignment}.ipynb")
        src = source if assignment == "tiny" else source_b
        url = plain_url if run == "c" else database
        runs.append(subprocess.Popen(grade_command(assignment, src, subs, tmp_path / f"out-{run}", url), cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=900) for run in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
    assert "postgresql+psycopg" in outputs[2][1] and "psycopg2" in outputs[2][1]   # the rewrite is said

    export = tmp_path / "export.csv"
    proc = subprocess.run([str(Path(sys.executable).with_name("nbgrader")), "export",
                           f"--CourseDirectory.db_url={database}", "--to", str(export)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(export)
    submitted = {(a, s) for (a, _), students in classes.items() for s in students}
    # nbgrader export writes every (assignment, student) pair; the ones never submitted have 0 and no submission.
    scores = {(r["assignment"], r["student_id"]): float(r["score"]) for r in rows}
    assert set(scores) == {(a, s) for a in ("tiny", "tiny_b") for s in ("ana", "bob", "cy", "di")}
    assert {k: v for k, v in scores.items() if k in submitted} == {
        ("tiny", "ana"): 5, ("tiny", "bob"): 0, ("tiny", "cy"): 5, ("tiny", "di"): 3,
        ("tiny_b", "ana"): 0, ("tiny_b", "cy"): 5}
    assert all(v == 0 for k, v in scores.items() if k not in submitted)
    assert {float(r["max_score"]) for r in rows} == {5.0}


def test_a_plain_postgresql_url_is_rewritten_to_psycopg_3_and_said():
    pytest.importorskip("psycopg")
    from grader.pipeline.record import gradebook_url

    said = []
    if __import__("importlib").util.find_spec("psycopg2") is not None:
        pytest.skip("psycopg2 is installed here: postgresql:// is then SQLAlchemy's psycopg2 URL and kept")
    url = gradebook_url("postgresql://u:p@db.example.edu:5433/course", said.append)
    assert url == "postgresql+psycopg://u:p@db.example.edu:5433/course"
    assert len(said) == 1 and "psycopg2" in said[0] and "postgresql+psycopg://" in said[0]
    assert gradebook_url("postgres://u@h/d", said.append) == "postgresql+psycopg://u@h/d"
    assert gradebook_url("sqlite:////tmp/x/gradebook.db", said.append) == "sqlite:////tmp/x/gradebook.db"
    assert len(said) == 2


def test_a_url_that_is_no_url_or_names_a_missing_driver_is_refused_clearly():
    from grader.pipeline.record import BadDatabaseURL, gradebook_url

    with pytest.raises(BadDatabaseURL, match="not a database URL"):
        gradebook_url("gradebook.db")
    with pytest.raises(BadDatabaseURL, match="'pg8000' driver, which is not installed"):
        gradebook_url("postgresql+pg8000://u@h/d")


def test_a_new_gradebook_is_stamped_with_nbgraders_head_without_the_alembic_program(monkeypatch, tmp_path):
    """nbgrader runs `alembic heads` as a program for a new gradebook; the grader reads the same revision
    in-process, so a new gradebook needs no alembic on PATH and gets the revision the program prints."""
    import nbgrader.api
    from nbgrader.dbutil import _temp_alembic_ini
    from grader.pipeline.record import alembic_head, prepare

    with _temp_alembic_ini(f"sqlite:///{tmp_path / 'unused.db'}") as ini:     # what nbgrader 0.9.6 runs
        printed = subprocess.check_output([str(Path(sys.executable).parent / "alembic"), "-c", ini, "heads"],
                                          text=True)
    assert printed.split()[0] == alembic_head()
    assert nbgrader.api.get_alembic_version is alembic_head
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    assert shutil.which("alembic") is None, "alembic on the reduced PATH: the check is moot"
    db = tmp_path / "gradebook.db"
    prepare(f"sqlite:///{db}", "ps1", "ps1", [])
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(alembic_head(),)]