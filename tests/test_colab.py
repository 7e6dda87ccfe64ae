"""Every chapter opens in Colab: its page links a notebook that exists in the repository, matches the chapter and
starts with the cell that fetches and installs the course (scripts/colab_notebooks.py writes them)."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from conftest import REPO, toc_files

spec = importlib.util.spec_from_file_location("colab_notebooks", REPO / "scripts" / "colab_notebooks.py")
colab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colab)

URL, BRANCH = colab.repository()
COLAB_LINK = re.compile(r'<a href="(https://colab\.research\.google\.com/github/([^"]+))"[^>]*>(.*?)</a>', re.S)


def test_every_page_has_a_notebook_in_sync_with_it():
    """The committed notebooks are what the generator makes now: a chapter edited without regenerating fails."""
    assert [p.relative_to(REPO).as_posix() for p in colab.pages()] == [f"{d}.md" for d in toc_files(reference=False)]
    assert colab.main(["--check"]) == 0, "run python scripts/colab_notebooks.py and commit the notebooks"


def test_a_stale_notebook_is_named(tmp_path, monkeypatch, capsys):
    """The sync check can fail: a chapter one cell longer than its notebook is reported."""
    page = tmp_path / "book" / "01_one_head.md"
    page.parent.mkdir()
    shutil.copy2(REPO / "_config.yml", tmp_path / "_config.yml")
    shutil.copy2(REPO / "book" / "01_one_head.md", page)
    shutil.copy2(REPO / "book" / "01_one_head.ipynb", page.with_suffix(".ipynb"))
    monkeypatch.setattr(colab, "pages", lambda: [page])
    monkeypatch.setattr(colab, "REPO", tmp_path)
    assert colab.main(["--check"]) == 0
    page.write_text(page.read_text() + "\n```{code-cell} ipython3\nprint('new')\n```\n")
    assert colab.main(["--check"]) == 1
    assert "book/01_one_head.ipynb" in capsys.readouterr().err


def test_notebooks_are_the_chapters_headed_by_the_install_cell():
    for page in colab.pages():
        notebook = nbformat.read(page.with_suffix(".ipynb"), as_version=4)
        nbformat.validate(notebook)
        first = notebook.cells[0]
        assert first.cell_type == "code" and first.source.startswith(colab.INSTALL_MARKER), page.name
        assert f'COURSE_URL, BRANCH = "{URL}", "{BRANCH}"' in first.source
        assert notebook.metadata.get("accelerator") == "GPU", "Colab should offer a GPU runtime"
        chapter = jupytext.read(page, fmt="md:myst")
        assert [c.source for c in notebook.cells[1:]] == [c.source for c in chapter.cells], page.name
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "outputs committed"


@pytest.mark.slow
def test_every_chapter_page_opens_its_notebook_in_colab(built_book: Path):
    owner_repo = colab.github_path(URL)
    for docname in toc_files(reference=False):
        html = (built_book / f"{docname}.html").read_text()
        links = COLAB_LINK.findall(html)
        assert len(links) == 1, f"{docname}: expected one Colab link, found {len(links)}"
        url, path, label = links[0]
        assert "Open in Colab" in label, f"{docname}: the Colab link says {label!r}"
        prefix = f"{owner_repo}/blob/{BRANCH}/"
        assert path.startswith(prefix), f"{docname}: {url} is not in {URL} on {BRANCH}"
        notebook_path = REPO / path[len(prefix):]
        assert notebook_path == REPO / f"{docname}.ipynb", f"{docname}: links {notebook_path}"
        assert notebook_path.is_file(), f"{docname}: {url} names a file the repository does not have"
        first = nbformat.read(notebook_path, as_version=4).cells[0]
        assert first.cell_type == "code" and first.source.startswith(colab.INSTALL_MARKER), notebook_path


def run_install_cell(cwd: Path, fake_bin: Path) -> subprocess.CompletedProcess:
    source = nbformat.read(REPO / "book" / "09_performance_lab.ipynb", as_version=4).cells[0].source
    # After the cell, the chapter's own import must work from where the cell left the kernel.
    probe = source + "\nimport attention_variants\nprint('imported', attention_variants.__file__)\n"
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "FAKE_CLONE_FROM": str(REPO),
           # pip resolves and builds the package but installs nothing: the test's own environment stays as it is
           "PIP_DRY_RUN": "1", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def fake_git(tmp_path) -> Path:
    """A `git` that accepts only the cell's clone of the course's URL and copies this checkout instead."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = bin_dir / "git"
    git.write_text(f"""#!{sys.executable}
import os, shutil, sys
args = sys.argv[1:]
expected = ["clone", "--depth", "1", "--branch", {BRANCH!r}, {URL!r}]
if args[:-1] != expected:
    sys.exit(f"fake git: unexpected arguments {{args}}")
source = os.environ["FAKE_CLONE_FROM"]
os.mkdir(args[-1])
shutil.copy2(os.path.join(source, "pyproject.toml"), args[-1])
for folder in ("grader", "book", "benchmarks"):
    shutil.copytree(os.path.join(source, folder), os.path.join(args[-1], folder),
                    ignore=shutil.ignore_patterns("__pycache__", "_build"))
""")
    git.chmod(0o755)
    return bin_dir


def test_install_cell_fetches_the_course_installs_it_and_enters_the_book(tmp_path, fake_git):
    colab_home = tmp_path / "content"
    colab_home.mkdir()
    proc = run_install_cell(colab_home, fake_git)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    book = colab_home / "course" / "book"
    assert f"working folder: {book}" in proc.stdout
    assert f"imported {book / 'attention_variants.py'}" in proc.stdout


def test_install_cell_does_nothing_inside_a_checkout(tmp_path, fake_git):
    (fake_git / "git").write_text("#!/bin/sh\necho 'git must not run' >&2\nexit 3\n")
    proc = run_install_cell(REPO / "book", fake_git)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"working folder: {REPO / 'book'}" in proc.stdout
