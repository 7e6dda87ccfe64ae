"""Credit by check (issue: scores that never contradict the evidence): a task's points split over the checks it
declares (grader/assignments), in verification and in the score policy. One line of the textbook's own code (an
``assert`` where the docstring asks for a ``ValueError``) costs the divisibility check, not the whole task."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat

from grader.assignments import ASSIGNMENTS
from grader.bugs import BUGS
from grader.pipeline.score import score
from grader.pipeline.types import GradedCell
from grader.sandbox.runner import Execution
from grader.verify import verify_outputs
from test_cheating import write_perfect_probe

PS3 = ASSIGNMENTS["ps3"]


def test_declared_checks_add_up_to_each_task():
    for assignment in ASSIGNMENTS.values():
        for task in assignment.tasks:
            if task.checks:
                assert sum(c.points for c in task.checks) == task.points, task.name


def test_an_assert_instead_of_the_value_error_costs_one_check(tmp_path):
    write_perfect_probe("ps3", 31, tmp_path)
    meta = tmp_path / "multi_head_attention" / "indivisible_d_out.json"
    meta.write_text(json.dumps({"ok": True, "raised": "AssertionError", "raised_bases": ["AssertionError"]}))
    result = verify_outputs(PS3, None, 31, tmp_path)["multi_head_attention"]
    assert result[0] == 4.0 and result[1] == 5.0, result
    assert "check divisibility (1 of 5 points) failed" in result[2] and BUGS["divisibility"] in result[2]
    assert result.checks["divisibility"][1] is False and result.checks["equivalence"][1] is True


def test_a_missing_mask_buffer_costs_the_mask_check_only(tmp_path):
    write_perfect_probe("ps3", 32, tmp_path)
    for meta in (tmp_path / "multi_head_attention").glob("*.json"):
        data = json.loads(meta.read_text())
        if "buffers" in data:
            data.update(buffers=[], state_dict=["W_query.weight"])
            meta.write_text(json.dumps(data))
    result = verify_outputs(PS3, None, 32, tmp_path)["multi_head_attention"]
    assert result[0] == 4.0 and "check mask_buffer" in result[2], result


def test_a_module_that_fails_everything_earns_no_check(tmp_path):
    (tmp_path / "multi_head_attention").mkdir(parents=True)
    for case in PS3.probe_cases(33, None):
        if case.task == "multi_head_attention":
            (tmp_path / case.task / f"{case.name}.json").write_text(
                json.dumps({"ok": False, "error": "NotImplementedError"}))
    result = verify_outputs(PS3, None, 33, tmp_path)["multi_head_attention"]
    assert result[0] == 0.0 and not any(passed for _, passed, _ in result.checks.values()), result


def _executed(test_error: str | None) -> tuple[nbformat.NotebookNode, Execution]:
    cell = nbformat.v4.new_code_cell("tests", metadata={"nbgrader": {"grade_id": "test_multi_head_attention",
                                                                     "grade": True, "points": 5}})
    if test_error:
        cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue=test_error, traceback=[])]
    nb = nbformat.v4.new_notebook(cells=[cell])
    return nb, Execution(status="graded", ran={0})


def test_a_failing_test_costs_only_the_check_its_diagnosis_belongs_to(tmp_path):
    write_perfect_probe("ps3", 34, tmp_path)
    verified = verify_outputs(PS3, None, 34, tmp_path)
    cells = [GradedCell("multi_head_attention", "test_multi_head_attention", 5.0)]
    nb, execution = _executed(f"{BUGS['dropout_eval']}: the output changed between two calls in eval mode")
    result = score(nb, execution, cells, verified)[0]
    assert result.score == 4.0, result
    assert result.message.startswith("the notebook's test failed, which costs check dropout (1 point)")
    assert "verified" not in result.message.lower()
    # A failure no check claims still costs the whole task (the test is evidence against all of it).
    nb, execution = _executed("shape (2, 6, 16), expected (2, 6, 8)")
    assert score(nb, execution, cells, verified)[0].score == 0.0
