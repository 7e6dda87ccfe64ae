"""Write the Colab notebooks: ``book/<page>.ipynb`` next to each page ``book/<page>.md`` of the table of contents.

Colab opens ``.ipynb`` files from GitHub, not MyST Markdown, so every page of the book is also committed as a
notebook: jupytext's conversion of the page, with one cell put first that fetches the course and installs its
package when the notebook runs outside a checkout (on Colab). The book's "Colab" launch button (sphinx-book-theme,
``launch_buttons.colab_url`` in ``_config.yml``) links to the ``.ipynb`` whenever one sits next to the page. The
build ignores these notebooks (``exclude_patterns``); the chapters stay the source.

    python scripts/colab_notebooks.py            # write the notebooks after editing a chapter
    python scripts/colab_notebooks.py --check    # exit 1 and name the stale ones (tests/test_colab.py does this)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlparse

import jupytext
import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]

INSTALL_MARKER = "# Colab: fetch the course and install its package"
INSTALL_CELL = '''{marker} (the chapters import its files: book/attention_variants.py,
# benchmarks/results.json, the grader package). Inside a checkout of the course this cell does nothing.
# For the timing cells choose a GPU first: Runtime > Change runtime type > GPU.
import importlib
import os
import subprocess
import sys
from pathlib import Path

COURSE_URL, BRANCH = "{url}", "{branch}"
if not Path("attention_variants.py").exists():  # not in the course's book/ folder: fetch the course
    if not Path("course").exists():
        subprocess.run(["git", "clone", "--depth", "1", "--branch", BRANCH, COURSE_URL, "course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "./course"], check=True)
    os.chdir("course/book")
    importlib.invalidate_caches()
print("working folder:", os.getcwd())
'''


def repository() -> tuple[str, str]:
    """(url, branch) of the course's repository from _config.yml's ``repository`` section."""
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    repo = config["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def github_path(url: str) -> str:
    """'owner/name' of a GitHub URL; ValueError for any other host (Colab opens notebooks from GitHub only)."""
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.netloc != "github.com" or len(parts) != 2:
        raise ValueError(f"repository.url must be https://github.com/<owner>/<name> for Colab links, not {url!r}")
    return "/".join(parts)


def pages() -> list[Path]:
    """The book's pages with code in table-of-contents order, as paths of their .md sources: every page but the
    part "Teaching with this course" (book/teaching/), a reference with nothing to run."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    names = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    names += [c["file"] for c in toc.get("chapters", [])]
    return [REPO / f"{name}.md" for name in names if not name.startswith("book/teaching/")]


def colab_notebook(page: Path) -> nbformat.NotebookNode:
    """The page as a notebook (jupytext's MyST reader), headed by the install cell; cell ids are stable."""
    url, branch = repository()
    github_path(url)
    notebook = jupytext.read(page, fmt="md:myst")
    notebook.metadata.pop("jupytext", None)  # not a jupytext pair: the .md is the source, this file is generated
    # Colab reads these when it opens the notebook: a GPU runtime, and the file's name in its title bar.
    notebook.metadata["accelerator"] = "GPU"
    notebook.metadata["colab"] = {"provenance": [], "name": page.with_suffix(".ipynb").name}
    install = nbformat.v4.new_code_cell(INSTALL_CELL.format(marker=INSTALL_MARKER, url=url, branch=branch))
    notebook.cells.insert(0, install)
    for number, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{number}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    nbformat.validate(notebook)
    return notebook


def notebook_text(page: Path) -> str:
    return nbformat.writes(colab_notebook(page)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which notebooks are missing or stale")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        target, text = page.with_suffix(".ipynb"), notebook_text(page)
        if target.exists() and target.read_text() == text:
            continue
        if args.check:
            stale.append(target.relative_to(REPO).as_posix())
        else:
            target.write_text(text)
            print("wrote", target.relative_to(REPO))
    if stale:
        print("stale or missing Colab notebooks (run python scripts/colab_notebooks.py and commit them):",
              *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
