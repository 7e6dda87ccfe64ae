"""Every catalogued bug, planted from its recipe (grader/bugs.py), through the real ``grade`` and ``check``.

One ``python -m grader grade`` run per assignment grades a class made of: the solution, the blank notebook, the
solution with each recipe of that assignment planted, and correct modules written differently (the alternatives,
among them a fused projection laid out per head and weights held as plain parameters). Each planted bug must cost
its task points (exactly its check's when the recipe names one) with a message that names that bug and no other;
every alternative keeps every point. The same planted notebooks through ``python -m grader check`` (visible tests
only) must never name another bug than the one planted.
"""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from docutils.nodes import make_id

from grader.assignments import ASSIGNMENTS
from grader.bench_grading import honest_copy
from grader.bugs import BY_CODE, CATALOGUE, anchor
from mutations import layouts
from mutations.ps123 import DEPENDS
from mutations.ps123_alternatives import ALTERNATIVES

REPO = Path(__file__).resolve().parents[1]
PLANTED_IN = ("ps1", "ps2", "ps3", "ps4")

# Bugs whose references give the same numbers on some of a check's inputs, so that a message may name both (joined
# by " or "): at d_in == d_out, sqrt(d_in) is sqrt(d_out).
SAME_NUMBERS = {"scale_d_in": {"scale_width"}, "scale_width": {"scale_d_in"}}

# Correct modules written differently, per assignment: {student id: (cell, code)}.
CORRECT = {ps: {f"alt_{alt.id}": (alt.cell, alt.code) for alt in ALTERNATIVES if alt.assignment == ps}
           for ps in PLANTED_IN}
CORRECT["ps3"].update({"alt_fused_per_head": ("multi_head_attention", layouts.MHA_FUSED_PER_HEAD),
                       "alt_parameters_linear_layout": ("multi_head_attention", layouts.MHA_PARAMETERS_LINEAR_LAYOUT)})


def planted(assignment: str) -> dict[str, tuple]:
    """{student id: (bug, recipe)} for every recipe of ``assignment`` in the catalogue."""
    return {f"{bug.code}_{index}": (bug, recipe) for bug in CATALOGUE
            for index, recipe in enumerate(bug.recipes) if recipe.assignment == assignment}


def _solution(assignment: str) -> nbformat.NotebookNode:
    return honest_copy(nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4))


def planted_notebook(assignment: str, recipe) -> nbformat.NotebookNode:
    nb = _solution(assignment)
    cell = next(c for c in nb.cells if c.get("id") == recipe.cell)
    for old, new in recipe.replacements:
        assert cell.source.count(old) == 1, f"{old!r} must occur once in {assignment} {recipe.cell}"
        cell.source = cell.source.replace(old, new)
    return nb


def correct_notebook(assignment: str, cell_id: str, code: str) -> nbformat.NotebookNode:
    nb = _solution(assignment)
    next(c for c in nb.cells if c.get("id") == cell_id).source = code.strip() + "\n"
    return nb


def named_codes(message: str) -> set[str]:
    return {bug.code for bug in CATALOGUE if bug.name in message and bug.code != "mismatch"}


# --------------------------------------------------------------------------------------------- the catalogue
def test_every_recipe_plants_into_its_solution_cell():
    for assignment in PLANTED_IN:
        for student, (bug, recipe) in planted(assignment).items():
            planted_notebook(assignment, recipe)          # asserts each old text occurs once
            task = ASSIGNMENTS[assignment].task(recipe.task)
            if recipe.check is not None:
                assert recipe.check in {c.name for c in task.checks}, (student, recipe.check)


def test_every_lesson_is_a_section_of_its_chapter_and_every_hint_a_question():
    for bug in CATALOGUE:
        if bug.code == "mismatch":
            continue
        chapter, title = bug.lesson
        headings = re.findall(r"^#+ (.+)$", (REPO / chapter).read_text(), flags=re.M)
        assert title in headings, (bug.code, title)
        assert anchor(title) == make_id(title), (bug.code, title)
        # a question on one line, never a statement of code (no assignment, definition or return)
        assert bug.hint.endswith("?") and "\n" not in bug.hint, (bug.code, bug.hint)
        assert not re.search(r"(^|\s)(def|return|import)\s| = |\)\.", bug.hint), (bug.code, bug.hint)
        assert bug.reference, bug.code


def test_importing_the_catalogue_does_not_import_torch():
    code = "import sys, grader.bugs; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ------------------------------------------------------------------------------------------- grade and check
