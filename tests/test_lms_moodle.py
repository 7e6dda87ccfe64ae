"""Moodle's grading worksheet (grader.pipeline.lms.write_moodle_csv), against the columns Moodle's assignment writes
and the rules its upload applies (mod/assign/feedback/offline/importgradeslib.php): the Identifier, Grade and
Last modified (grade) columns must be there, and the id after "Participant " is the participant id of Moodle's
submission download. Also: the row counts a ``--student`` regrade logs are the files' rows (issue 25)."""
from __future__ import annotations

import calendar
import csv
import time
import zipfile
from pathlib import Path

from grader.pipeline import Result, Submission, TaskResult
from grader.pipeline.collect import collect
from grader.pipeline.lms import write_blackboard_csv, write_canvas_csv, write_lms_files, write_moodle_csv

# "Download grading worksheet" of a Moodle assignment with the offline worksheet and feedback comments enabled.
MOODLE_DOWNLOAD_HEADER = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                          "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                          "Feedback comments"]


def result(student_id: str, score: float, status: str = "graded", message: str = "") -> Result:
    return Result(student_id, "ps1", status, message, 5.0, [TaskResult("task", score, 5.0, "")], [])


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def moodle_download(tmp_path: Path) -> Path:
    """Moodle's "Download all submissions": a folder per participant and plugin."""
    path = tmp_path / "moodle.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Jane Doe_501_assignsubmission_file_/ps1.ipynb", b"{}")
        zf.writestr("Pat O'Brien_502_assignsubmission_file_/ps1.ipynb", b"{}")
        zf.writestr("Pat O'Brien_502_assignsubmission_onlinetext_/onlinetext.html", b"<p>hi</p>")
    return path


def test_worksheet_has_moodles_columns_and_participant_identifiers(tmp_path):
    subs = list(collect(moodle_download(tmp_path), "ps1.ipynb"))
    results = [result("501", 5, message="=cmd|' /C calc'!A0"), result("502", 2.5, "timeout", "Stopped after 300 s.")]
    written = write_moodle_csv(tmp_path, results, submissions=subs, graded_at="2026-12-07 21:00:00 UTC")
    header, *body = rows(written.path)
    assert header == MOODLE_DOWNLOAD_HEADER
    by = {r[0]: dict(zip(header, r)) for r in body}
    assert set(by) == {"Participant 501", "Participant 502"} and written.rows == 2 and not written.left_out
    jane, pat = by["Participant 501"], by["Participant 502"]
    assert jane["Full name"] == "Jane Doe" and pat["Full name"] == "Pat O'Brien"
    assert float(jane["Grade"]) == 5 and float(pat["Grade"]) == 2.5 and float(jane["Maximum Grade"]) == 5
    # What Moodle's importer does with a row: the participant id after its 'hiddenuser' string, a float grade,
    # strtotime() of the grade's time (here: the same instant read back), the comment kept as text, never a formula.
    assert jane["Identifier"][len("Participant "):] == "501"
    stamp = calendar.timegm(time.strptime(jane["Last modified (grade)"], "%Y-%m-%d %H:%M:%S UTC"))
    assert stamp == calendar.timegm((2026, 12, 7, 21, 0, 0))
    assert pat["Feedback comments"] == "Stopped after 300 s." and jane["Feedback comments"].startswith("'=")
    # Moodle's own worksheet quotes every field.
    assert all(line.startswith('"') for line in written.path.read_text(encoding="utf-8").splitlines())


def test_students_without_a_participant_id_are_left_out_and_named(tmp_path):
    subs = [Submission("501", found_by="moodle", name="Jane Doe"), Submission("kim", found_by="folder"),
            Submission("777", found_by="canvas")]
    results = [result("501", 4), result("kim", 3), result("777", 1), result("999", 0, "grader_error")]
    written = write_moodle_csv(tmp_path, results, submissions=subs)
    assert [r[0] for r in rows(written.path)[1:]] == ["Participant 501"]
    said = "; ".join(written.left_out)
    assert "kim" in said and "777" in said and "999 (grader_error)" in said
    # Without a time given, the grade's time is this run's, which Moodle's strtotime reads.
    stamp = calendar.timegm(time.strptime(rows(written.path)[1][8], "%Y-%m-%d %H:%M:%S UTC"))
    assert abs(stamp - time.time()) < 120


