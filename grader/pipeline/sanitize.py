"""Stage 2, sanitize: turn a submission's bytes into the notebook that will run.

nbgrader's autograde semantics, done on a copy in memory:
- a cell the student may edit (an nbgrader solution cell) keeps the student's code;
- every test cell and read-only cell is taken from the instructor's source: edited ones are restored, deleted
  ones are put back where they belong, and the hidden tests (stripped from the release) are in them again;
- cells the student added are kept where the student put them; a second copy of a graded cell loses its grading;
- cells whose nbgrader metadata an editor stripped are matched to the source's by content and position.
Bytes that are not UTF-8 are replaced (and said so), duplicated or missing cell ids are renumbered.

A notebook no person writes is refused as ``invalid_notebook`` before anything else reads it: JSON nested deeper
than notebooks are, more cells or more code than any real notebook holds, cells whose parts are not text. Each
limit is far above the course's own notebooks (at most 26 cells, 36,000 characters, nesting 6) and keeps one
submission's cost to the grader (the code read for integrity flags, the feedback page) within seconds and
megabytes, whatever the file holds.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grader.pipeline.types import Submission, grade_id, nbgrader_meta
from grader.pipeline.collect import MAX_NOTEBOOK_BYTES

MAX_CELLS = 2000
MAX_SOURCE_CHARS = 500_000     # all cells' text together; reading 8 MB of code cost the grader 40 s and 3 GB
MAX_DEPTH = 100                # JSON nesting; a notebook's is about 6, widget state a few more

MISSING_ANSWER = "# This answer cell was missing from the submitted notebook.\nraise NotImplementedError()"


class Rejected(Exception):
    """The submission cannot be graded; carries the status and the message for the student."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def is_answer_cell(cell: dict) -> bool:
    """A cell whose content is the student's (nbgrader: solution, not a test)."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("solution")) and not meta.get("grade")


HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def strip_hidden(text: str, placeholder: str | None = None) -> str:
    """The text without nbgrader's hidden-test blocks (markers included), as the release shows it."""
    kept, hiding = [], False
    for line in text.splitlines(keepends=True):
        if line.strip() == HIDDEN_BEGIN:
            hiding = True
            if placeholder is not None:
                kept.append(line[: len(line) - len(line.lstrip())] + placeholder + "\n")
            continue
        if line.strip() == HIDDEN_END:
            hiding = False
            continue
        if not hiding:
            kept.append(line)
    return "".join(kept)


def load_source(path: Path) -> NotebookNode:
    return nbformat.read(str(path), as_version=4)


