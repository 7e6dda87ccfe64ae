"""The assignments' contract and the grader's structure (fast: no kernel, no grading).

- Every assignment of the registry passes its contract: every graded task has probe cases, every answer key is
  found, the source notebook's graded cells are the declared tasks with the declared points.
- Breaking any of these fails loudly, naming the task: at ``release``, at ``grade`` start and here.
- No import circle inside grader/, and no module outside grader/assignments/ names an assignment.
- One bug catalogue: verification's and the notebooks' messages name bugs with its names.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.assignments import ASSIGNMENTS, MODULES, ContractError, check_contract
from grader.bugs import BUGS, CATALOGUE, code_of

REPO = Path(__file__).resolve().parents[1]
GRADER = REPO / "grader"


def source_of(name: str) -> Path:
    return REPO / "solutions" / name / f"{name}.ipynb"


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_every_assignment_keeps_its_contract(name):
    assignment = ASSIGNMENTS[name]
    check_contract(assignment, source_of(name))
    covered = {case.task for case in assignment.probe_cases(7, source_of(name))}
    assert covered == {task.name for task in assignment.tasks}


def test_the_registry_lists_one_module_per_assignment():
    assert list(ASSIGNMENTS) == list(MODULES)
    for name in MODULES:
        assert (GRADER / "assignments" / f"{name}.py").is_file()
        assert (REPO / "solutions" / name / f"{name}.py").is_file(), f"{name} has no source notebook"


def _without_task_cases(assignment, task: str):
    def cases(seed, source_nb, keys):
        return [case for case in assignment.cases(seed, source_nb, keys) if case.task != task]
    return dataclasses.replace(assignment, cases=cases)


@pytest.mark.parametrize("name, task", [("ps1", "self_attention"), ("ps3", "split_heads"), ("ps5", "memory")])
def test_a_task_without_probes_breaks_the_contract_naming_it(name, task):
    broken = _without_task_cases(ASSIGNMENTS[name], task)
    with pytest.raises(ContractError, match=f"task\\(s\\) {task}: no probe case") as err:
        check_contract(broken, source_of(name))
    assert err.value.tasks == [task]


def test_a_missing_answer_key_breaks_the_contract_naming_the_tasks(tmp_path):
    """The case the issue measured: a copy of ps4's source whose key cannot be found must not fall back to the
    in-kernel tests."""
    copy = tmp_path / "ps4"
    shutil.copytree(REPO / "solutions" / "ps4", copy)
    (copy / "answer_key.json").unlink()
    with pytest.raises(ContractError, match="diagnoses, parity_test") as err:
        check_contract(ASSIGNMENTS["ps4"], copy / "ps4.ipynb")
    assert "answer_key.json" in str(err.value)
    keys = json.loads((REPO / "solutions" / "ps4" / "answer_key.json").read_text())
    del keys["parity_test"]
    (copy / "answer_key.json").write_text(json.dumps(keys))
    with pytest.raises(ContractError, match="task\\(s\\) parity_test"):
        check_contract(ASSIGNMENTS["ps4"], copy / "ps4.ipynb")


def test_graded_cells_must_match_the_declared_tasks(tmp_path):
    nb = json.loads(source_of("ps2").read_text())
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade_id") == "test_causal_mask":
            meta["points"] = 7
    broken = tmp_path / "ps2.ipynb"
    broken.write_text(json.dumps(nb))
    with pytest.raises(ContractError, match="task\\(s\\) causal_mask: the source notebook's graded cells"):
        check_contract(ASSIGNMENTS["ps2"], broken)


def test_grade_and_release_refuse_a_broken_contract(tmp_path):
    """Both commands stop before doing anything, exit 2, and name the task."""
    copy = tmp_path / "solutions" / "ps4"
    shutil.copytree(REPO / "solutions" / "ps4", copy)
    (copy / "answer_key.json").unlink()
    subs = tmp_path / "subs" / "ada"
    subs.mkdir(parents=True)
    shutil.copy(REPO / "exercises" / "ps4" / "ps4.ipynb", subs / "ps4.ipynb")
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "ps4", str(subs.parent), "--out",
                           str(tmp_path / "out"), "--source", str(copy / "ps4.ipynb")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "diagnoses, parity_test" in proc.stderr and "answer_key.json" in proc.stderr
    assert not (tmp_path / "out" / "grades.csv").exists()

    from grader.release import release

    with pytest.raises(ContractError, match="diagnoses, parity_test"):
        release(["ps4"], into=tmp_path / "released", source=tmp_path / "solutions")
    assert not (tmp_path / "released").exists()


# -------------------------------------------------------------------------------------------- structure
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The grader modules ``path`` imports at module level (not inside functions: those run later, on demand)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_import_circle_in_the_grader():
    modules = {_module_name(p): p for p in GRADER.rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how a package exposes them, not a circle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (m.startswith(name + ".") and modules[name].name == "__init__.py")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail(f"import circle: {' -> '.join(cycle)}")
            if state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if state.get(name) is None:
            visit(name, [name])


def test_no_module_outside_the_registry_names_an_assignment():
    """Grading knowledge lives in grader/assignments/. The benchmarks may pick which assignment they measure by
    default (an input, not grading knowledge); the bug catalogue says where each bug can be planted (its recipes
    name a solution cell of an assignment, for the tests), which decides no grade."""
    pattern = re.compile(r"""["'](ps[1-9])["']""")
    offenders = []
    for path in GRADER.rglob("*.py"):
        if "assignments" in path.relative_to(GRADER).parts or path.name.startswith("bench") \
                or path.relative_to(GRADER).as_posix() == "bugs.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ------------------------------------------------------------------------------------------- bug catalogue
def test_the_catalogue_names_each_bug_once():
    codes = [bug.code for bug in CATALOGUE]
    names = [bug.name for bug in CATALOGUE]
    assert len(codes) == len(set(codes)) and len(names) == len(set(names))
    assert all(bug.where for bug in CATALOGUE)
    assert code_of(BUGS["width"] + ": the output is num_heads times too wide") == "width"
    assert code_of("something else") is None


def test_verification_names_bugs_only_with_catalogue_names():
    """Every bug phrase in grader/verify/ comes from the catalogue (named(...)/BUGS[...]), not retyped."""
    retyped = []
    for path in (GRADER / "verify").glob("*.py"):
        text = path.read_text()
        for bug in CATALOGUE:
            for match in re.finditer(re.escape(f'"{bug.name}'), text):
                retyped.append(f"{path.name}: {bug.name}")
    assert not retyped, retyped
