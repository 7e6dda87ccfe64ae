"""``python -m grader grade ... --student ID``: regrade some students of an earlier run, and only them (issue 15).

The class is the sample class (samples/make_class.py) of ps1 cut down to two students, ben (nothing done) and cai
(last task undone). Between the first run and the regrade, both hand in a complete notebook (ada's): the one named
by --student must get its new score everywhere, the one not named must keep every byte the first run wrote for it,
although its notebook would now score differently.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from test_grading import grade, read_csv

pytestmark = pytest.mark.slow

sys.path.insert(0, str(REPO / "samples"))
from make_class import make_class  # noqa: E402

KEPT = ["ben", "cai"]     # nothing done / last task undone


def lines_by_student(path) -> dict[str, list[str]]:
    """The CSV's records, re-read as the exact text the file holds, grouped by the first column."""
    text = path.read_bytes().decode("utf-8")
    records, rows = [], list(csv.reader(io.StringIO(text, newline="")))
    buffer = io.StringIO()
    for row in rows:
        buffer.seek(0), buffer.truncate()
        csv.writer(buffer).writerow(row)
        records.append((row[0], buffer.getvalue()))
    assert "".join(r for _, r in records) == text, "the test's re-reading does not reproduce the file"
    grouped: dict[str, list[str]] = {}
    for student_id, record in records[1:]:
        grouped.setdefault(student_id, []).append(record)
    return grouped