def decode(sub: Submission) -> dict:
    """Bytes -> the notebook's JSON, or Rejected('invalid_notebook', why)."""
    data = sub.notebook_bytes or b""
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise Rejected("invalid_notebook", f"The notebook is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB; "
                                           "clear its outputs and submit it again.")
    if not data.strip():
        raise Rejected("invalid_notebook", f"{sub.notebook_name} is an empty file ({len(data)} bytes): "
                                           "save the notebook in Jupyter and submit it again.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # A stray byte (often from a text editor using another encoding) should not cost the whole grade.
        text = data.decode("utf-8", errors="replace")
        sub.notes.append(f"The file contains bytes that are not UTF-8 (first at byte {err.start}); they were "
                         "replaced by \N{REPLACEMENT CHARACTER}.")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        raise Rejected("invalid_notebook", f"{sub.notebook_name} is not valid notebook JSON ({err.msg}: line "
                                           f"{err.lineno}, column {err.colno}); it may have been edited outside "
                                           "Jupyter or cut short.") from None
    except RecursionError:    # Python's decoder gives up near 1,000 levels
        raise Rejected("invalid_notebook", too_deep(sub.notebook_name)) from None
    if isinstance(content, dict) and content.get("nbformat") == 3:
        content = upgrade_v3(content, sub)
    if not isinstance(content, dict) or not isinstance(content.get("cells"), list):
        raise Rejected("invalid_notebook", f"{sub.notebook_name} is JSON but not a notebook (no list of cells).")
    check_shape(content, sub.notebook_name)
    return content


def upgrade_v3(content: dict, sub: Submission) -> dict:
    """An nbformat-3 notebook (worksheets of cells) as nbformat 4, by nbformat's own converter."""
    if json_depth(content, MAX_DEPTH) > MAX_DEPTH:     # the converter recurses; refuse before it can
        raise Rejected("invalid_notebook", too_deep(sub.notebook_name))
    try:
        content = json.loads(nbformat.writes(nbformat.convert(nbformat.from_dict(content), 4)))
    except Exception as err:   # noqa: BLE001 - whatever the converter trips on, the file is not a notebook
        raise Rejected("invalid_notebook", f"{sub.notebook_name} is in the old nbformat 3 but could not be "
                                           f"converted to nbformat 4 ({type(err).__name__}); open it in "
                                           "Jupyter, save it and submit it again.") from None
    sub.notes.append("The notebook was saved in the old nbformat 3; it was converted to nbformat 4.")
    return content


def too_deep(name: str) -> str:
    return (f"{name} is JSON nested more than {MAX_DEPTH} levels deep, which no notebook is (a saved notebook "
            "is nested about 6 levels); it was not made by Jupyter.")


def json_depth(value, limit: int) -> int:
    """How deep `value` nests, counted without recursion and stopping once past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_shape(content: dict, name: str) -> None:
    """Refuse (invalid_notebook) what no notebook looks like, before any other stage walks it."""
    cells = content["cells"]
    if len(cells) > MAX_CELLS:
        raise Rejected("invalid_notebook", f"{name} has {len(cells):,} cells; a notebook may have at most "
                                           f"{MAX_CELLS:,} (the course's longest has fewer than 30). Delete the "
                                           "cells you added and submit it again.")
    if json_depth(content, MAX_DEPTH) > MAX_DEPTH:
        raise Rejected("invalid_notebook", too_deep(name))
    total = 0
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict):
            continue            # not a cell: dropped by restore
        source = cell.get("source", "")
        if not (isinstance(source, str) or (isinstance(source, list) and all(isinstance(s, str) for s in source))):
            raise Rejected("invalid_notebook", f"Cell {number} of {name} has a source that is not text; the "
                                               "notebook was not saved by Jupyter.")
        total += len(source) if isinstance(source, str) else sum(map(len, source))
    if total > MAX_SOURCE_CHARS:
        raise Rejected("invalid_notebook", f"{name}'s cells hold {total:,} characters of code and text; a notebook "
                                           f"may hold at most {MAX_SOURCE_CHARS:,} (the course's longest holds "
                                           "about 36,000). Remove pasted data or outputs and submit it again.")


def _cell_text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def which_assignment(student_ids: set[str]) -> str | None:
    """The course assignment whose tasks match these grade ids best, if any."""
    try:
        from grader.assignments import ASSIGNMENTS
    except ImportError:     # the student kit (grader.student_kit) has no assignment specs: its released notebooks
        return _released_assignment(student_ids)

    best, best_hits = None, 0
    for name, assignment in ASSIGNMENTS.items():
        known = {t.name for t in assignment.tasks} | {"test_" + t.name for t in assignment.tasks}
        hits = len(student_ids & known)
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def _released_assignment(student_ids: set[str]) -> str | None:
    """The released notebook (exercises/<name>/<name>.ipynb) sharing the most grade ids with these, if any."""
    from grader.paths import EXERCISES

    best, best_hits = None, 0
    for path in sorted(EXERCISES.glob("*/*.ipynb")):
        ids = {grade_id(c) for c in json.loads(path.read_text(encoding="utf-8")).get("cells", [])}
        hits = len(student_ids & ids)
        if hits > best_hits and path.stem == path.parent.name:
            best, best_hits = path.stem, hits
    return best


def first_code_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")),
                "")


def match_unlabelled(student_cells: list[dict], source: NotebookNode) -> tuple[dict[int, str], dict[int, str]]:
    """Grade ids for the student's cells that carry none (an editor stripped the cells' metadata), as two maps
    {student cell index: grade id}: by content, and by position.

    A test or read-only cell matches an unlabelled cell holding exactly its released text (hidden tests cut); it
    is then run as the source's cell, so a match can only put the instructor's cells back, never remove one.
    Answer cells match, in order, the unlabelled cells between the graded cells found around them, leaving out the
    course's ungraded cells (text, scratch cells) as released; when the counts differ, only cells whose first line
    of code is the source answer's (e.g. `def attention_scores(queries, keys):`) are kept; else none is matched.
    """
    graded = [c for c in source.cells if grade_id(c)]
    labelled = {grade_id(c) for c in student_cells if grade_id(c)}
    unlabelled = [i for i, c in enumerate(student_cells) if not grade_id(c)]
    by_content: dict[int, str] = {}
    for src_cell in graded:
        gid = grade_id(src_cell)
        if gid in labelled or is_answer_cell(src_cell):
            continue
        released = strip_hidden(_cell_text(src_cell)).strip()
        for index in unlabelled:
            cell = student_cells[index]
            if index not in by_content and cell.get("cell_type") == src_cell.cell_type and \
                    _cell_text(cell).strip() == released:
                by_content[index] = gid
                break

    where: dict[str, int] = {}          # grade id -> the student's cell that holds it (the first copy)
    for index, cell in enumerate(student_cells):
        gid = grade_id(cell) or by_content.get(index)
        if gid:
            where.setdefault(gid, index)
    course_texts = {_cell_text(c).strip() for c in source.cells if not grade_id(c)}
    by_position: dict[int, str] = {}
    start = 0
    while start < len(graded):
        if grade_id(graded[start]) in where:
            start += 1
            continue
        end = start
        while end < len(graded) and grade_id(graded[end]) not in where:
            end += 1
        # graded[start:end] are not in the notebook; look between the cells the student has on either side.
        answers = [c for c in graded[start:end] if is_answer_cell(c)]
        low = where[grade_id(graded[start - 1])] if start else -1
        high = where[grade_id(graded[end])] if end < len(graded) else len(student_cells)
        start = end
        gap = [i for i in unlabelled if low < i < high and i not in by_content
               and _cell_text(student_cells[i]).strip() not in course_texts]   # the course's ungraded cells
        if len(gap) != len(answers):
            firsts = {first_code_line(_cell_text(c)) for c in answers} - {""}
            gap = [i for i in gap if first_code_line(_cell_text(student_cells[i])) in firsts]
        if answers and len(gap) == len(answers) and \
                all(student_cells[i].get("cell_type") == c.cell_type for i, c in zip(gap, answers)):
            by_position.update((i, grade_id(c)) for i, c in zip(gap, answers))
    return by_content, by_position


def restore(content: dict, source: NotebookNode, assignment: str, sub: Submission) -> NotebookNode:
    """The notebook to run: the student's answers inside the source's test and read-only cells."""
    source_by_id = {grade_id(c): c for c in source.cells if grade_id(c)}
    student_cells = [c for c in content["cells"] if isinstance(c, dict)]
    student_ids = {grade_id(c) for c in student_cells if grade_id(c)}
    if student_ids and not student_ids & set(source_by_id):
        other = which_assignment(student_ids)
        where = f"assignment {other}'s" if other and other != assignment else "another assignment's"
        raise Rejected("wrong_assignment", f"This is {where} notebook, not {assignment}'s: none of {assignment}'s "
                                           "cells are in it. Submit the right notebook.")
    by_content, by_position = match_unlabelled(student_cells, source)
    matched = {**by_content, **by_position}
    if not student_ids & set(source_by_id) and not by_content:
        raise Rejected("wrong_assignment", f"No cell of {assignment}'s notebook was found (the graded cells' "
                                           "metadata is gone, e.g. the code was pasted into a new notebook). "
                                           f"Download {assignment} again and copy your answers into it.")

    # The cell that takes each grade id's role: the student's LAST copy of an answer (the definition they wrote
    # last, as running the notebook top to bottom leaves it), the first copy of a test (its code is the source's).
    chosen: dict[str, int] = {}
    copies: dict[str, int] = {}
    for index, cell in enumerate(student_cells):
        gid = grade_id(cell) or matched.get(index)
        if gid in source_by_id:
            copies[gid] = copies.get(gid, 0) + 1
            if is_answer_cell(source_by_id[gid]) or gid not in chosen:
                chosen[gid] = index

    out: list[NotebookNode] = []
    placed: dict[str, int] = {}
    edited_tests, extra_copies = [], 0
    for index, cell in enumerate(student_cells):
        gid = grade_id(cell) or matched.get(index)
        if gid in source_by_id and chosen.get(gid) == index:
            src_cell = source_by_id[gid]
            if is_answer_cell(src_cell):
                new = nbformat.from_dict(json.loads(json.dumps(src_cell)))
                new.source = _cell_text(cell)
            else:
                if nbgrader_meta(src_cell).get("grade") and \
                        _cell_text(cell).strip() != strip_hidden(_cell_text(src_cell)).strip():
                    edited_tests.append(gid)
                new = nbformat.from_dict(json.loads(json.dumps(src_cell)))
            new.metadata["grader"] = {"origin": "source" if not is_answer_cell(src_cell) else "student"}
            placed[gid] = len(out)
            out.append(new)
            continue
        # A cell the student added, or a second copy of a graded cell: keep its code, never its grading role.
        if gid:
            extra_copies += 1
            if gid in source_by_id and not is_answer_cell(source_by_id[gid]):
                continue
        cell_type = cell.get("cell_type") if cell.get("cell_type") in ("code", "markdown", "raw") else "raw"
        maker = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                 "raw": nbformat.v4.new_raw_cell}[cell_type]
        new = maker(_cell_text(cell))
        new.metadata["grader"] = {"origin": "student"}
        out.append(new)

    # Put back graded cells the student deleted, right after the source cell that precedes them.
    deleted = []
    previous = None
    for src_cell in source.cells:
        gid = grade_id(src_cell)
        if not gid:
            continue
        if gid not in placed:
            new = nbformat.from_dict(json.loads(json.dumps(src_cell)))
            if is_answer_cell(src_cell):
                new.source = MISSING_ANSWER if src_cell.cell_type == "code" else "YOUR ANSWER HERE"
            new.metadata["grader"] = {"origin": "restored"}
            at = placed[previous] + 1 if previous in placed else 0
            out.insert(at, new)
            placed = {k: (v + 1 if v >= at else v) for k, v in placed.items()}
            placed[gid] = at
            deleted.append(gid)
        previous = gid
    moved = run_tests_after_answers(out, source)

    if matched:
        # Not the student's doing: Jupyter keeps the metadata, some editors and converters drop it.
        names = [gid for index, gid in sorted(matched.items())]
        sub.notes.append(f"The grading metadata of {len(names)} cell(s) was missing (an editor may have stripped "
                         "it); they were matched to the assignment's cells by their content and position: "
                         f"{', '.join(names)}.")
    if deleted and matched:
        sub.notes.append(f"Cells that could not be found were restored from the assignment: {', '.join(deleted)}.")
    elif deleted:
        sub.notes.append(f"Deleted cells were restored from the assignment: {', '.join(deleted)}.")
    if edited_tests:
        sub.notes.append(f"Edited test cells were restored from the assignment: {', '.join(edited_tests)}.")
    repeated = sorted(gid for gid, n in copies.items() if n > 1 and is_answer_cell(source_by_id[gid]))
    if repeated:
        sub.notes.append(f"Answer cells that appear more than once were graded by their last copy (the earlier "
                         f"copies ran as ordinary cells where they stand): {', '.join(repeated)}.")
    if extra_copies > sum(copies[gid] - 1 for gid in repeated):
        sub.notes.append("Copies of test cells were left out; each test ran once, as the assignment has it.")
    if moved:
        sub.notes.append(f"Test cells that stood above an answer the assignment puts before them (or above its graded "
                         f"copy) were run after that answer: {', '.join(moved)}.")
    ids = [c.get("id") for c in student_cells if isinstance(c.get("id"), str) and c.get("id")]
    if len(ids) != len(set(ids)):
        sub.notes.append("Duplicated cell ids were renumbered.")

    metadata = {key: source.metadata[key] for key in ("kernelspec", "language_info") if key in source.metadata}
    nb = nbformat.v4.new_notebook(cells=out, metadata=metadata)
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index:03d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def run_tests_after_answers(cells: list[NotebookNode], source: NotebookNode) -> list[str]:
    """Move each test cell that stands above an answer cell it follows in the source to just after the last such
    answer (in place, in the source's order), so a test moved above its answer tests the student's code instead of
    failing on a name not yet defined. Returns the grade ids of the test cells moved."""
    moved, answers = [], []
    for src_cell in source.cells:
        gid = grade_id(src_cell)
        if gid and is_answer_cell(src_cell):
            answers.append(gid)
        elif gid and nbgrader_meta(src_cell).get("grade"):
            where = {grade_id(c): i for i, c in enumerate(cells) if grade_id(c)}
            last = max((where[a] for a in answers if a in where), default=-1)
            if where.get(gid, last) < last:
                cells.insert(last, cells.pop(where[gid]))     # popped first: `last` is now just after the answer
                moved.append(gid)
    return moved


def append_probes(nb: NotebookNode, probes: list[str]) -> None:
    """Verification cells (grader.verify) run after the student's cells and are dropped before feedback."""
    for index, code in enumerate(probes):
        cell = nbformat.v4.new_code_cell(code)
        cell.id = f"probe-{index:03d}"
        cell.metadata["grader"] = {"probe": True, "origin": "probe"}
        nb.cells.append(cell)


def sanitize(sub: Submission, source: NotebookNode, assignment: str) -> tuple[NotebookNode, dict]:
    """Returns the notebook to run and the student's notebook JSON as submitted (for integrity checks)."""
    if sub.notebook_bytes is None:
        listed = ", ".join(sub.extra_files[:5]) or "nothing"
        raise Rejected("missing_notebook", f"No notebook (.ipynb) was found in the submission (it holds: {listed}).")
    content = decode(sub)
    return restore(content, source, assignment, sub), content
