"""A thread the student leaves running cannot rewrite the probes' results (issue 23): as a normal user a blank
notebook whose thread kept rewriting the probe files sometimes earned points. The probe files are read once every
process of the kernel is stopped, and a file changed after its probe cell is dropped with its task. One run of
ps1: an honest student, a blank one, and the blank one plus the rewriting thread."""
from __future__ import annotations

import json

import nbformat
import pytest

from conftest import REPO
from test_grading import grade, read_csv, student, write_student

pytestmark = pytest.mark.slow

SOURCE = REPO / "solutions" / "ps1" / "ps1.ipynb"

# Every probe result file made to say "ran, and raised what was asked", again and again while the probes run and
# after they finish.
REWRITER = '''
import json, os, threading, time
FAKE = {"ok": True, "raised": "ValueError", "raised_bases": ["ValueError", "AssertionError", "TypeError",
        "RuntimeError", "IndexError", "Exception", "BaseException"], "builtin_attention_calls": {}, "device": "cpu"}
def rewrite():
    while True:
        for root, dirs, files in os.walk("_probe"):
            for name in files:
                if name.endswith(".json"):
                    try:
                        with open(os.path.join(root, name), "w") as f:
                            json.dump(FAKE, f)
                    except OSError:
                        pass
        time.sleep(0.001)
threading.Thread(target=rewrite, daemon=True).start()
'''


@pytest.fixture(scope="module")
def race_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("race")
    subs, out = base / "class", base / "out"
    write_student(subs, "honest", student(SOURCE), name="ps1.ipynb")
    write_student(subs, "blank", student(SOURCE, honest=False), name="ps1.ipynb")
    racer = student(SOURCE, honest=False)
    first_code = next(i for i, c in enumerate(racer["cells"]) if c["cell_type"] == "code")
    cell = nbformat.v4.new_code_cell(REWRITER)
    racer["cells"].insert(first_code + 1, json.loads(json.dumps(cell)))
    write_student(subs, "racer", racer, name="ps1.ipynb")
    proc = grade("ps1", subs, out, "--jobs", "2")
    return dict(proc=proc, rows={r["student_id"]: r for r in read_csv(out / "grades.csv")})


def test_a_thread_rewriting_probe_files_earns_nothing(race_run):
    assert race_run["proc"].returncode == 0, race_run["proc"].stderr[-3000:]
    rows = race_run["rows"]
    assert rows["honest"]["score"] == rows["honest"]["max_score"]
    assert float(rows["racer"]["score"]) <= float(rows["blank"]["score"]), rows["racer"]
    assert "changed after their probe finished" in rows["racer"]["message"]
