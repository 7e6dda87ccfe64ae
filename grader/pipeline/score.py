"""Stage 6, score: what each task is worth, from the executed test cells and the verify stage's verified scores.

A test cell earns its points when it ran to the end without an error, as in nbgrader. When the verify stage
(:mod:`grader.pipeline.verify`) checked a task outside the kernel, a task needs both: the verified score, and no failure
in its own test cell (visible and hidden tests, as run in the student's kernel). Student code can fake a passing test
but never a failing one in its favour, so a failed test costs the task's points whatever the probes say, and its
message quotes the test's error, never "verified". A test cell that did not run because the kernel was stopped in an
earlier cell is no evidence either way: the verified score stands (``grade_one`` verifies in a fresh kernel then).
Nothing here runs or unpickles what the sandbox produced.
"""
from __future__ import annotations

from nbformat import NotebookNode

# GradedCell and graded_cells are the pipeline's shared types; they are imported here for older callers too.
from grader.pipeline.types import GradedCell, TaskResult, grade_id, graded_cells  # noqa: F401
from grader.bugs import code_of
from grader.sandbox.runner import Execution

def _short(text: str) -> str:
    """The message on one line, whole: never cut (the part that says where an output first differs comes last)."""
    return " ".join(str(text).split())


def test_cell_outcome(nb: NotebookNode, execution: Execution, gid: str) -> tuple[str, str]:
    """(outcome, message) for the test cell `gid` of the executed notebook; outcome is "passed", "failed" (it ran,
    or was stopped while it ran, and did not pass: evidence against the task) or "not run" (the kernel was stopped
    in an earlier cell, or the cell is missing)."""
    for index, cell in enumerate(nb.cells):
        if grade_id(cell) != gid or cell.metadata.get("grader", {}).get("probe"):
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            # Raised by the tests in this cell, or the grader's timeout note for it: either way the test started
            # and did not pass (outputs are cleared before execution, so none can be left over from the student).
            err = errors[-1]
            return "failed", _short(f"{err.get('ename', 'Error')}: {err.get('evalue', '')}".rstrip(": "))
        if index in execution.ran:
            return "passed", "passed"
        if index == execution.stopped_at:
            # The kernel was stopped while this test ran (a crash, a limit): it never got to pass.
            return "failed", _short(f"stopped while it ran: {execution.message or 'the kernel stopped'}")
        return "not run", _short(f"not run: {execution.message or 'the kernel stopped before this cell'}")
    return "not run", "the test cell is missing"


def _charged_check(verified, test_message: str):
    """(check name, (points, passed, text)) of the task's check whose catalogued bug the failing test names, or None
    (a task without checks, or a failure no check claims: then the whole task is lost)."""
    checks = getattr(verified, "checks", None) or {}
    if not checks:
        return None
    text = test_message.split(": ", 1)[1] if ": " in test_message else test_message
    code = code_of(text)
    owners = [name for name, bugs in getattr(verified, "check_bugs", {}).items() if code and code in bugs]
    return (owners[0], checks[owners[0]]) if owners else None


def score(nb: NotebookNode, execution: Execution, cells: list[GradedCell],
          verified: dict[str, tuple[float, float, str]] | None) -> list[TaskResult]:
    results = []
    for graded in cells:
        outcome, message = test_cell_outcome(nb, execution, graded.grade_id)
        points = graded.points if outcome == "passed" else 0.0
        if verified and graded.task in verified:
            v_score, _, v_message = verified[graded.task]
            charged = _charged_check(verified[graded.task], message) if outcome == "failed" else None
            if charged is not None:
                # Credit by check: the test's failure names a bug that belongs to one check of the task; that check
                # loses its points (whatever the probes said), the others keep what verification gave them.
                name, (check_points, _, _) = charged
                checks = verified[graded.task].checks
                passed = [n for n, (_, ok, _) in checks.items() if ok and n != name]
                failed = [f"{n}: {why}" for n, (_, ok, why) in checks.items() if not ok and n != name]
                points = max(0.0, min(float(sum(checks[n][0] for n in passed)), graded.points))
                unit = "point" if check_points == 1 else "points"
                message = _short(f"the notebook's test failed, which costs check {name} ({check_points:g} "
                                 f"{unit}): {message}"
                                 + (f"; checks that passed verification: {', '.join(passed)}" if passed else "")
                                 + (f"; also failed: {'; '.join(failed)}" if failed else ""))
            elif outcome == "failed":
                # Both are needed; a failing test outweighs the probes. Keep what verification found wrong, if
                # anything, but never a "verified" beside the failing test.
                points = 0.0
                # (What failed stays; the "; verified: ..." list of checks that passed goes.)
                said = v_message.split("; verified: ")[0]
                found = "" if said.lower().startswith(("verified", "not verified")) else f"; {said}"
                message = _short(f"the notebook's test failed: {message}{found}")
            else:
                points = max(0.0, min(float(v_score), graded.points))
                message = _short(f"{v_message} (notebook tests: {message})")
        results.append(TaskResult(graded.task, points, graded.points, message, graded.grade_id))
    return results
