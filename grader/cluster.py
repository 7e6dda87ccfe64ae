"""Grading past one machine: ``python -m grader grade ... --cluster ADDRESS`` runs the notebooks on the workers of
a dask.distributed cluster (``local:N``: a local cluster of N worker processes; ``tcp://host:port``: an existing
scheduler).

Only the execute stage travels. The unit of work is plain data (the student id, the submission's bytes, the
sanitized notebook with its probes as nbformat JSON, the sandbox's settings); a worker runs it in its own Sandbox
(one per worker process, started once) and answers plain data: one JSON document with the executed notebook, the
Execution's fields and the probe files (base64). The secret, the seeds, verification, scoring, CSVs, gradebook and
feedback stay in the instructor's process, which parses that JSON and never unpickles what a worker made of a
submission.

A worker that dies mid-submission loses nothing: the scheduler gives the task to another worker. A submission that
kills workers again and again ends as grader_error, and the rest of the class goes on: dask counts the deaths
(``distributed.scheduler.allowed-failures``, 2 on a local cluster: the third death ends it) and raises
KilledWorker, which becomes that row.

GPU grading (``--gpus``) runs only on workers that declare the dask resource ``GPU`` (``dask worker ADDRESS
--resources GPU=1``; a local cluster's workers declare it when CUDA is visible here); CPU grading runs anywhere.
"""
from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, fields
from pathlib import Path, PurePosixPath

import nbformat

from grader.sandbox import Limits
from grader.sandbox.runner import Execution

ALLOWED_FAILURES = 2          # retries after a worker dies; the third death of a worker on one submission ends it
GPU = "GPU"                   # the dask resource a worker declares per GPU kernel it may run at once
PROBE_BYTES = 256 * 2**20     # the most probe data one run sends back (the local path copies at most as much)

# --- on a worker ---------------------------------------------------------------------------------------------------
_sandboxes: dict[str, object] = {}
_sandbox_lock = threading.Lock()


def _worker_sandbox(config: dict):
    """This worker process's Sandbox for these settings, started on first use and kept until the process ends."""
    from grader.sandbox.service import Sandbox

    key = json.dumps(config, sort_keys=True)
    with _sandbox_lock:
        sandbox = _sandboxes.get(key)
        if sandbox is None:
            limits = Limits(**config["limits"])
            if limits.threads <= 0:
                limits.threads = 1
            sandbox = Sandbox(limits, isolate=config["isolate"], preload=config["preload"], kernel=config["kernel"],
                              hide=[Path(p) for p in config["hide"]])
            lines: list[str] = []
            try:
                sandbox.start(lines.append)
            except BaseException:
                sandbox.close()
                raise
            sandbox.start_log = lines
            atexit.register(sandbox.close)
            _sandboxes[key] = sandbox
        return sandbox


def start_on_worker(config: dict) -> dict:
    """Run on every worker at the start (``Client.run``): start its sandbox; its log lines, or why it cannot."""
    from grader.sandbox.service import SandboxUnavailable

    try:
        return {"ok": True, "log": _worker_sandbox(config).start_log}
    except SandboxUnavailable as err:
        return {"ok": False, "log": [str(err)]}


def close_on_worker() -> None:
    """Stop this worker's sandboxes (their fork servers) before the worker itself is stopped."""
    with _sandbox_lock:
        while _sandboxes:
            _sandboxes.popitem()[1].close()


def _probe_files(folder: Path | None) -> dict[str, str] | None:
    if folder is None:
        return None
    files, budget = {}, PROBE_BYTES
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if len(data) > budget:
                continue
            budget -= len(data)
            files[path.relative_to(folder).as_posix()] = base64.b64encode(data).decode("ascii")
    return files


def run_on_worker(payload: dict) -> bytes:
    """Run one notebook in this worker's sandbox. Returns JSON (bytes): notebook, execution fields, probe files."""
    try:
        from distributed import get_worker

        where = get_worker().address
    except Exception:   # called outside a worker (tests)
        where = ""
    sandbox = _worker_sandbox(payload["config"])
    nb = nbformat.reads(payload["notebook"], as_version=4)   # reads, not from_dict: sources as strings
    execution = sandbox.run(nb, notebook_timeout=payload.get("notebook_timeout"))
    try:
        probes = _probe_files(execution.probe_dir)
    finally:
        if execution.probe_dir is not None:
            shutil.rmtree(execution.probe_dir.parent, ignore_errors=True)
    fields_ = {f.name: getattr(execution, f.name) for f in fields(Execution) if f.name != "probe_dir"}
    fields_["ran"] = sorted(fields_["ran"])
    answer = {"notebook": nbformat.writes(nb), "execution": fields_, "probes": probes, "worker": where}
    return json.dumps(answer).encode()


