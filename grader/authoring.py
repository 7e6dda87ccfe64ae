"""An assignment's source, as its author writes it: ``solutions/<name>/<name>.py``, a jupytext percent notebook.

Each cell starts with a ``# %%`` line that gives its id and, for code, its nbgrader role:

    # %% [markdown] id="md-scores"                       prose (a markdown cell)
    # %% nbgrader="given" id="setup"                      read-only code every student receives as is
    # %% nbgrader="solution" id="attention_scores"       the student's cell: ### BEGIN/END SOLUTION become the stub
    # %% nbgrader="tests" id="test_attention_scores"     the task's autograded tests (### BEGIN/END HIDDEN TESTS)
    # %% id="experiments"                                 a free cell: neither graded nor locked

The id is the cell's nbgrader ``grade_id`` (a solution cell's id is its task's name, a test cell's is
``test_<task>``). Points are not written here: a test cell gets its task's points from the assignment's module
(``grader/assignments/<name>.py``), the one place they are written. Every cell is a Jinja template (its text
unchanged where it has no ``{{``, ``{%`` or ``{#``) that sees ``points`` ({task: points}) and ``keys`` (the answer
keys of ``answer_key.json`` beside the source), with the filter ``py`` (a value as a Python literal, JSON's
spelling), so a hidden test or a table of points is written from the same data the grader reads.

:func:`build` turns the source into the nbgrader source notebook ``<name>.ipynb`` beside it (solutions and hidden
tests included, never shipped); ``python -m grader release`` calls it before making the student notebook. The
output is deterministic: the same source gives the same bytes (``tests/test_authoring.py`` checks the committed
notebooks against their sources).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

KINDS = ("given", "solution", "tests")
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


class SourceError(ValueError):
    """A source notebook that cannot be built: the message names the file and the cell."""


def source_path(folder: Path) -> Path:
    """``<folder>/<folder name>.py``: the source notebook of the assignment kept in ``folder``."""
    return Path(folder) / f"{Path(folder).name}.py"


def _nbgrader(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _render(text: str, context: dict, where: str) -> str:
    """The cell's text with its Jinja expressions filled in (raises SourceError naming ``where``)."""
    if not any(tag in text for tag in ("{{", "{%", "{#")):
        return text
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["py"] = lambda value: json.dumps(value, ensure_ascii=False)
    try:
        return env.from_string(text).render(**context)
    except jinja2.TemplateError as err:
        raise SourceError(f"{where}: {type(err).__name__}: {err}") from None


def notebook(folder: Path, points: dict[str, int] | None = None):
    """The nbgrader source notebook (an ``nbformat`` node) built from ``folder``'s source notebook.

    ``points`` ({task: points}) defaults to the registered assignment's (``grader.assignments``). Raises
    SourceError for a cell without an id, an unknown role, a test cell of an unknown task, or an unknown name in a
    template; FileNotFoundError without a source."""
    import jupytext
    import nbformat

    folder = Path(folder)
    path = source_path(folder)
    if points is None:
        from grader.assignments import get

        assignment = get(folder.name)
        if assignment is None:
            raise SourceError(f"{path}: {folder.name} is not in grader/assignments/ (MODULES): its points are unknown")
        points = {task.name: task.points for task in assignment.tasks}
    keys_file = folder / "answer_key.json"
    keys = json.loads(keys_file.read_text(encoding="utf-8")) if keys_file.exists() else {}
    context = {"points": points, "keys": keys}

    cells = []
    for index, cell in enumerate(jupytext.read(path, fmt="py:percent").cells):
        meta = cell.metadata
        cell_id, kind = meta.get("id"), meta.get("nbgrader")
        where = f"{path}, cell {index + 1}" + (f" ({cell_id})" if cell_id else "")
        if not cell_id:
            raise SourceError(f"{where}: no id (write the cell's header as # %% ... id=\"name\")")
        text = _render(cell.source, context, where)
        if cell.cell_type == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(text, id=cell_id))
        elif kind is None:
            cells.append(nbformat.v4.new_code_cell(text, id=cell_id))
        elif kind == "given":
            cells.append(nbformat.v4.new_code_cell(text, id=cell_id, metadata=_nbgrader(
                cell_id, grade=False, solution=False, locked=True)))
        elif kind == "solution":
            cells.append(nbformat.v4.new_code_cell(text, id=cell_id, metadata=_nbgrader(
                cell_id, grade=False, solution=True, locked=False)))
        elif kind == "tests":
            task = cell_id[len("test_"):] if cell_id.startswith("test_") else None
            if task not in points:
                raise SourceError(f"{where}: a test cell's id is test_<task> for a declared task "
                                  f"({', '.join(points)})")
            cells.append(nbformat.v4.new_code_cell(text, id=cell_id, metadata=_nbgrader(
                cell_id, grade=True, solution=False, locked=True, points=points[task])))
        else:
            raise SourceError(f"{where}: nbgrader={kind!r}; a code cell's role is one of {', '.join(KINDS)}")
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    nbformat.validate(nb)
    return nb


def notebook_text(folder: Path, points: dict[str, int] | None = None) -> str:
    """The bytes (as text) of ``<folder>/<name>.ipynb`` as :func:`build` writes them."""
    import nbformat

    return nbformat.writes(notebook(folder, points)) + "\n"


def build(folder: Path, points: dict[str, int] | None = None) -> Path:
    """Write ``<folder>/<name>.ipynb`` from the source notebook; returns its path.

    The file is replaced in one step (other processes never read half of it) and left alone when its bytes would
    not change."""
    folder = Path(folder)
    target = folder / f"{folder.name}.ipynb"
    text = notebook_text(folder, points)
    if target.exists() and target.read_text(encoding="utf-8") == text:
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target
