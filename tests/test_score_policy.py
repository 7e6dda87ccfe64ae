"""Score policy (issue 13, item 1): a task's points need both the verification outside the kernel and no failure in
the task's own test cell (visible and hidden tests, as run in the student's kernel).

Student code can make a test pass that should fail, never the other way round in its favour, so a failing test
is evidence: it costs the task's points whatever the probes say (for a task with credit by check, the points of
the check its diagnosis belongs to: tests/test_credit_by_check.py), and the message quotes it and never says
"verified". A test cell that never ran because the kernel was stopped in an earlier cell is no evidence: the
verified score stands, as before. The unit tests build an executed notebook by hand (no kernel); the last test goes
through the real ``python -m grader grade`` with a MultiHeadAttention whose dropout stays on in eval mode.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from grader.pipeline.score import GradedCell, score
from grader.sandbox.runner import Execution

REPO = Path(__file__).resolve().parents[1]
DROPOUT_EVAL = "dropout active in eval mode"
VERIFIED_FULL = (5.0, 5.0, "verified on 4 case(s) drawn at grading time")
CELLS = [GradedCell("mha", "test_mha", 5.0), GradedCell("wrapper", "test_wrapper", 3.0)]


def _code(gid: str | None, outputs: list[dict] | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("...")
    if gid:
        cell.metadata["nbgrader"] = {"grade_id": gid, "grade": gid.startswith("test_"),
                                     "solution": not gid.startswith("test_"), "schema_version": 3}
    cell.outputs = [nbformat.from_dict(o) for o in outputs or []]
    return cell


def _error(ename: str, evalue: str) -> dict:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": [f"{ename}: {evalue}"]}


def _notebook(mha_outputs: list[dict] | None = None) -> nbformat.NotebookNode:
    """setup, mha, test_mha, wrapper, test_wrapper: cells 0-4."""
    return nbformat.v4.new_notebook(cells=[_code(None), _code("mha"), _code("test_mha", mha_outputs),
                                           _code("wrapper"), _code("test_wrapper")])


def _by_task(results) -> dict:
    return {r.task: r for r in results}


def test_verified_and_test_passed_keeps_the_verified_score():
    results = _by_task(score(_notebook(), Execution(ran={0, 1, 2, 3, 4}), CELLS,
                             {"mha": VERIFIED_FULL, "wrapper": (3.0, 3.0, "verified on 2 case(s)")}))
    assert (results["mha"].score, results["mha"].max_score) == (5.0, 5.0)
    assert results["mha"].message == f"{VERIFIED_FULL[2]} (notebook tests: passed)"
    assert results["wrapper"].score == 3.0


def test_verified_but_the_notebook_test_failed_scores_zero_and_quotes_the_test():
    nb = _notebook([{"output_type": "stream", "name": "stdout", "text": "checking...\n"},
                    _error("AssertionError", DROPOUT_EVAL)])
    results = _by_task(score(nb, Execution(ran={0, 1, 2, 3, 4}), CELLS,
                             {"mha": VERIFIED_FULL, "wrapper": (3.0, 3.0, "verified on 2 case(s)")}))
    mha = results["mha"]
    assert mha.score == 0.0 and mha.max_score == 5.0
    assert mha.message == f"the notebook's test failed: AssertionError: {DROPOUT_EVAL}"
    assert "verified" not in mha.message.lower()
    assert results["wrapper"].score == 3.0        # another task's passing test keeps its verified score


def test_a_failed_test_keeps_what_verification_found_but_never_says_verified():
    nb = _notebook([_error("AssertionError", DROPOUT_EVAL)])
    found = "verification failed, case eval_mode: differs from PyTorch's (largest error 0.5)"
    for verified, expected in [
        ((0.0, 5.0, found), f"the notebook's test failed: AssertionError: {DROPOUT_EVAL}; {found}"),
        ((0.0, 5.0, "not verified, no probe results: the kernel stopped"),
         f"the notebook's test failed: AssertionError: {DROPOUT_EVAL}"),
        ((2.5, 5.0, "verified on 4 case(s) drawn at grading time; 2.5 of 5.0 points"),
         f"the notebook's test failed: AssertionError: {DROPOUT_EVAL}"),
        # Credit by check: what failed is kept, the list of checks that passed is not.
        ((1.0, 5.0, "verification: checks padding, finite (4 of 5 points) failed, case right_padding: not one of "
                    "the known bugs; verified: no_mask (1)"),
         f"the notebook's test failed: AssertionError: {DROPOUT_EVAL}; verification: checks padding, finite "
         f"(4 of 5 points) failed, case right_padding: not one of the known bugs"),
    ]:
        mha = _by_task(score(nb, Execution(ran={0, 1, 2, 3, 4}), CELLS, {"mha": verified}))["mha"]
        assert (mha.score, mha.message) == (0.0, expected)


def test_a_long_test_error_is_kept_whole_with_the_test_first():
    """Messages are never cut (issue 22): the end of a long message is where it says where an output differs."""
    nb = _notebook([_error("AssertionError", "x" * 2000 + " first differs at token 3")])
    mha = _by_task(score(nb, Execution(ran={0, 1, 2, 3, 4}), CELLS, {"mha": VERIFIED_FULL}))["mha"]
    assert mha.score == 0.0
    assert mha.message.startswith("the notebook's test failed: AssertionError: xxx")
    assert "x" * 2000 + " first differs at token 3" in mha.message and "..." not in mha.message


def test_verification_failed_and_test_passed_scores_zero():
    found = "verification failed, case eval_mode: differs from PyTorch's (largest error 0.5)"
    mha = _by_task(score(_notebook(), Execution(ran={0, 1, 2, 3, 4}), CELLS, {"mha": (0.0, 5.0, found)}))["mha"]
    assert mha.score == 0.0
    assert mha.message == f"{found} (notebook tests: passed)"


def test_a_test_cell_the_stopped_kernel_never_reached_keeps_the_verified_score():
    """The kernel died in a cell of the student's own (index 3) before test_wrapper (index 4) ran: that is no
    evidence against wrapper, whose code ran before the stop and was verified in a fresh kernel (grade_one)."""
    stopped = Execution(status="crashed", message="The kernel died while running a cell.", ran={0, 1, 2},
                        stopped_at=3)
    results = _by_task(score(_notebook(), stopped, CELLS,
                             {"mha": VERIFIED_FULL, "wrapper": (3.0, 3.0, "verified on 2 case(s)")}))
    assert results["mha"].score == 5.0
    assert results["wrapper"].score == 3.0
    assert results["wrapper"].message == ("verified on 2 case(s) (notebook tests: not run: The kernel died while "
                                          "running a cell.)")
    # Without verification a test that never ran earns nothing, as in nbgrader.
    unverified = _by_task(score(_notebook(), stopped, CELLS, {"mha": VERIFIED_FULL}))["wrapper"]
    assert (unverified.score, unverified.message) == (0.0, "not run: The kernel died while running a cell.")


def test_a_kernel_stopped_inside_the_test_cell_is_a_test_that_did_not_pass():
    """Student code that kills the kernel when a test would fail must not turn that failure into a verified score."""
    stopped = Execution(status="crashed", message="The kernel died while running a cell.", ran={0, 1}, stopped_at=2)
    mha = _by_task(score(_notebook(), stopped, CELLS, {"mha": VERIFIED_FULL}))["mha"]
    assert mha.score == 0.0
    assert mha.message == ("the notebook's test failed: stopped while it ran: The kernel died while running a cell.")
    timed_out = _notebook([_error("KeyboardInterrupt", ""),
                           _error("TimeoutError", "The cell ran longer than 10 s and was stopped.")])
    mha = _by_task(score(timed_out, Execution(status="timeout", ran={0, 1, 2, 3, 4}), CELLS,
                         {"mha": VERIFIED_FULL}))["mha"]
    assert (mha.score, mha.message) == (
        0.0, "the notebook's test failed: TimeoutError: The cell ran longer than 10 s and was stopped.")


def test_tasks_without_verification_are_scored_by_their_test_cell_as_before():
    failed = _notebook([_error("AssertionError", DROPOUT_EVAL)])
    results = _by_task(score(failed, Execution(ran={0, 1, 2, 3, 4}), CELLS, {}))
    assert (results["mha"].score, results["mha"].message) == (0.0, f"AssertionError: {DROPOUT_EVAL}")
    assert (results["wrapper"].score, results["wrapper"].message) == (3.0, "passed")
    results = _by_task(score(failed, Execution(ran={0, 1, 2, 3, 4}), CELLS, None))
    assert results["mha"].score == 0.0 and results["wrapper"].score == 3.0


# ------------------------------------------------------------------------------------ through the real grader
def _ps3_student(mutate: bool) -> dict:
    from grader.bench_grading import honest_copy

    nb = honest_copy(nbformat.read(str(REPO / "solutions" / "ps3" / "ps3.ipynb"), as_version=4))
    if mutate:
        # The bug of issue 13: functional dropout without training=self.training stays on in eval().
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "multi_head_attention")
        assert cell.source.count("weights = self.dropout(weights)") == 1
        cell.source = cell.source.replace("weights = self.dropout(weights)",
                                          "weights = nn.functional.dropout(weights, self.dropout.p)")
    return json.loads(nbformat.writes(nb))


@pytest.mark.slow
def test_dropout_left_on_in_eval_loses_the_task_with_the_notebook_tests_message(tmp_path):
    from grader.assignments import ASSIGNMENTS

    subs = tmp_path / "class"
    for student, mutate in [("solution", False), ("dropout_in_eval", True)]:
        (subs / student).mkdir(parents=True)
        (subs / student / "ps3.ipynb").write_text(json.dumps(_ps3_student(mutate)))
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "ps3", str(subs), "--out", str(tmp_path / "out"),
                           "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "out" / "tasks.csv", newline="", encoding="utf-8") as f:
        import csv

        tasks = {(r["student_id"], r["task"]): r for r in csv.DictReader(f)}
    full = {t.name: float(t.points) for t in ASSIGNMENTS["ps3"].tasks}
    for task, points in full.items():
        assert float(tasks[("solution", task)]["score"]) == points, tasks[("solution", task)]
    mha = tasks[("dropout_in_eval", "multi_head_attention")]
    # Credit by check: the test's diagnosis belongs to the dropout check, which loses its point; the probes of the
    # other checks (equivalence, mask buffer, divisibility) stand.
    dropout = next(c for c in ASSIGNMENTS["ps3"].task("multi_head_attention").checks if c.name == "dropout")
    assert float(mha["score"]) == 5.0 - dropout.points, mha
    assert mha["message"].startswith("the notebook's test failed, which costs check dropout") \
        and DROPOUT_EVAL in mha["message"]
    assert "verified" not in mha["message"].lower()
    for task, points in full.items():     # the bug costs only the task whose test caught it
        if task != "multi_head_attention":
            assert float(tasks[("dropout_in_eval", task)]["score"]) == points, tasks[("dropout_in_eval", task)]
