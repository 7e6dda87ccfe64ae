"""Write a sample class to grade: ``python samples/make_class.py ps1`` -> ``samples/ps1-class/``.

Seven students made from the instructor's source (solutions/<ps>/<ps>.ipynb), one per kind of outcome an
instructor meets, so that ``python -m grader grade ps1 samples/ps1-class --out grading-out`` shows them all:

    ada   every task solved                                  graded, full marks
    ben   the notebook as released, nothing done             graded, 0
    cai   last task left undone, the rest solved             graded, partial
    dee   solved, but the notebook was renamed, plus a file  graded, full marks, says what it did
    eve   solved, then os._exit() in a cell of her own       crashed, the tasks before it count
    fay   an empty file (a failed upload)                    invalid_notebook
    gus   a folder with no notebook in it                    missing_notebook

The class is generated rather than shipped, so it always matches the current solutions. It is a copy: nothing in
solutions/ or exercises/ is written.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grader.bench_grading import honest_copy, release_copy  # noqa: E402
from grader.pipeline.sanitize import is_answer_cell  # noqa: E402


def make_class(assignment: str, dest: Path) -> list[str]:
    source_path = REPO / "solutions" / assignment / f"{assignment}.ipynb"
    source = nbformat.read(str(source_path), as_version=4)
    name = source_path.name
    if dest.exists():
        shutil.rmtree(dest)

    def put(student: str, nb, filename: str = name) -> Path:
        folder = dest / student
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(folder / filename))
        return folder

    put("ada", honest_copy(source))
    put("ben", release_copy(source))

    partial, release = honest_copy(source), release_copy(source)
    # The last task left undone: the earlier ones do not depend on it, so they still earn their points.
    last = max(i for i, c in enumerate(source.cells) if is_answer_cell(c) and c.cell_type == "code")
    partial.cells[last] = release.cells[last]
    put("cai", partial)

    folder = put("dee", honest_copy(source), f"{assignment} (final).ipynb")
    (folder / "notes.txt").write_text("My notes, not part of the notebook.\n")

    crashing = honest_copy(source)
    # After the first test cell: that task is earned, everything after the crash is not run.
    first_test = next(i for i, c in enumerate(source.cells) if c.metadata.get("nbgrader", {}).get("grade"))
    crashing.cells.insert(first_test + 1, nbformat.v4.new_code_cell("import os\nos._exit(0)  # 'stop here'"))
    put("eve", crashing)

    (dest / "fay").mkdir(parents=True)
    (dest / "fay" / name).write_bytes(b"")
    (dest / "gus").mkdir(parents=True)
    (dest / "gus" / "answers.md").write_text("I wrote my answers here instead of in the notebook.\n")
    return sorted(p.name for p in dest.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", nargs="?", default="ps1")
    parser.add_argument("--dest", type=Path, default=None, help="default: samples/<assignment>-class")
    args = parser.parse_args()
    dest = args.dest or Path(__file__).resolve().parent / f"{args.assignment}-class"
    students = make_class(args.assignment, dest)
    print(f"wrote {len(students)} students to {dest}: {', '.join(students)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
