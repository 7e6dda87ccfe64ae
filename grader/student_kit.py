"""``python -m grader student-kit DIR``: write what a class's students get, and nothing else.

    DIR/exercises/<ps>/<ps>.ipynb          the released notebooks (exercises/, as ``release`` wrote them)
    DIR/grader/...                         the modules ``python -m grader check`` and the notebooks import: found by
                                           importing them in a fresh interpreter, plus the kernel-side package the
                                           sandbox binds into every kernel (grader.sandbox.bubblewrap.KERNEL_SIDE)
    DIR/requirements.txt                   the student's packages, pinned as the course's requirements.txt pins them
    DIR/jupyter-config/labconfig/page_config.json
                                           disables nbgrader's instructor plugins in JupyterLab, for a student whose
                                           environment has nbgrader (the kit's requirements do not install it)
    DIR/README.md                          install, open JupyterLab, check before handing in

Nothing of solutions/ or tests/ is copied: no solution, hidden test, answer key, assignment spec, verification
code or planted bug (tests/test_student_kit.py scans every file of a kit for them). ``check`` works from the kit:
the kit's root is laid out as the repository (``grader/`` beside ``exercises/``), so the released notebook is
found where ``grader.paths`` looks for it, and the assignment is told from the released notebooks' grade ids.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from grader.paths import EXERCISES, REPO

# What a student runs: the check command, and what the notebooks import (the sandbox starts the rest by itself).
ENTRY_MODULES = ("grader.__main__", "grader.check", "grader.diagnose", "grader.diagnose_perf", "grader.notebook_check",
                 "grader.sandbox.service", "grader.sandbox.isolation", "grader.sandbox.runner", "grader.sandbox.inside")
# The student's packages (names as in requirements.txt): PyTorch, JupyterLab and its kernel, and what `check` uses.
STUDENT_PACKAGES = ("torch", "numpy", "jupyterlab", "ipykernel", "nbformat", "nbclient", "psutil")
# nbgrader's JupyterLab plugins for instructors (`jupyter labextension list` on nbgrader 0.9.6 names them).
INSTRUCTOR_PLUGINS = ("@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                      "@jupyter/nbgrader:course-list")
FORBIDDEN_PARTS = {"solutions", "tests", "answer_key.json", "make_notebook.py", "assignments", "verify"}

README = """# {title}: student kit

This folder holds the course's notebooks and the `grader check` command that runs a notebook's visible tests the
way grading runs them. It holds no solutions and no hidden tests.

## Install (once)

You need Python 3.10 or newer. Make a virtual environment in this folder and install the packages into it
from here (on Debian and Ubuntu, `python` is `python3`, and `pip install` outside a virtual environment is
refused):

    python3 -m venv .venv
    . .venv/bin/activate        # Windows: .venv\\Scripts\\activate

Without an NVIDIA GPU, install PyTorch's CPU build now, before anything else (on Linux the same version from PyPI
is the CUDA build, several GB with its NVIDIA packages); with a GPU, skip this line:

    pip install torch=={torch} --index-url https://download.pytorch.org/whl/cpu

Then the rest:

    pip install -r requirements.txt

`grader check` runs your notebook in a sandbox made with bubblewrap (Linux): `sudo apt install bubblewrap` on
Debian and Ubuntu. Where there is none (macOS, Windows without WSL), add `--no-sandbox`: it checks your own notebook
without isolation.

## Work

    . .venv/bin/activate
    JUPYTER_CONFIG_PATH="$PWD/jupyter-config" jupyter lab exercises/

(As root, JupyterLab also needs `--allow-root`.) Open `exercises/ps1/ps1.ipynb`, write your code where it says
`YOUR CODE HERE`, and run the test cell below each answer. Save often.

## Check before handing in

From this folder:

    python -m grader check exercises/ps1/ps1.ipynb

It prints one line per task with the points the visible tests give, the total, and the status; it exits 0 when
the notebook ran within the grading limits. Grading also runs hidden tests, so full marks here are necessary, not
sufficient. Hand in the `.ipynb` file itself (not a copy renamed, not a PDF).

Or from inside the notebook: save it first (Ctrl+S), then run in a new cell

    from grader.notebook_check import check_notebook; check_notebook()

It runs the same check on the saved file and prints its table in the cell; the cell may stay in when you hand in.

## Instructor tools in JupyterLab

