"""``python -m grader release [ASSIGNMENT ...] [--into DIR]``: make the student notebooks from solutions/.

First each assignment's source (``solutions/<name>/<name>.py``, a jupytext percent notebook, see
:mod:`grader.authoring`) is built into its nbgrader source notebook ``solutions/<name>/<name>.ipynb`` and checked
against its contract. Then nbgrader's own ``generate_assignment`` does the work (clears solutions, strips hidden
tests, locks and checksums the test cells). It runs in a throwaway course directory with a throwaway gradebook, so
the repository gets no database and no stray files; only ``DIR/<assignment>/`` (default ``exercises/``) is
replaced. The output is deterministic: the same sources give the same bytes, so a stale ``exercises/`` shows up as
a diff.

Only what students need is copied from ``solutions/<assignment>/``: never the source notebook ``<name>.py`` nor
``answer_key.json`` (both hold answers).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from grader.authoring import build, notebook_text, source_path
from grader.paths import EXERCISES, REPO, SOLUTIONS

# Files nbgrader or Jupyter may leave next to a notebook, and the instructor's own files there (the answer keys; the
# source notebook <name>.py is left out by _junk), none of which may reach students.
JUNK = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc", "gradebook.db", ".nbgrader*",
                              "answer_key.json")


def _junk(name: str):
    """shutil.copytree's ignore for assignment ``name``: JUNK and the source notebook ``<name>.py``."""
    def ignore(folder, names):
        return set(JUNK(folder, names)) | {n for n in names if n == f"{name}.py"}
    return ignore


def assignments(source: Path = SOLUTIONS) -> list[str]:
    """The assignments in ``source``: folders holding ``<name>.py`` (a source notebook) or ``<name>.ipynb``."""
    return sorted(p.name for p in source.iterdir()
                  if p.is_dir() and (source_path(p).exists() or (p / f"{p.name}.ipynb").exists()))



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


def release(names: list[str], into: Path = EXERCISES, source: Path = SOLUTIONS,
            update_sources: bool = False) -> list[Path]:
    """Generate the student version of each assignment into ``into/<name>/``; returns the notebooks written.

    An assignment with a source notebook (``source/<name>/<name>.py``) is released from what that source builds
    (:func:`grader.authoring.notebook`; raises SourceError for a malformed cell), and with ``update_sources`` the
    built nbgrader notebook replaces ``source/<name>/<name>.ipynb`` (without, nothing under ``source`` is written,
    so a stale committed notebook still shows). Each of the course's assignments must pass its contract
    (:func:`grader.assignments.check_contract`) first: a task without probe cases or a missing answer key raises
    ContractError, naming the task, and nothing is written."""
    from nbgrader.apps import NbGraderAPI

    from grader.assignments import ANSWER_KEY_FILE, check_contract, get

    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="mha-release-") as tmp:
        course = Path(tmp)
        for name in names:
            folder, staged = source / name, course / "source" / name
            assignment = get(name)
            if assignment is not None:
                assignment.answer_keys(folder / f"{name}.ipynb")  # a missing key: ContractError before the build
            shutil.copytree(folder, staged, ignore=_junk(name))
            if source_path(folder).exists():
                (staged / f"{name}.ipynb").write_text(notebook_text(folder), encoding="utf-8")
            if assignment is not None:
                # The contract of what is released, read beside its answer key (which is never released).
                checked = course / "contract" / name
                checked.mkdir(parents=True)
                shutil.copy2(staged / f"{name}.ipynb", checked / f"{name}.ipynb")
                if (folder / ANSWER_KEY_FILE).exists():
                    shutil.copy2(folder / ANSWER_KEY_FILE, checked / ANSWER_KEY_FILE)
                check_contract(assignment, checked / f"{name}.ipynb")
        if update_sources:
            for name in names:
                if source_path(source / name).exists():
                    build(source / name)
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
    parser.add_argument("--into", type=Path, default=EXERCISES,
                        help="target folder (default: exercises/); elsewhere, nothing in solutions/ is written")
    args = parser.parse_args(argv)
    names = args.assignments or assignments()
    unknown = [n for n in names if n not in assignments()]
    if unknown:
        print(f"no solutions/<name>/<name>.py (or .ipynb) for {unknown}; found {assignments()}", file=sys.stderr)
        return 2
    args.into.mkdir(parents=True, exist_ok=True)
    from grader.assignments import ContractError
    from grader.authoring import SourceError

    try:
        written = release(names, args.into, update_sources=args.into.resolve() == EXERCISES.resolve())
    except ContractError as err:
        print(f"not released: the assignment's grading is incomplete: {err} (see CONTRIBUTING.md)", file=sys.stderr)
        return 2
    except SourceError as err:
        print(f"not released: the source notebook cannot be built: {err} (see CONTRIBUTING.md)", file=sys.stderr)
        return 2
    for notebook in written:
        print(f"wrote {notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
