"""``python -m grader gradescope``: the Gradescope autograder entry point, with temporary folders standing in for
/autograder (issue 15). The assignment is the tiny one of test_grading (two tasks, 2 + 3 points, no torch)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_grading import student, tiny_source, tree_digest

pytestmark = pytest.mark.slow


def autograder(root: Path, files: dict[str, bytes]) -> dict[str, Path]:
    """/autograder as Gradescope lays it out: submission/ with the student's files, submission_metadata.json."""
    paths = {"submission": root / "submission", "results": root / "results",
             "metadata": root / "submission_metadata.json"}
    paths["submission"].mkdir(parents=True)
    for name, data in files.items():
        (paths["submission"] / name).parent.mkdir(parents=True, exist_ok=True)
        (paths["submission"] / name).write_bytes(data)
    paths["metadata"].write_text(json.dumps({"users": [{"email": "ada@example.edu", "name": "Ada", "id": 7}]}))
    return paths


def run_gradescope(paths: dict[str, Path], source: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "grader", "gradescope", "tiny", "--source", str(source), "--timeout", "20",
           "--no-preload",
           "--submission", str(paths["submission"]), "--results", str(paths["results"]),
           "--metadata", str(paths["metadata"]), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)


def test_a_submission_is_graded_into_results_json(tmp_path):
    source = tiny_source(tmp_path / "solutions")
    wrong_add = student(source, answers={"add": "def add(a, b):\n    return abs(a) + b"})   # fails a hidden test
    paths = autograder(tmp_path / "autograder", {"tiny.ipynb": json.dumps(wrong_add).encode(),
                                                  "notes.txt": b"extra file"})
    before = tree_digest(paths["submission"])
    proc = run_gradescope(paths, source, "--visibility", "visible")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ada@example.edu" in proc.stderr
    results = json.loads((paths["results"] / "results.json").read_text())
    tests = {t["name"]: t for t in results["tests"]}
    assert {name: (t["score"], t["max_score"]) for name, t in tests.items()} == {"add": (0, 2), "greet": (3, 3)}
    assert "add must work for negative numbers" in tests["add"]["output"]
    assert results["score"] == 3 and all(t["visibility"] == "visible" for t in tests.values())
    assert "graded" in results["output"]
    assert tree_digest(paths["submission"]) == before, "the submission folder must not be written"


def test_a_submission_without_a_notebook_still_gets_results(tmp_path):
    source = tiny_source(tmp_path / "solutions")
    paths = autograder(tmp_path / "autograder", {"answers.md": b"my answers are here"})
    proc = run_gradescope(paths, source)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((paths["results"] / "results.json").read_text())
    assert results["score"] == 0 and "missing_notebook" in results["output"]
    assert {t["name"]: t["max_score"] for t in results["tests"]} == {"add": 2, "greet": 3}
    assert all(t["visibility"] == "after_published" for t in results["tests"])


def test_a_missing_submission_folder_is_named(tmp_path):
    source = tiny_source(tmp_path / "solutions")
    paths = {"submission": tmp_path / "nowhere", "results": tmp_path / "results", "metadata": tmp_path / "m.json"}
    proc = run_gradescope(paths, source)
    assert proc.returncode == 2 and "nowhere is not a folder" in proc.stderr
    assert not paths["results"].exists()


def test_a_broken_assignment_contract_is_said_without_a_traceback(tmp_path):
    # ps1's declared tasks against the tiny notebook's graded cells: the contract cannot hold.
    source = tiny_source(tmp_path / "solutions")
    paths = autograder(tmp_path / "autograder", {"tiny.ipynb": json.dumps(student(source)).encode()})
    cmd = [sys.executable, "-m", "grader", "gradescope", "ps1", "--source", str(source), "--no-preload",
           "--submission", str(paths["submission"]), "--results", str(paths["results"]),
           "--metadata", str(paths["metadata"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "the assignment's grading is incomplete" in proc.stderr and "upload the autograder zip again" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (paths["results"] / "results.json").exists()


def test_run_autograder_calls_the_command():
    script = (REPO / "grader" / "gradescope" / "run_autograder").read_text()
    assert "python3 -m grader gradescope" in script and "cd /autograder/source" in script
    assert (REPO / "grader" / "gradescope" / "run_autograder").stat().st_mode & 0o111
