"""Grades out to the LMS (grader.pipeline.lms) and spreadsheet-safe CSVs (grader.pipeline.report.write_csvs):
the Canvas and Blackboard import files, Gradescope's results.json, submissions.csv. Fast: built from Result
objects, no kernel.
"""
from __future__ import annotations

import csv
import json

import pytest

from grader.pipeline import Result, Submission, TaskResult
from grader.pipeline.lms import (spreadsheet_safe, write_blackboard_csv, write_canvas_csv, write_gradescope_results,
                                 write_lms_files, write_submissions_csv)
from grader.pipeline.report import write_csvs

FORMULAS = ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"]


def result(student_id: str, scores=(2, 3), status: str = "graded", flags=(), message: str = "") -> Result:
    tasks = [TaskResult(f"task{i}", s, m, f"task{i}: {s}/{m}") for i, (s, m) in enumerate(zip(scores, (2, 3)))]
    return Result(student_id, "ps1", status, message, 5.0, tasks, list(flags))


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_cells_a_spreadsheet_would_run_get_a_leading_quote():
    for cell in FORMULAS:
        assert spreadsheet_safe(cell) == "'" + cell
    for cell in ["alice", "jane.doe@uni.edu", "3", "a=b", " =x"]:
        assert spreadsheet_safe(cell) == cell


def test_grades_and_tasks_csv_quote_formula_cells(tmp_path):
    results = [result(i, message="=HYPERLINK(\"http://x\")") for i in FORMULAS] + [result("alice")]
    write_csvs(tmp_path, results)
    grades = rows(tmp_path / "grades.csv")
    ids = [r[0] for r in grades[1:]]
    assert sorted(ids) == sorted(["'" + i for i in FORMULAS] + ["alice"])
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in grades for cell in r)
    assert grades[0] == ["student_id", "assignment", "score", "max_score", "status", "flags", "message"]
    tasks = rows(tmp_path / "tasks.csv")
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in tasks for cell in r)
    assert len(tasks) == 1 + 2 * len(results)


def test_canvas_csv_has_canvas_columns_points_row_and_ids_in_the_right_column(tmp_path):
    subs = [Submission("101", found_by="canvas", name="doejane"), Submission("jdoe", found_by="folder"),
            Submission("Pat's ps1.ipynb", found_by="unmatched"), Submission("=evil", found_by="folder"),
            Submission("104", found_by="canvas")]
    results = [result("101", (2, 3)), result("jdoe", (1, 0)), result("Pat's ps1.ipynb"), result("=evil", (0, 0)),
               result("104", (0, 0), status="grader_error")]
    written = write_canvas_csv(tmp_path, results, assignment="ps1", assignment_id="777", submissions=subs)
    header, points, *body = rows(written.path)
    assert header == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "ps1 (777)"]
    assert points[0] == "Points Possible" and float(points[-1]) == 5
    by = {r[0]: dict(zip(header, r)) for r in body}
    assert by["doejane"]["ID"] == "101" and float(by["doejane"]["ps1 (777)"]) == 5
    assert by["jdoe"]["SIS Login ID"] == "jdoe" and by["jdoe"]["ID"] == "" and float(by["jdoe"]["ps1 (777)"]) == 1
    assert by["'=evil"]["SIS Login ID"] == "'=evil"
    # Neither a row without a student id nor the grader's own failure goes to the LMS; both are named.
    assert set(by) == {"doejane", "jdoe", "'=evil"} and written.rows == 3
    assert any("Pat's ps1.ipynb" in x for x in written.left_out) and any("104" in x for x in written.left_out)
    # Without an assignment id the column is the bare name (Canvas makes a new assignment).
    plain = write_canvas_csv(tmp_path, results[:1], assignment="ps1", filename="plain.csv")
    assert rows(plain.path)[0][-1] == "ps1" and rows(plain.path)[2][1] == "101"   # digits: the Canvas user id
    with pytest.raises(ValueError):
        write_canvas_csv(tmp_path, results, assignment="ps1", id_column="Email")


def test_blackboard_csv_keys_on_username_with_the_total_pts_column(tmp_path):
    results = [result("jane.doe", (2, 1)), result("kim@uni.edu", (0, 0), status="missing_notebook"),
               result("-dash", (2, 3))]
    written = write_blackboard_csv(tmp_path, results, assignment="ps1", column_id="_1234_1")
    text = written.path.read_text(encoding="utf-8")
    header, *body = rows(written.path)
    assert header == ["Username", "ps1 [Total Pts: 5 Score] |_1234_1"]
    assert {r[0]: float(r[1]) for r in body} == {"jane.doe": 3, "kim@uni.edu": 0, "'-dash": 5}
    # Blackboard wants every value of a comma-delimited file inside quotes.
    assert all(line.startswith('"') and line.endswith('"') for line in text.splitlines())
    new = write_blackboard_csv(tmp_path, results, assignment="ps1", filename="new.csv")
    assert rows(new.path)[0][1] == "ps1 [Total Pts: 5 Score]"


def test_gradescope_results_json_has_one_test_per_task(tmp_path):
    graded = result("alice", (2, 1), flags=["uses F.scaled_dot_product_attention"], message="Extra files ignored.")
    path = write_gradescope_results(tmp_path, [graded], visibility="after_published")
    assert path.name == "results.json"
    data = json.loads(path.read_text())
    assert data["score"] == 3 and "graded" in data["output"]
    tasks = [t for t in data["tests"] if t["max_score"] > 0]
    assert [(t["name"], t["score"], t["max_score"]) for t in tasks] == [("task0", 2, 2), ("task1", 1, 3)]
    assert all(set(t) == {"name", "score", "max_score", "output", "visibility"} for t in data["tests"])
    assert all(t["visibility"] == "after_published" for t in tasks)
    review = [t for t in data["tests"] if t["max_score"] == 0]
    assert review and review[0]["visibility"] == "hidden" and "scaled_dot_product" in review[0]["output"]
    assert sum(t["score"] for t in data["tests"]) == data["score"]
    with pytest.raises(ValueError):
        write_gradescope_results(tmp_path, [graded, result("bob")])
    with pytest.raises(ValueError):
        write_gradescope_results(tmp_path, [graded], visibility="public")


def test_submissions_csv_keeps_the_lms_late_marker_and_time_stamp(tmp_path):
    subs = [Submission("102", "ps1.ipynb", b"{}", found_by="canvas", name="obrienpat", late=True,
                       source="obrienpat_LATE_102_9102_ps1-1.ipynb"),
            Submission("jane.doe", "ps1.ipynb", b"{}", found_by="blackboard", submitted_at="2026-03-01 09:15:00")]
    header, *body = rows(write_submissions_csv(tmp_path, subs))
    by = {r[0]: dict(zip(header, r)) for r in body}
    assert by["102"]["late"] == "late" and by["102"]["found_by"] == "canvas" and by["102"]["name"] == "obrienpat"
    assert by["jane.doe"]["submitted_at"] == "2026-03-01 09:15:00" and by["jane.doe"]["late"] == ""


def test_one_run_writes_every_lms_file(tmp_path):
    subs = [Submission("101", found_by="canvas", name="doejane")]
    lines = write_lms_files(tmp_path, [result("101")], subs, assignment="ps1")
    assert {p.name for p in tmp_path.iterdir()} == {"canvas_grades.csv", "blackboard_grades.csv", "moodle_grades.csv",
                                                    "submissions.csv"}
    assert len(lines) == 4 and all("row" in line or "found" in line for line in lines)
