"""Every assignment: its notebooks follow grader/assignments/, exercises/ is generated from solutions/ and is current,
no student notebook carries a solution or a hidden test, and through nbgrader's real autograde the solution gets
full marks while the untouched student notebook gets 0 without an error."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from exercise_harness import REPO, grade_assignment
from grader import release
from grader.assignments import ASSIGNMENTS

SOURCES = sorted(p.name for p in (REPO / "solutions").iterdir()
                 if p.is_dir() and (p / f"{p.name}.ipynb").exists())
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def source_nb(name: str) -> Path:
    return REPO / "solutions" / name / f"{name}.ipynb"


def student_nb(name: str) -> Path:
    return REPO / "exercises" / name / f"{name}.ipynb"


def shipped_files(folder: Path) -> list[str]:
    """The files under `folder` that the course hands out, relative to it: tracked by git or not yet tracked, but
    never what .gitignore excludes, such as the .ipynb_checkpoints/ folder JupyterLab writes next to a notebook it
    opens. Outside a git checkout, everything except that checkpoint folder."""
    try:
        proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
                              cwd=folder, capture_output=True, text=True, timeout=60)
    except OSError:
        proc = None
    if proc is not None and proc.returncode == 0:
        return sorted(name for name in proc.stdout.split("\0") if name and (folder / name).exists())
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and ".ipynb_checkpoints" not in p.relative_to(folder).parts)


def nbgrader_cells(path: Path) -> dict[str, nbformat.NotebookNode]:
    nb = nbformat.read(path, as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if "nbgrader" in c.metadata}


def between(text: str, begin: str, end: str) -> list[str]:
    return re.findall(rf"### {begin}\n(.*?)### {end}", text, flags=re.S)


def test_there_are_assignments_to_test():
    assert {"ps1", "ps2", "ps3"} <= set(SOURCES), SOURCES
    assert set(SOURCES) <= set(ASSIGNMENTS), f"solutions/ has assignments grader/assignments/ does not know: {SOURCES}"


@pytest.mark.parametrize("name", SOURCES)
def test_source_notebook_follows_tasks(name):
    """Solution cell == task name, test cell == test_<task> with the task's points, and the cell defines the names
    the verification stage will ask for."""
    assignment = ASSIGNMENTS[name]
    cells = nbgrader_cells(source_nb(name))
    graded = {gid: c.metadata["nbgrader"]["points"] for gid, c in cells.items() if c.metadata["nbgrader"]["grade"]}
    assert graded == {f"test_{t.name}": t.points for t in assignment.tasks}
    assert sum(graded.values()) == assignment.max_score
    order = list(cells)
    for task in assignment.tasks:
        assert task.name in cells and cells[task.name].metadata["nbgrader"]["solution"], task.name
        assert order.index(task.name) < order.index(f"test_{task.name}"), f"{task.name} must precede its tests"
        tree = ast.parse(cells[task.name].source)
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                    if isinstance(t, ast.Name)}
        assert set(task.names) <= defined, f"{name}/{task.name} defines {defined}, tasks.py expects {task.names}"
        test_source = cells[f"test_{task.name}"].source
        assert test_source.count("### BEGIN HIDDEN TESTS") == 1, f"{name}: test_{task.name} has no hidden tests"
        visible = test_source.split("### BEGIN HIDDEN TESTS")[0]
        assert "assert" in visible or "diagnose." in visible, f"{name}: test_{task.name} has no visible test"


@pytest.mark.parametrize("name", SOURCES)
def test_source_notebook_is_clean(name):
    nb = nbformat.read(source_nb(name), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}: commit notebooks without outputs"


def test_release_regenerates_exercises_exactly(tmp_path):
    """A stale exercises/ (someone edited solutions/ without `python -m grader release`) fails here."""
    out = tmp_path / "exercises"
    before = _release_leftovers()
    assert release.main([*SOURCES, "--into", str(out)]) == 0
    assert _release_leftovers() == before, "release left a gradebook or nbgrader files in the repository"
    for name in SOURCES:
        fresh, committed = out / name / f"{name}.ipynb", student_nb(name)
        assert committed.exists(), f"exercises/{name} missing: run python -m grader release"
        fresh_cells = [(c.cell_type, c.source, c.metadata) for c in nbformat.read(fresh, as_version=4).cells]
        committed_cells = [(c.cell_type, c.source, c.metadata) for c in nbformat.read(committed, as_version=4).cells]
        assert len(fresh_cells) == len(committed_cells), f"exercises/{name} is stale: run python -m grader release"
        for index, (a, b) in enumerate(zip(fresh_cells, committed_cells)):
            assert a == b, f"exercises/{name} cell {index} is stale: run python -m grader release"
        # Deterministic output: the same sources give the same bytes.
        assert fresh.read_bytes() == committed.read_bytes(), f"exercises/{name} differs byte for byte"
        assert sorted(p.name for p in (out / name).iterdir()) == [f"{name}.ipynb"], "extra files released"


def _release_leftovers() -> set[Path]:
    """What nbgrader could leave behind: gradebooks, its own folder, files next to the notebooks."""
    found = {p for p in (REPO / "gradebook.db", REPO / ".nbgrader") if p.exists()}
    for folder in ("solutions", "exercises"):
        found |= {p for p in (REPO / folder).rglob("*") if p.suffix in {".db", ".json"} or ".nbgrader" in p.name}
    return found


def test_release_cli_rejects_unknown_assignment(tmp_path, capsys):
    assert release.main(["ps99", "--into", str(tmp_path)]) == 2
    assert "ps99" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_shipped_files_skip_jupyter_checkpoints_but_not_stray_files(tmp_path):
    """Opening a notebook in JupyterLab (as the README tells students) writes .ipynb_checkpoints/ next to it; that
    folder is ignored by git and never handed out, while any other extra file still counts."""
    (tmp_path / ".gitignore").write_text((REPO / ".gitignore").read_text())
    folder = tmp_path / "exercises" / "ps1"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / "ps1.ipynb").write_text("{}")
    (folder / ".ipynb_checkpoints" / "ps1-checkpoint.ipynb").write_text("{}")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert shipped_files(folder) == ["ps1.ipynb"]
    (folder / "answers.py").write_text("solution = 42\n")
    assert shipped_files(folder) == ["answers.py", "ps1.ipynb"]
    shutil.rmtree(tmp_path / ".git")  # outside a git checkout: the same verdicts
    assert shipped_files(folder) == ["answers.py", "ps1.ipynb"]


@pytest.mark.parametrize("name", SOURCES)
def test_student_notebook_has_no_solution_or_hidden_test(name):
    source_cells = nbgrader_cells(source_nb(name))
    student_cells = nbgrader_cells(student_nb(name))
    assert list(student_cells) == list(source_cells), "the student notebook has other graded cells than the source"
    raw = student_nb(name).read_text()
    for marker in MARKERS:
        assert marker not in raw, f"exercises/{name} contains {marker!r}"
    files = shipped_files(student_nb(name).parent)
    assert files == [f"{name}.ipynb"], f"exercises/{name} ships more than the notebook: {files}"
    for gid, cell in source_cells.items():
        student = student_cells[gid].source
        meta = cell.metadata["nbgrader"]
        for region in between(cell.source, "BEGIN SOLUTION", "END SOLUTION"):
            assert meta["solution"], f"{gid}: solution markers in a non-solution cell"
            assert "raise NotImplementedError()" in student, f"exercises/{name} {gid} has no stub"
            leaked = [line.strip() for line in region.splitlines()
                      if len(line.strip()) > 12 and line.strip() in student]
            assert not leaked, f"exercises/{name} {gid} still holds solution code: {leaked[:3]}"
        for region in between(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            leaked = [line.strip() for line in region.splitlines()
                      if len(line.strip()) > 12 and line.strip() in student and line.strip() not in visible]
            assert not leaked, f"exercises/{name} {gid} still holds hidden tests: {leaked[:3]}"


@pytest.mark.parametrize("name", SOURCES)
def test_student_notebook_imports_no_solution(name):
    """From the course itself a student notebook imports only the diagnostic checks (no solutions, no keys)."""
    for cell in json.loads(student_nb(name).read_text())["cells"]:
        text = "".join(cell["source"])
        for line in re.findall(r"^\s*(?:from|import)\s+.*$", text, flags=re.M):
            assert "solution" not in line and "tests" not in line.split(), f"exercises/{name}: {line.strip()}"
            if re.match(r"\s*(from|import)\s+grader\b", line):
                assert "diagnose" in line, f"exercises/{name} imports grader code other than diagnose: {line}"


@pytest.mark.slow
@pytest.mark.nbgrader
@pytest.mark.parametrize("name", SOURCES)
def test_solution_full_marks_and_blank_zero(name, tmp_path_factory):
    results = grade_assignment(name, tmp_path_factory.mktemp(f"graded-{name}"))
    assignment = ASSIGNMENTS[name]
    solution, blank = results["solution"], results["blank"]
    assert solution["scores"] == {t.name: float(t.points) for t in assignment.tasks}, solution["feedback"][-3000:]
    assert solution["total"] == assignment.max_score
    assert blank["scores"] == {t.name: 0.0 for t in assignment.tasks}
    assert "NotImplementedError" in blank["feedback"], "the blank notebook should fail on its stubs"


# ------------------------------------------------------------------ the diagnostic checks on their own (fast)
def test_diagnose_names_the_9216_width_and_the_missing_projection():
    import torch
    from torch import nn

    from grader import diagnose

    wide = torch.empty(8, 1024, 12 * 768, device="meta")
    with pytest.raises(AssertionError, match=re.escape(diagnose.BUGS["width"])):
        diagnose.check_shape(wide, (8, 1024, 768), num_heads=12)
    diagnose.check_shape(torch.empty(8, 1024, 768, device="meta"), (8, 1024, 768), num_heads=12)

    class NoProjection(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_query, self.W_key, self.W_value = (nn.Linear(768, 768, bias=False, device="meta")
                                                      for _ in range(3))

    with pytest.raises(AssertionError, match=re.escape(diagnose.BUGS["no_out_proj"])) as err:
        diagnose.check_parameter_count(NoProjection(), d_in=768, d_out=768, num_heads=12)
    assert "1,769,472" in str(err.value) and "2,360,064" in str(err.value)
    assert diagnose.expected_parameter_count(768, 768) == 2_360_064


def test_diagnose_tells_wrong_softmax_dim_from_mask_after_softmax():
    """Each weight bug is named when its reference, computed from the scores, reproduces the weights; without
    the scores nothing is named."""
    import torch

    from grader import diagnose

    scores = torch.randn(2, 5, 5)
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)
    check = diagnose.check_attention_weights
    check(torch.softmax(scores.masked_fill(future, -torch.inf), -1), causal=True, scores=scores)
    with pytest.raises(AssertionError, match="^" + re.escape(diagnose.BUGS["softmax_dim"])):
        check(torch.softmax(scores.masked_fill(future, -torch.inf), -2), causal=True, scores=scores)
    with pytest.raises(AssertionError, match="^" + re.escape(diagnose.BUGS["mask_after_softmax"])):
        check(torch.softmax(scores, -1).masked_fill(future, 0.0), causal=True, scores=scores)
    with pytest.raises(AssertionError, match="^" + re.escape(diagnose.BUGS["future"])):
        check(torch.softmax(scores, -1), causal=True, scores=scores)
    with pytest.raises(AssertionError, match="^" + re.escape(diagnose.BUGS["mask_diagonal"])):
        check(torch.softmax(scores.masked_fill(future | torch.eye(5, dtype=torch.bool), -torch.inf), -1),
              causal=True, scores=scores)
    # Not a known bug: the right weights, squared.
    with pytest.raises(AssertionError, match="^" + re.escape(diagnose.BUGS["mismatch"]) + ": not one of"):
        check(torch.softmax(scores.masked_fill(future, -torch.inf), -1) ** 2, causal=True, scores=scores)
    # Without the scores the symptom is said, and no bug is named from it.
    with pytest.raises(AssertionError, match="^" + re.escape(diagnose.BUGS["mismatch"]) + ": a query puts"):
        check(torch.softmax(scores, -1), causal=True)


def test_diagnose_reference_weights_are_pytorchs():
    """sdpa_reference's weights (attention to identity values) reproduce the context of SDPA itself."""
    import torch
    import torch.nn.functional as F

    from grader import diagnose

    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 5)
    context, weights = diagnose.sdpa_reference(q, k, v)
    assert torch.allclose(weights @ v, context, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 4), atol=1e-5)
    assert torch.allclose(context, F.scaled_dot_product_attention(q, k, v), atol=1e-6)


def test_diagnose_divisibility_check_fails_a_silent_module():
    from torch import nn

    from grader import diagnose

    with pytest.raises(AssertionError, match=re.escape(diagnose.BUGS["divisibility"])):
        diagnose.check_divisibility_error(lambda d_out, num_heads: nn.Linear(4, d_out))
    with pytest.raises(AssertionError, match="ValueError"):
        diagnose.check_divisibility_error(lambda d_out, num_heads: d_out // 0)

    def strict(d_out, num_heads):
        raise ValueError(f"d_out={d_out} must be divisible by num_heads={num_heads}")

    diagnose.check_divisibility_error(strict)