# --- on the instructor's side --------------------------------------------------------------------------------------
def parse_address(address: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); ``tcp://host:port`` (or tls://, ws://...) -> ("remote", address)."""
    if address.startswith("local:"):
        count = address[len("local:"):]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--cluster {address}: local:N needs a number of workers N >= 1")
        return "local", int(count)
    if "://" in address:
        return "remote", address
    raise ValueError(f"--cluster {address}: expected local:N or a scheduler address such as tcp://host:8786")


def _safe_relative(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts) or len(path.parts) > 6:
        return None
    return path


def rebuild_execution(answer: bytes, nb) -> Execution:
    """The worker's answer as an Execution, the notebook `nb` filled in with the executed cells (in place), and
    the probe files written as plain files into a fresh folder of our own (``probe_dir``; its parent is ours)."""
    data = json.loads(answer)
    executed = nbformat.reads(data["notebook"], as_version=4)
    nb.cells, nb.metadata = executed.cells, executed.metadata
    values = dict(data["execution"])
    values["ran"] = set(values["ran"])
    known = {f.name for f in fields(Execution)}
    execution = Execution(**{k: v for k, v in values.items() if k in known})
    if data.get("probes") is not None:
        probe_dir = Path(tempfile.mkdtemp(prefix="grader-cluster-")) / "_probe"
        probe_dir.mkdir()
        for name, encoded in data["probes"].items():
            rel = _safe_relative(name)
            if rel is None:
                continue
            dest = probe_dir.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(base64.b64decode(encoded))
        execution.probe_dir = probe_dir
    return execution


class NoGPUWorkers(ValueError):
    """--gpus was asked for and no worker of the cluster declares the GPU resource (raised before any grading)."""


