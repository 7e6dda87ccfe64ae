"""The sandbox, cheating and bad-input tests again, in the configurations an instructor's machine may have
(issue 11). This suite itself runs as whoever runs pytest; on the course's machines that is root with Python under
``/root`` (0700), a folder ``nobody`` cannot enter. Here the same tests run

- as an unprivileged user (``mha-student``), with an interpreter in a public place (``/opt/mha-venv``);
- as root with that public interpreter,

each in a copy of the checkout owned by the user running it. ``.ci/test-matrix-setup`` makes the user and the
environment (CI runs it); without them these tests skip and say so, and with MHA_REQUIRE_MATRIX=1 (CI) they fail.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.matrix]

VENV = Path("/opt/mha-venv")
USER = "mha-student"
# test_sandbox_layouts adds, in both configurations, the grader run from a venv inside the checkout (in the home
# folder), under /tmp and beside the notebook (issue 25); test_sandbox_seccomp the kernels' filter (issue 23).
TESTS = ["tests/test_sandbox.py", "tests/test_sandbox_seccomp.py", "tests/test_sandbox_layouts.py",
         "tests/test_sandbox_refusal.py",
         "tests/test_grading_bad_input.py", "tests/test_cheating.py",
         "tests/test_grading.py::test_readme_sample_class_end_to_end"]


def _ready() -> str:
    if os.geteuid() != 0:
        return "the configuration matrix needs root (to run as another user)"
    if not (VENV / "bin" / "python").exists():
        return f"{VENV} is missing: run .ci/test-matrix-setup as root"
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        return f"user {USER} is missing: run .ci/test-matrix-setup as root"
    return ""


@pytest.fixture
def checkout(tmp_path_factory) -> Path:
    why = _ready()
    if why:
        if os.environ.get("MHA_REQUIRE_MATRIX"):
            pytest.fail(why)
        pytest.skip(why)
    dest = Path(f"/tmp/mha-matrix-{os.getpid()}-{os.urandom(3).hex()}")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=2400)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " skipped" not in proc.stdout.splitlines()[-1], tail
    return proc


def test_as_an_unprivileged_user(checkout):
    subprocess.run(["chown", "-R", f"{USER}:", str(checkout)], check=True)
    env = ["env", "-i", f"HOME=/home/{USER}", f"PATH={VENV}/bin:/usr/bin:/bin", "LANG=C.UTF-8",
           f"PYTHONPATH={checkout}"]
    _run(["runuser", "-u", USER, "--", *env, f"{VENV}/bin/python", "-m", "pytest", "--full", "-q", "-p",
          "no:cacheprovider", *TESTS], checkout)


def test_as_root_with_a_public_interpreter(checkout):
    env = ["env", "-i", "HOME=/root", f"PATH={VENV}/bin:/usr/bin:/bin", "LANG=C.UTF-8", f"PYTHONPATH={checkout}"]
    _run([*env, f"{VENV}/bin/python", "-m", "pytest", "--full", "-q", "-p", "no:cacheprovider",
          *TESTS], checkout)
