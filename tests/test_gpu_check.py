"""scripts/gpu_check.sh, the one command that runs every CUDA path: what can be checked without a GPU.

Its GPU steps run only where CUDA is (a session lent a GPU runs the script itself); here: it parses, its Python
parts compile, what it names exists, the book's teaching part names it, and without CUDA it refuses at once, saying why.
"""
from __future__ import annotations

import os
import re
import subprocess

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_script_parses_and_its_python_compiles():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = SCRIPT.read_text()
    snippets = re.findall(r"<<'EOF'[^\n]*\n(.*?)\nEOF\n", text, re.S)
    assert len(snippets) == 3, "expected the CUDA check, the chapter runner and the grades check"
    for snippet in snippets:
        compile(snippet, str(SCRIPT), "exec")


def test_everything_the_script_names_exists():
    text = SCRIPT.read_text()
    for chapter in re.findall(r'"(\d\d_[a-z0-9_]+)"', text):
        assert (REPO / "book" / f"{chapter}.md").is_file(), chapter
    assert set(re.findall(r'"(\d\d)_', text)) == {"07", "09", "10"}, "the timing chapters are 7, 9 and 10"
    for path, test in re.findall(r"(tests/test_\w+\.py)(?:::(\w+))?", text):
        assert (REPO / path).is_file(), path
        if test:
            assert re.search(rf"^def {test}\(", (REPO / path).read_text(), re.M), f"{path}::{test} is gone"
    assert (REPO / "samples" / "make_class.py").is_file()
    for ps in re.findall(r"^    for ps in ((?:ps\d )+)", text, re.M)[0].split():
        assert (REPO / "solutions" / ps / f"{ps}.ipynb").is_file(), ps
    limits = [int(n) for n in re.findall(r"^step \w+ (\d+) ", text, re.M)]
    assert len(limits) == 4 and sum(limits) < 8 * 60, f"step limits {limits} must add up to under 8 minutes"


def test_the_teaching_part_names_the_gpu_check():
    page = (REPO / "book" / "teaching" / "site.md").read_text()
    assert re.search(r"Running the GPU checks.*scripts/gpu_check\.sh", page, re.S)


def test_without_cuda_it_refuses_and_runs_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path)}  # no GPU, even on a machine with one
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: no CUDA device" in proc.stderr and "needs one" in proc.stderr
    assert "REFUSED" in (tmp_path / "gpu_check_summary.txt").read_text()
    assert not list((tmp_path / "chapters").iterdir()), "a step ran without CUDA"
