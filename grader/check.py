"""``python -m grader check NOTEBOOK``: run a notebook's visible tests the way grading runs them, before handing in.

The notebook is read like a submission (same checks on the file), its test cells are restored from the released
exercise when it is there (so an edited test does not fool you), and it runs in the same sandboxed kernel under
the same limits. Only the visible tests run: hidden tests and the grader's own verification are the instructor's.
Prints one line per task and the total; exits 0 when the notebook ran within every limit.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat

from grader import paths
from grader.pipeline import STATUSES, Submission
from grader.pipeline.execute import execute
from grader.pipeline.sanitize import Rejected, decode, grade_id, sanitize, which_assignment
from grader.pipeline.score import graded_cells, score
from grader.sandbox import Limits
from grader.sandbox.service import Sandbox, SandboxUnavailable



def release_for(notebook_json: dict, assignment: str | None) -> tuple[str, nbformat.NotebookNode]:
    """The released exercise the notebook came from (its visible tests), or the notebook itself."""
    ids = {grade_id(c) for c in notebook_json.get("cells", []) if isinstance(c, dict) and grade_id(c)}
    assignment = assignment or which_assignment(ids) or "notebook"
    release = paths.released_notebook(assignment)
    if release.is_file():
        return assignment, nbformat.read(str(release), as_version=4)
    return assignment, nbformat.reads(json.dumps(notebook_json), as_version=4)   # joins list-of-lines sources


def check(path: Path, limits: Limits, assignment: str | None = None, out=print, isolate: bool = True) -> int:
    sub = Submission(student_id="you", notebook_name=path.name, notebook_bytes=path.read_bytes())
    try:
        name, release = release_for(decode(sub), assignment)
        nb, _ = sanitize(sub, release, name)
    except Rejected as why:
        out(f"{path}: {why.status}: {why.message}")
        return 1
    # The same sandbox as grading (the notebook's own folder is not visible to it: the notebook is run from a copy).
    try:
        with Sandbox(limits, isolate=isolate, hide=[path.resolve().parent, paths.REPO]) as sandbox:
            sandbox.start(log=lambda m: None)
            execution = execute(nb, sandbox)
    except SandboxUnavailable as err:
        out(f"{path}: not checked: {err}")
        return 2
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
    if execution.status == "grader_error" and execution.stderr_tail:
        out("the kernel's last lines on stderr:\n  " + "\n  ".join(execution.stderr_tail.splitlines()))
    if not isolate:
        out("note: checked WITHOUT a sandbox (--no-sandbox)")
    return 0 if execution.status == "graded" else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader check", description=__doc__.split("\n\n")[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--assignment", default=None, help="assignment name (default: found from the notebook)")
    p.add_argument("--timeout", type=float, default=Limits.cell_timeout, help="seconds per cell")
    p.add_argument("--no-sandbox", action="store_true", help="run without isolation where the machine gives none")
    args = p.parse_args(argv)
    if not args.notebook.is_file():
        print(f"{args.notebook}: no such file", file=sys.stderr)
        return 2
    return check(args.notebook, Limits(cell_timeout=args.timeout), args.assignment, isolate=not args.no_sandbox)


if __name__ == "__main__":
    sys.exit(main())
