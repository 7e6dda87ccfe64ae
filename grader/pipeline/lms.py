"""Grades back to the LMS: the files Canvas, Blackboard, Moodle and Gradescope import, from the results of one run,
and every CSV the grader writes made safe to open in a spreadsheet.

Formats, and where they come from:

- Canvas gradebook import (Canvas Instructor Guide, "How do I import grades in the Gradebook?"; the layout of
  Canvas's own gradebook export): columns ``Student, ID, SIS User ID, SIS Login ID, Section``, then one column per
  assignment headed ``<Assignment name> (<assignment id>)``; an optional second row whose first cell is
  ``Points Possible``. Canvas matches a student by ``ID`` (the Canvas user id, which its submission download
  names carry) or by the SIS columns; a column without an ``(id)`` makes Canvas create a new assignment.
- Blackboard Learn Grade Center upload (Blackboard Help, "Uploading External Grade Center Items" / "Upload and
  download grades for working offline"): a header row, the student's ``Username`` as the key, a grade column headed
  as Blackboard's download heads it, ``<Column name> [Total Pts: <points> Score] |<column id>``. A header without
  the ``|<column id>`` makes Blackboard create a new column (as a text column with 0 points possible: edit it after
  the upload). In a comma-delimited file every value must be inside quotes, so all fields are quoted.
- Moodle assignment "Offline grading worksheet" (Moodle Docs, "Assignment settings: Feedback types, Offline grading
  worksheet"; mod/assign/feedback/offline in Moodle's source): the worksheet Moodle downloads has the columns
  ``Identifier, Full name, Email address, Status, Grade, Maximum Grade, Grade can be changed, Last modified
  (submission), Last modified (grade), Feedback comments``. Its upload (importgradeslib.php) refuses a file without
  the ``Identifier``, ``Grade`` and ``Last modified (grade)`` columns, finds the student by the number after
  ``Participant `` in ``Identifier`` (the same participant id Moodle's "Download all submissions" puts in its folder
  names), and skips a grade modified in Moodle more than a minute after ``Last modified (grade)``. Only students
  collected from a Moodle download carry that id; the others are left out and named.
- Gradescope autograder results (Gradescope's "Autograder Specifications"; gradescope-utils' JSON test runner):
  ``/autograder/results/results.json`` with ``score``, ``output`` and ``tests``, each test ``{score, max_score,
  name, output, visibility}``, visibility one of ``hidden``, ``after_due_date``, ``after_published``, ``visible``.
- Spreadsheet safety (OWASP, "CSV Injection"): a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
  carriage return runs as a formula in Excel and LibreOffice; such cells get a leading ``'``.

A row that cannot go to the LMS (no student id was matched, or the grader failed on it) is left out of the import
files and named in what the writers return, so the run can say so.

A regrade of some students (``grade --student ID``) passes their ids as `replace`: each file is then the earlier
run's file with only those students' rows replaced; every other row is written back as it was read, which gives the
same bytes (the csv module writes the same values the same way, and a cell made spreadsheet-safe stays as it is).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from grader.pipeline.types import Result, Submission

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_COLUMNS = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                  "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments"]
MOODLE_PARTICIPANT = "Participant "     # Moodle's string 'hiddenuser' (mod_assign), before the participant id
SUBMISSIONS_COLUMNS = ["student_id", "name", "found_by", "notebook", "source", "late", "submitted_at"]
GRADESCOPE_VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")
# Rows whose score must not be uploaded: a grader failure is the grader's, not the student's, zero.
NOT_FOR_UPLOAD = {"grader_error"}


def spreadsheet_safe(value) -> str:
    """The cell's text, with a leading ' when a spreadsheet would run it as a formula."""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def unsafe(cell: str) -> str:
    """The value spreadsheet_safe was given, from the cell it wrote (for sorting and matching ids read back)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell


class CannotMerge(ValueError):
    """An earlier run's CSV cannot take a regrade's rows (missing, or other columns); the message says why."""


