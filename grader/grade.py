"""``python -m grader grade ASSIGNMENT SUBMISSIONS --out OUT [--jobs N] [--timeout S] [--db URL] [--cluster ADDRESS]
[--student ID ...]``

Grades a whole class: every student gets a row in OUT/grades.csv with a status, whatever happened, and the run
exits 0 when that is so. The pipeline's stages (grader.pipeline) are composed here and only here:
``grade_one`` takes one submission through sanitize, execute and score; ``grade_class`` collects, runs
``grade_one`` in parallel, then records and reports.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grader import paths
from grader.assignments import ContractError
from grader.pipeline import Result, Submission, TaskResult
from grader.pipeline import class_report
from grader.pipeline.collect import collect
from grader.pipeline.execute import execute
from grader.pipeline.record import BadDatabaseURL, gradebook_url, prepare, record
from grader.pipeline.report import write_autograded, write_csvs, write_feedback
from grader.pipeline.sanitize import Rejected, append_probes, load_source, sanitize
from grader.pipeline import verify as verify_stage
from grader.pipeline.score import score
from grader.pipeline.types import GradedCell, graded_cells
from grader.progress import NOT_GRADED_YET, IdClash, refuse_clashing_ids, safe_terminal, write_progress
from grader.sandbox import Limits
from grader.sandbox.service import Sandbox, SandboxUnavailable



@dataclass
class Grading:
    """Everything grade_one needs, fixed for the whole class."""
    assignment: str
    source_path: Path
    source: NotebookNode
    cells: list[GradedCell]
    limits: Limits
    secret: bytes                  # keys the verification seeds; never enters a kernel
    verification: verify_stage.Verification = None   # the verify stage's view of the assignment (contract checked)
    sandbox: Sandbox = None        # runs every kernel of the run (grader.sandbox)
    cluster: object = None         # or: a grader.cluster.Cluster whose workers run the kernels (--cluster)

    @property
    def notebook(self) -> str:
        return self.source_path.name

    @property
    def isolate(self) -> bool:
        return self.cluster.config["isolate"] if self.cluster is not None else self.sandbox.isolate

    def execute(self, nb: NotebookNode, sub: Submission, notebook_timeout: float | None = None):
        """The execute stage: in this machine's sandbox, or on a worker of the cluster; within `notebook_timeout`
        seconds when given (else the run's limit)."""
        if self.cluster is not None:
            return self.cluster.execute(nb, sub.student_id, sub.notebook_bytes, notebook_timeout)
        return execute(nb, self.sandbox, notebook_timeout)

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.cells)

    def seed_for(self, student_id: str, notebook_bytes: bytes | None = b"") -> int:
        """Same secret, assignment, student and submitted bytes: same seed, so a regrade gives the same results;
        a resubmission (other bytes) gets new probe inputs, which its author cannot have seen in any feedback."""
        content = hashlib.sha256(notebook_bytes or b"").hexdigest()
        digest = hmac.new(self.secret, f"{self.assignment}/{student_id}/{content}".encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:4], "big")


PIPELINE = 2   # --cluster: submissions in flight per worker thread (one on the cluster, one ready here)


def source_notebook(assignment: str, source: str | None) -> Path:
    path = Path(source) if source else paths.source_notebook(assignment)
    if not path.is_file():
        raise SystemExit(f"no source notebook for {assignment!r} at {path} (use --source PATH)")
    return path.resolve()


def load_secret(out: Path) -> bytes:
    """A random key kept with the gradebook in OUT (0600); students never see it."""
    path = out / ".grader-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def rejected(sub: Submission, g: Grading, status: str, message: str) -> Result:
    tasks = [TaskResult(c.task, 0.0, c.points, f"not graded: {status}", c.grade_id) for c in g.cells]
    return Result(sub.student_id, g.assignment, status, " ".join([message, *sub.notes]), g.max_score, tasks)


def grade_one(sub: Submission, g: Grading) -> Result:
    """One submission through the stages: sanitize -> verify.plan -> execute -> verify -> score."""
    try:
        nb, submitted_json = sanitize(sub, g.source, g.assignment)
    except Rejected as why:
        return rejected(sub, g, why.status, why.message)
    seed = g.seed_for(sub.student_id, sub.notebook_bytes)
    append_probes(nb, verify_stage.plan(g.verification, seed))
    probe_dirs = []
    try:
        execution = g.execute(nb, sub)
        probe_dir = execution.probe_dir
        probe_dirs.append(probe_dir)
        left = g.limits.notebook_timeout - execution.elapsed
        if execution.stopped_at is not None and any(is_probe(c) for c in nb.cells) and left >= 1:
            # The kernel was stopped before the verification cells ran: verify in a fresh kernel that runs only
            # the cells that had finished, so the tasks done before the crash can still be checked. Within what is
            # left of the notebook's time: one submission never holds a grading slot past its limit.
            second = g.execute(verification_rerun(nb, execution.stopped_at), sub, left)
            probe_dir = second.probe_dir
            probe_dirs.append(probe_dir)
        verified, flags = verify_stage.verify(g.verification, seed, probe_dir, submitted_json)
        tasks = score(nb, execution, g.cells, verified)
    finally:
        for folder in probe_dirs:
            if folder is not None:
                shutil.rmtree(folder.parent, ignore_errors=True)   # the kernel's folder on the grader's side
    if not g.isolate:
        flags = [*flags, "graded without a sandbox (--no-sandbox)"]
    message = " ".join(m for m in [execution.message, *sub.notes] if m)
    return Result(sub.student_id, g.assignment, execution.status, message, g.max_score, tasks, flags, nb)