def cuda_visible() -> bool:
    """Whether this process sees a CUDA device (torch, honouring CUDA_VISIBLE_DEVICES): a local cluster's workers
    declare the GPU resource only then."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


class Cluster:
    """The client side: connect (or start a local cluster), start every worker's sandbox, run notebooks.
    ``execute(nb, student_id, notebook_bytes)`` is the execute stage for grade_one."""

    def __init__(self, address: str, *, limits: Limits, isolate: bool, preload: bool, kernel: str,
                 hide: list[Path], log=print):
        import dask
        from distributed import Client, LocalCluster

        kind, where = parse_address(address)
        self.address, self.log, self.kind = address, log, kind
        self.local = None
        self.gpus = limits.gpus       # GPU grading: each notebook needs a worker with the GPU resource
        self.submit_options = {"resources": {GPU: 1}} if self.gpus else {}
        limits_dict = asdict(limits)
        if kind == "local":
            self.cuda_here = cuda_visible() if self.gpus else False
            if self.gpus and not self.cuda_here:   # no worker here could declare a GPU: say so before starting any
                raise NoGPUWorkers(self.no_gpu_message())
            # The worker's statistical profiler samples every thread's stack each 10 ms for the dashboard, which a
            # local cluster here does not serve (dashboard_address=None): off.
            with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                                  "distributed.worker.profile.enabled": False}):
                # memory_limit=0: the sandbox caps each kernel; a worker's own limit would count nothing useful
                self.local = LocalCluster(n_workers=where, processes=True, threads_per_worker=1,
                                          dashboard_address=None, memory_limit=0,
                                          resources={GPU: 1} if self.cuda_here else None)
                self.client = Client(self.local)
            if limits_dict["threads"] <= 0:
                limits_dict["threads"] = max(1, len(os.sched_getaffinity(0)) // where)
        else:
            self.client = Client(where, timeout=60)
            self.client.wait_for_workers(1, timeout=300)
        self.config = {"limits": limits_dict, "isolate": isolate, "preload": preload, "kernel": kernel,
                       "hide": [str(p) for p in hide]}
        self.lock = threading.Lock()
        self.slot_free = threading.Condition(self.lock)
        self.running = 0      # submissions on the cluster: at most one per worker thread (see execute)
        self.waiting = 0      # submissions grade has ready, waiting here for a thread of the cluster
        self.worker_of: dict[str, str] = {}

    def workers(self) -> dict[str, dict]:
        """The workers that may run this run's notebooks (for --gpus: those with the GPU resource), by address."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        if self.gpus:
            workers = {a: w for a, w in workers.items() if (w.get("resources") or {}).get(GPU, 0) >= 1}
        return workers

    @property
    def threads(self) -> int:
        workers = self.workers().values()
        if self.gpus:   # a worker runs at most as many GPU notebooks at once as it declares GPUs
            return max(1, sum(min(w.get("nthreads", 1), int(w["resources"][GPU])) for w in workers))
        return max(1, sum(w.get("nthreads", 1) for w in workers))

    def no_gpu_message(self) -> str:
        why = (("CUDA is not visible on this machine (torch.cuda.is_available() is False), so the local workers "
                "declare no GPU: grade without --gpus, or on a machine with a GPU")
               if self.kind == "local" else
               f"start the workers of the GPU machines with `dask worker SCHEDULER_ADDRESS --resources {GPU}=1`, "
               f"or grade without --gpus")
        return (f"--cluster {self.address} --gpus {self.gpus}: no worker of the cluster declares the dask resource "
                f"{GPU}, so no notebook could be graded on a GPU; {why}.")

    def start(self, log=None) -> None:
        """Start every worker's sandbox now, so that a machine without isolation refuses before any grading.
        Raises NoGPUWorkers (--gpus and no worker declares the GPU resource), SandboxUnavailable."""
        from grader.sandbox.service import SandboxUnavailable

        workers = sorted(self.workers())
        if not workers:
            raise NoGPUWorkers(self.no_gpu_message())
        # a task pinned to each worker (Client.run would call it in the worker's event loop, where nbclient cannot run)
        futures = {w: self.client.submit(start_on_worker, self.config, workers=[w], allow_other_workers=False,
                                         pure=False, key=f"grader-start-{os.urandom(4).hex()}") for w in workers}
        answers = {w: f.result() for w, f in futures.items()}
        self.log(f"cluster {self.address}: {len(answers)} worker(s), {self.threads} thread(s)"
                 + (f" with the dask resource {GPU} (--gpus {self.gpus})" if self.gpus else ""))
        for worker, answer in sorted(answers.items()):
            for line in answer["log"]:
                self.log(f"  {worker}: {line}")
        broken = [w for w, a in answers.items() if not a["ok"]]
        if broken:
            raise SandboxUnavailable(f"worker {broken[0]}: {answers[broken[0]]['log'][0]}")

    def execute(self, nb, student_id: str, notebook_bytes: bytes | None,
                notebook_timeout: float | None = None) -> Execution:
        from distributed.scheduler import KilledWorker

        payload = {"student_id": student_id, "submission": base64.b64encode(notebook_bytes or b"").decode("ascii"),
                   "notebook": nbformat.writes(nb), "config": self.config, "notebook_timeout": notebook_timeout}
        # At most one submission per worker thread is on the cluster. dask counts a worker's death against every
        # task it holds, queued ones too (Scheduler.remove_worker: `ts.suspicious += 1` for all of ws.processing),
        # so a submission queued behind one that kills its worker would be blamed with it; here it waits instead.
        with self.slot_free:
            self.waiting += 1
            while self.running >= self.threads:
                self.slot_free.wait(timeout=5)     # a worker that joins a shared cluster adds threads meanwhile
            self.waiting -= 1
            self.running += 1
        try:
            key = f"grade-{student_id}-{os.urandom(4).hex()}"
            future = self.client.submit(run_on_worker, payload, pure=False, key=key, **self.submit_options)
            try:
                answer = future.result()
            except KilledWorker as err:     # the scheduler's count of worker deaths reached allowed-failures
                return Execution(status="grader_error", permanent=True,
                                 message=f"This submission killed the workers that ran it repeatedly "
                                         f"({err.allowed_failures + 1} times, on the cluster {self.address}); "
                                         f"it was not graded.")
            finally:
                future.release()
        finally:
            with self.slot_free:
                self.running -= 1
                self.slot_free.notify()
        execution = rebuild_execution(answer, nb)
        with self.lock:
            self.worker_of[student_id] = json.loads(answer).get("worker", "")
        return execution

    def close(self) -> None:
        try:
            if self.local is not None:   # a shared cluster's workers keep their sandboxes for the next run
                self.client.run(close_on_worker)
        except Exception:
            pass
        try:
            self.client.close()
        finally:
            if self.local is not None:
                self.local.close()


def progress(cluster: Cluster, results: list, total: int) -> str:
    """The instructor's progress line: done / running / queued / failed, and the worker that ran the last one.
    `running` counts the submissions on the cluster (one per worker thread at most), `queued` those ready here
    that wait for a thread (grade keeps PIPELINE per thread in flight)."""
    failed = sum(1 for r in results if r.status == "grader_error")
    where = cluster.worker_of.get(results[-1].student_id, "")
    return (f"(done {len(results)}/{total}, running {cluster.running}, queued {cluster.waiting}, failed {failed}"
            + (f"; on {where}" if where else "") + ")")
