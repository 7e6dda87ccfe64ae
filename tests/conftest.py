"""Shared fixtures and the two tiers. The built book is made once per test session, from scratch, in a temporary folder.

The tiers: ``python -m pytest`` is the fast tier; ``python -m pytest --full`` (what ``.ci/run`` runs) adds every test
marked with one of FULL_TIER (markers registered in pyproject.toml): the book build under load, the browser, the
sandbox matrix, PostgreSQL, Dask, stock nbgrader runs and long grading runs. A test that uses the built book (or
builds a small one) is marked ``book`` here, whatever its file says.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]

# Markers whose tests only the full tier runs (pyproject.toml says what each needs).
FULL_TIER = ("book", "browser", "matrix", "postgres", "dask", "nbgrader", "slow")
BOOK_FIXTURES = {"built_book", "scratch_copy"}


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="the full tier: also the tests marked " + ", ".join(FULL_TIER) + " (CI runs it)")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Mark book tests (by the fixtures they use); group tests for pytest-xdist (`--dist loadgroup`): every book
    test in one group, so one worker builds the book and reads it, and every other test with the rest of its file,
    so a file's module-scoped fixture (one grading run read by many tests) runs once. Outside --full, deselect the
    full tier's tests. An explicit -m expression chooses for itself; MHA_BOOK_HTML (a prebuilt site) keeps the
    tests that only read the built book."""
    for item in items:
        if BOOK_FIXTURES & set(item.fixturenames):
            item.add_marker("book")
        group = "book" if item.get_closest_marker("book") else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
    if config.getoption("--full") or config.getoption("markexpr"):
        return
    prebuilt = bool(os.environ.get("MHA_BOOK_HTML"))
    keep, full_only = [], []
    for item in items:
        marks = {mark.name for mark in item.iter_markers()} & set(FULL_TIER)
        if prebuilt and marks == {"book"} and "scratch_copy" not in item.fixturenames:
            marks = set()
        (full_only if marks else keep).append(item)
    if full_only:
        config.hook.pytest_deselected(items=full_only)
        items[:] = keep


def pytest_report_header(config):
    if config.getoption("--full"):
        return "tier: full (every test)"
    return "tier: fast (tests marked " + ", ".join(FULL_TIER) + " are deselected; --full runs them)"


# The part "Teaching with this course": reference pages with no code, so no notebook to download or open in Colab.
REFERENCE_PART = "book/teaching/"


def toc_files(reference: bool = True) -> list[str]:
    """The docnames in _toc.yml (root first), e.g. 'book/01_one_head'; without the reference part's pages
    (book/teaching/) when ``reference`` is False."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    files += [c["file"] for c in toc.get("chapters", [])]
    return [f for f in files if reference or not f.startswith(REFERENCE_PART)]


def jupyter_book_build(source: Path, output: Path, *extra: str, timeout: int = 1500,
                       warnings_as_errors: bool = True) -> subprocess.CompletedProcess:
    """Build a Jupyter Book 1 project (by default with warnings as errors); return the finished process."""
    strict = ["-W", "--keep-going"] if warnings_as_errors else []
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", "--all", *strict,
           "--path-output", str(output), *extra, str(source)]
    # No MPLBACKEND here: the kernels inherit it, and a non-inline backend would leave the pages without figures.
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONHASHSEED"] = "0"
    return subprocess.run(cmd, cwd=source, capture_output=True, text=True, timeout=timeout, env=env)


BUSY_LOOPS = 2  # a newcomer's 2-core laptop with other work on it: the build must not depend on an idle machine


@contextlib.contextmanager
def busy_loops(count: int = BUSY_LOOPS):
    """Run `count` Python processes that spin on the CPU for as long as the block runs; yields them (Popen).

    They are started by this fixture and stopped by their process ids, nothing else.
    """
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(timeout=30)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The whole book built from scratch (no execution cache) into a temporary folder; returns _build/html.

    The build runs under load: two busy loops spin beside it for the whole build, so a page that depends on an
    idle machine (a timing cell asserting more measurements than a loaded machine gives) fails here, not on a
    reader's first build. This one build is the suite's under-load test; there is no second one.
    Set MHA_BOOK_HTML to an already built site to skip the build while working on the tests themselves.
    """
    prebuilt = os.environ.get("MHA_BOOK_HTML")
    if prebuilt:
        return Path(prebuilt)
    # Under pytest-xdist every worker has this session fixture: the first to get here builds, the others wait and
    # read where it built (the book tests share one xdist group, so normally only one worker ever asks).
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above each worker's own
    with FileLock(str(shared / "built-book.lock")):
        done = shared / "built-book.path"
        if done.exists():
            return Path(done.read_text())
        html = _build_book(tmp_path_factory.mktemp("book"))
        done.write_text(str(html))
        return html


def _build_book(out: Path) -> Path:
    """Build the book into ``out`` under load (see ``built_book``); returns ``out/_build/html`` or fails the test."""
    with busy_loops() as spinners:
        proc = jupyter_book_build(REPO, out)
        stopped = [s.args for s in spinners if s.poll() is not None]
    assert not stopped, f"a busy loop stopped before the build ended, so the build was not under load: {stopped}"
    log = REPO / "_build" / "test-book-build.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"jupyter-book build failed (exit {proc.returncode}); full log in {log}\n{tail}")
    html = out / "_build" / "html"
    assert (html / "index.html").exists(), f"no index.html in {html}"
    return html


@pytest.fixture
def scratch_copy(tmp_path) -> Path:
    """A copy of the repository's book sources (config, toc, book/) in a temporary folder."""
    dest = tmp_path / "repo"
    dest.mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "book", dest / "book", ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    return dest
