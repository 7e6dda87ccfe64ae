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


def grade(subs: Path, out: Path, *extra: str, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    (out / ".grader-secret").write_text(SECRET)
    return subprocess.run([sys.executable, "-m", "grader", "grade", "ps1", str(subs), "--out", str(out), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, **popen)


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
@pytest.mark.dask
def test_local_cluster_gives_the_same_csvs_as_the_thread_pool(tmp_path):
    subs = sample_class(tmp_path)
    pool = grade(subs, tmp_path / "pool")
    assert pool.returncode == 0, pool.stderr[-3000:]
    cluster = grade(subs, tmp_path / "cluster", "--cluster", "local:2")
    assert cluster.returncode == 0, cluster.stderr[-3000:]
    assert "cluster local:2: 2 worker(s)" in cluster.stderr
    assert "(done 7/7, running 0, queued 0, failed 0" in cluster.stderr
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
@pytest.mark.dask
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


def _class_of(tmp_path: Path, *keep: str) -> Path:
    subs = sample_class(tmp_path)
    for student in list(subs.iterdir()):
        if student.name not in keep:
            shutil.rmtree(student)
    return subs


def _rows(out: Path) -> dict[str, str]:
    return {line.split(",")[0]: line for line in (out / "grades.csv").read_text().splitlines()[1:]}


@pytest.mark.dask
def test_gpus_on_a_local_cluster_without_cuda_is_refused_at_once(tmp_path):
    """--gpus with local:N where CUDA is not visible: the local workers declare no GPU resource, and the run
    refuses before grading instead of leaving the notebooks waiting for a worker that will never come."""
    subs = tmp_path / "subs"
    (subs / "ada").mkdir(parents=True)
    started = time.monotonic()
    proc = grade(subs, tmp_path / "out", "--cluster", "local:1", "--gpus", "all",
                 env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "--cluster local:1 --gpus all: no worker of the cluster declares the dask resource GPU" in proc.stderr
    assert "CUDA is not visible on this machine" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "grades.csv").exists()
    assert time.monotonic() - started < 120


@pytest.mark.slow
@pytest.mark.dask
def test_gpu_grading_runs_only_on_workers_with_the_gpu_resource(tmp_path):
    """A scheduler with one plain worker and one started as the README says (`dask worker ADDRESS --resources
    GPU=1`): with --gpus every notebook runs on the GPU worker; once it is gone, --gpus refuses with a message
    that says how to start one. (No GPU is needed: the resource is what the scheduler goes by.)"""
    from distributed import Client, LocalCluster

    subs = _class_of(tmp_path, "ada", "ben")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as local, Client(local) as client:
        gpu_worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", local.scheduler_address,
                                       "--nthreads", "1", "--resources", "GPU=1", "--name", "gpu-worker",
                                       "--no-dashboard", "--memory-limit", "0"],
                                      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(2, timeout=120)
            workers = client.scheduler_info(n_workers=-1)["workers"]
            gpu_address = next(a for a, w in workers.items() if w["name"] == "gpu-worker")
            cpu_address = next(a for a in workers if a != gpu_address)
            proc = grade(subs, tmp_path / "gpu", "--cluster", local.scheduler_address, "--gpus", "all")
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert "1 worker(s), 1 thread(s) with the dask resource GPU (--gpus all)" in proc.stderr
            graded = [line for line in proc.stderr.splitlines() if line.startswith("  [")]
            assert len(graded) == 2 and all(line.endswith(f"; on {gpu_address})") for line in graded), graded
            assert cpu_address not in proc.stderr
            rows = _rows(tmp_path / "gpu")
            assert rows["ada"] == "ada,ps1,10,10,graded,," and rows["ben"].startswith("ben,ps1,0,10,graded,")
        finally:
            gpu_worker.terminate()
            gpu_worker.wait(timeout=60)
        deadline = time.monotonic() + 60
        while len(client.scheduler_info(n_workers=-1)["workers"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        refused = grade(subs, tmp_path / "refused", "--cluster", local.scheduler_address, "--gpus", "all",
                        timeout=120)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "no worker of the cluster declares the dask resource GPU" in refused.stderr
        assert "dask worker SCHEDULER_ADDRESS --resources GPU=1" in refused.stderr
        assert not (tmp_path / "refused" / "grades.csv").exists()


@pytest.mark.slow
@pytest.mark.dask
def test_a_submission_that_kills_its_worker_every_time_ends_as_grader_error(tmp_path):
    """amy's notebook names its kernel process "grader-poison" (prctl; a kernel cannot reach its worker: the sandbox
    gives it its own pid namespace), and the test kills the worker under that kernel each time one appears: as if
    her code brought the worker down on every try. dask counts the deaths (allowed-failures 2 on a local cluster)
    and gives up on the third with KilledWorker; her row says so, and the students before and after her are
    graded as usual on the restarted worker. One worker, one thread: no other notebook shares the killed workers,
    so only amy's task is counted."""
    subs = _class_of(tmp_path, "ada", "ben")
    poison = nbformat.read(str(subs / "ada" / "ps1.ipynb"), as_version=4)
    poison.cells.insert(0, nbformat.v4.new_code_cell(
        'import ctypes, time\nctypes.CDLL(None).prctl(15, b"grader-poison", 0, 0, 0)   # PR_SET_NAME\ntime.sleep(120)'))
    (subs / "amy").mkdir()
    nbformat.write(poison, str(subs / "amy" / "ps1.ipynb"))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".grader-secret").write_text(SECRET)
    log = tmp_path / "grader.log"
    killed: list[int] = []
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "grader", "grade", "ps1", str(subs), "--out", str(out),
                                 "--cluster", "local:1"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            grader = psutil.Process(proc.pid)
            deadline = time.monotonic() + 600
            while proc.poll() is None and time.monotonic() < deadline:
                workers = {w.pid: w for w in _worker_processes(grader)}
                for kernel in psutil.process_iter(["name"]):
                    if kernel.info["name"] != "grader-poison":
                        continue
                    try:
                        chain = [p.pid for p in kernel.parents()]
                    except psutil.Error:
                        continue
                    for pid in chain:
                        if pid in workers and pid not in killed:
                            os.kill(pid, signal.SIGKILL)
                            killed.append(pid)
                time.sleep(0.2)
            assert proc.wait(timeout=5) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    from grader.cluster import ALLOWED_FAILURES

    assert len(killed) == ALLOWED_FAILURES + 1, (killed, log.read_text()[-3000:])
    rows = _rows(out)
    assert rows["amy"].startswith("amy,ps1,0,10,grader_error,"), rows["amy"]
    assert "killed the workers that ran it repeatedly (3 times, on the cluster local:1)" in rows["amy"]
    assert rows["ada"] == "ada,ps1,10,10,graded,," and rows["ben"].startswith("ben,ps1,0,10,graded,")
    assert "(done 3/3, running 0, queued 0, failed 1" in log.read_text()
