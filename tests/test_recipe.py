"""CONTRIBUTING.md's recipe "Add an assignment", followed for a tiny new assignment (ps7) in a copy of the grader in a
temporary folder: the files the recipe names are the files written, `python -m grader release ps7` makes the student
notebook, and the real `python -m grader grade` gives the solution full marks and the blank notebook 0. If the
recipe and the code drift apart, this fails."""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

NAME = "ps7"

SOURCE = '''# %% [markdown] id="intro"
# # Problem set 7: attention scores
#
# Points: attention_scores {{ points.attention_scores }}.

# %% nbgrader="given" id="setup"
import torch

# %% nbgrader="solution" id="attention_scores"
def attention_scores(queries, keys):
    """queries: (..., T_q, d_k), keys: (..., T_k, d_k) -> (..., T_q, T_k), not scaled."""
    ### BEGIN SOLUTION
    return queries @ keys.transpose(-2, -1)
    ### END SOLUTION

# %% nbgrader="tests" id="test_attention_scores"
q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
assert attention_scores(q, k).shape == (2, 3, 5)
### BEGIN HIDDEN TESTS
assert torch.allclose(attention_scores(q, k), torch.einsum("bqd,bkd->bqk", q, k), atol=1e-5)
### END HIDDEN TESTS
'''

MODULE = '''"""ps7, attention scores (a recipe test's assignment): tasks, probe cases."""
from __future__ import annotations

from grader.assignments.spec import Assignment, Task
from grader.verify.cases import call_case, with_params


def cases(seed: int, source_nb=None, keys=None) -> list:
    return with_params([call_case("attention_scores", "batched", "attention_scores", seed,
                                  {"queries": (2, 3, 4), "keys": (2, 6, 4)})], reference="scores")


ASSIGNMENT = Assignment("ps7", "Attention scores", ("book/01_one_head",),
                        (Task("attention_scores", 2, ("attention_scores",), "attention_scores(queries, keys)"),),
                        cases=cases)
'''


def recipe_files() -> dict[str, str]:
    """{path with psN made ps7: its 'New?' column} from CONTRIBUTING.md's table under "Add an assignment"."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    section = text.split("## Add an assignment", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", section, re.M)
    assert rows, "CONTRIBUTING.md's recipe has no table of files"
    return {path.replace("psN", NAME): new.strip() for path, new in rows}


def copy_of_the_grader(dest: Path) -> Path:
    """What the grader needs of the repository (its package, nbgrader's config, the vendored MathJax the feedback
    pages copy), without the course's assignments' sources."""
    shutil.copytree(REPO / "grader", dest / "grader", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "nbgrader_config.py", dest / "nbgrader_config.py")
    (dest / "book").mkdir()
    (dest / "book" / "_vendor").symlink_to(REPO / "book" / "_vendor")
    return dest


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    proc = subprocess.run([sys.executable, "-m", "grader", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_recipe_adds_an_assignment_that_releases_and_grades(tmp_path):
    repo = copy_of_the_grader(tmp_path / "repo")
    recipe = recipe_files()
    written = set()

    # The files the recipe names, as it names them.
    source = repo / "solutions" / NAME / f"{NAME}.py"
    source.parent.mkdir(parents=True)
    source.write_text(SOURCE)
    written.add(f"solutions/{NAME}/{NAME}.py")
    (repo / "grader" / "assignments" / f"{NAME}.py").write_text(MODULE)
    written.add(f"grader/assignments/{NAME}.py")
    registry = repo / "grader" / "assignments" / "__init__.py"
    text = registry.read_text()
    line = re.search(r"^MODULES = \(.*\)$", text, re.M)
    assert line, "the registry is no longer one MODULES line: update the recipe"
    registry.write_text(text.replace(line.group(0), line.group(0).replace(")", f', "{NAME}")')))
    written.add("grader/assignments/__init__.py")
    assert written <= set(recipe), f"the recipe does not name {sorted(written - set(recipe))}"
    optional = {path for path, new in recipe.items() if "only" in new or path.startswith("tests/")}
    assert set(recipe) - written <= optional, f"the recipe names files a new assignment does not need: " \
                                              f"{sorted(set(recipe) - written - optional)}"

    # Released: the nbgrader source notebook is built beside the source, the student notebook in exercises/.
    run(["release", NAME], repo)
    solution_nb = repo / "solutions" / NAME / f"{NAME}.ipynb"
    blank_nb = repo / "exercises" / NAME / f"{NAME}.ipynb"
    assert solution_nb.is_file() and blank_nb.is_file()
    assert sorted(p.name for p in blank_nb.parent.iterdir()) == [f"{NAME}.ipynb"], "the source was shipped"
    assert "BEGIN HIDDEN TESTS" not in blank_nb.read_text() and "queries @ keys" not in blank_nb.read_text()

    # Graded through the real command: the solution full marks, the blank notebook 0.
    subs = tmp_path / "submissions"
    for student, notebook in (("ada", solution_nb), ("ben", blank_nb)):
        (subs / student).mkdir(parents=True)
        shutil.copy2(notebook, subs / student / f"{NAME}.ipynb")
    run(["grade", NAME, str(subs), "--out", str(tmp_path / "out")], repo)
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f)}
    assert {sid: (row["status"], float(row["score"]), float(row["max_score"])) for sid, row in rows.items()} == {
        "ada": ("graded", 2.0, 2.0), "ben": ("graded", 0.0, 2.0)}, rows