def is_probe(cell) -> bool:
    return bool(cell.metadata.get("grader", {}).get("probe"))


def verification_rerun(nb: NotebookNode, stopped_at: int) -> NotebookNode:
    """The cells that finished before the kernel was stopped, then every probe cell except the one that stopped
    it; fresh copies without outputs."""
    cells = [c for i, c in enumerate(nb.cells) if (i < stopped_at and not is_probe(c))
             or (is_probe(c) and i != stopped_at)]
    rerun = nbformat.from_dict(json.loads(json.dumps(nb)))
    rerun.cells = [nbformat.from_dict(json.loads(json.dumps(c))) for c in cells]
    for cell in rerun.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return rerun


def _safe_grade_one(sub: Submission, g: Grading) -> Result:
    try:
        return grade_one(sub, g)
    except Exception as err:   # one broken submission (or grader bug) must not lose the others' rows
        why = " ".join(str(err).split())[:300]
        return rejected(sub, g, "grader_error", f"The grader failed on this submission ({type(err).__name__}: "
                                                f"{why}). This is a fault of the grader, not of the notebook: "
                                                "please report it with this message (the student need not "
                                                "change anything; `grade --student ID` regrades this one "
                                                "submission once the fault is fixed).")


def _grade_and_report(sub: Submission, g: Grading, out: Path) -> Result:
    """In a worker: grade, then write the feedback page while other workers' kernels run."""
    result = _safe_grade_one(sub, g)
    try:
        write_feedback(out, result, g.source_path.stem)
        write_autograded(out, result, g.source_path.stem)     # for nbgrader's formgrader
    except Exception as err:   # the row matters more than the page
        result.message = " ".join([result.message, f"(feedback page not written: {type(err).__name__})"]).strip()
    result.feedback_nb = None   # the executed notebook is not needed any more: free it
    return result


def hidden_paths(out: Path, submissions: Path, source_path: Path, db_url: str) -> list[Path]:
    """What no kernel may see even where it lies inside a bound Python installation: results, other students,
    solutions, the gradebook (the sandbox binds none of them in the first place)."""
    solutions = source_path.parent.parent if source_path.parent.parent.name == "solutions" else source_path.parent
    paths = [out, submissions, solutions]
    if db_url.startswith("sqlite:///"):
        paths.append(Path(db_url[len("sqlite:///"):]).resolve().parent)
    return [p.resolve() for p in paths]


