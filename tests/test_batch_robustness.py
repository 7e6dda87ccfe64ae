"""One submission never sinks the batch, and probe inputs never reach feedback (issue 11).

Measured before the fix: a ps1 notebook with 10^5 tiny cells held the grader for tens of minutes at 3.5 GB and
more (every cell executed, then verified again in a second kernel, then rendered into a 10^5-cell feedback page),
and a notebook nested 5,000 JSON levels deep ended as ``grader_error``. Both are now ``invalid_notebook`` rows
decided in sanitize, in milliseconds, and the rest of the class is graded as usual.

The fast tests call the stages' public functions; the slow one grades a small ps1 class through the real
``python -m grader grade``.
"""
from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

RELEASE = REPO / "exercises" / "ps1" / "ps1.ipynb"
SOURCE = REPO / "solutions" / "ps1" / "ps1.ipynb"


def release_json() -> dict:
    return json.loads(RELEASE.read_text())


def nested(depth: int) -> str:
    """The released ps1 with a top-level value nested so that the whole file is `depth` levels deep."""
    text = json.dumps(release_json())
    inner = depth - 1   # the notebook object is the first level
    return text[:-1] + ', "deep": ' + "[" * inner + "]" * inner + "}"


def many_cells(count: int) -> str:
    content = release_json()
    content["cells"] += [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                          "source": "x = 1"} for _ in range(count)]
    return json.dumps(content)


def sanitized(text: str | bytes):
    """(status, message) of sanitize on these bytes: 'ok' when it returns a notebook."""
    from grader.pipeline import Submission
    from grader.pipeline.sanitize import Rejected, load_source, sanitize

    data = text.encode() if isinstance(text, str) else text
    try:
        nb, _ = sanitize(Submission("s", "ps1.ipynb", data), load_source(SOURCE), "ps1")
    except Rejected as why:
        return why.status, why.message
    return "ok", nb


@pytest.mark.parametrize("depth", [5000, 100_000])
def test_deep_json_is_an_invalid_notebook(depth):
    status, message = sanitized(nested(depth))
    assert status == "invalid_notebook"
    assert "nested more than 100 levels" in message


def test_nesting_below_the_decoders_limit_is_refused_before_other_stages_walk_it():
    # 900 levels decode, but a later json.dumps or a recursive walk would fail: refused at the limit instead.
    assert sanitized(nested(900))[0] == "invalid_notebook"
    assert sanitized(nested(101))[0] == "invalid_notebook"
    assert sanitized(nested(100))[0] == "ok"


def test_decode_alone_refuses_deep_json_too():
    """`grader check` calls decode before anything else."""
    from grader.pipeline import Submission
    from grader.pipeline.sanitize import Rejected, decode

    with pytest.raises(Rejected) as why:
        decode(Submission("you", "ps1.ipynb", ("[" * 5000 + "]" * 5000).encode()))
    assert why.value.status == "invalid_notebook"


def test_a_hundred_thousand_cells_are_refused_at_once():
    text = many_cells(100_000)
    started = time.monotonic()
    status, message = sanitized(text)
    assert status == "invalid_notebook"
    assert "100,011 cells" in message and "at most 2,000" in message
    assert time.monotonic() - started < 10


def test_a_long_but_possible_notebook_is_graded():
    status, nb = sanitized(many_cells(1500))
    assert status == "ok" and len(nb.cells) == 1511


