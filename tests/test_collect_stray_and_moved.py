"""A class zip with a stray file beside the class folder, graded cells moved above their answers, and answer
cells pasted twice, each through the real ``python -m grader grade`` (issue 25): every student keeps their row,
what was ignored is said in the log, tests are run after their answers and an answer's last copy is graded.
"""
from __future__ import annotations

import copy
import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader.bench_grading import honest_copy, release_copy
from grader.pipeline.collect import collect
from grader.pipeline.types import grade_id

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "ps1" / "ps1.ipynb"


def notebooks() -> dict[str, nbformat.NotebookNode]:
    """ada solved it; moe solved it but moved every test cell above its answer; dup left the release's stub in
    place and pasted the solved attention_scores answer and its test again at the end."""
    source = nbformat.read(str(SOURCE), as_version=4)
    solved, released = honest_copy(source), release_copy(source)
    moved = copy.deepcopy(solved)
    for i, cell in enumerate(moved.cells):
        if (grade_id(cell) or "").startswith("test_"):
            moved.cells[i - 1], moved.cells[i] = cell, moved.cells[i - 1]
    duplicated = copy.deepcopy(released)
    at = next(i for i, c in enumerate(solved.cells) if grade_id(c) == "attention_scores")
    duplicated.cells += copy.deepcopy(solved.cells[at:at + 2])
    for i, cell in enumerate(duplicated.cells):
        cell.id = f"c{i}"      # a pasted cell gets a new id in Jupyter
    return {"ada": solved, "moe": moved, "dup": duplicated}


@pytest.fixture(scope="module")
def class_zip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stray") / "class.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for who, notebook in notebooks().items():
            zf.writestr(f"ps1-class/{who}/ps1.ipynb", nbformat.writes(notebook))
        zf.writestr("index.html", "<html><body>Download of ps1</body></html>")
    return path


@pytest.mark.parametrize("stray", ["index.html", "README.txt"])
@pytest.mark.parametrize("as_zip", [True, False])
def test_a_stray_file_beside_the_class_folder_never_merges_the_class(tmp_path, stray, as_zip):
    files = {f"ps1-class/{who}/ps1.ipynb": b"{}" for who in ("ann", "bo", "cy")} | {stray: b"x"}
    if as_zip:
        root = tmp_path / "class.zip"
        with zipfile.ZipFile(root, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        root = tmp_path / "class"
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    found = collect(root, "ps1.ipynb")
    assert sorted(s.student_id for s in found) == ["ann", "bo", "cy"]
    assert found.ignored == [stray]
    assert any(stray in line and "ignored" in line for line in found.summary())


def test_a_single_students_folder_beside_a_stray_file_is_still_that_student(tmp_path):
    (tmp_path / "class" / "alice").mkdir(parents=True)
    (tmp_path / "class" / "alice" / "ps1.ipynb").write_bytes(b"{}")
    (tmp_path / "class" / "notes.txt").write_text("TA notes")
    assert [s.student_id for s in collect(tmp_path / "class", "ps1.ipynb")] == ["alice"]


def test_grade_gives_every_student_a_row_and_grades_moved_and_pasted_cells(class_zip, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "ps1", str(class_zip), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "found 3 student(s)" in log and "not a student's (ignored): index.html" in log
    rows = {row["student_id"]: row for row in csv.DictReader((out / "grades.csv").open())}
    assert sorted(rows) == ["ada", "dup", "moe"]
    assert all(row["status"] == "graded" for row in rows.values())
    full = int(rows["ada"]["max_score"])
    assert float(rows["ada"]["score"]) == full
    # Moved tests ran after the answers they test: full marks, and the row says what was moved.
    assert float(rows["moe"]["score"]) == full
    assert "test_attention_scores" in rows["moe"]["message"] and "run after" in rows["moe"]["message"]
    # The last copy of attention_scores (solved) is graded, not the release's stub above it: exactly its points.
    tasks = {(r["student_id"], r["task"]): r for r in csv.DictReader((out / "tasks.csv").open())}
    dup = {task: float(r["score"]) for (who, task), r in tasks.items() if who == "dup"}
    assert dup["attention_scores"] == float(tasks[("ada", "attention_scores")]["score"]) > 0
    assert sum(dup.values()) == float(rows["dup"]["score"]) == dup["attention_scores"]
    assert "graded by their last copy" in rows["dup"]["message"]