def grade_class(assignment: str, submissions: Path, out: Path, *, jobs: int | None = None,
                limits: Limits | None = None, db_url: str | None = None, source: str | None = None,
                kernel: str = "python3", preload: bool = True, isolate: bool = True, cluster: str | None = None,
                only: list[str] | None = None, log=print) -> list[Result]:
    """Grade every submission of SUBMISSIONS into OUT. Raises SandboxUnavailable (before any grading) where
    `isolate` is asked for and the machine gives no isolation, GradebookError after the CSVs are written.
    `cluster` (local:N or a scheduler's address): the kernels run on that dask cluster's workers.
    `only` (--student): grade just these student ids and replace only their rows, pages and gradebook entries of
    an earlier run into OUT; raises NotRegraded, before any grading, when that cannot be done."""
    submissions, out = submissions.resolve(), out.resolve()
    source_path = source_notebook(assignment, source)
    # The assignment's contract first: a task without probes or a missing answer key stops the run here, naming it.
    verification = verify_stage.prepare(assignment, source_path, log)
    if only:
        missing = [name for name in ("grades.csv", "tasks.csv") if not (out / name).is_file()]
        if missing:
            raise NotRegraded(f"--student replaces rows of an earlier run, but {out} has no {' or '.join(missing)}: "
                              "grade the whole class (without --student) first")
        only_students(collect(submissions, source_path.name), only)   # an unknown id stops before any kernel
    out.mkdir(parents=True, exist_ok=True)
    db_url = gradebook_url(db_url or f"sqlite:///{out / 'gradebook.db'}", log)
    limits = limits or Limits()
    hide = hidden_paths(out, submissions, source_path, db_url)
    if cluster:
        from grader.cluster import Cluster

        sandbox = Cluster(cluster, limits=limits, isolate=isolate, preload=preload, kernel=kernel, hide=hide, log=log)
        # Twice the workers' threads in flight: while this machine verifies a notebook and writes its feedback,
        # the worker that ran it already runs the next one (ready here, sent when a thread frees), so no worker
        # waits on us.
        jobs = max(1, jobs or PIPELINE * sandbox.threads)
    else:
        jobs = max(1, jobs or len(os.sched_getaffinity(0)))
        if limits.threads <= 0:
            limits.threads = max(1, len(os.sched_getaffinity(0)) // jobs)
        sandbox = Sandbox(limits, isolate=isolate, preload=preload, kernel=kernel, hide=hide)
    try:
        sandbox.start(log)      # refuses here, before anything is graded, when isolation cannot be had
        if limits.gpus and not cluster:
            sandbox.require_gpus(log)
        source_nb = load_source(source_path)
        students = collect(submissions, source_path.name)
        for line in getattr(students, "summary", lambda: [])():
            log(line)
        refuse_clashing_ids(students)
        if only:
            students = only_students(students, only)
        g = Grading(assignment, source_path, source_nb, graded_cells(source_nb), limits, load_secret(out),
                    verification, None if cluster else sandbox, sandbox if cluster else None)
        log(f"grading {len(students)} submission(s) of {assignment} with {jobs} job(s)")
        log(f"rows are written to {out / 'grades.csv'} as each submission finishes; if this run stops, the ones "
            "not graded yet say grader_error: grade them then with --student ID")
        started, results = time.monotonic(), []
        replace = set(only) if only else None
        pending = {s.student_id: rejected(s, g, "grader_error", NOT_GRADED_YET) for s in students}
        write_progress(out, [], list(pending.values()), replace)
        gradebook = ThreadPoolExecutor(max_workers=1)
        prepared = gradebook.submit(prepare, db_url, assignment, source_path.stem, g.cells)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            # As each finishes, not in order: a slow notebook never holds back the rows of those after it.
            for future in as_completed([pool.submit(_grade_and_report, s, g, out) for s in students]):
                result = future.result()
                results.append(result)
                pending.pop(result.student_id, None)
                write_progress(out, results, list(pending.values()), replace)
                line = (f"  [{len(results)}/{len(students)}] {safe_terminal(result.student_id)}: {result.status} "
                        f"{result.score:g}/{result.max_score:g}")
                if cluster:
                    from grader.cluster import progress

                    line += " " + progress(sandbox, results, len(students))
                log(line)
    except BaseException:
        sandbox.close()
        left = [sid for sid in locals().get("pending") or {}]
        if left:
            log(f"stopped: {len(left)} submission(s) not graded; their rows in {out / 'grades.csv'} say grader_error. "
                "Grade them with " + " ".join(f"--student {safe_terminal(sid)}" for sid in left[:20])
                + (f" ... ({len(left)} in all)" if len(left) > 20 else ""))
        raise
    # A cluster's workers take seconds to stop: let them stop while the CSVs and the gradebook are written.
    closing = threading.Thread(target=sandbox.close, name="grader-sandbox-close")
    closing.start()
    try:
        write_csvs(out, results, replace)      # first: the rows must not depend on a database being reachable
        try:
            from grader.pipeline.lms import write_lms_files

            for line in write_lms_files(out, results, students, assignment=assignment, replace=replace):
                log(line)
        except Exception as err:      # the LMS import files are a convenience: the rows are already written
            log(f"LMS import files not written: {type(err).__name__}: {err}")
        class_report.after_grading(out, log)      # OUT/report.html and class_summary.csv, from the CSVs just written
        try:
            prepared.result()
            record(db_url, assignment, source_path.stem, g.cells, results)
        except Exception as err:
            raise GradebookError(f"grades.csv and tasks.csv are written, but the gradebook ({db_url}) was not "
                                 f"updated: {type(err).__name__}: {err}") from err
        finally:
            gradebook.shutdown()
        log(f"done in {time.monotonic() - started:.1f} s: {out / 'grades.csv'}")
        return results
    finally:
        closing.join()


class GradebookError(RuntimeError):
    pass


class NotRegraded(ValueError):
    """--student cannot be done as asked (an id not in SUBMISSIONS, or no earlier run in OUT); nothing is graded."""


def only_students(students: list[Submission], ids: list[str]) -> list[Submission]:
    """The submissions of `ids` (as grades.csv names them). Raises NotRegraded naming the ids SUBMISSIONS lacks."""
    found = {s.student_id: s for s in students}
    unknown = [i for i in dict.fromkeys(ids) if i not in found]
    if unknown:
        known = sorted(found)
        listed = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
        raise NotRegraded(f"--student {', '.join(map(repr, unknown))}: no such student in the submissions "
                          f"(the ids are as grades.csv writes them; found: {listed or 'none'}); nothing was graded")
    return [found[i] for i in dict.fromkeys(ids)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m grader grade", description=__doc__.split("\n\n")[1])
    p.add_argument("assignment", help="assignment name, e.g. ps1 (its source is solutions/ps1/ps1.ipynb)")
    p.add_argument("submissions", type=Path, help="folder with one sub-folder per student, or an LMS zip")
    p.add_argument("--out", type=Path, required=True, help="output folder (grades.csv, tasks.csv, feedback/)")
    p.add_argument("--jobs", type=int, default=None,
                   help="notebooks graded at once (default: the cores; with --cluster, twice the workers' threads, "
                        "so each worker has the next one queued)")
    p.add_argument("--timeout", type=float, default=Limits.cell_timeout, help="seconds per cell")
    p.add_argument("--notebook-timeout", type=float, default=Limits.notebook_timeout, help="seconds per notebook")
    p.add_argument("--memory", type=float, default=Limits.memory_bytes / 2**30, help="GiB per notebook")
    p.add_argument("--processes", type=int, default=Limits.max_processes, help="processes per notebook")
    p.add_argument("--output", type=float, default=Limits.output_bytes / 2**20, help="MB of output per notebook")
    p.add_argument("--db", default=None, help="gradebook SQLAlchemy URL (default: sqlite in OUT)")
    p.add_argument("--source", default=None, help="the assignment's source notebook, if not in solutions/")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel to run the notebooks with")
    p.add_argument("--no-preload", action="store_true",
                   help="start every kernel from scratch instead of forking it from a server that preloaded torch")
    p.add_argument("--gpus", default="", help="GPUs a kernel may use: '' (none, default), 'all', or ids '0,1'")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run the notebooks on a dask cluster: local:N (N worker processes here) or a scheduler's "
                        "address (tcp://host:8786); default: a thread pool on this machine")
    p.add_argument("--student", action="append", default=None, metavar="ID",
                   help="regrade only this student (repeatable): only their rows of OUT's CSVs, their feedback "
                        "pages and gradebook entries are replaced; everyone else's stay as the earlier run wrote "
                        "them")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run notebooks WITHOUT isolation where the machine gives none (only code you trust); "
                        "the run and every row of grades.csv say so")
    return p


