"""Bad submissions (issue 5): each gets a row with a clear status and message, and every other student in the same
run is graded normally. All of them go through ONE `python -m grader grade` run, then each row is checked.

The tiny assignment (tests/test_grading.py) has two tasks: add (2 points), then greet (3 points). A bad cell put
right after add's test cell leaves add's 2 points earned before it went wrong; greet's 3 show whether the rest
of the notebook still ran.
"""
from __future__ import annotations

import json

import pytest

from test_grading import grade, read_csv, student, tiny_source, tree_digest, write_student

pytestmark = pytest.mark.slow

LOOP = "while True:\n    pass"
SWALLOW = ("import time\nwhile True:\n    try:\n        time.sleep(0.01)\n    except KeyboardInterrupt:\n"
           "        pass")
EXIT = "import os\nos._exit(1)"
MEMORY = "hoard = []\nwhile True:\n    hoard.append(b'x' * 50_000_000)"
FORK = "import os\nwhile True:\n    os.fork()"
# 40 MB and 100 MB, both past the 1 MB kept: dropped past the cap, the notebook runs on and keeps its points
# (issue 25: only memory stops a notebook)
FLOOD = "for i in range(40):\n    print('x' * 2**20)"
FLOOD_STOP = "import time\nfor i in range(100):\n    print('y' * 2**20)\n    time.sleep(0.02)"