def merge_rows(path: Path, header: list[str], rows: list[list[str]], replace: Iterable[str],
               student_of: Callable[[list[str]], str], *, leading: int = 0) -> list[list]:
    """The rows of an earlier run's `path` whose student (``student_of(row)``, a raw id) is not in `replace`, with
    `rows` (this run's rows of those students) put in student-id order among them; the first `leading` rows of
    `rows` (Canvas's "Points Possible") stay first and replace the file's. Raises CannotMerge when the file is
    missing or its header differs from `header` (a regrade under other settings, which must grade everyone)."""
    if not path.is_file():
        raise CannotMerge(f"{path} is missing: --student replaces rows of an earlier run; grade the whole class "
                          "(without --student) first")
    with open(path, newline="", encoding="utf-8") as f:
        old = list(csv.reader(f))
    if not old or [unsafe(c) for c in old[0]] != [str(c) for c in header]:
        raise CannotMerge(f"{path.name} has other columns than this run writes ({old[0] if old else 'empty'} vs "
                          f"{header}): grade the whole class (without --student) to rewrite it")
    replaced = set(replace)
    kept = [row for row in old[1 + leading:] if student_of([unsafe(c) for c in row]) not in replaced]
    body = kept + [[str(c) for c in row] for row in rows[leading:]]
    # sorted() is stable: one student's rows (tasks.csv) keep their order.
    body.sort(key=lambda row: student_of([unsafe(c) for c in row]))
    return [list(r) for r in rows[:leading]] + body


def write_csv(path: Path, header: list[str], rows, quoting: int = csv.QUOTE_MINIMAL, *,
              replace: Iterable[str] | None = None, student_of: Callable[[list[str]], str] = lambda row: row[0],
              leading: int = 0) -> Path:
    """Every CSV the grader writes goes through here: UTF-8, one header row, spreadsheet-safe cells. With
    `replace` (student ids), only those students' rows of the existing file are replaced (merge_rows)."""
    if replace is not None:
        rows = merge_rows(path, header, list(rows), replace, student_of, leading=leading)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=quoting)
        for row in [header, *rows]:
            writer.writerow([spreadsheet_safe(cell) for cell in row])
    return path


def _points(x: float) -> str:
    return f"{x:g}"


@dataclass
class Written:
    """An import file written: its path, the students' rows it holds now (after a ``--student`` merge: everyone's,
    not only the regraded), how many of them this run wrote (None: all), and the rows left out."""
    path: Path
    rows: int
    left_out: list[str] = field(default_factory=list)   # "<student id> (why)"
    this_run: int | None = None
    note: str = ""

    def summary(self) -> str:
        line = f"{self.path.name}: {self.rows} row(s)"
        if self.this_run is not None:
            line += f" ({self.this_run} regraded)"
        if self.note:
            line += f" ({self.note})"
        if self.left_out:
            line += "; left out (enter by hand): " + ", ".join(self.left_out)
        return line


def _written(path: Path, rows: int, left_out: list[str], replace, leading: int = 0) -> Written:
    """A Written for a file just written; after a merge its rows are counted in the file (students' rows only)."""
    if replace is None:
        return Written(path, rows, left_out)
    with open(path, newline="", encoding="utf-8") as f:
        held = sum(1 for _ in csv.reader(f)) - 1 - leading
    return Written(path, held, left_out, this_run=rows)


def _uploadable(results: list[Result], submissions: dict[str, Submission]):
    """(result, submission or None) in student-id order, and the rows that cannot be uploaded."""
    rows, left_out = [], []
    for r in sorted(results, key=lambda r: r.student_id):
        sub = submissions.get(r.student_id)
        if sub is not None and sub.found_by == "unmatched":
            left_out.append(f"{r.student_id} (no student id)")
        elif r.status in NOT_FOR_UPLOAD:
            left_out.append(f"{r.student_id} ({r.status})")
        else:
            rows.append((r, sub))
    return rows, left_out


def _by_id(submissions) -> dict[str, Submission]:
    return {s.student_id: s for s in (submissions or [])}


def _max_score(results: list[Result]) -> float:
    return max((r.max_score for r in results), default=0.0)


