"""A run that is killed loses no student, and what the instructor's terminal and files show cannot be forged
(issues 23 and 25): rows are on disk as each submission finishes, the rest say grader_error and how to resume;
two ids that spreadsheet-safe cells would write alike are refused, naming both; ids reach the terminal with their
control characters escaped; --gpus where kernels see no GPU and an --out that cannot be written are one-line
refusals. The tiny assignment of tests/test_grading.py (add 2 points, greet 3)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from test_grading import grade, read_csv, student, tiny_source, write_student

pytestmark = pytest.mark.slow

ESC_ID = "c_esc\x1b[31mRED"
SLOW = "import time\ntime.sleep(120)"


def test_a_killed_run_leaves_every_row_and_the_rest_resume_with_student(tmp_path):
    source = tiny_source(tmp_path / "solutions")
    subs, out = tmp_path / "class", tmp_path / "out"
    write_student(subs, "a_first", student(source))
    write_student(subs, "b_slow", student(source, after_add_test=SLOW))
    write_student(subs, ESC_ID, student(source))
    write_student(subs, "d_rest", student(source))
    cmd = [sys.executable, "-m", "grader", "grade", "tiny", str(subs), "--out", str(out), "--source", str(source),
           "--jobs", "1", "--timeout", "200", "--notebook-timeout", "300"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rows = {r["student_id"]: r for r in read_csv(out / "grades.csv")} if (out / "grades.csv").exists() else {}
            if rows.get("a_first", {}).get("status") == "graded":
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        time.sleep(2)                 # b_slow is now in its sleeping cell
    finally:
        os.killpg(proc.pid, signal.SIGKILL)       # the grader and everything it started, as the OOM killer would
        proc.communicate()
    rows = {r["student_id"]: r for r in read_csv(out / "grades.csv")}
    assert set(rows) == {"a_first", "b_slow", ESC_ID, "d_rest"}
    assert (rows["a_first"]["status"], rows["a_first"]["score"]) == ("graded", "5")
    for sid in ("b_slow", ESC_ID, "d_rest"):
        assert (rows[sid]["status"], rows[sid]["score"]) == ("grader_error", "0"), rows[sid]
        assert "--student" in rows[sid]["message"]
    tasks = read_csv(out / "tasks.csv")
    assert sorted({t["student_id"] for t in tasks}) == sorted(rows)

    resumed = grade("tiny", subs, out, "--source", str(source), "--jobs", "2", "--timeout", "20",
                    "--student", ESC_ID, "--student", "d_rest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = {r["student_id"]: r for r in read_csv(out / "grades.csv")}
    assert [rows[s]["status"] for s in ("a_first", "b_slow", ESC_ID, "d_rest")] == \
        ["graded", "grader_error", "graded", "graded"]
    # The id's escape code reaches the terminal escaped, never raw.
    assert "\x1b" not in resumed.stderr and "c_esc\\x1b[31mRED: graded 5/5" in resumed.stderr


def test_ids_that_csv_cells_would_write_alike_are_refused_naming_both(tmp_path):
    source = tiny_source(tmp_path / "solutions")
    subs, out = tmp_path / "class", tmp_path / "out"
    for sid in ("=1+1", "'=1+1", "honest"):
        write_student(subs, sid, student(source))
    proc = grade("tiny", subs, out, "--source", str(source), "--jobs", "1")
    assert proc.returncode == 2
    assert "'=1+1'" in proc.stderr and "\"'=1+1\"" in proc.stderr and "nothing was graded" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "grades.csv").exists()


def test_an_out_that_cannot_be_written_is_one_line(tmp_path):
    source = tiny_source(tmp_path / "solutions")
    subs = tmp_path / "class"
    write_student(subs, "honest", student(source))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = grade("tiny", subs, blocker / "out", "--source", str(source))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "cannot be written" in proc.stderr, proc.stderr


def test_gpus_where_kernels_see_none_is_refused_and_said(tmp_path):
    import torch

    source = tiny_source(tmp_path / "solutions")
    subs, out = tmp_path / "class", tmp_path / "out"
    write_student(subs, "honest", student(source))
    proc = grade("tiny", subs, out, "--source", str(source), "--gpus", "all", "--jobs", "1")
    if torch.cuda.is_available():     # a GPU machine: the kernels see it, and the run says how many
        assert proc.returncode == 0 and "CUDA device(s) visible to the kernels" in proc.stderr, proc.stderr[-2000:]
    else:
        assert proc.returncode == 2 and "sees no CUDA device" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and not (out / "grades.csv").exists()