def test_more_code_than_any_notebook_holds_is_refused():
    content = release_json()
    content["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "source": "x = 1\n" * 100_000})
    status, message = sanitized(json.dumps(content))
    assert status == "invalid_notebook" and "at most 500,000" in message


@pytest.mark.parametrize("field, value, status", [
    ("source", 5, "invalid_notebook"), ("source", [["x = 1"]], "invalid_notebook"),
    ("source", None, "invalid_notebook"), ("metadata", [], "ok"), ("metadata", {"nbgrader": []}, "ok"),
    ("id", ["a", "b"], "ok"), ("cell_type", ["code"], "ok"), ("outputs", 5, "ok")])
def test_malformed_cells_end_as_a_status_not_an_exception(field, value, status):
    content = release_json()
    content["cells"][3][field] = value
    content["cells"].extend([5, None, []])     # not cells at all: dropped
    assert sanitized(json.dumps(content))[0] == status


# ---- feedback ------------------------------------------------------------------------------------------------

def _result(cells: list) -> object:
    from grader.pipeline import Result

    return Result("s", "ps1", "graded", "", 10.0, [], [], nbformat.v4.new_notebook(cells=cells))


def _page(tmp_path: Path, cells: list) -> str:
    from grader.pipeline.report import write_feedback

    return write_feedback(tmp_path, _result(cells), "ps1").read_text()


def test_feedback_drops_probe_cells_and_everything_they_printed(tmp_path):
    student = nbformat.v4.new_code_cell("def forward(x):\n    print(x)\n")
    student.metadata["grader"] = {"origin": "student"}
    student.outputs = [nbformat.v4.new_output("stream", name="stdout", text="the student's own output\n")]
    probe = nbformat.v4.new_code_cell("_mha_probe.run_task('self_attention', 'PROBE-INPUT-IN-SOURCE')")
    probe.metadata["grader"] = {"probe": True, "origin": "probe"}
    probe.outputs = [nbformat.v4.new_output("stream", name="stdout", text="tensor([PROBE-INPUT-PRINTED])\n"),
                     nbformat.v4.new_output("error", ename="ValueError", evalue="PROBE-INPUT-IN-ERROR",
                                            traceback=["PROBE-INPUT-IN-TRACEBACK"])]
    page = _page(tmp_path, [student, probe])
    assert "the student&#39;s own output" in page or "the student's own output" in page
    assert "PROBE-INPUT" not in page and "_mha_probe" not in page


def test_feedback_page_is_bounded_whatever_the_notebook_holds(tmp_path):
    from grader.pipeline.report import FEEDBACK_CELL_CHARS

    huge = nbformat.v4.new_code_cell("x = 1\n" * 1_400_000)            # 8 MB of code: 3.5 min per MB before
    flood = nbformat.v4.new_code_cell("print()")
    flood.outputs = [nbformat.v4.new_output("display_data", data={"text/html": "<b>x</b>" * 250_000}),
                     nbformat.v4.new_output("stream", name="stdout", text="y\n" * 1_000_000)]
    deep = nbformat.v4.new_code_cell("display(deep)")
    inner: object = "bottom"
    for _ in range(500):
        inner = [inner]
    deep.outputs = [{"output_type": "display_data", "metadata": {},   # a plain dict: from_dict would recurse
                     "data": {"application/json": {"v": inner}, "text/plain": "DEEP-OUTPUT"}}]
    started = time.monotonic()
    page = _page(tmp_path, [huge, flood, deep] + [nbformat.v4.new_code_cell("z = 2") for _ in range(200)])
    assert time.monotonic() - started < 60
    assert len(page) < 3_000_000
    assert "more characters of this cell are not shown" in page
    assert "characters is not shown" in page and "more characters of output are not shown" in page
    assert "nested more than 100 levels deep is not shown" in page and "DEEP-OUTPUT" not in page
    assert page.count("x") < FEEDBACK_CELL_CHARS + 200_000


def test_feedback_keeps_a_real_notebook_whole(tmp_path):
    """The course's longest notebook fits the page's budget: nothing of it is cut."""
    source = nbformat.read(str(REPO / "solutions" / "ps4" / "ps4.ipynb"), as_version=4)
    page = _page(tmp_path, source.cells)
    assert "not shown on this page" not in page


# ---- gradebook -----------------------------------------------------------------------------------------------

def test_a_student_the_gradebook_refuses_costs_only_that_students_entry(tmp_path):
    from grader.pipeline import Result, TaskResult
    from grader.pipeline.record import NotRecorded, gradebook_totals, prepare, record
    from grader.pipeline.score import graded_cells

    cells = graded_cells(nbformat.read(str(SOURCE), as_version=4))
    db = f"sqlite:///{tmp_path / 'gradebook.db'}"
    prepare(db, "ps1", "ps1", cells)

    def result(student_id, fraction):
        return Result(student_id, "ps1", "graded", "", 10.0,
                      [TaskResult(c.task, c.points * fraction, c.points, "", c.grade_id) for c in cells])

    # None stands for any id the database refuses (PostgreSQL: longer than nbgrader's 128 characters).
    with pytest.raises(NotRecorded, match="1 of 3 student"):
        record(db, "ps1", "ps1", cells, [result("ada", 1.0), result(None, 1.0), result("ben", 0.5)])
    assert gradebook_totals(db, "ps1") == {"ada": 10.0, "ben": 5.0}


# ---- statuses ------------------------------------------------------------------------------------------------

def test_status_table_matches_statuses_and_never_promises_a_retry_blindly():
    """The table of statuses in the book's page on grading a class (book/teaching/grading.md)."""
    from grader.pipeline import STATUSES

    page = (REPO / "book" / "teaching" / "grading.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", page, flags=re.M))
    assert set(STATUSES) <= set(rows), set(STATUSES) - set(rows)
    for text in (STATUSES["grader_error"], rows["grader_error"]):
        assert "report" in text and "again" in text       # when a retry helps, and when to report instead
        assert not re.search(r"grade it again\.?$", text.strip())


# ---- the whole class, through the real command --------------------------------------------------------------

LEAKER = '''import threading, time
from IPython.display import display

# Student code that tries to show the grader's probe inputs in its own feedback: printed, printed later from a
# thread, and written into a display that an earlier cell created. The marker is built so that this source does
# not contain it: only what the code printed can put it on the page.
TAG = "PROBE" + "SEEN"
leaked = {"last": None}
leak_display = display("a display made before the probes", display_id=True)


def _print_later():
    while True:
        if leaked["last"] is not None:
            print(TAG, "thread", leaked["last"])
            leaked["last"] = None
        time.sleep(0.02)


threading.Thread(target=_print_later, daemon=True).start()


def leak(where, *tensors):
    if "_mha_probe" in globals():       # only the grader's probe cells define it
        values = [t.detach().cpu().flatten()[:6].tolist() for t in tensors]
        print(TAG, "print", where, values)
        leaked["last"] = values
        time.sleep(0.1)
'''
LEAK_ERROR = '\n        raise ValueError(f"{TAG} error {where} {values}")\n'
LEAK_DISPLAY = '\n        leak_display.update(f"{TAG} display {where} {values}")\n'


