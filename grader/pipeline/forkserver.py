"""Kernels forked from a process that has already imported torch: the per-notebook start-up cost, paid once.

A fresh kernel spends most of its start on ``import torch`` (FACTS.md: 1.5-2 s) and ipykernel. For a class, the
grader starts one fork server per run (``python -m grader.pipeline.forkserver``), which imports them once,
single-threaded (OMP/MKL/OpenBLAS pools at one thread, no CUDA touched, so forking is safe), then forks one child
per notebook. The child confines itself exactly as the launcher does (``grader.pipeline.confine``: namespaces,
cgroups, hidden paths, rlimits, working folder, uid) and only then becomes an IPython kernel, so a notebook sees
the same sandbox either way. Anything that is not the default Python kernel of this interpreter uses the launcher.

Protocol: one JSON object per line on stdin (a kernel to spawn), one JSON line back on stdout (its pid or an
error). The server reaps its children; the grader watches them by pid.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PRELOAD = ("ipykernel.kernelapp", "IPython", "numpy", "torch", "grader.pipeline.confine")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class ForeignProcess:
    """Enough of subprocess.Popen for jupyter_client's provisioner, for a kernel that is not our child."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state in ("Z", "X"):
                    self.returncode = -signal.SIGKILL
            except (OSError, IndexError):
                self.returncode = -signal.SIGKILL   # gone (reaped by the fork server): its code is not ours to read
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """The grader's handle on the fork server: spawn(...) -> pid. Thread-safe (grading jobs share it)."""

    def __init__(self):
        env = dict(os.environ, **ONE_THREAD)
        self._lock = threading.Lock()
        root = str(Path(__file__).resolve().parents[2])    # this grader package, whatever `import grader` finds
        boot = f"import sys; sys.path.insert(0, {root!r}); from grader.pipeline.forkserver import serve; serve()"
        self.proc = subprocess.Popen([sys.executable, "-c", boot], cwd="/", env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.preloaded: list[str] | None = None     # read on first use: the imports overlap the grader's set-up

    def ready(self) -> list[str]:
        """Wait for the server's imports; the modules it preloaded."""
        if self.preloaded is None:
            hello = self.proc.stdout.readline()
            if not hello:
                raise RuntimeError("the fork server did not start")
            self.preloaded = json.loads(hello).get("preloaded", [])
        return self.preloaded

    def spawn(self, kernel_argv: list[str], config: dict, env: dict, cwd: str) -> int:
        request = json.dumps({"argv": kernel_argv, "config": config, "env": env, "cwd": cwd})
        with self._lock:
            self.ready()
            if self.proc.poll() is not None:
                raise RuntimeError("the fork server has exited")
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline() or '{"error": "no reply"}')
        if "pid" not in reply:
            raise RuntimeError(f"the fork server could not start a kernel: {reply.get('error')}")
        return int(reply["pid"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_fork_server() -> ForkServer | None:
    """A fork server, or None where it cannot start (then every kernel uses the launcher)."""
    try:
        return ForkServer()
    except (OSError, RuntimeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# The server side.

def _reap(signum, frame) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_kernel(request: dict) -> None:
    """In the forked child: confine, then run the kernel. Never returns."""
    code = 1
    try:
        from grader.pipeline.confine import confine

        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        argv = list(request["argv"])
        argv = confine(request["config"], argv, unshare_here=True)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.path.insert(0, "")
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(int(request["config"]["limits"].get("threads", 1)))
        from ipykernel.kernelapp import IPKernelApp

        sys.argv = [sys.executable, *argv]
        IPKernelApp.launch_instance(argv=argv)
        code = 0
    finally:
        os._exit(code)


def serve() -> None:
    loaded = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:
            pass
    signal.signal(signal.SIGCHLD, _reap)
    print(json.dumps({"preloaded": loaded}), flush=True)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            pid = os.fork()
        except Exception as err:
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
            continue
        if pid == 0:
            _become_kernel(request)
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    serve()