def main(argv: list[str] | None = None) -> int:
    from grader.pipeline.lms import CannotMerge

    args = build_parser().parse_args(argv)
    limits = Limits(cell_timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                    memory_bytes=int(args.memory * 2**30), max_processes=args.processes,
                    output_bytes=int(args.output * 2**20), gpus=args.gpus, threads=0)
    if not args.submissions.exists():
        print(f"{args.submissions} does not exist", file=sys.stderr)
        return 2
    subs, out = args.submissions.resolve(), args.out.resolve()
    if subs == out or subs in out.parents or out in subs.parents:
        # Results inside SUBMISSIONS would be collected as a student (and shown to every kernel that may read it);
        # SUBMISSIONS inside OUT could be overwritten by the feedback pages.
        print(f"--out {args.out} and SUBMISSIONS {args.submissions} must not contain one another: "
              f"choose an output folder outside the submissions", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out):
            pass
    except OSError as err:
        print(f"not grading: --out {args.out} cannot be written ({err.strerror or type(err).__name__}); choose a "
              "folder you can write", file=sys.stderr)
        return 2
    try:
        grade_class(args.assignment, args.submissions, args.out, jobs=args.jobs, limits=limits, db_url=args.db,
                    source=args.source, kernel=args.kernel, preload=not args.no_preload,
                    isolate=not args.no_sandbox, cluster=args.cluster, only=args.student,
                    log=lambda m: print("\n".join(map(safe_terminal, str(m).split("\n"))), file=sys.stderr))
    except SandboxUnavailable as err:
        print(f"not grading: {err}", file=sys.stderr)
        return 2
    except ContractError as err:
        print(f"not grading: the assignment's grading is incomplete: {err}. Fix grader/assignments/ or the "
              f"source notebook (see CONTRIBUTING.md); grading again without that change fails the same way.",
              file=sys.stderr)
        return 2
    except (NotRegraded, BadDatabaseURL, IdClash) as err:
        print(f"not grading: {err}", file=sys.stderr)
        return 2
    except CannotMerge as err:      # after grading, before any file or the gradebook is written
        print(f"nothing written: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        if not args.cluster or "--cluster" not in str(err):
            raise
        print(err, file=sys.stderr)
        return 2
    except GradebookError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