The packages above do not include nbgrader, so JupyterLab shows no instructor tools. If your environment has
nbgrader (a shared JupyterHub image, say), the `jupyter-config` folder above hides its Formgrader, Create Assignment
and Courses panels; to hide them in every session of that environment instead:

{disable}
"""


def kit_modules() -> list[str]:
    """The grader package's files a student needs (paths relative to grader/): what ENTRY_MODULES import, found by
    importing them in a fresh interpreter on this checkout, plus the kernel-side files the sandbox binds, plus the
    whole sandbox package (it imports some of its parts only when a sandbox starts: the seccomp filter, the
    preflight)."""
    from grader.sandbox.bubblewrap import KERNEL_SIDE

    probe = ("import importlib, json, sys\n"
             "for name in sys.argv[1:]:\n    importlib.import_module(name)\n"
             "print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())\n"
             "                        if n.split('.')[0] == 'grader' and getattr(m, '__file__', None))))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    found = subprocess.run([sys.executable, "-c", probe, *ENTRY_MODULES], capture_output=True, text=True,
                           cwd=REPO, env=env, check=True)
    package = REPO / "grader"
    files = {Path(f).resolve().relative_to(package).as_posix() for f in json.loads(found.stdout)}
    sandbox = {p.relative_to(package).as_posix() for p in (package / "sandbox").glob("*.py")}
    return sorted(files | set(KERNEL_SIDE) | sandbox)


def student_requirements(requirements: Path = REPO / "requirements.txt") -> list[str]:
    """The pins of STUDENT_PACKAGES, read from the course's requirements.txt (the one place pins are written)."""
    pins = {}
    for line in requirements.read_text().splitlines():
        name = line.split("==")[0].split("[")[0].strip().lower()
        if "==" in line and not line.lstrip().startswith("#"):
            pins[name] = line.strip()
    missing = [p for p in STUDENT_PACKAGES if p not in pins]
    if missing:
        raise SystemExit(f"{requirements} pins none of {missing}: the student kit needs an exact version of each")
    return [pins[p] for p in STUDENT_PACKAGES]


def write_kit(dest: Path, title: str = "Multi-Head Attention, Step by Step") -> list[Path]:
    """Write the student kit into `dest` (created; refused when it exists and is not empty, or lies in the
    checkout's solutions/ or tests/). Returns the files written. Raises SystemExit with the reason."""
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest} exists and is not empty: give a new folder for the student kit")
    if any(dest.is_relative_to(REPO / part) for part in ("solutions", "tests", "grader", "exercises")):
        raise SystemExit(f"{dest} is inside the course's own folders: give a folder outside them")
    modules = kit_modules()
    leaked = [m for m in modules if FORBIDDEN_PARTS & set(Path(m).parts)]
    if leaked:      # an import added to check's path would ship instructor code: stop, never ship it
        raise SystemExit(f"grader check now imports instructor modules ({', '.join(leaked)}); the kit is not written")
    written = []
    for module in modules:
        target = dest / "grader" / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "grader" / module, target)
        written.append(target)
    for notebook in sorted(EXERCISES.glob("*/*.ipynb")):
        target = dest / "exercises" / notebook.relative_to(EXERCISES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebook, target)
        written.append(target)
    requirements = student_requirements()
    torch_version = next(r for r in requirements if r.startswith("torch==")).split("==")[1]
    files = {
        "requirements.txt": "# The student's packages, pinned as the course pins them.\n" + "\n".join(requirements),
        "jupyter-config/labconfig/page_config.json":
            json.dumps({"disabledExtensions": dict.fromkeys(INSTRUCTOR_PLUGINS, True)}, indent=2),
        "README.md": README.format(title=title, torch=torch_version, disable="\n".join(
            f"    jupyter labextension disable --level=sys_prefix {p}" for p in INSTRUCTOR_PLUGINS)),
    }
    for name, text in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n", encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader student-kit", description=__doc__.split("\n\n")[0])
    p.add_argument("dest", type=Path, help="a new folder to write the kit into")
    args = p.parse_args(argv)
    written = write_kit(args.dest)
    notebooks = sum(1 for f in written if f.suffix == ".ipynb")
    print(f"student kit: {len(written)} files in {args.dest} ({notebooks} notebooks, the check command, "
          "requirements.txt, README.md); nothing from solutions/ or tests/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
