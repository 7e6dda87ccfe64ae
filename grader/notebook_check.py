"""Check a notebook from inside itself: ``from grader.notebook_check import check_notebook; check_notebook()``.

The call runs ``python -m grader check`` (:mod:`grader.check`: the visible tests, in the same sandbox and under the
same limits as grading) on the notebook's **saved** file, in a subprocess, and prints its table and messages in the
cell. It finds the notebook from ``JPY_SESSION_NAME``, which Jupyter's server (jupyter_server 2, so JupyterLab and
Notebook 7) sets in the environment of every kernel it starts for a notebook, or takes an explicit path. What is
checked is the file on disk, so save first (Ctrl+S or Cmd+S); the call says how long ago the file was saved.

Inside a kernel that is being graded the call does nothing but print one line: such a kernel was not started by a
Jupyter server (no ``JPY_SESSION_NAME``), and the grader's sandbox gives it its own runtime folder (the kernel's
environment, grader.sandbox.service.Sandbox.kernel_env: ``/box/conn`` isolated, ``.`` without a sandbox) or
nbgrader's ``NBGRADER_EXECUTION``. So a student may leave the call in a handed-in notebook.

Standard library only, and nothing of the grader is imported: the grading kernels import this module from the
sandbox's read-only copy of the package (grader.sandbox.bubblewrap.KERNEL_SIDE), and the student kit ships it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]     # the folder that holds this grader package
STALE_SECONDS = 10.0      # a saved file older than this when the call starts may not hold the latest edits
SAVE_FIRST = "checks the SAVED notebook: save it first (Ctrl+S, or Cmd+S on a Mac)"


@dataclass
class CheckResult:
    """What the call did: the notebook checked (None when nothing was), ``grader check``'s exit code (0: the
    notebook ran within every grading limit; None when nothing ran) and everything it printed."""
    notebook: Path | None
    returncode: int | None
    output: str

    def __repr__(self) -> str:      # the cell's own value: short, the table was printed already
        return f"CheckResult(notebook={str(self.notebook)!r}, returncode={self.returncode})"


def in_grading_kernel(env=None) -> bool:
    """True inside a kernel the grader (or nbgrader's autograde) runs: no Jupyter server started it, and its
    runtime folder is the one the grader's sandbox gives a kernel, or nbgrader says it is grading."""
    env = os.environ if env is None else env
    if env.get("NBGRADER_EXECUTION"):
        return True
    runtime = env.get("JUPYTER_RUNTIME_DIR", "")
    return "JPY_SESSION_NAME" not in env and (runtime == "." or runtime.startswith("/box/"))


def find_notebook(path=None, env=None) -> Path | None:
    """The notebook to check: ``path`` when given, else the one ``JPY_SESSION_NAME`` names (an absolute path, or
    one relative to the server's root, tried from the kernel's folder and then by its file name there)."""
    env = os.environ if env is None else env
    if path is not None:
        return Path(path).expanduser()
    session = env.get("JPY_SESSION_NAME")
    if not session:
        return None
    named = Path(session).expanduser()
    for candidate in (named, Path.cwd() / named, Path.cwd() / named.name):
        if candidate.is_file():
            return candidate
    return named


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def check_notebook(path=None, *, no_sandbox: bool = False, timeout: float | None = None,
                   stale_after: float = STALE_SECONDS, out=print) -> CheckResult:
    """Run ``python -m grader check`` on the saved notebook and print what it prints, line by line.

    ``path``: the notebook (default: the one this kernel was started for, from ``JPY_SESSION_NAME``);
    ``no_sandbox``: pass ``--no-sandbox`` (a machine without bubblewrap: macOS, Windows); ``timeout``: seconds per
    cell, as ``check --timeout``; ``stale_after``: seconds after which the saved file is said to be possibly older
    than the notebook on screen. Returns a :class:`CheckResult`; raises nothing for a missing notebook (it says so).
    """
    if in_grading_kernel():
        out("check_notebook: not run while the notebook is being graded (it checks a notebook you are editing).")
        return CheckResult(None, None, "")
    notebook = find_notebook(path)
    if notebook is None:
        out("check_notebook: cannot tell which notebook this is (no JPY_SESSION_NAME: the kernel was not started "
            "by JupyterLab or Jupyter Notebook). Give its path: check_notebook('ps1.ipynb').")
        return CheckResult(None, None, "")
    if not notebook.is_file():
        out(f"check_notebook: {notebook} is not a file (renamed or moved since the kernel started?). Give its "
            "path: check_notebook('ps1.ipynb').")
        return CheckResult(notebook, None, "")
    age = time.time() - notebook.stat().st_mtime
    out(f"check_notebook {SAVE_FIRST}.")
    if age > stale_after:
        out(f"The saved file is {_age(age)} old: changes made since then are not checked. Save, then run this "
            "cell again.")
    command = [sys.executable, "-m", "grader", "check", str(notebook.resolve())]
    command += ["--no-sandbox"] if no_sandbox else []
    command += ["--timeout", str(timeout)] if timeout is not None else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                      os.environ.get("PYTHONPATH")])))
    env.pop("JPY_SESSION_NAME", None)      # the check's own kernel is not this notebook's
    lines = []
    with subprocess.Popen(command, cwd=PACKAGE_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, bufsize=1) as proc:
        for line in proc.stdout:      # shown as it comes: a check takes seconds
            lines.append(line.rstrip("\n"))
            out(lines[-1])
    return CheckResult(notebook, proc.returncode, "\n".join(lines))
