"""Assignments authored as notebooks (grader/authoring.py): every committed nbgrader source notebook is what its
source (solutions/<name>/<name>.py, jupytext percent) builds, byte for byte; points and answer keys are written once
and read from there; a malformed cell is refused, naming the file and the cell. Fast: no kernel, no nbgrader."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from grader.assignments import ASSIGNMENTS
from grader.authoring import SourceError, build, notebook, source_path

SOLUTIONS = REPO / "solutions"


def copy_sources(name: str, dest: Path) -> Path:
    """solutions/<name>/ without its built notebook, in ``dest/<name>/``."""
    folder = dest / name
    folder.mkdir(parents=True)
    for path in (SOLUTIONS / name).iterdir():
        if path.is_file() and path.suffix != ".ipynb":
            shutil.copy2(path, folder / path.name)
    return folder


def cells(folder: Path, points=None) -> dict[str, nbformat.NotebookNode]:
    return {cell.id: cell for cell in notebook(folder, points).cells}


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_committed_notebook_is_what_its_source_builds(name, tmp_path):
    """Built from the source alone in a temporary folder: the same bytes as solutions/<name>/<name>.ipynb."""
    folder = copy_sources(name, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted({f"{name}.py", *(
        ["answer_key.json"] if (SOLUTIONS / name / "answer_key.json").exists() else [])}), "unexpected files"
    built = build(folder)
    committed = SOLUTIONS / name / f"{name}.ipynb"
    assert built.read_bytes() == committed.read_bytes(), \
        f"solutions/{name}/{name}.ipynb is not what {name}.py builds: run python -m grader release {name}"


def test_no_assignment_is_written_by_a_program():
    assert not list(SOLUTIONS.rglob("make_notebook.py"))
    for name in ASSIGNMENTS:
        assert source_path(SOLUTIONS / name).is_file(), name


def test_points_come_from_the_assignment_module(tmp_path):
    """The test cells and the prose take each task's points from grader/assignments/, the one place they are
    written: other points give other metadata and another sentence."""
    folder = copy_sources("ps1", tmp_path)
    declared = {task.name: task.points for task in ASSIGNMENTS["ps1"].tasks}
    assert cells(folder)["test_self_attention"].metadata["nbgrader"]["points"] == declared["self_attention"]
    changed = {**declared, "self_attention": 7}
    built = cells(folder, changed)
    assert built["test_self_attention"].metadata["nbgrader"]["points"] == 7
    assert "SelfAttention 7." in built["intro"].source
    assert "{{" not in built["intro"].source


def test_answer_keys_come_from_answer_key_json(tmp_path):
    """The hidden tests and the solution are written from the key: another key gives other tests."""
    folder = copy_sources("ps5", tmp_path)
    keys = json.loads((folder / "answer_key.json").read_text())
    keys["anomaly"]["answer"], keys["anomaly"]["hint"] = "C", "a hint written only in the key"
    (folder / "answer_key.json").write_text(json.dumps(keys))
    built = cells(folder)
    assert 'anomaly_answer = "C"' in built["anomaly"].source
    assert 'anomaly_answer == "C"' in built["test_anomaly"].source
    assert "a hint written only in the key" in built["test_anomaly"].source


def write_source(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "ps1"
    folder.mkdir()
    (folder / "ps1.py").write_text(body)
    return folder


@pytest.mark.parametrize("body, says", [
    ('# %% nbgrader="given"\nx = 1\n', "cell 1: no id"),
    ('# %% id="a"\nx = 1\n\n# %% nbgrader="answer" id="b"\ny = 2\n', "cell 2 (b): nbgrader='answer'"),
    ('# %% nbgrader="tests" id="test_nothing"\nassert True\n', "test_<task> for a declared task"),
    ('# %% [markdown] id="intro"\n# Points: {{ points.nothing }}\n', "cell 1 (intro): UndefinedError"),
], ids=["no_id", "unknown_role", "unknown_task", "unknown_name"])
def test_a_malformed_cell_is_refused_naming_file_and_cell(tmp_path, body, says):
    folder = write_source(tmp_path, body)
    with pytest.raises(SourceError) as err:
        notebook(folder)
    assert str(folder / "ps1.py") in str(err.value) and says in str(err.value), str(err.value)


def test_cells_keep_their_roles_ids_and_text(tmp_path):
    """One cell of each role, as nbgrader's Create Assignment toolbar would mark it."""
    folder = write_source(tmp_path, (
        '# %% [markdown] id="intro"\n# # Title\n#\n# Points: {{ points.self_attention }}\n\n'
        '# %% nbgrader="given" id="setup"\nimport math\n\n'
        '# %% nbgrader="solution" id="self_attention"\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n\n'
        '# %% nbgrader="tests" id="test_self_attention"\nassert x == 1\n\n'
        '# %% id="experiments"\n# try things here\n'))
    built = notebook(folder, {"self_attention": 5})
    got = [(c.cell_type, c.id, c.metadata.get("nbgrader"), c.source) for c in built.cells]
    meta = {"schema_version": 3}
    assert got == [
        ("markdown", "intro", None, "# Title\n\nPoints: 5"),
        ("code", "setup", {**meta, "grade": False, "grade_id": "setup", "locked": True, "solution": False},
         "import math"),
        ("code", "self_attention", {**meta, "grade": False, "grade_id": "self_attention", "locked": False,
                                    "solution": True}, "### BEGIN SOLUTION\nx = 1\n### END SOLUTION"),
        ("code", "test_self_attention", {**meta, "grade": True, "grade_id": "test_self_attention", "locked": True,
                                         "points": 5, "solution": False}, "assert x == 1"),
        ("code", "experiments", None, "# try things here"),
    ]
    nbformat.validate(built)
