"""The sandbox wherever Python lives (issue 25): ``grader check`` gives the ps1 solution full marks and ``grader
grade`` grades a small class with the grader running from a virtual environment

- inside the course checkout (``course/.venv``, the checkout in the home folder), the notebook elsewhere;
- under ``/tmp``;
- in the folder that also holds the notebook being checked.

Run by whoever runs pytest, and by tests/test_sandbox_matrix.py as a normal user (``mha-student``) and as root with
a public interpreter. Each environment is a real venv whose interpreter the sandbox must run: made with
``--system-site-packages`` where this Python is not itself a venv (it then sees the installed packages); from a
venv (the matrix's /opt/mha-venv), the new venv's site-packages is a link to this one's (a venv's
``--system-site-packages`` would see the base Python's packages, not the venv's).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def make_venv(path: Path) -> Path:
    """A virtual environment at `path` that imports what this Python imports; its python."""
    if sys.prefix == sys.base_prefix:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(path)],
                       check=True, timeout=300)
    else:
        subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=300)
        site_packages = Path(sysconfig.get_path("purelib", vars={"base": str(path), "platbase": str(path)}))
        site_packages.rmdir()
        site_packages.symlink_to(sysconfig.get_path("purelib"))
    python = path / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import sys, torch, nbclient; print(sys.prefix)"],
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0 and Path(probe.stdout.strip()) == path, probe.stderr
    return python


def copy_checkout(dest: Path) -> Path:
    """The checkout's tracked files (all its files where it is itself a copy without git: the matrix's)."""
    if (REPO / ".git").exists():
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        names = filter(None, files.decode().split("\0"))
    else:
        names = (str(p.relative_to(REPO)) for p in REPO.rglob("*") if "__pycache__" not in p.parts)
    for rel in names:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def solved_notebook(dest: Path) -> Path:
    """ada's copy of ps1 (samples/make_class.py): the release with every task solved."""
    from grader.bench_grading import honest_copy

    nb = honest_copy(nbformat.read(str(REPO / "solutions" / "ps1" / "ps1.ipynb"), as_version=4))
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dest))
    return dest


def run(python: Path, args: list[str], cwd: Path, pythonpath: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}:{env.get('PATH', '/usr/bin:/bin')}"
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(python), "-m", "grader", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def assert_full_marks(proc: subprocess.CompletedProcess) -> None:
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    assert any(line.split()[:4] == ["total", "10", "/", "10"] for line in proc.stdout.splitlines()), said[-3000:]


def assert_class_graded(python: Path, cwd: Path, pythonpath: Path | None, base: Path) -> None:
    from grader.bench_grading import release_copy

    subs, out = base / "class", base / "out"
    solved_notebook(subs / "ada" / "ps1.ipynb")
    nb = release_copy(nbformat.read(str(REPO / "solutions" / "ps1" / "ps1.ipynb"), as_version=4))
    (subs / "ben").mkdir(parents=True)
    nbformat.write(nb, str(subs / "ben" / "ps1.ipynb"))
    proc = run(python, ["grade", "ps1", str(subs), "--out", str(out), "--timeout", "120"], cwd, pythonpath)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(out / "grades.csv", newline="") as f:
        rows = {row["student_id"]: (row["status"], row["score"]) for row in csv.DictReader(f)}
    assert rows == {"ada": ("graded", "10"), "ben": ("graded", "0")}, rows


@pytest.fixture
def home_folder():
    """A folder in the home folder (removed afterwards): a checkout where newcomers usually clone one."""
    path = Path(tempfile.mkdtemp(prefix="mha-layout-", dir=os.path.expanduser("~")))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_venv_inside_the_checkout(home_folder, tmp_path):
    course = copy_checkout(home_folder / "course")
    python = make_venv(course / ".venv")
    assert_full_marks(run(python, ["check", str(solved_notebook(tmp_path / "mine" / "ps1.ipynb"))], course, None))
    assert_class_graded(python, course, None, tmp_path)


def test_a_venv_under_tmp(tmp_path):
    assert tmp_path.resolve().is_relative_to("/tmp"), "pytest's basetemp is not under /tmp"
    python = make_venv(tmp_path / "env")
    assert_full_marks(run(python, ["check", str(solved_notebook(tmp_path / "mine" / "ps1.ipynb"))], REPO, REPO))
    assert_class_graded(python, REPO, REPO, tmp_path)


def test_a_notebook_beside_the_environment(tmp_path):
    python = make_venv(tmp_path / "work" / "env")
    notebook = solved_notebook(tmp_path / "work" / "ps1.ipynb")
    assert_full_marks(run(python, ["check", str(notebook)], REPO, REPO))


def test_the_folder_that_holds_the_environment_stays_hidden(tmp_path):
    """Binding the venv shows the venv, nothing else of the folder around it (the notebook's own folder, here)."""
    python = make_venv(tmp_path / "work" / "env")
    (tmp_path / "work" / "secret.txt").write_text("next to the environment")
    notebook = solved_notebook(tmp_path / "work" / "ps1.ipynb")
    nb = nbformat.read(str(notebook), as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first, nbformat.v4.new_code_cell(
        "import os\n"
        f"print('LISTED', sorted(os.listdir({str(tmp_path / 'work')!r})))\n"
        f"print('SEES ENV', os.path.isdir({str(tmp_path / 'work' / 'env' / 'bin')!r}))"))
    nbformat.write(nb, str(notebook))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = ("import nbformat, sys\n"
            "from grader.sandbox import Limits\nfrom grader.sandbox.service import Sandbox\n"
            f"nb = nbformat.read({str(notebook)!r}, as_version=4)\n"
            f"with Sandbox(Limits(), hide=[__import__('pathlib').Path({str(tmp_path / 'work')!r})]) as s:\n"
            "    s.start(log=lambda m: None)\n    s.run(nb)\n"
            "print(''.join(o.get('text', '') for c in nb.cells for o in c.get('outputs', [])))\n")
    proc = subprocess.run([str(python), "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LISTED ['env']" in proc.stdout and "SEES ENV True" in proc.stdout, proc.stdout[-2000:]
