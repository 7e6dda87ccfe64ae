"""``python -m grader grade ... --cluster ADDRESS`` (grader.cluster): the notebooks run on dask.distributed workers,
everything that decides a score stays in the instructor's process. A local cluster of worker processes needs no
daemon and no network, so these tests run it for real."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from conftest import REPO

SECRET = "5e" * 32     # the same secret in both OUTs: the same probe seeds, so the same rows


def grade(subs: Path, out: Path, *extra: str, **popen) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    (out / ".grader-secret").write_text(SECRET)
    return subprocess.run([sys.executable, "-m", "grader", "grade", "ps1", str(subs), "--out", str(out), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300, **popen)


def sample_class(tmp_path: Path) -> Path:
    subs = tmp_path / "ps1-class"
    made = subprocess.run([sys.executable, "samples/make_class.py", "ps1", "--dest", str(subs)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return subs


def test_parse_address():
    from grader.cluster import parse_address

    assert parse_address("local:3") == ("local", 3)
    assert parse_address("tcp://10.0.0.5:8786") == ("remote", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", "10.0.0.5:8786"):
        with pytest.raises(ValueError, match="--cluster"):
            parse_address(bad)


def test_a_workers_answer_is_rebuilt_as_plain_files_only_inside_its_folder():
    from grader.cluster import rebuild_execution

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", outputs=[
        nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)])])
    b64 = base64.b64encode(b"{}").decode()
    answer = json.dumps({"notebook": nbformat.writes(executed), "worker": "tcp://w:1",
                         "execution": {"status": "crashed", "message": "m", "ran": [0], "stopped_at": 1,
                                       "peak_rss": 5, "output_dropped": 0, "stderr_tail": "", "permanent": False},
                         "probes": {"t/case.json": b64, "../escape.json": b64, "/abs.json": b64}}).encode()
    execution = rebuild_execution(answer, nb)
    try:
        assert (execution.status, execution.ran, execution.stopped_at) == ("crashed", {0}, 1)
        assert nb.cells[0].outputs[0]["data"]["text/plain"] == "2"      # filled in place, as the local path does
        files = sorted(p.relative_to(execution.probe_dir).as_posix() for p in execution.probe_dir.rglob("*"))
        assert files == ["t", "t/case.json"]
        assert not (execution.probe_dir.parent / "escape.json").exists()
    finally:
        shutil.rmtree(execution.probe_dir.parent)


@pytest.mark.slow
def test_local_cluster_gives_the_same_csvs_as_the_thread_pool(tmp_path):
    subs = sample_class(tmp_path)
    pool = grade(subs, tmp_path / "pool")
    assert pool.returncode == 0, pool.stderr[-3000:]
    cluster = grade(subs, tmp_path / "cluster", "--cluster", "local:2")
    assert cluster.returncode == 0, cluster.stderr[-3000:]
    assert "cluster local:2: 2 worker(s)" in cluster.stderr
    assert "(done 7/7, running 0, failed 0" in cluster.stderr
    for name in ("grades.csv", "tasks.csv"):
        assert (tmp_path / "cluster" / name).read_bytes() == (tmp_path / "pool" / name).read_bytes(), name
    assert "ada,ps1,10,10,graded" in (tmp_path / "cluster" / "grades.csv").read_text()


def _worker_processes(grader: psutil.Process) -> list[psutil.Process]:
    """The dask worker processes: a local cluster's nannies live in the grader's process and spawn them."""
    def spawned(proc):
        try:
            return "spawn_main" in " ".join(proc.cmdline())
        except psutil.Error:
            return False
    return [worker for worker in grader.children() if spawned(worker)]


@pytest.mark.slow
def test_a_worker_killed_mid_submission_loses_nothing(tmp_path):
    """Both workers are killed while they grade (one student sleeps 20 s in a cell): the nannies start new
    workers, the scheduler hands the two submissions out again, and both rows are what they would have been."""
    subs = sample_class(tmp_path)
    for student in list(subs.iterdir()):
        if student.name != "ada":
            shutil.rmtree(student)
    slow = nbformat.read(str(subs / "ada" / "ps1.ipynb"), as_version=4)
    slow.cells.insert(0, nbformat.v4.new_code_cell("import time\ntime.sleep(20)"))
    (subs / "slow").mkdir()
    nbformat.write(slow, str(subs / "slow" / "ps1.ipynb"))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".grader-secret").write_text(SECRET)
    log = tmp_path / "grader.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "grader", "grade", "ps1", str(subs), "--out", str(out),
                                 "--cluster", "local:2"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 180
            while "grading 2 submission(s)" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(6)    # both notebooks are running now (the slow one sleeps in its first cell)
            killed = _worker_processes(psutil.Process(proc.pid))
            assert len(killed) == 2, log.read_text()[-3000:]
            for worker in killed:
                os.kill(worker.pid, signal.SIGKILL)
            assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rows = (out / "grades.csv").read_text().splitlines()
    assert rows[1:] == ["ada,ps1,10,10,graded,,", "slow,ps1,10,10,graded,,"], log.read_text()[-3000:]
    assert "slow: graded 10/10 (done" in log.read_text()
