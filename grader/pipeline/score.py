"""Stage 4, score: what each task is worth, from the executed test cells and, where it exists, grader.verify.

A test cell earns its points when it ran to the end without an error, as in nbgrader. When the verification stage
(issue 6, ``grader.verify``) checked a task outside the kernel, a task needs both: the verified score, and no failure
in its own test cell (visible and hidden tests, as run in the student's kernel). Student code can fake a passing test
but never a failing one in its favour, so a failed test costs the task's points whatever the probes say, and its
message quotes the test's error, never "verified". A test cell that did not run because the kernel was stopped in an
earlier cell is no evidence either way: the verified score stands (``grade_one`` verifies in a fresh kernel then).
Nothing here runs or unpickles what the sandbox produced.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from nbformat import NotebookNode

from grader.pipeline import TaskResult
from grader.sandbox.runner import Execution
from grader.pipeline.sanitize import grade_id, nbgrader_meta

MAX_MESSAGE = 300


@dataclass(frozen=True)
class GradedCell:
    task: str          # the task's name (grade id without "test_")
    grade_id: str      # the test cell's grade id, as in nbgrader's gradebook
    points: float


def graded_cells(source: NotebookNode) -> list[GradedCell]:
    """The autograded test cells of the instructor's source, in order."""
    cells = []
    for cell in source.cells:
        meta = nbgrader_meta(cell)
        if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            gid = grade_id(cell)
            task = gid[len("test_"):] if gid.startswith("test_") else gid
            cells.append(GradedCell(task, gid, float(meta.get("points", 0) or 0)))
    return cells


def verifier():
    """grader.verify when that package exists (it is written separately), else None."""
    if importlib.util.find_spec("grader.verify") is None:
        return None
    import grader.verify as verify

    return verify


def known_assignment(assignment: str) -> bool:
    """Verification knows only the course's assignments (grader.tasks); a custom one is graded by its tests."""
    from grader.tasks import ASSIGNMENTS

    return assignment in ASSIGNMENTS


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


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


def score(nb: NotebookNode, execution: Execution, cells: list[GradedCell],
          verified: dict[str, tuple[float, float, str]] | None) -> list[TaskResult]:
    results = []
    for graded in cells:
        outcome, message = test_cell_outcome(nb, execution, graded.grade_id)
        points = graded.points if outcome == "passed" else 0.0
        if verified and graded.task in verified:
            v_score, _, v_message = verified[graded.task]
            if outcome == "failed":
                # Both are needed; a failing test outweighs the probes. Keep what verification found wrong, if
                # anything, but never a "verified" beside the failing test.
                points = 0.0
                found = "" if "verified" in v_message.lower() else f"; {v_message}"
                message = _short(f"the notebook's test failed: {message}{found}")
            else:
                points = max(0.0, min(float(v_score), graded.points))
                message = _short(f"{v_message} (notebook tests: {message})")
        results.append(TaskResult(graded.task, points, graded.points, message, graded.grade_id))
    return results


def verify_stage(assignment: str, source_path: Path, seed: int, probe_dir: Path | None,
                 notebook_json: dict) -> tuple[dict, list[str]]:
    """Verified scores and integrity flags from grader.verify, or ({}, []) when it is not there."""
    verify = verifier()
    if verify is None or not known_assignment(assignment):
        return {}, []
    flags = list(verify.integrity_flags(assignment, notebook_json))
    if probe_dir is None:
        probe_dir = Path("/nonexistent-probe-dir")
    verified = verify.verify_outputs(assignment, source_path, seed, probe_dir)
    if hasattr(verify, "runtime_flags"):
        flags += [f for f in verify.runtime_flags(assignment, probe_dir) if f not in flags]
    return verified, flags


def plan_probes(assignment: str, source_path: Path, seed: int) -> list[str]:
    verify = verifier()
    if not known_assignment(assignment):
        return []
    return list(verify.plan_probes(assignment, source_path, seed)) if verify else []