def test_a_regrade_logs_the_rows_the_files_hold_not_only_the_regraded(tmp_path):
    """A class of 7, then ``--student`` for 2: every import file still holds 7 rows, and the log says so."""
    ids = [f"{500 + i}" for i in range(7)]
    subs = [Submission(i, found_by="moodle", name=f"Student {i}") for i in ids]
    write_lms_files(tmp_path, [result(i, 1) for i in ids], subs, assignment="ps1")
    again = ids[2:4]
    lines = write_lms_files(tmp_path, [result(i, 5) for i in again], [s for s in subs if s.student_id in again],
                            assignment="ps1", replace=again)
    for name, leading in [("canvas_grades.csv", 2), ("blackboard_grades.csv", 1), ("moodle_grades.csv", 1)]:
        held = rows(tmp_path / name)[leading:]
        assert len(held) == 7, name
        line = next(x for x in lines if x.startswith(name))
        assert f"{name}: 7 row(s) (2 regraded)" in line, line
    moodle = {r[0]: r for r in rows(tmp_path / "moodle_grades.csv")[1:]}
    assert float(moodle["Participant 502"][4]) == 5 and float(moodle["Participant 500"][4]) == 1
    # A first run's count is this run's rows.
    first = write_canvas_csv(tmp_path / "..", [result("1", 1)], assignment="ps1", filename="solo.csv")
    assert first.rows == 1 and "regraded" not in first.summary()
    assert write_blackboard_csv(tmp_path, [result("a", 1), result("b", 2)], assignment="ps1",
                                filename="bb.csv").summary() == "bb.csv: 2 row(s)"


def test_a_class_from_no_moodle_download_gets_an_empty_worksheet_and_says_why(tmp_path):
    written = write_moodle_csv(tmp_path, [result("ada", 5), result("ben", 0)],
                               submissions=[Submission("ada", found_by="folder"), Submission("ben", found_by="folder")])
    assert rows(written.path) == [MOODLE_DOWNLOAD_HEADER] and written.left_out == []
    assert "no student came from a Moodle download" in written.summary()


def test_grading_a_moodle_download_writes_its_worksheet_beside_canvas_and_blackboard(tmp_path):
    """Through the real ``python -m grader grade``: each participant of Moodle's download gets their grade."""
    import subprocess
    import sys

    from test_grading_collect import CLASS, lms_zips

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "ps1", str(lms_zips(tmp_path)["moodle"]),
                           "--out", str(out)], capture_output=True, text=True, cwd=Path(__file__).parents[1],
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grades = {r[0]: r for r in rows(out / "grades.csv")[1:]}
    header, *body = rows(out / "moodle_grades.csv")
    assert header == MOODLE_DOWNLOAD_HEADER
    by = {r[0]: dict(zip(header, r)) for r in body}
    assert set(by) == {f"Participant {p[3]}" for p in CLASS.values()}
    for full, participant in ((p[2], p[3]) for p in CLASS.values()):
        row = by[f"Participant {participant}"]
        assert row["Full name"] == full and row["Grade"] == grades[participant][2]
        assert row["Maximum Grade"] == grades[participant][3]
    assert f"moodle_grades.csv: {len(CLASS)} row(s)" in proc.stdout + proc.stderr
    assert (out / "canvas_grades.csv").is_file() and (out / "blackboard_grades.csv").is_file()


def test_a_regrade_of_an_out_without_a_worksheet_still_updates_the_other_files(tmp_path):
    subs = [Submission("501", found_by="moodle", name="Jane Doe"), Submission("502", found_by="moodle")]
    write_lms_files(tmp_path, [result("501", 1), result("502", 1)], subs, assignment="ps1")
    (tmp_path / "moodle_grades.csv").unlink()        # as an OUT written before the worksheet existed
    lines = write_lms_files(tmp_path, [result("502", 4)], subs[1:], assignment="ps1", replace=["502"])
    assert not (tmp_path / "moodle_grades.csv").exists()
    assert any(line.startswith("moodle_grades.csv: 0 row(s) (not written") for line in lines), lines
    blackboard = {r[0]: r[1] for r in rows(tmp_path / "blackboard_grades.csv")[1:]}
    assert float(blackboard["502"]) == 4 and float(blackboard["501"]) == 1
