"""``python -m grader gradescope ASSIGNMENT``: grade the one submission of a Gradescope autograder run.

Gradescope (its "Autograder Specifications") unpacks the autograder zip into /autograder/source, runs
``/autograder/run_autograder`` once per submission with the student's files in /autograder/submission and
``submission_metadata.json`` beside it, and reads the score from /autograder/results/results.json. This command is
what run_autograder (in this folder) calls: it copies the submission into a one-student class in a scratch folder,
grades it with ``grade_class`` exactly as ``python -m grader grade`` would (sandbox, limits, verification), and
writes results.json with ``lms.write_gradescope_results``: one test per task (score, max_score, the task's
message), the flags for review as a hidden test. The paths are options, so the command runs anywhere (the tests
use temporary folders). Nothing under the submission folder is written.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from grader.pipeline.lms import GRADESCOPE_VISIBILITY

AUTOGRADER = Path("/autograder")
STUDENT_FOLDER = "submission"     # the one student's folder (and id) in the scratch class


def student_label(metadata: Path) -> str:
    """Who submitted, for the log only (Gradescope keys the results by the submission itself): the users' e-mail
    addresses from submission_metadata.json, or '' when there is none to read."""
    try:
        users = json.loads(metadata.read_text(encoding="utf-8")).get("users") or []
        return ", ".join(str(u.get("email") or u.get("name") or "") for u in users if isinstance(u, dict))
    except (OSError, ValueError, AttributeError):
        return ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m grader gradescope", description=__doc__.split("\n\n")[0])
    p.add_argument("assignment", help="assignment name, e.g. ps1 (its source is solutions/ps1/ps1.ipynb)")
    p.add_argument("--submission", type=Path, default=AUTOGRADER / "submission",
                   help="the student's files (default /autograder/submission)")
    p.add_argument("--results", type=Path, default=AUTOGRADER / "results",
                   help="where results.json goes (default /autograder/results)")
    p.add_argument("--metadata", type=Path, default=AUTOGRADER / "submission_metadata.json",
                   help="Gradescope's submission_metadata.json (read for the log only)")
    p.add_argument("--visibility", default="after_published", choices=GRADESCOPE_VISIBILITY,
                   help="when students see the tests' results (Gradescope's visibility; default after_published)")
    p.add_argument("--source", default=None, help="the assignment's source notebook, if not in solutions/")
    p.add_argument("--timeout", type=float, default=None, help="seconds per cell (default: grade's)")
    p.add_argument("--no-preload", action="store_true",
                   help="start the kernel from scratch instead of forking it from a server that preloaded torch "
                        "(as grade's --no-preload; faster for a notebook that does not import torch)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run the notebook WITHOUT isolation where the container gives none: the student's code can "
                        "then read the hidden tests and write results.json itself; only for code you trust")
    return p


def main(argv: list[str] | None = None) -> int:
    from grader.assignments import ContractError
    from grader.grade import grade_class
    from grader.pipeline.lms import write_gradescope_results
    from grader.sandbox import Limits
    from grader.sandbox.service import SandboxUnavailable

    args = build_parser().parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if not args.submission.is_dir():
        log(f"{args.submission} is not a folder: Gradescope puts the student's files in /autograder/submission "
            "(give --submission when running elsewhere)")
        return 2
    who = student_label(args.metadata)
    log(f"grading the submission in {args.submission}" + (f" ({who})" if who else ""))
    limits = Limits(threads=0) if args.timeout is None else Limits(cell_timeout=args.timeout, threads=0)
    with tempfile.TemporaryDirectory(prefix="mha-gradescope-") as scratch:
        student = Path(scratch) / "class" / STUDENT_FOLDER
        # A copy: grading never touches the submission; links are copied as links, never followed out of it.
        shutil.copytree(args.submission, student, symlinks=True)
        try:
            results = grade_class(args.assignment, student.parent, Path(scratch) / "out", limits=limits,
                                  source=args.source, preload=not args.no_preload, isolate=not args.no_sandbox,
                                  log=log)
        except SandboxUnavailable as err:
            log(f"not grading: {err}")
            return 2
        except ContractError as err:
            # The autograder zip is broken, not the submission: no results.json, so Gradescope reports the
            # autograder as failed instead of showing the student a 0 that no notebook could change.
            log(f"not grading: the assignment's grading is incomplete: {err}. Fix grader/assignments/ or the source "
                f"notebook (see CONTRIBUTING.md) and upload the autograder zip again; every submission fails the "
                f"same way until then.")
            return 2
        args.results.mkdir(parents=True, exist_ok=True)
        path = write_gradescope_results(args.results, results, visibility=args.visibility)
    result = results[0]
    log(f"{path}: {result.status} {result.score:g}/{result.max_score:g}")
    return 0