# student id -> (status, score, words the message must contain)
EXPECTED = {
    "honest": ("graded", "5", ""),
    "infinite_loop": ("timeout", "5", "interrupted"),
    "swallows_interrupt": ("timeout", "2", "ignored the interrupt"),
    "os_exit": ("crashed", "2", "kernel died"),
    "memory_bomb": ("memory_limit", "2", "memory"),
    "fork_bomb": ("process_limit", "2", "processes"),
    "output_flood": ("graded", "5", "the output past that was dropped"),
    "output_stop": ("graded", "5", "the output past that was dropped"),
    "invalid_json": ("invalid_notebook", "0", "not valid notebook JSON"),
    "empty_file": ("invalid_notebook", "0", "empty file"),
    "tests_deleted": ("graded", "0", "Deleted cells were restored"),
    "tests_edited": ("graded", "0", "Edited test cells were restored"),
    "renamed": ("graded", "5", "named 'my homework.ipynb'"),
    "extra_files": ("graded", "5", "Extra files were ignored"),
    "non_utf8": ("graded", "5", "not UTF-8"),
    "duplicate_ids": ("graded", "5", "Duplicated cell ids"),
    "other_assignment": ("wrong_assignment", "0", "assignment ps2"),
    "no_notebook": ("missing_notebook", "0", "No notebook"),
}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    source = tiny_source(base / "solutions")
    subs, out = base / "class", base / "out"
    wrong = {"add": "def add(a, b):\n    return a * b", "greet": "def greet(name):\n    return name"}

    write_student(subs, "honest", student(source))
    for sid, code in [("infinite_loop", LOOP), ("swallows_interrupt", SWALLOW), ("os_exit", EXIT),
                      ("memory_bomb", MEMORY), ("fork_bomb", FORK), ("output_flood", FLOOD),
                      ("output_stop", FLOOD_STOP)]:
        write_student(subs, sid, student(source, after_add_test=code))

    write_student(subs, "invalid_json", json.dumps(student(source)).encode()[:-40])
    write_student(subs, "empty_file", b"")

    # Wrong answers, and the tests that would catch them deleted or rewritten to pass: restored, they fail.
    deleted = student(source, answers=wrong)
    deleted["cells"] = [c for c in deleted["cells"]
                        if not c.get("metadata", {}).get("nbgrader", {}).get("grade_id", "").startswith("test_")]
    write_student(subs, "tests_deleted", deleted)
    edited = student(source, answers=wrong)
    for cell in edited["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "").startswith("test_"):
            cell["source"] = "assert True  # my tests now"
    write_student(subs, "tests_edited", edited)

    write_student(subs, "renamed", student(source), name="my homework.ipynb")
    folder = write_student(subs, "extra_files", student(source)).parent
    (folder / "scratch.py").write_text("print('not graded')\n")
    (folder / "data.csv").write_text("a,b\n1,2\n")

    # A comment typed in a Latin-1 editor: one byte that is not UTF-8 inside a cell.
    text = json.dumps(student(source, answers={"greet": "def greet(name):\n    # caf\u00e9\n"
                                                          "    return f'Hello, {name}!'"}), ensure_ascii=False)
    write_student(subs, "non_utf8", text.encode("utf-8").replace("caf\u00e9".encode(), b"caf\xe9"))

    dup = student(source)
    for cell in dup["cells"]:
        cell["id"] = "same-id"
    write_student(subs, "duplicate_ids", dup)

    other = student(source)
    for cell in other["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta:   # the cells of ps2's notebook, by their grade ids
            meta["grade_id"] = {"add": "causal_mask", "test_add": "test_causal_mask", "greet": "masked_softmax",
                                "test_greet": "test_masked_softmax"}.get(meta["grade_id"], "ps2_setup")
    write_student(subs, "other_assignment", other)

    (subs / "no_notebook").mkdir()
    (subs / "no_notebook" / "answers.txt").write_text("I did it on paper\n")

    before = tree_digest(subs)
    proc = grade("tiny", subs, out, "--source", str(source), "--jobs", "2", "--timeout", "8",
                 "--memory", "0.5", "--output", "1", "--notebook-timeout", "120")
    return dict(subs=subs, out=out, proc=proc, before=before)


def test_every_student_has_one_row_and_the_run_exits_0(bad_run):
    assert bad_run["proc"].returncode == 0, bad_run["proc"].stderr[-3000:]
    ids = [r["student_id"] for r in read_csv(bad_run["out"] / "grades.csv")]
    assert sorted(ids) == sorted(EXPECTED)


@pytest.mark.parametrize("sid", sorted(EXPECTED))
def test_bad_submission_row(bad_run, sid):
    rows = {r["student_id"]: r for r in read_csv(bad_run["out"] / "grades.csv")}
    status, score, words = EXPECTED[sid]
    row = rows[sid]
    assert (row["status"], row["score"], row["max_score"]) == (status, score, "5"), row
    assert words in row["message"], row["message"]
    assert "\n" not in row["message"]
    assert (bad_run["out"] / "feedback" / sid / "tiny.html").is_file()


def test_tasks_after_a_stopped_kernel_say_they_did_not_run(bad_run):
    tasks = {(t["student_id"], t["task"]): t for t in read_csv(bad_run["out"] / "tasks.csv")}
    for sid in ("swallows_interrupt", "os_exit", "memory_bomb", "fork_bomb"):
        assert tasks[(sid, "add")]["score"] == "2", sid
        assert tasks[(sid, "greet")]["score"] == "0" and tasks[(sid, "greet")]["message"].startswith("not run"), sid
    assert tasks[("tests_deleted", "add")]["message"].startswith("AssertionError")


def test_bad_submissions_left_untouched(bad_run):
    assert tree_digest(bad_run["subs"]) == bad_run["before"]


def test_watchdog_alone_caps_processes(tmp_path):
    """Where no pids cgroup can be made (and root ignores RLIMIT_NPROC), the watchdog is the cap: 200 children
    are stopped, all of them, and the status says why. (Bounded on purpose: no real fork bomb without a cgroup.)"""
    import nbformat
    import psutil

    from grader.pipeline.execute import execute
    from grader.sandbox import Limits
    from grader.sandbox.service import Sandbox

    spawn = ("import os, time\nfor i in range(200):\n    if os.fork() == 0:\n"
             "        os.execv('/bin/sleep', ['sleep', '6543'])\ntime.sleep(30)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(spawn), nbformat.v4.new_code_cell("1")])
    with Sandbox(Limits(cell_timeout=40, notebook_timeout=60)) as sandbox:
        sandbox.cgroup_pids = ""            # as where no pids cgroup can be made
        sandbox.start(log=lambda m: None)
        result = execute(nb, sandbox)
    assert (result.status, result.stopped_at) == ("process_limit", 0), result
    survivors = [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-1:] == ["6543"]]
    assert survivors == []
