"""The instructor's command end to end: python -m grader grade / check (issue 5).

Most tests grade a tiny nbgrader assignment written here (no torch, so kernels start fast); one grades the
course's real ps1 from solutions/. Expected scores come from what each submission does, not from a past run.
"""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import REPO


HIDDEN_LINE = 'assert add(-5, 5) == 0, "add must work for negative numbers"'


def _cell(kind: str, gid: str | None, source: str, **meta) -> dict:
    cell = (nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell)(source)
    if gid:
        cell.metadata["nbgrader"] = {"grade_id": gid, "schema_version": 3, "grade": False, "solution": False,
                                     "locked": False, **meta}
    return cell


def tiny_source(folder: Path) -> Path:
    """An nbgrader source notebook: two tasks (add: 2 points, greet: 3), each with a hidden test."""
    cells = [
        _cell("markdown", None, "# Tiny assignment"),
        _cell("code", "setup", "import math", locked=True),
        _cell("code", "add", "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
              solution=True),
        _cell("code", "test_add", f"assert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\n{HIDDEN_LINE}\n"
                                  "### END HIDDEN TESTS", grade=True, locked=True, points=2),
        _cell("code", "greet", "def greet(name):\n    ### BEGIN SOLUTION\n    return f'Hello, {name}!'\n"
                               "    ### END SOLUTION", solution=True),
        _cell("code", "test_greet", "assert greet('Ada') == 'Hello, Ada!', 'greet(\"Ada\") is wrong'",
              grade=True, locked=True, points=3),
    ]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                        "display_name": "Python 3"}})
    path = folder / "tiny" / "tiny.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def student(source: Path, *, answers: dict[str, str] | None = None, after_add_test: str | None = None,
            honest: bool = True) -> dict:
    """A student's notebook JSON: the honest solution (or the release), some answers replaced, a cell inserted."""
    from grader.bench_grading import honest_copy, release_copy

    src = nbformat.read(str(source), as_version=4)
    nb = honest_copy(src) if honest else release_copy(src)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if answers and gid in answers:
            cell.source = answers[gid]
    if after_add_test is not None:
        at = 1 + next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") ==
                      "test_add")
        nb.cells.insert(at, nbformat.v4.new_code_cell(after_add_test))
    return json.loads(nbformat.writes(nb))


def write_student(root: Path, student_id: str, content: dict | bytes, name: str = "tiny.ipynb") -> Path:
    folder = root / student_id
    folder.mkdir(parents=True, exist_ok=True)
    data = content if isinstance(content, bytes) else json.dumps(content, indent=1).encode()
    (folder / name).write_bytes(data)
    return folder / name