def canvas_id_column(student_id: str, sub: Submission | None) -> str:
    """Which Canvas column holds this id: the Canvas user id (from a Canvas download, or all digits), else the SIS
    login (a username or e-mail address from a folder or another LMS)."""
    if (sub is not None and sub.found_by == "canvas") or student_id.isdigit():
        return "ID"
    return "SIS Login ID"


def write_canvas_csv(out: Path, results: list[Result], *, assignment: str, assignment_id: str | None = None,
                     submissions: list[Submission] | None = None, id_column: str | None = None,
                     filename: str = "canvas_grades.csv", replace: Iterable[str] | None = None) -> Written:
    """OUT/canvas_grades.csv for Canvas's gradebook import (see the module docstring).
    `assignment_id`: the Canvas assignment's id (in its URL); without it Canvas creates a new assignment.
    `id_column`: force the column the student ids go in ("ID", "SIS User ID" or "SIS Login ID")."""
    if id_column is not None and id_column not in CANVAS_COLUMNS[1:4]:
        raise ValueError(f"id_column must be one of {CANVAS_COLUMNS[1:4]}, not {id_column!r}")
    subs = _by_id(submissions)
    rows, left_out = _uploadable(results, subs)
    column = f"{assignment} ({assignment_id})" if assignment_id else assignment
    body = [["Points Possible", "", "", "", "", _points(_max_score(results))]]
    for r, sub in rows:
        cells = dict.fromkeys(CANVAS_COLUMNS, "")
        cells["Student"] = (sub.name if sub is not None and sub.name else r.student_id)
        cells[id_column or canvas_id_column(r.student_id, sub)] = r.student_id
        body.append([cells[c] for c in CANVAS_COLUMNS] + [_points(r.score)])
    path = write_csv(out / filename, CANVAS_COLUMNS + [column], body, replace=replace, leading=1,
                     student_of=lambda row: next((c for c in row[1:4] if c), ""))
    return _written(path, len(rows), left_out, replace, leading=1)


def blackboard_column(assignment: str, points: float, column_id: str | None = None) -> str:
    """A Grade Center column header, as Blackboard's own download writes it."""
    header = f"{assignment} [Total Pts: {_points(points)} Score]"
    return f"{header} |{column_id}" if column_id else header


def write_blackboard_csv(out: Path, results: list[Result], *, assignment: str, column_id: str | None = None,
                         submissions: list[Submission] | None = None,
                         filename: str = "blackboard_grades.csv", replace: Iterable[str] | None = None) -> Written:
    """OUT/blackboard_grades.csv for Blackboard's Grade Center upload (see the module docstring).
    `column_id`: the Grade Center column's id (from a downloaded Grade Center); without it Blackboard makes a new
    column."""
    rows, left_out = _uploadable(results, _by_id(submissions))
    header = ["Username", blackboard_column(assignment, _max_score(results), column_id)]
    body = [[r.student_id, _points(r.score)] for r, _ in rows]
    path = write_csv(out / filename, header, body, quoting=csv.QUOTE_ALL, replace=replace)
    return _written(path, len(rows), left_out, replace)


