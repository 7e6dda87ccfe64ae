"""The student kit (``python -m grader student-kit DIR``, grader.student_kit): every file of it is scanned for what
students must never receive (solution code, hidden tests, answer keys, planted bugs, cheats, correct alternatives),
and ``grader check`` runs from it alone, in a fresh folder, with only the kit on PYTHONPATH (issue 25).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from grader.bench_grading import honest_copy
from grader.pipeline.sanitize import HIDDEN_BEGIN, HIDDEN_END, is_answer_cell
from grader.student_kit import INSTRUCTOR_PLUGINS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from mutations.ps123 import MUTATIONS  # noqa: E402
from mutations.ps123_alternatives import ALTERNATIVES  # noqa: E402

SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
MIN_LINE = 32       # fewer characters ("return x", "dim=-1)") are everyday code, not a solution's fingerprint
WINDOW = 2          # consecutive lines: a single generic line (`except RuntimeError as err:`) is in any program


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("kit") / "mha-student-kit"
    proc = subprocess.run([sys.executable, "-m", "grader", "student-kit", str(dest)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return dest


def kit_texts(kit: Path) -> dict[str, str]:
    return {p.relative_to(kit).as_posix(): p.read_text(encoding="utf-8") for p in sorted(kit.rglob("*"))
            if p.is_file()}


def file_lines(name: str, text: str) -> set[tuple[str, ...]]:
    """The runs of consecutive code lines a file shows (a notebook: each cell's source, and its outputs), and each
    of its lines alone (a fingerprint shorter than WINDOW is one line)."""
    parts = [text]
    if name.endswith(".ipynb"):
        notebook = nbformat.reads(text, as_version=4)
        parts = [c.source for c in notebook.cells] + [json.dumps(c.get("outputs", []), indent=1)
                                                      for c in notebook.cells]
    shown = set()
    for part in parts:
        lines = code_lines(part)
        shown |= {tuple(lines[i:i + WINDOW]) for i in range(len(lines))} | {(line,) for line in lines}
    return shown


def released_lines() -> set[str]:
    """Every stripped line of the released notebooks' cells: what students get anyway."""
    lines = set()
    for path in (REPO / "exercises").glob("*/*.ipynb"):
        for cell in nbformat.read(str(path), as_version=4).cells:
            lines |= {line.strip() for line in cell.source.splitlines()}
    return lines


def code_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def windows(lines: list[str]) -> set[tuple[str, ...]]:
    """Every run of WINDOW consecutive lines (the whole text when shorter)."""
    if len(lines) <= WINDOW:
        return {tuple(lines)} if lines else set()
    return {tuple(lines[i:i + WINDOW]) for i in range(len(lines) - WINDOW + 1)}


def secret_lines(text: str, public: set[str]) -> set[tuple[str, ...]]:
    """The text's fingerprints: runs of WINDOW consecutive code lines with at least one line the release does not
    show and at least MIN_LINE characters in all (one generic line, `except Exception:`, is no fingerprint)."""
    return {run for run in windows(code_lines(text))
            if any(line not in public for line in run) and sum(map(len, run)) >= MIN_LINE}


def solution_secrets(public: set[str]) -> set[str]:
    """Lines of the solutions' answer regions and hidden tests that the release does not show."""
    secrets = set()
    for path in (REPO / "solutions").glob("*/*.ipynb"):
        for cell in nbformat.read(str(path), as_version=4).cells:
            inside, hidden = [], []
            region = None
            for line in cell.source.splitlines():
                marker = line.strip()
                if marker in (SOLUTION_BEGIN, HIDDEN_BEGIN):
                    region = inside if marker == SOLUTION_BEGIN else hidden
                elif marker in (SOLUTION_END, HIDDEN_END):
                    region = None
                elif region is not None:
                    region.append(line)
            if is_answer_cell(cell) and SOLUTION_BEGIN not in cell.source:
                inside = cell.source.splitlines()       # a written answer: the whole cell is the solution
            secrets |= secret_lines("\n".join(inside + hidden), public)
    return secrets


def answer_key_secrets(public_text: str) -> set[str]:
    """The answer keys' strings (the label chosen for each mystery, its reason) that the release does not show."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and len(value) >= 12 and value not in public_text:
            found.add(value)
    for path in (REPO / "solutions").glob("*/answer_key.json"):
        walk(json.loads(path.read_text()))
    return found


def planted_and_test_secrets(public: set[str]) -> set[str]:
    """Lines that tests/mutations plants (the bug's new text in its cell), tests/mutations' correct alternatives,
    and tests/cheats' code, that the release does not show."""
    secrets = set()
    sources = {ps: nbformat.read(str(REPO / "solutions" / ps / f"{ps}.ipynb"), as_version=4)
               for ps in {m.assignment for m in MUTATIONS}}
    for mutation in MUTATIONS:
        cell = next(c for c in sources[mutation.assignment].cells
                    if c.metadata.get("nbgrader", {}).get("grade_id") == mutation.cell)
        planted = cell.source
        for old, new in mutation.replacements:
            planted = planted.replace(old, new)
        original = {line.strip() for line in cell.source.splitlines()}
        secrets |= {run for run in secret_lines(planted, public) if any(line not in original for line in run)}
    for alternative in ALTERNATIVES:
        secrets |= secret_lines(alternative.code, public)
    for cheat in (REPO / "tests" / "cheats").glob("*.py"):
        code = "\n".join(line for line in cheat.read_text().splitlines() if not line.lstrip().startswith("#"))
        secrets |= secret_lines(code, public)
    return secrets


def test_the_kit_holds_the_notebooks_the_check_and_a_readme_and_nothing_of_solutions_or_tests(kit):
    names = set(kit_texts(kit))
    released = {p.relative_to(REPO).as_posix() for p in (REPO / "exercises").glob("*/*.ipynb")}
    assert released and released <= names
    assert {"README.md", "requirements.txt", "grader/check.py", "grader/__main__.py", "grader/diagnose.py"} <= names
    for name in names:
        parts = set(Path(name).parts)
        assert not parts & {"solutions", "tests", "assignments", "verify", "answer_key.json", "make_notebook.py"}, name
    for name, text in kit_texts(kit).items():
        if name.endswith(".ipynb"):
            for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
                assert marker not in text, (name, marker)
        lines = {line.strip() for line in text.splitlines()}
        assert not lines & {SOLUTION_BEGIN, SOLUTION_END, HIDDEN_BEGIN, HIDDEN_END}, name


def test_no_solution_hidden_test_answer_key_planted_bug_or_cheat_is_in_any_file(kit):
    public = released_lines()
    public_text = "\n".join((REPO / "exercises" / p).read_text() for p in
                            [q.relative_to(REPO / "exercises") for q in (REPO / "exercises").glob("*/*.ipynb")])
    groups = {"solution or hidden test": solution_secrets(public), "answer key": answer_key_secrets(public_text),
              "planted bug, alternative or cheat": planted_and_test_secrets(public)}
    assert all(groups.values()), {k: len(v) for k, v in groups.items()}    # the scan has something to find
    lines = {name: file_lines(name, text) for name, text in kit_texts(kit).items()}
    for what, secrets in groups.items():
        hits = [(name, secret) for name, shown in lines.items() for secret in secrets & shown]
        assert not hits, (what, hits[:5])
        # Answer-key strings are matched anywhere in a file (a label in a list, a reason in a sentence).
        if what == "answer key":
            texts = kit_texts(kit)
            assert not [(n, x) for n, t in texts.items() for x in secrets if x in t]


def test_the_scan_finds_a_solution_planted_in_a_kit(kit, tmp_path):
    """The scan above can fail: a kit with one solved notebook in it is caught."""
    solved = honest_copy(nbformat.read(str(REPO / "solutions" / "ps1" / "ps1.ipynb"), as_version=4))
    leaked = tmp_path / "leaky"
    leaked.mkdir()
    nbformat.write(solved, str(leaked / "ps1.ipynb"))
    secrets = solution_secrets(released_lines())
    assert secrets & file_lines("ps1.ipynb", (leaked / "ps1.ipynb").read_text())


def run_check(kit: Path, notebook: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(kit)
    return subprocess.run([sys.executable, "-m", "grader", "check", str(notebook)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def table(output: str) -> dict[str, tuple[float, float]]:
    rows = re.findall(r"^\s{2}(\w+)\s+([\d.]+) / ([\d.]+)", output, flags=re.M)
    return {task: (float(score), float(top)) for task, score, top in rows}


def test_check_runs_from_the_kit_alone_on_a_released_and_a_solved_notebook(kit, tmp_path):
    fresh = tmp_path / "student"
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([sys.executable, "-c", "import grader.check, grader; print(grader.__file__)"],
                           capture_output=True, text=True, cwd=fresh, env={**env, "PYTHONPATH": str(kit)})
    assert Path(where.stdout.strip()).is_relative_to(kit), where.stdout + where.stderr
    released = fresh / "ps1.ipynb"
    released.write_bytes((kit / "exercises" / "ps1" / "ps1.ipynb").read_bytes())
    proc = run_check(kit, released, fresh)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert rows["total"][0] == 0 and rows["total"][1] > 0 and "status: graded" in proc.stdout
    solved = fresh / "solved.ipynb"
    nbformat.write(honest_copy(nbformat.read(str(REPO / "solutions" / "ps1" / "ps1.ipynb"), as_version=4)),
                   str(solved))
    proc = run_check(kit, solved, fresh)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert rows["total"][0] == rows["total"][1] == rows_total(rows) > 0, proc.stdout


def rows_total(rows: dict[str, tuple[float, float]]) -> float:
    return sum(top for task, (_, top) in rows.items() if task != "total")


def test_readme_and_requirements_say_how_to_install_open_and_check(kit):
    readme = (kit / "README.md").read_text()
    for needed in ("python3 -m venv .venv", "pip install -r requirements.txt", "download.pytorch.org/whl/cpu",
                   "jupyter lab", "--allow-root", "python -m grader check exercises/ps1/ps1.ipynb",
                   "jupyter labextension disable"):
        assert needed in readme, needed
    pins = (kit / "requirements.txt").read_text().split()
    course = set((REPO / "requirements.txt").read_text().split())
    assert {p.split("==")[0] for p in pins if "==" in p} >= {"torch", "jupyterlab", "nbclient", "ipykernel"}
    assert all(p in course for p in pins if "==" in p)          # the course's own pins
    assert not any(p.startswith("nbgrader") for p in pins)      # no instructor tools to hide in the first place


def test_the_kits_jupyter_config_disables_nbgraders_instructor_plugins(kit):
    bundle = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "@jupyter" / "nbgrader"
    if not bundle.is_dir():
        pytest.fail("nbgrader's JupyterLab extension is not installed here (requirements.txt installs it)")
    shipped = "".join(p.read_text(errors="replace") for p in (bundle / "static").glob("*.js"))
    for plugin in INSTRUCTOR_PLUGINS:       # the real plugin ids, as nbgrader's bundle registers them
        assert f'"{plugin}"' in shipped, plugin
    env = dict(os.environ, JUPYTER_CONFIG_PATH=str(kit / "jupyter-config"))
    listed = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True,
                            text=True, env=env, timeout=120, cwd=kit)
    disabled = (listed.stdout + listed.stderr).split("Disabled extensions:")[-1]
    for plugin in INSTRUCTOR_PLUGINS:
        assert plugin in disabled, listed.stdout + listed.stderr
    assert "@jupyter/nbgrader:assignment-list" not in disabled     # the student's own panel stays