@pytest.fixture(scope="module")
def regraded(tmp_path_factory):
    base = tmp_path_factory.mktemp("regrade")
    subs, out = base / "class", base / "out"
    make_class("ps1", subs)
    complete = (subs / "ada" / "ps1.ipynb").read_bytes()
    for folder in subs.iterdir():
        if folder.name not in KEPT:
            shutil.rmtree(folder)
    first = grade("ps1", subs, out, "--jobs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    files = ["grades.csv", "tasks.csv", "canvas_grades.csv", "blackboard_grades.csv", "submissions.csv"]
    before = {name: (out / name).read_bytes() for name in files}
    pages = {p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
             for p in (out / "feedback").rglob("*.html")}
    # Both hand in ada's complete notebook now; only cai is regraded.
    for student in KEPT:
        (subs / student / "ps1.ipynb").write_bytes(complete)
    second = grade("ps1", subs, out, "--student", "cai")
    (base / "runs.log").write_text(first.stderr + "\n----\n" + second.stderr)
    return dict(base=base, subs=subs, out=out, first=first, second=second, before=before, pages=pages)


def test_first_run_scores_as_the_sample_class_says(regraded):
    first = csv.DictReader(io.StringIO(regraded["before"]["grades.csv"].decode(), newline=""))
    scores = {r["student_id"]: float(r["score"]) for r in first}
    assert set(scores) == set(KEPT)
    assert scores["ben"] == 0 and 0 < scores["cai"] < 10


def test_only_the_named_student_is_graded_and_gets_new_rows(regraded):
    assert regraded["second"].returncode == 0, regraded["second"].stderr[-3000:]
    assert "grading 1 submission(s)" in regraded["second"].stderr
    rows = {r["student_id"]: r for r in read_csv(regraded["out"] / "grades.csv")}
    assert [r for r in rows] == sorted(KEPT), "rows stay in student-id order"
    assert float(rows["cai"]["score"]) == 10, rows["cai"]
    # ben's notebook would now score 10 too, but he was not regraded.
    assert float(rows["ben"]["score"]) == 0, rows["ben"]
    tasks = [r for r in read_csv(regraded["out"] / "tasks.csv") if r["student_id"] == "cai"]
    assert tasks and all(float(t["score"]) == float(t["max_score"]) for t in tasks), tasks


@pytest.mark.parametrize("name", ["grades.csv", "tasks.csv", "submissions.csv"])
def test_other_students_lines_keep_their_bytes(regraded, name):
    old = lines_by_student_from_bytes(regraded["before"][name], regraded["base"] / f"old-{name}")
    new = lines_by_student(regraded["out"] / name)
    assert set(old) == set(new) == set(KEPT)
    assert new["ben"] == old["ben"], name
    if name != "submissions.csv":        # the same file name and place: only the score columns change
        assert new["cai"] != old["cai"]


def lines_by_student_from_bytes(data: bytes, path):
    path.write_bytes(data)
    return lines_by_student(path)


@pytest.mark.parametrize("name", ["canvas_grades.csv", "blackboard_grades.csv"])
def test_lms_files_change_in_the_regraded_row_only(regraded, name):
    old = regraded["before"][name].decode().splitlines()
    new = (regraded["out"] / name).read_bytes().decode().splitlines()
    assert old[0] == new[0] and len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert len(changed) == 1 and "cai" in changed[0][1] and changed[0][1].endswith(('10', '"10"')), changed


def test_feedback_pages_of_others_are_not_rewritten(regraded):
    out = regraded["out"]
    for rel, (data, mtime) in regraded["pages"].items():
        page = out / rel
        if rel.startswith("feedback/cai/"):
            assert page.read_bytes() != data, "cai's page must show the regrade"
        else:
            assert page.read_bytes() == data and page.stat().st_mtime_ns == mtime, rel


def test_gradebook_holds_the_regrade_for_that_student_only(regraded):
    from grader.pipeline.record import gradebook_totals

    totals = gradebook_totals(f"sqlite:///{regraded['out'] / 'gradebook.db'}", "ps1")
    assert totals == {"ben": 0.0, "cai": 10.0}


def test_an_unknown_student_stops_before_grading_and_changes_nothing(regraded):
    out = regraded["out"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = grade("ps1", regraded["subs"], out, "--student", "cai", "--student", "zed")
    assert proc.returncode == 2
    assert "'zed'" in proc.stderr and "no such student" in proc.stderr and "grading 1" not in proc.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_without_an_earlier_run_it_says_to_grade_the_class_first(regraded, tmp_path):
    proc = grade("ps1", regraded["subs"], tmp_path / "fresh", "--student", "cai")
    assert proc.returncode == 2 and "grade the whole class" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "fresh" / "grades.csv").exists()


def test_nbgrader_export_reads_the_gradebook_with_the_readme_setting(regraded, tmp_path):
    """From the course root, MHA_GRADING_OUT=OUT joins nbgrader_config.py to the grader's gradebook."""
    export = tmp_path / "export.csv"
    env = {**os.environ, "MHA_GRADING_OUT": str(regraded["out"])}
    proc = subprocess.run([str(Path(sys.executable).with_name("nbgrader")), "export", "--to", str(export)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["student_id"]: r for r in read_csv(export)}
    assert {s: (r["assignment"], float(r["score"]), float(r["max_score"])) for s, r in rows.items()} == {
        "ben": ("ps1", 0.0, 10.0), "cai": ("ps1", 10.0, 10.0)}


def test_formgrader_lists_and_renders_the_autograded_notebooks(regraded, monkeypatch):
    """What formgrader's submission views do (nbgrader.apps.api and SubmissionHandler), on the grader's OUT: the
    submissions are listed (their autograded notebooks exist), none waits for manual grading, and the notebook
    renders with formgrader's template."""
    from nbconvert import HTMLExporter
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config import Config, PyFileConfigLoader

    monkeypatch.setenv("MHA_GRADING_OUT", str(regraded["out"]))
    config = Config()
    config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config())
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    listed = api.get_notebook_submissions("ps1", "ps1")
    assert sorted(s["student"] for s in listed) == KEPT
    assert not any(s["needs_manual_grade"] for s in listed), listed
    assert [s["score"] for s in sorted(listed, key=lambda s: s["student"])] == [0.0, 10.0]

    exporter = HTMLExporter(template_name="formgrade", extra_template_basedirs=[handlers.template_path])
    notebook = regraded["out"] / "autograded" / "cai" / "ps1" / "ps1.ipynb"
    html, _ = exporter.from_filename(str(notebook), resources={
        "assignment_id": "ps1", "notebook_id": "ps1", "submission_id": listed[0]["id"], "index": 0, "total": 2,
        "base_url": "", "student": "cai", "last_name": None, "first_name": None, "notebook_path": "x"})
    grade_ids = [c.metadata["nbgrader"]["grade_id"] for c in nbformat.read(str(notebook), as_version=4).cells
                 if c.metadata.get("nbgrader", {}).get("grade")]
    assert grade_ids and all(gid in html for gid in grade_ids)
    assert "probe" not in json.dumps([c.metadata for c in nbformat.read(str(notebook), as_version=4).cells])


def test_merge_keeps_formula_quoted_ids_byte_identical_and_refuses_other_columns(tmp_path):
    """Without grading: ids a spreadsheet would run ("=1+1", "-x") are written with a leading ' and must come back
    as the same bytes when another student's row is replaced; a file with other columns is not merged into."""
    from grader.pipeline.lms import CannotMerge, write_csv

    path, header = tmp_path / "grades.csv", ["student_id", "score", "message"]
    write_csv(path, header, [["-x", "1", "line one\nline two"], ["=1+1", "2", ""], ["bo", "3", 'say "hi"']])
    before = path.read_bytes()
    write_csv(path, header, [["bo", "9", "regraded"]], replace={"bo"})
    after = path.read_bytes()
    assert after.replace(b'bo,9,regraded', b'bo,3,"say ""hi"""') == before
    assert b"'=1+1" in after and b"'-x" in after
    with pytest.raises(CannotMerge, match="other columns"):
        write_csv(path, ["student_id", "score"], [["bo", "1"]], replace={"bo"})
    assert path.read_bytes() == after
