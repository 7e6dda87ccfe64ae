"""``check_notebook()`` (grader/notebook_check.py): ``grader check`` from inside the notebook being edited.

The call must print the same table as the command on the same saved file, found from JPY_SESSION_NAME as
JupyterLab sets it; say that the saved file is what is checked, and when it is old; and inside a graded kernel print
one line and run nothing. The module must reach the sandbox's kernels and the student kit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

from conftest import REPO
from grader.bench_grading import honest_copy
from grader.notebook_check import check_notebook, in_grading_kernel
from test_grading import grade, read_csv

ENV = dict(os.environ, PYTHONPATH=str(REPO))


@pytest.mark.slow
def test_the_call_prints_the_same_table_as_the_command(tmp_path):
    notebook = tmp_path / "ps1.ipynb"
    shutil.copyfile(REPO / "exercises" / "ps1" / "ps1.ipynb", notebook)
    three_hours_ago = time.time() - 3 * 3600
    os.utime(notebook, (three_hours_ago, three_hours_ago))
    command = subprocess.run([sys.executable, "-m", "grader", "check", str(notebook)], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert command.returncode == 0, command.stdout + command.stderr
    call = subprocess.run([sys.executable, "-c", "from grader.notebook_check import check_notebook\n"
                           "result = check_notebook()\nprint('returned', result.returncode)"],
                          cwd=tmp_path, env=dict(ENV, JPY_SESSION_NAME=str(notebook)), capture_output=True,
                          text=True, timeout=300)
    table = command.stdout.splitlines()
    assert any("total" in line for line in table) and len(table) >= 5, table
    printed = call.stdout.splitlines()
    start = printed.index(table[0])
    assert printed[start:start + len(table)] == table, call.stdout
    assert "save it first" in printed[0] and "3.0 h old" in call.stdout, printed[:3]
    assert printed[-1] == "returned 0"


def test_without_a_session_or_a_path_it_says_how_to_name_the_notebook(monkeypatch):
    for var in ("JPY_SESSION_NAME", "NBGRADER_EXECUTION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", "/home/student/.local/share/jupyter/runtime")
    said = []
    result = check_notebook(out=said.append)
    assert result.returncode is None and len(said) == 1 and "check_notebook('ps1.ipynb')" in said[0]


def test_a_graded_kernel_is_recognised_and_an_editing_one_is_not():
    assert in_grading_kernel({"JUPYTER_RUNTIME_DIR": "/box/conn", "HOME": "/box/work"})     # sandboxed
    assert in_grading_kernel({"JUPYTER_RUNTIME_DIR": ".", "HOME": "."})                     # --no-sandbox
    assert in_grading_kernel({"NBGRADER_EXECUTION": "autograde"})                           # stock nbgrader
    assert not in_grading_kernel({"JPY_SESSION_NAME": "/home/s/ps1.ipynb",
                                  "JUPYTER_RUNTIME_DIR": "/home/s/.local/share/jupyter/runtime"})


@pytest.mark.slow
def test_left_in_a_handed_in_notebook_it_prints_one_line_and_costs_nothing(tmp_path):
    """Graded in the sandbox, a cell calling check_notebook (with a path, so no session is needed) prints one
    line, raises nothing, and the notebook keeps full marks."""
    source = nbformat.read(REPO / "solutions" / "ps1" / "ps1.ipynb", as_version=4)
    nb = honest_copy(source)
    nb.cells.append(nbformat.v4.new_code_cell("from grader.notebook_check import check_notebook\n"
                                              "result = check_notebook('ps1.ipynb')\nprint('returned', result)"))
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "subs" / "ada" / "ps1.ipynb")
    proc = grade("ps1", tmp_path / "subs", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = read_csv(tmp_path / "out" / "grades.csv")[0]
    assert row["status"] == "graded" and float(row["score"]) == float(row["max_score"]), row
    ran = nbformat.read(tmp_path / "out" / "autograded" / "ada" / "ps1" / "ps1.ipynb", as_version=4)
    cell = next(c for c in ran.cells if "check_notebook('ps1.ipynb')" in c.source)
    text = "".join(o.get("text", "") for o in cell.outputs)
    assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs
    assert text.splitlines()[0].startswith("check_notebook: not run while the notebook is being graded"), text
    assert "returned CheckResult(notebook='None', returncode=None)" in text, text


def test_kernels_and_the_student_kit_get_the_module():
    from grader.sandbox.bubblewrap import KERNEL_SIDE
    from grader.student_kit import kit_modules

    assert "notebook_check.py" in KERNEL_SIDE and "notebook_check.py" in kit_modules()
