"""How fast a class is graded: this pipeline in parallel against serial ``nbgrader autograde``, in one run.

``measure_grading(n_submissions, jobs, workdir, quick)`` makes `n_submissions` submissions of one
assignment, grades them with plain nbgrader (one ``nbgrader autograde`` over the class, which runs one notebook
at a time) and with ``grader.grade.grade_class`` (`jobs` at a time), and returns both wall times, their ratio and
the floor: a fresh ``python -c "import torch"`` per notebook, which every notebook pays in a fresh kernel.
``measure_cluster`` grades the same class on a local dask cluster of 1 and of 2 workers and in the thread pool
(grader.cluster). ``python -m grader bench`` calls both. Not a timed test: on a shared machine the numbers move.

The helpers that make submissions from the instructor's source are here too (``samples/make_class.py`` uses
them); they write copies in a work folder and never touch solutions/ or exercises/.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from grader.paths import REPO
from grader.pipeline.sanitize import is_answer_cell, strip_hidden

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def release_copy(source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What a student receives, made without nbgrader (for speed): stubs in answer cells, no hidden tests."""
    nb = nbformat.from_dict(json.loads(json.dumps(source)))
    for cell in nb.cells:
        if is_answer_cell(cell) and cell.cell_type == "code":
            kept, inside = [], False
            for line in cell.source.splitlines():
                if line.strip() == SOLUTION_MARKERS[0]:
                    inside = True
                    indent = line[: len(line) - len(line.lstrip())]
                    kept += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
                elif line.strip() == SOLUTION_MARKERS[1]:
                    inside = False
                elif not inside:
                    kept.append(line)
            cell.source = "\n".join(kept)
        elif cell.cell_type == "code":
            cell.source = strip_hidden(cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def honest_copy(source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A student who solved every task: the release with each answer cell holding the solution's code."""
    nb = release_copy(source)
    for cell, src in zip(nb.cells, source.cells):
        if is_answer_cell(src) and src.cell_type == "code":
            cell.source = "\n".join(line for line in src.source.splitlines()
                                    if line.strip() not in SOLUTION_MARKERS)
    return nb


def write_class(source_path: Path, dest: Path, n_students: int, layout: str = "folders") -> list[str]:
    """`n_students` submissions, dest/<student>/<nb> ("folders") or nbgrader's submitted/ layout: a mix, as in a
    real class: most solve everything, every fifth leaves the last task undone, every tenth hands in the release."""
    source = nbformat.read(str(source_path), as_version=4)
    honest, release = honest_copy(source), release_copy(source)
    partial = honest_copy(source)
    last = max(i for i, c in enumerate(source.cells) if is_answer_cell(c) and c.cell_type == "code")
    partial.cells[last] = release.cells[last]
    students = [f"student{i:03d}" for i in range(n_students)]
    for i, student in enumerate(students):
        folder = dest / student / (source_path.stem if layout == "nbgrader" else "")
        folder.mkdir(parents=True, exist_ok=True)
        nb = release if i % 10 == 9 else partial if i % 5 == 2 else honest
        nbformat.write(nb, str(folder / source_path.name))
    return students


def torch_import_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - started


def interpreter_env() -> dict[str, str]:
    """The environment for nbgrader's commands: this checkout on PYTHONPATH, and this interpreter's bin/ first on
    PATH, since nbgrader runs the ``alembic`` program by name to set up its gradebook (nbgrader/dbutil.py), and a
    virtual environment's bin/ is on PATH only while it is activated. sys.executable is not resolved: a venv's
    python is a link to the base interpreter, whose bin/ does not hold the venv's programs."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return dict(os.environ, PYTHONPATH=str(REPO), PATH=bin_dir + (os.pathsep + path if path else ""))


def _nbgrader_autograde(source_path: Path, course: Path, n: int) -> float:
    """Serial nbgrader: generate the assignment (not timed), then time one autograde over the class."""
    name = source_path.stem
    (course / "source" / name).mkdir(parents=True)
    shutil.copy(source_path, course / "source" / name / source_path.name)
    write_class(source_path, course / "submitted", n, layout="nbgrader")
    config = (f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\n"
              f"c.CourseDirectory.db_url = 'sqlite:///{course}/gradebook.db'\n"
              f"c.Execute.timeout = 120\n")
    (course / "nbgrader_config.py").write_text(config)
    env = interpreter_env()
    nbgrader = [sys.executable, "-m", "nbgrader"]
    subprocess.run([*nbgrader, "generate_assignment", name, "--force"], cwd=course, env=env, check=True,
                   capture_output=True)
    started = time.perf_counter()
    proc = subprocess.run([*nbgrader, "autograde", name, "--force"], cwd=course, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader autograde failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def measure_grading(n_submissions: int, jobs: int, workdir: Path, quick: bool,
                    assignment: str = "ps1", source: Path | None = None) -> dict:
    """Both wall times for `n_submissions` submissions (see write_class), their ratio, and the import-torch floor.

    `quick` grades 4 submissions instead of `n_submissions` (a smoke run for CI; the ratio is less telling).
    """
    from grader.grade import grade_class
    from grader.sandbox import Limits

    n = min(n_submissions, 4) if quick else n_submissions
    source = Path(source) if source else REPO / "solutions" / assignment / f"{assignment}.ipynb"
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    serial = _nbgrader_autograde(source, workdir / "nbgrader", n)

    write_class(source, workdir / "class", n)
    started = time.perf_counter()
    results = grade_class(assignment, workdir / "class", workdir / "out", jobs=jobs, source=str(source),
                          limits=Limits(cell_timeout=120, threads=0), log=lambda m: None)
    parallel = time.perf_counter() - started
    statuses = sorted({r.status for r in results})

    floor_one = torch_import_seconds()
    return {
        "assignment": assignment, "n_submissions": n, "jobs": jobs, "cores": len(os.sched_getaffinity(0)),
        "nbgrader_serial_s": round(serial, 2), "grader_parallel_s": round(parallel, 2),
        "speedup": round(serial / parallel, 2),
        "floor_s": round(floor_one * n, 2), "import_torch_s": round(floor_one, 2),
        "statuses": statuses, "scores": sorted(r.score for r in results),
    }


def _timed_grading(assignment: str, source: Path, subs: Path, out: Path, secret: str, *, jobs: int | None = None,
                   cluster: str | None = None) -> dict:
    """One ``grade_class`` run: wall time, the part before grading began (cluster, sandboxes, isolation check) and
    the rows of grades.csv (read back as text: what the instructor gets)."""
    from grader.grade import grade_class
    from grader.sandbox import Limits

    out.mkdir(parents=True)
    (out / ".grader-secret").write_text(secret)    # one secret for every run: the same probes, so the same rows
    began: list[float] = []

    def log(line: str) -> None:
        if line.startswith("grading ") and not began:
            began.append(time.perf_counter())

    started = time.perf_counter()
    grade_class(assignment, subs, out, jobs=jobs, cluster=cluster, source=str(source),
                limits=Limits(cell_timeout=120, threads=0), log=log)
    wall = time.perf_counter() - started
    startup = (began[0] - started) if began else None
    return {"wall_s": round(wall, 2), "startup_s": None if startup is None else round(startup, 2),
            "rows": (out / "grades.csv").read_text().splitlines()}


def measure_cluster(n_submissions: int, workdir: Path, quick: bool, assignment: str = "ps1",
                    source: Path | None = None) -> dict:
    """The same class graded three ways in one run: ``--cluster local:1``, ``--cluster local:2`` and the thread
    pool with ``--jobs 2``. Returns the wall times (seconds, each with its start-up part: cluster, sandboxes and
    isolation check), the scaling ratio local:1 / local:2, the cluster's overhead local:2 / --jobs 2, whether the
    three grades.csv are identical, and the load average (1 min) before and after.

    `quick` grades 2 submissions instead of `n_submissions` (checks the section runs, not its speed).
    """
    import secrets

    n = min(n_submissions, 2) if quick else n_submissions
    source = Path(source) if source else REPO / "solutions" / assignment / f"{assignment}.ipynb"
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    write_class(source, workdir / "class", n)
    secret = secrets.token_hex(32)
    load_before = os.getloadavg()[0]
    runs = {name: _timed_grading(assignment, source, workdir / "class", workdir / name, secret, **how)
            for name, how in (("cluster_local_1", {"cluster": "local:1"}), ("cluster_local_2", {"cluster": "local:2"}),
                              ("pool_jobs_2", {"jobs": 2}))}
    load_after = os.getloadavg()[0]
    rows = {name: run.pop("rows") for name, run in runs.items()}
    local_1, local_2, pool = (runs[k]["wall_s"] for k in ("cluster_local_1", "cluster_local_2", "pool_jobs_2"))
    return {
        "assignment": assignment, "n_submissions": n, "cores": len(os.sched_getaffinity(0)), "runs": runs,
        "ratio_local_1_to_local_2": round(local_1 / local_2, 2),
        "overhead_local_2_to_jobs_2": round(local_2 / pool, 2),
        "same_rows": rows["cluster_local_1"] == rows["cluster_local_2"] == rows["pool_jobs_2"],
        "statuses": sorted({row.split(",")[4] for row in rows["pool_jobs_2"][1:]}),
        "load_average_before": round(load_before, 2), "load_average_after": round(load_after, 2),
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="nbgrader autograde (serial) vs grader grade (parallel)")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-grading"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--assignment", default="ps1")
    args = parser.parse_args()
    print(json.dumps(measure_grading(args.n, args.jobs, args.workdir, args.quick, args.assignment), indent=2))
