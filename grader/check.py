"""``python -m grader check NOTEBOOK``: run a notebook's visible tests the way grading runs them, before handing in.

The notebook is read like a submission (same checks on the file), its test cells are restored from the released
exercise when it is there (so an edited test does not fool you), and it runs in the same sandboxed kernel under
the same limits. Only the visible tests run: hidden tests and the grader's own verification are the instructor's.
Prints one line per task and the total; exits 0 when the notebook ran within every limit.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

from grader.pipeline import STATUSES, Submission
from grader.pipeline.execute import execute
from grader.pipeline.sanitize import Rejected, decode, grade_id, sanitize, which_assignment
from grader.pipeline.score import graded_cells, score
from grader.sandbox import Limits

REPO = Path(__file__).resolve().parents[1]


def release_for(notebook_json: dict, assignment: str | None) -> tuple[str, nbformat.NotebookNode]:
    """The released exercise the notebook came from (its visible tests), or the notebook itself."""
    ids = {grade_id(c) for c in notebook_json.get("cells", []) if isinstance(c, dict) and grade_id(c)}
    assignment = assignment or which_assignment(ids) or "notebook"
    release = REPO / "exercises" / assignment / f"{assignment}.ipynb"
    if release.is_file():
        return assignment, nbformat.read(str(release), as_version=4)
    return assignment, nbformat.reads(json.dumps(notebook_json), as_version=4)   # joins list-of-lines sources


def check(path: Path, limits: Limits, assignment: str | None = None, out=print) -> int:
    sub = Submission(student_id="you", notebook_name=path.name, notebook_bytes=path.read_bytes())
    try:
        name, release = release_for(decode(sub), assignment)
        nb, _ = sanitize(sub, release, name)
    except Rejected as why:
        out(f"{path}: {why.status}: {why.message}")
        return 1
    box = Path(tempfile.mkdtemp(prefix="grader-check-"))
    try:
        execution = execute(nb, box, [], limits)
    finally:
        shutil.rmtree(box, ignore_errors=True)
    tasks = score(nb, execution, graded_cells(release), None)
    width = max([len(t.task) for t in tasks] + [4])
    out(f"{path} ({name}), visible tests only:")
    for t in tasks:
        out(f"  {t.task:<{width}}  {t.score:>4g} / {t.max_score:<4g} {t.message}")
    total, top = sum(t.score for t in tasks), sum(t.max_score for t in tasks)
    out(f"  {'total':<{width}}  {total:>4g} / {top:<4g}")
    out(f"status: {execution.status} ({STATUSES[execution.status]})")
    for note in [execution.message, *sub.notes]:
        if note:
            out(f"note: {note}")
    return 0 if execution.status == "graded" else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader check", description=__doc__.split("\n\n")[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--assignment", default=None, help="assignment name (default: found from the notebook)")
    p.add_argument("--timeout", type=float, default=Limits.cell_timeout, help="seconds per cell")
    args = p.parse_args(argv)
    if not args.notebook.is_file():
        print(f"{args.notebook}: no such file", file=sys.stderr)
        return 2
    return check(args.notebook, Limits(cell_timeout=args.timeout), args.assignment)


if __name__ == "__main__":
    sys.exit(main())