def write_moodle_csv(out: Path, results: list[Result], *, submissions: list[Submission] | None = None,
                     graded_at: str | None = None, filename: str = "moodle_grades.csv",
                     replace: Iterable[str] | None = None) -> Written:
    """OUT/moodle_grades.csv for Moodle's "Upload grading worksheet" (see the module docstring): one row per student
    collected from a Moodle download (their id is Moodle's participant id), the grade, the maximum, and the row's
    message as the feedback comment. `graded_at`: the "Last modified (grade)" time (default: now, UTC), which
    Moodle's upload compares with its own record so that a grade a person changed in Moodle since is kept."""
    if replace is not None and not (out / filename).is_file():
        # An OUT graded before the worksheet existed: its other files still take the regrade's rows.
        return Written(out / filename, 0, [], note="not written: the earlier run wrote none; grade the whole class "
                                                   "to write it")
    subs = _by_id(submissions)
    rows, left_out = _uploadable(results, subs)
    moodle = [(r, sub) for r, sub in rows if sub is not None and sub.found_by == "moodle" and r.student_id.isdigit()]
    others = [r.student_id for r, sub in rows if sub is None or sub.found_by != "moodle" or not r.student_id.isdigit()]
    if others and not moodle and replace is None:
        path = write_csv(out / filename, MOODLE_COLUMNS, [], quoting=csv.QUOTE_ALL)
        return Written(path, 0, left_out, note="no student came from a Moodle download, whose participant ids the "
                                               "worksheet needs")
    if others:
        left_out = left_out + [f"{len(others)} student(s) not from a Moodle download (no participant id): "
                               + ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")]
    when = graded_at or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")   # PHP strtotime reads it
    maximum = _points(_max_score(results))
    body = [[MOODLE_PARTICIPANT + r.student_id, sub.name, r.student_id if "@" in r.student_id else "",
             r.status, _points(r.score), maximum, "Yes", sub.submitted_at, when,
             r.message] for r, sub in moodle]
    path = write_csv(out / filename, MOODLE_COLUMNS, body, quoting=csv.QUOTE_ALL, replace=replace,
                     student_of=lambda row: row[0].removeprefix(MOODLE_PARTICIPANT))
    return _written(path, len(body), left_out, replace)


def gradescope_results(result: Result, visibility: str = "visible") -> dict:
    """One student's results.json content: one test per task, and the flags for review in a hidden test."""
    if visibility not in GRADESCOPE_VISIBILITY:
        raise ValueError(f"visibility must be one of {GRADESCOPE_VISIBILITY}, not {visibility!r}")
    tests = [{"name": t.task, "score": t.score, "max_score": t.max_score, "output": t.message,
              "visibility": visibility} for t in result.tasks]
    if result.flags:
        # For the course staff only, as on the feedback page's "for review by a person" list.
        tests.append({"name": "For review by a person", "score": 0, "max_score": 0,
                      "output": "\n".join(result.flags), "visibility": "hidden"})
    output = f"{result.assignment}: {result.status}" + (f". {result.message}" if result.message else "")
    return {"score": result.score, "output": output, "visibility": visibility, "tests": tests}


def write_gradescope_results(out: Path, results: list[Result], *, visibility: str = "visible") -> Path:
    """OUT/results.json for the one submission a Gradescope autograder grades (OUT is /autograder/results)."""
    if len(results) != 1:
        raise ValueError(f"a Gradescope autograder grades one submission; got {len(results)} results")
    path = out / "results.json"
    path.write_text(json.dumps(gradescope_results(results[0], visibility), indent=2, sort_keys=True) + "\n",
                    encoding="utf-8")
    return path


def write_submissions_csv(out: Path, submissions: list[Submission], filename: str = "submissions.csv",
                          replace: Iterable[str] | None = None) -> Path:
    """OUT/submissions.csv: what collection found for each student (the LMS's name, late marker and time stamp,
    the rule that found them, where the notebook was), so a misread download shows at once."""
    body = [[s.student_id, s.name, s.found_by, s.notebook_name, s.source, "late" if s.late else "", s.submitted_at]
            for s in sorted(submissions, key=lambda s: s.student_id)]
    return write_csv(out / filename, SUBMISSIONS_COLUMNS, body, replace=replace)


def write_lms_files(out: Path, results: list[Result], submissions: list[Submission] | None, *, assignment: str,
                    canvas_assignment_id: str | None = None, blackboard_column_id: str | None = None,
                    replace: Iterable[str] | None = None) -> list[str]:
    """The Canvas, Blackboard and Moodle import files of one run (and submissions.csv); returns lines for the log.
    `replace`: the students a ``--student`` regrade graded; only their rows of the earlier files change."""
    lines = []
    if submissions is not None:
        lines.append(f"{write_submissions_csv(out, submissions, replace=replace).name}: how each student was found")
    for written in (write_canvas_csv(out, results, assignment=assignment, assignment_id=canvas_assignment_id,
                                     submissions=submissions, replace=replace),
                    write_blackboard_csv(out, results, assignment=assignment, column_id=blackboard_column_id,
                                         submissions=submissions, replace=replace),
                    write_moodle_csv(out, results, submissions=submissions, replace=replace)):
        lines.append(written.summary())
    return lines
