"""Helpers for the exercise tests: grade notebooks through nbgrader's real autograde, and plant bugs.

``autograde(source_nb, submitted_nb, tmp)`` grades one notebook; ``autograde_many(source_nb, {student: nb}, tmp)``
grades several against the same source in one course directory (one gradebook, one generate_assignment), which
is how the mutation tests stay affordable: every graded notebook still gets its own fresh kernel from nbgrader.
``mutate(solution_nb, cell_id, [(old, new), ...], dest)`` copies a solution notebook with text replaced in one
cell, and fails loudly when a pattern is not there (a mutation that silently does nothing proves nothing).
``grade_assignment(name, tmp)`` grades, once per test session, an assignment's solution, its student notebook and
every mutation and alternative kept in tests/mutations, ``pack``-ing edits of independent cells into one notebook.
"""
from __future__ import annotations

import html
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
# A shared 2-core machine: give each cell room, but still bound it.
CELL_TIMEOUT_S = 180


def _config(course: Path):
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.source_directory = "source"
    config.CourseDirectory.release_directory = "release"
    config.CourseDirectory.submitted_directory = "submitted"
    config.CourseDirectory.autograded_directory = "autograded"
    config.CourseDirectory.feedback_directory = "feedback"
    config.CourseDirectory.db_url = "sqlite:///" + str(course / "gradebook.db")
    config.Exchange.root = str(course / "exchange")
    config.ExecutePreprocessor.timeout = CELL_TIMEOUT_S
    config.Execute.timeout = CELL_TIMEOUT_S
    return config


def _feedback_text(path: Path) -> str:
    """Feedback HTML as plain text: tags and ANSI colour spans removed, entities decoded."""
    if not path.exists():
        return ""
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", path.read_text(errors="replace"), flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@contextmanager
def _kernels_import_this_checkout():
    """Kernels started by nbgrader import ``grader`` from this repository, whatever editable install the shared
    environment points at (another checkout's ``pip install -e .`` silently redirects it)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), before]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _test_cell_outputs(notebook: Path) -> dict[str, str]:
    """{task: everything its autograded test cell printed or raised}, ANSI colours removed."""
    outputs = {}
    for cell in nbformat.read(notebook, as_version=4).cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if cell.cell_type != "code" or not grade_id.startswith("test_"):
            continue
        parts = []
        for output in cell.get("outputs", []):
            parts += [output.get("ename", ""), output.get("evalue", ""), *output.get("traceback", [])]
            text = output.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else text)
        outputs[grade_id.removeprefix("test_")] = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(parts))
    return outputs


def autograde_many(source_nb: Path, submissions: dict[str, Path], tmp: Path) -> dict[str, dict]:
    """Autograde each submitted notebook against ``source_nb`` with nbgrader; per student returns
    ``{"scores": {task: points}, "max": {task: points}, "total": float, "feedback": str, "outputs": {task: str},
    "log": str}`` where outputs are what each task's test cell printed or raised in the autograded notebook, and
    task is the graded cell's grade_id without the ``test_`` prefix."""
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI

    assignment = source_nb.stem
    course = Path(tmp) / "course"
    (course / "source" / assignment).mkdir(parents=True, exist_ok=True)
    shutil.copy2(source_nb, course / "source" / assignment / source_nb.name)
    for student, notebook in submissions.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, folder / source_nb.name)

    api = NbGraderAPI(config=_config(course))
    made = api.generate_assignment(assignment, force=True, create=True)
    assert made["success"], made.get("error", "") + made.get("log", "")
    results: dict[str, dict] = {}
    for student in submissions:
        with _kernels_import_this_checkout():
            graded = api.autograde(assignment, student, force=True, create=True)
        assert graded["success"], f"nbgrader autograde errored for {student}:\n{graded.get('error', '')}" \
                                  f"\n{graded.get('log', '')[-4000:]}"
        feedback = api.generate_feedback(assignment, student, force=True)
        assert feedback["success"], feedback.get("error", "") + feedback.get("log", "")
        autograded = course / "autograded" / student / assignment / f"{assignment}.ipynb"
        results[student] = {"log": graded.get("log", ""), "outputs": _test_cell_outputs(autograded),
                            "feedback": _feedback_text(course / "feedback" / student / assignment
                                                       / f"{assignment}.html")}

    with Gradebook("sqlite:///" + str(course / "gradebook.db")) as gradebook:
        for student in submissions:
            notebook = gradebook.find_submission_notebook(assignment, assignment, student)
            scores, maxima = {}, {}
            for grade in notebook.grades:
                task = grade.name.removeprefix("test_")
                scores[task] = float(grade.score)
                maxima[task] = float(grade.max_score)
            results[student].update(scores=scores, max=maxima, total=sum(scores.values()))
    return results


