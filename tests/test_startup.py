"""Start-up cost of the grader's processes (each dask worker, every `grader check` and `grade` pays it)."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_importing_the_grader_does_not_build_the_iri_grammar_and_notebooks_still_validate():
    code = ("import sys, json, grader.cluster, nbformat\n"
            "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])\n"
            "nbformat.validate(nb)\n"
            "bad = nbformat.v4.new_notebook(); bad.cells.append({'cell_type': 'code'})\n"
            "try:\n    nbformat.validate(bad); invalid = False\n"
            "except nbformat.ValidationError:\n    invalid = True\n"
            "print(json.dumps({'lark': 'lark' in sys.modules, 'invalid_refused': invalid}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {"lark": False, "invalid_refused": True}
