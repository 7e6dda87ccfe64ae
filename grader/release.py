"""``python -m grader release [ASSIGNMENT ...] [--into DIR]``: make the student notebooks from solutions/.

nbgrader's own ``generate_assignment`` does the work (clears solutions, strips hidden tests, locks and checksums
the test cells). It runs in a throwaway course directory with a throwaway gradebook, so the repository gets no
database and no stray files; only ``DIR/<assignment>/`` (default ``exercises/``) is replaced. The output is
deterministic: the same solutions give the same bytes, so a stale ``exercises/`` shows up as a diff.

Only what students need is copied from ``solutions/<assignment>/``: never ``make_notebook.py``, the script an
author may keep there to write the source notebook (it holds solutions). ``source_notebook`` and the cell helpers
below are for those scripts: they set nbgrader's cell metadata and stable cell ids.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from grader.paths import EXERCISES, REPO, SOLUTIONS

# Files nbgrader or Jupyter may leave next to a notebook, and the instructor's own files there (the generator, the
# answer keys), none of which may reach students.
JUNK = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc", "gradebook.db", ".nbgrader*",
                              "make_notebook.py", "answer_key.json")


# ------------------------------------------------------------------------------ writing a source notebook
def _nbgrader(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def markdown(cell_id: str, text: str):
    import nbformat

    cell = nbformat.v4.new_markdown_cell(text.strip("\n"), id=cell_id)
    return cell


def given(cell_id: str, code: str):
    """Read-only code every student receives as is (imports, helpers)."""
    import nbformat

    return nbformat.v4.new_code_cell(code.strip("\n"), id=cell_id,
                                     metadata=_nbgrader(cell_id, grade=False, solution=False, locked=True))


def solution(task: str, code: str):
    """The student's cell: code between ### BEGIN SOLUTION / ### END SOLUTION becomes the stub."""
    import nbformat

    return nbformat.v4.new_code_cell(code.strip("\n"), id=task,
                                     metadata=_nbgrader(task, grade=False, solution=True, locked=False))


def tests(task: str, points: int, code: str):
    """The autograded test cell of ``task`` (grade_id test_<task>); ### BEGIN/END HIDDEN TESTS are stripped."""
    import nbformat

    grade_id = f"test_{task}"
    return nbformat.v4.new_code_cell(code.strip("\n"), id=grade_id,
                                     metadata=_nbgrader(grade_id, grade=True, solution=False, locked=True,
                                                        points=points))


class Cells(list):
    """An assignment's cells in order, for the solutions/<ps>/make_notebook.py scripts.

    Cell ids double as nbgrader grade_ids (test cells: test_<task>); points are checked against grader/assignments/.
    """

    def __init__(self, assignment: str):
        super().__init__()
        from grader.assignments import ASSIGNMENTS

        self.points = {task.name: task.points for task in ASSIGNMENTS[assignment].tasks}

    def md(self, cell_id: str, text: str) -> None:
        self.append(markdown(cell_id, textwrap.dedent(text)))

    def code(self, cell_id: str, code: str) -> None:
        self.append(given(cell_id, textwrap.dedent(code)))

    def solution(self, task: str, code: str) -> None:
        self.append(solution(task, textwrap.dedent(code)))

    def test(self, task: str, points: int, code: str) -> None:
        assert points == self.points[task], f"{task}: {points} points here, {self.points[task]} in grader/assignments/"
        self.append(tests(task, points, textwrap.dedent(code)))

    def scratch(self, cell_id: str, code: str) -> None:
        """A free cell for the student's own experiments: neither graded nor locked."""
        import nbformat

        self.append(nbformat.v4.new_code_cell(textwrap.dedent(code).strip("\n"), id=cell_id))


def source_notebook(cells: list, path: Path) -> None:
    """Write an nbgrader source notebook (Python 3 kernel, no outputs) to ``path``."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def assignments(source: Path = SOLUTIONS) -> list[str]:
    return sorted(p.name for p in source.iterdir() if p.is_dir() and (p / f"{p.name}.ipynb").exists())


def _config(course: Path):
    """The repository's nbgrader_config.py (stubs, options), pointed at a temporary course directory."""
    from traitlets.config import Config, PyFileConfigLoader

    config = Config()
    repo_config = REPO / "nbgrader_config.py"
    if repo_config.exists():
        config.merge(PyFileConfigLoader(repo_config.name, path=str(REPO)).load_config())
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.source_directory = "source"
    config.CourseDirectory.release_directory = "release"
    config.CourseDirectory.db_url = "sqlite:///" + str(course / "gradebook.db")
    config.Exchange.root = str(course / "exchange")
    return config


def _normalise(notebook: Path) -> None:
    """Rewrite with nbformat's canonical layout and no run-specific metadata."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    notebook.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def release(names: list[str], into: Path = EXERCISES, source: Path = SOLUTIONS) -> list[Path]:
    """Generate the student version of each assignment into ``into/<name>/``; returns the notebooks written.

    Each of the course's assignments must pass its contract first (:func:`grader.assignments.check_contract`):
    a task without probe cases or a missing answer key raises ContractError, naming the task, and nothing is
    written."""
    from nbgrader.apps import NbGraderAPI

    from grader.assignments import check_contract, get

    for name in names:
        if get(name) is not None:
            check_contract(get(name), source / name / f"{name}.ipynb")

    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="mha-release-") as tmp:
        course = Path(tmp)
        for name in names:
            shutil.copytree(source / name, course / "source" / name, ignore=JUNK)
        api = NbGraderAPI(config=_config(course))
        for name in names:
            result = api.generate_assignment(name, force=True, create=True)
            if not result.get("success"):
                raise RuntimeError(f"nbgrader generate_assignment {name} failed:\n{result.get('error', '')}"
                                   f"\n{result.get('log', '')}")
            target = into / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(course / "release" / name, target, ignore=JUNK)
            for notebook in sorted(target.rglob("*.ipynb")):
                _normalise(notebook)
                written.append(notebook)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader release", description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", help="assignment names (default: every folder in solutions/)")
    parser.add_argument("--into", type=Path, default=EXERCISES, help="target folder (default: exercises/)")
    args = parser.parse_args(argv)
    names = args.assignments or assignments()
    unknown = [n for n in names if not (SOLUTIONS / n / f"{n}.ipynb").exists()]
    if unknown:
        print(f"no solutions/<name>/<name>.ipynb for {unknown}; found {assignments()}", file=sys.stderr)
        return 2
    args.into.mkdir(parents=True, exist_ok=True)
    from grader.assignments import ContractError

    try:
        written = release(names, args.into)
    except ContractError as err:
        print(f"not released: the assignment's grading is incomplete: {err} (see CONTRIBUTING.md)", file=sys.stderr)
        return 2
    for notebook in written:
        print(f"wrote {notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