def grade(assignment: str, submissions: Path, out: Path, *extra: str, timeout: int = 900):
    cmd = [sys.executable, "-m", "grader", "grade", assignment, str(submissions), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def spy_code(targets: list[Path]) -> str:
    """A cell that prints SEEN or HIDDEN for each file it tries to read, and whether the network is reachable."""
    return (f"import os, socket\nfor path in {[str(t) for t in targets]!r}:\n"
            "    try:\n        open(path).read()\n        print('SEEN', path)\n"
            "    except OSError:\n        print('HIDDEN', path)\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    print('NETWORK open')\n"
            "except OSError:\n    print('NETWORK closed')\n")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One grade run of a tiny class: honest, blank, hidden-test failure, and a spy probing the sandbox."""
    base = tmp_path_factory.mktemp("tiny")
    source = tiny_source(base / "solutions")
    subs, out = base / "class", base / "out"
    write_student(subs, "honest", student(source))
    write_student(subs, "blank", student(source, honest=False))
    write_student(subs, "hidden_fail", student(source, answers={"add": "def add(a, b):\n    return abs(a) + b"}))
    # Files the kernel must not reach: the seed secret, another student's notebook, the solutions.
    spy = spy_code([out / ".grader-secret", subs / "honest" / "tiny.ipynb", source])
    write_student(subs, "spy", student(source, after_add_test=spy))
    before = tree_digest(subs)
    proc = grade("tiny", subs, out, "--source", str(source), "--timeout", "20", "--jobs", "2")
    return dict(base=base, source=source, subs=subs, out=out, proc=proc, before=before)


def test_grades_and_tasks_csv_have_the_contract_columns_and_scores(tiny_run):
    proc = tiny_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["student_id"]: r for r in read_csv(tiny_run["out"] / "grades.csv")}
    assert list(read_csv(tiny_run["out"] / "grades.csv")[0]) == ["student_id", "assignment", "score", "max_score",
                                                                 "status", "flags", "message"]
    assert set(rows) == {"honest", "blank", "hidden_fail", "spy"}
    assert {s: (r["score"], r["max_score"], r["status"]) for s, r in rows.items()} == {
        "honest": ("5", "5", "graded"), "blank": ("0", "5", "graded"),
        "hidden_fail": ("3", "5", "graded"), "spy": ("5", "5", "graded")}
    tasks = read_csv(tiny_run["out"] / "tasks.csv")
    assert list(tasks[0]) == ["student_id", "assignment", "task", "score", "max_score", "message"]
    by = {(t["student_id"], t["task"]): t for t in tasks}
    assert by[("blank", "add")]["message"].startswith("NotImplementedError")
    assert by[("hidden_fail", "add")]["score"] == "0"
    assert "add must work for negative numbers" in by[("hidden_fail", "add")]["message"]
    assert by[("hidden_fail", "greet")]["score"] == "3"


def test_feedback_shows_results_but_not_hidden_test_code(tiny_run):
    for sid in ("honest", "blank", "hidden_fail", "spy"):
        page = (tiny_run["out"] / "feedback" / sid / "tiny.html").read_text()
        assert "add(-5, 5)" not in page and "BEGIN HIDDEN" not in page, sid
        assert "hidden tests run here" in page, sid
    page = (tiny_run["out"] / "feedback" / "hidden_fail" / "tiny.html").read_text()
    assert "add must work for negative numbers" in page     # the diagnostic message is shown
    assert "Score: 3 / 5" in page


def test_submissions_untouched_and_gradebook_agrees(tiny_run):
    from grader.pipeline.record import gradebook_totals

    assert tree_digest(tiny_run["subs"]) == tiny_run["before"]
    totals = gradebook_totals(f"sqlite:///{tiny_run['out'] / 'gradebook.db'}", "tiny")
    rows = {r["student_id"]: float(r["score"]) for r in read_csv(tiny_run["out"] / "grades.csv")}
    assert totals == rows


def test_kernel_sees_no_grader_files_and_no_network(tiny_run):
    page = (tiny_run["out"] / "feedback" / "spy" / "tiny.html").read_text()
    assert "SEEN /" not in page, "a kernel could read the secret, the submissions or the solutions"
    assert page.count("HIDDEN /") == 3
    assert "NETWORK closed" in page
    assert "sandbox: bubblewrap" in tiny_run["proc"].stderr and "DOES NOT HOLD" not in tiny_run["proc"].stderr


def test_launcher_path_is_sandboxed_too(tiny_run, tmp_path):
    """--no-preload: kernels started by the launcher instead of the fork server, under the same confinement."""
    subs, out, source = tmp_path / "class", tmp_path / "out", tiny_run["source"]
    write_student(subs, "other", student(source))
    write_student(subs, "spy", student(source, after_add_test=spy_code(
        [out / ".grader-secret", subs / "other" / "tiny.ipynb", source])))
    proc = grade("tiny", subs, out, "--source", str(source), "--no-preload")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "forked from a server" not in proc.stderr
    rows = read_csv(out / "grades.csv")
    assert [(r["student_id"], r["score"], r["status"]) for r in rows] == [("other", "5", "graded"),
                                                                          ("spy", "5", "graded")]
    page = (out / "feedback" / "spy" / "tiny.html").read_text()
    assert "SEEN /" not in page and page.count("HIDDEN /") == 3
    assert "NETWORK closed" in page


@pytest.mark.slow
def test_whole_notebook_limit_stops_a_slow_notebook(tiny_run, tmp_path):
    """Each cell under the per-cell limit, the notebook over its total limit: stopped, earlier tasks kept."""
    subs, source = tmp_path / "class", tiny_run["source"]
    write_student(subs, "slow", student(source, after_add_test="import time\ntime.sleep(15)"))
    proc = grade("tiny", subs, tmp_path / "out", "--source", str(source), "--timeout", "30",
                 "--notebook-timeout", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = read_csv(tmp_path / "out" / "grades.csv")
    assert (row["status"], row["score"]) == ("timeout", "2"), row
    assert "total limit of 8 s" in row["message"]


@pytest.mark.slow
def test_grading_twice_gives_the_same_results(tiny_run):
    out = tiny_run["out"]
    first = {name: (out / name).read_bytes() for name in ("grades.csv", "tasks.csv")}
    proc = grade("tiny", tiny_run["subs"], out, "--source", str(tiny_run["source"]), "--timeout", "20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {name: (out / name).read_bytes() for name in first} == first


@pytest.mark.slow
def test_lms_zip_is_graded_like_the_folder(tiny_run, tmp_path):
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for sid in ("honest", "blank"):
            zf.write(tiny_run["subs"] / sid / "tiny.ipynb", f"tiny_{sid}_attempt_2026-11-01-10-00-00_tiny.ipynb")
        # An earlier attempt that was worse: the latest attempt is the one graded.
        zf.write(tiny_run["subs"] / "blank" / "tiny.ipynb", "tiny_honest_attempt_2026-10-01-10-00-00_tiny.ipynb")
    # A gradebook somewhere else, by SQLAlchemy URL (--db), as a course team's server would be.
    db_url = f"sqlite:///{tmp_path / 'team' / 'gradebook.db'}"
    (tmp_path / "team").mkdir()
    proc = grade("tiny", archive, tmp_path / "out", "--source", str(tiny_run["source"]), "--db", db_url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["student_id"]: (r["score"], r["status"]) for r in read_csv(tmp_path / "out" / "grades.csv")}
    assert rows == {"honest": ("5", "graded"), "blank": ("0", "graded")}
    from grader.pipeline.record import gradebook_totals

    assert gradebook_totals(db_url, "tiny") == {"honest": 5.0, "blank": 0.0}
    assert not (tmp_path / "out" / "gradebook.db").exists()


@pytest.mark.slow
def test_unreachable_gradebook_still_leaves_the_rows(tiny_run, tmp_path):
    subs = tmp_path / "class"
    write_student(subs, "honest", student(tiny_run["source"]))
    proc = grade("tiny", subs, tmp_path / "out", "--source", str(tiny_run["source"]),
                 "--db", f"sqlite:///{tmp_path / 'no-such-folder' / 'gradebook.db'}")
    assert proc.returncode == 1
    assert "gradebook" in proc.stderr and "was not updated" in proc.stderr
    assert [(r["student_id"], r["score"]) for r in read_csv(tmp_path / "out" / "grades.csv")] == [("honest", "5")]


@pytest.mark.slow
def test_readme_sample_class_end_to_end(tmp_path):
    """The instructor commands of book/teaching/grading.md on the real ps1 (solutions/, with grader.verify): the
    sample class from samples/make_class.py, plus carol, whose attention is not scaled (her SelfAttention, built on
    it, fails too)."""
    from grader.bench_grading import honest_copy

    subs = tmp_path / "ps1-class"
    made = subprocess.run([sys.executable, "samples/make_class.py", "ps1", "--dest", str(subs)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    unscaled = honest_copy(nbformat.read(str(REPO / "solutions" / "ps1" / "ps1.ipynb"), as_version=4))
    for cell in unscaled.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "scaled_dot_product":
            cell.source = ("def scaled_dot_product(queries, keys, values):\n"
                           "    weights = torch.softmax(attention_scores(queries, keys), dim=-1)\n"
                           "    return weights @ values, weights\n")
    write_student(subs, "carol", json.loads(nbformat.writes(unscaled)), "ps1.ipynb")
    proc = grade("ps1", subs, tmp_path / "grading-out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["student_id"]: r for r in read_csv(tmp_path / "grading-out" / "grades.csv")}
    assert {s: (r["score"], r["max_score"], r["status"]) for s, r in rows.items()} == {
        "ada": ("10", "10", "graded"), "ben": ("0", "10", "graded"), "cai": ("5", "10", "graded"),
        "dee": ("10", "10", "graded"), "eve": ("2", "10", "crashed"), "fay": ("0", "10", "invalid_notebook"),
        "gus": ("0", "10", "missing_notebook"), "carol": ("2", "10", "graded")}
    assert "ps1 (final).ipynb" in rows["dee"]["message"] and "notes.txt" in rows["dee"]["message"]
    tasks = {(t["student_id"], t["task"]): t for t in read_csv(tmp_path / "grading-out" / "tasks.csv")}
    assert tasks[("carol", "scaled_dot_product")]["score"] == "0"
    assert tasks[("eve", "attention_scores")]["score"] == "2"      # verified in a fresh kernel after the crash
    for sid in rows:
        page = (tmp_path / "grading-out" / "feedback" / sid / "ps1.html").read_text()
        assert "BEGIN HIDDEN" not in page and "_mha_probe" not in page


@pytest.mark.slow
def test_check_prints_the_visible_score_breakdown(tmp_path):
    from grader.bench_grading import honest_copy

    source = tiny_source(tmp_path)
    nb_path = tmp_path / "mine.ipynb"
    nb = honest_copy(nbformat.read(str(source), as_version=4))
    nb.cells[2].source = "def add(a, b):\n    return a - b"
    nbformat.write(nb, str(nb_path))
    proc = subprocess.run([sys.executable, "-m", "grader", "check", str(nb_path)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.split()[:4] == ["add", "0", "/", "2"] and "AssertionError" in line for line in lines), lines
    assert any(line.split()[:5] == ["greet", "3", "/", "3", "passed"] for line in lines), lines
    assert any(line.split()[:4] == ["total", "3", "/", "5"] for line in lines), lines