def _leaker(source, extra: str = "") -> dict:
    from grader.bench_grading import honest_copy

    nb = honest_copy(source)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    nb.cells.insert(ids.index("setup") + 1, nbformat.v4.new_code_cell(LEAKER + extra))
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "attention_scores":
            cell.source = cell.source.replace('    """\n', '    """\n    leak("scores", queries, keys)\n', 1)
        if gid == "self_attention":
            cell.source = cell.source.replace("    def forward(self, x):\n",
                                              "    def forward(self, x):\n        leak('forward', x)\n", 1)
    assert nbformat.writes(nb).count("leak(") == 3
    return json.loads(nbformat.writes(nb))


# An output the kernel can send but the grader's JSON decoder cannot read (5,000 levels deep).
DEEP_OUTPUT = ("import sys\nsys.setrecursionlimit(20000)\nfrom IPython.display import display\ndeep = 'bottom'\n"
               "for _ in range(5000):\n    deep = [deep]\n"
               "display({'application/json': {'v': deep}, 'text/plain': 'deep'}, raw=True)")


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    from grader.bench_grading import honest_copy
    from test_grading import grade, write_student

    base = tmp_path_factory.mktemp("robust")
    source = nbformat.read(str(SOURCE), as_version=4)
    subs, out = base / "class", base / "out"
    write_student(subs, "ada", json.loads(nbformat.writes(honest_copy(source))), name="ps1.ipynb")
    write_student(subs, "many_cells", many_cells(100_000).encode(), name="ps1.ipynb")
    write_student(subs, "deep_json", nested(5000).encode(), name="ps1.ipynb")
    write_student(subs, "leaker", _leaker(source), name="ps1.ipynb")
    write_student(subs, "display_leaker", _leaker(source, LEAK_DISPLAY), name="ps1.ipynb")
    write_student(subs, "error_leaker", _leaker(source, LEAK_ERROR), name="ps1.ipynb")
    deep_output = honest_copy(source)
    deep_output.cells.insert(2, nbformat.v4.new_code_cell(DEEP_OUTPUT))
    write_student(subs, "deep_output", json.loads(nbformat.writes(deep_output)), name="ps1.ipynb")
    started = time.monotonic()
    proc = grade("ps1", subs, out, "--jobs", "2", "--timeout", "60", timeout=900)
    return dict(out=out, proc=proc, seconds=time.monotonic() - started)


@pytest.mark.slow
def test_one_huge_or_deep_notebook_is_its_own_row_and_the_class_is_graded(class_run):
    from test_grading import read_csv

    proc, out = class_run["proc"], class_run["out"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["student_id"]: r for r in read_csv(out / "grades.csv")}
    assert {s: (r["status"], r["score"]) for s, r in rows.items() if s in ("ada", "many_cells", "deep_json")} == {
        "ada": ("graded", "10"), "many_cells": ("invalid_notebook", "0"), "deep_json": ("invalid_notebook", "0")}
    assert "at most 2,000" in rows["many_cells"]["message"]
    assert "nested more than 100 levels" in rows["deep_json"]["message"]
    assert class_run["seconds"] < 600


@pytest.mark.slow
def test_probe_inputs_printed_by_student_code_never_reach_feedback(class_run):
    from test_grading import read_csv

    rows = {r["student_id"]: r for r in read_csv(class_run["out"] / "grades.csv")}
    assert (rows["leaker"]["status"], rows["leaker"]["score"]) == ("graded", "10")
    tasks = [t for t in read_csv(class_run["out"] / "tasks.csv") if t["student_id"] == "leaker"]
    assert all("verified on" in t["message"] for t in tasks), tasks    # the probes called the leaking code
    page = (class_run["out"] / "feedback" / "leaker" / "ps1.html").read_text()
    assert "a display made before the probes" in page       # the student's own outputs are kept
    assert "PROBESEEN" not in page and "run_task(" not in page      # nothing printed, no probe cell


@pytest.mark.slow
def test_probe_inputs_written_into_an_earlier_display_never_reach_feedback(class_run):
    page = (class_run["out"] / "feedback" / "display_leaker" / "ps1.html").read_text()
    assert "PROBESEEN" not in page


@pytest.mark.slow
def test_probe_inputs_raised_in_an_exception_never_reach_feedback(class_run):
    page = (class_run["out"] / "feedback" / "error_leaker" / "ps1.html").read_text()
    assert "PROBESEEN" not in page


@pytest.mark.slow
def test_an_output_nested_too_deep_costs_only_that_output(class_run):
    from test_grading import read_csv

    row = next(r for r in read_csv(class_run["out"] / "grades.csv") if r["student_id"] == "deep_output")
    assert (row["status"], row["score"]) == ("graded", "10"), row