@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    cache: dict[str, tuple[Path, dict]] = {}

    def graded(assignment: str) -> tuple[Path, dict]:
        if assignment in cache:
            return cache[assignment]
        root = tmp_path_factory.mktemp(f"catalogue-{assignment}")
        subs, out = root / "submissions", root / "out"
        students = {"solution": _solution(assignment),
                    "blank": nbformat.read(REPO / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)}
        students.update({s: planted_notebook(assignment, r) for s, (_, r) in planted(assignment).items()})
        students.update({s: correct_notebook(assignment, *cell_code) for s, cell_code in CORRECT[assignment].items()})
        for student, nb in students.items():
            (subs / student).mkdir(parents=True)
            nbformat.write(nb, subs / student / f"{assignment}.ipynb")
        proc = subprocess.run([sys.executable, "-m", "grader", "grade", assignment, str(subs), "--out", str(out),
                               "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=2400)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows: dict[str, dict[str, dict]] = {}
        with open(out / "tasks.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                rows.setdefault(row["student_id"], {})[row["task"]] = row
        cache[assignment] = (subs, rows)
        return cache[assignment]
    return graded


CASES = [(a, s) for a in PLANTED_IN for s in planted(a)]


@pytest.mark.slow
@pytest.mark.parametrize("assignment, student", CASES, ids=[f"{a}-{s}" for a, s in CASES])
def test_a_planted_bug_costs_its_check_and_is_named(classes, assignment, student):
    _, rows = classes(assignment)
    bug, recipe = planted(assignment)[student]
    row = rows[student][recipe.task]
    score, top = float(row["score"]), float(row["max_score"])
    assert score < top, row
    if recipe.check is not None:
        check = next(c for c in ASSIGNMENTS[assignment].task(recipe.task).checks if c.name == recipe.check)
        assert score == top - check.points, row
    names = named_codes(row["message"])
    assert bug.code in names, row["message"]
    assert names <= {bug.code} | SAME_NUMBERS.get(bug.code, set()), f"names a bug not planted: {row['message']}"
    for task, other in rows[student].items():        # no collateral damage beyond the tasks built on the cell
        if task != recipe.task and recipe.cell not in DEPENDS.get(assignment, {}).get(task, set()):
            assert float(other["score"]) == float(other["max_score"]), (task, other)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", PLANTED_IN)
def test_the_solution_and_every_correct_alternative_keep_full_marks(classes, assignment):
    _, rows = classes(assignment)
    for student in ["solution", *CORRECT[assignment]]:
        for task, row in rows[student].items():
            assert float(row["score"]) == float(row["max_score"]), (student, task, row)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", PLANTED_IN)
def test_the_blank_notebook_scores_nothing_and_says_not_attempted(classes, assignment):
    _, rows = classes(assignment)
    for task, row in rows["blank"].items():
        assert float(row["score"]) == 0.0, row
        assert "the probe failed" not in row["message"], row
    code_tasks = [t.name for t in ASSIGNMENTS[assignment].tasks if t.kind == "code"]
    assert any("not attempted" in rows["blank"][task]["message"] for task in code_tasks), rows["blank"]


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ("ps2", "ps3"))
def test_grader_check_names_only_the_planted_bug(classes, assignment):
    """The visible tests, run by ``grader check`` on the same planted notebooks, name no other bug, and what they
    name the grade names too."""
    subs, rows = classes(assignment)
    for student, (bug, recipe) in planted(assignment).items():
        proc = subprocess.run([sys.executable, "-m", "grader", "check", str(subs / student / f"{assignment}.ipynb")],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        line = next((ln for ln in proc.stdout.splitlines() if ln.strip().startswith(recipe.task + " ")), "")
        assert line, proc.stdout + proc.stderr
        names = named_codes(line)
        assert names <= {bug.code} | SAME_NUMBERS.get(bug.code, set()), (student, line)
        assert names <= named_codes(rows[student][recipe.task]["message"]), (student, line)
        assert not line.rstrip().endswith("..."), line     # never cut


def test_the_catalogue_counts():
    """What the catalogue holds (reported in the issue's note): every bug but the no-name fallback has a
    reference, and every bug of the chapter's module a recipe."""
    with_reference = [bug for bug in CATALOGUE if bug.reference]
    assert len(with_reference) == len(CATALOGUE) - 1 and not BY_CODE["mismatch"].reference
    module_bugs = [bug for bug in CATALOGUE if isinstance(bug.reference, tuple) and bug.reference]
    assert all(bug.recipes for bug in module_bugs), [b.code for b in module_bugs if not b.recipes]