def autograde(source_nb: Path, submitted_nb: Path, tmp: Path) -> dict:
    """Autograde one notebook; see ``autograde_many`` for the result."""
    return autograde_many(source_nb, {"student": submitted_nb}, tmp)["student"]


def mutate(solution_nb: Path, cell_id: str, replacements: list[tuple[str, str]], dest: Path) -> Path:
    """Copy ``solution_nb`` to ``dest`` with each (old, new) replaced once in the cell whose id is ``cell_id``."""
    nb = nbformat.read(solution_nb, as_version=4)
    cells = [c for c in nb.cells if c.get("id") == cell_id]
    assert len(cells) == 1, f"{solution_nb.name} has {len(cells)} cells with id {cell_id!r}"
    cell = cells[0]
    for old, new in replacements:
        count = cell.source.count(old)
        assert count == 1, f"mutation pattern found {count} times (need exactly 1) in cell {cell_id}: {old!r}"
        cell.source = cell.source.replace(old, new)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest


def replace_cell(solution_nb: Path, cell_id: str, code: str, dest: Path) -> Path:
    """Copy ``solution_nb`` with one solution cell's whole source replaced (another correct implementation)."""
    nb = nbformat.read(solution_nb, as_version=4)
    cells = [c for c in nb.cells if c.get("id") == cell_id]
    assert len(cells) == 1, f"{solution_nb.name} has {len(cells)} cells with id {cell_id!r}"
    cells[0].source = code.strip("\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest


# ------------------------------------------------------------------------------ one grading run per assignment
def _reach(cells: set[str], depends: dict[str, set[str]]) -> set[str]:
    """The cells whose code the given tasks' tests run through (each task's own cell plus what it calls)."""
    return set().union(*({cell} | depends.get(cell, set()) for cell in cells)) if cells else set()


def pack(edits: list, depends: dict[str, set[str]]) -> list[list]:
    """Group edits (objects with .cell) so that no edit in a group touches a cell another one's tests run
    through: several planted bugs then share one notebook (one kernel) and are still judged independently."""
    groups: list[list] = []
    for edit in edits:
        for group in groups:
            if all(edit.cell not in _reach({other.cell}, depends) and other.cell not in _reach({edit.cell}, depends)
                   for other in group):
                group.append(edit)
                break
        else:
            groups.append([edit])
    return groups


_GRADED: dict[str, dict[str, dict]] = {}


def grade_assignment(name: str, tmp: Path) -> dict[str, dict]:
    """Autograde, once per test session, the solution ("solution"), the student notebook ("blank") and every
    mutation and alternative of ``name`` in tests/mutations; returns {id: result} (packed edits share a result)."""
    if name in _GRADED:
        return _GRADED[name]
    from mutations import ps123, ps123_alternatives

    source = REPO / "solutions" / name / f"{name}.ipynb"
    notebooks = {"solution": source, "blank": REPO / "exercises" / name / f"{name}.ipynb"}
    members: dict[str, str] = {}
    depends = ps123.DEPENDS.get(name, {})
    mutations = [m for m in ps123.MUTATIONS if m.assignment == name]
    alternatives = [a for a in ps123_alternatives.ALTERNATIVES if a.assignment == name]
    for group in pack(mutations, depends) + pack(alternatives, depends):
        group_id = "+".join(edit.id for edit in group)
        path = tmp / "notebooks" / group_id.replace("+", "__") / source.name
        current = source
        for edit in group:
            if hasattr(edit, "replacements"):
                current = mutate(current, edit.cell, list(edit.replacements), path)
            else:
                current = replace_cell(current, edit.cell, edit.code, path)
            members[edit.id] = group_id
        notebooks[group_id] = path
    results = autograde_many(source, notebooks, tmp / "grading")
    for edit_id, group_id in members.items():
        results[edit_id] = results[group_id]
        results[group_id]["edited_cells"] = sorted({e.cell for e in mutations + alternatives
                                                    if members.get(e.id) == group_id})
    _GRADED[name] = results
    return results
