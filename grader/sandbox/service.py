"""One sandbox per grading run (or per ``grader check``): the bubblewrap layer, the fork server in it, the
kernels' read-only package, the isolation check at start-up, and ``run`` for each notebook.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import psutil

from grader.sandbox.bubblewrap import INSIDE_LIB, NOBODY, bwrap_command, find_bwrap, interpreter_roots, \
    make_kernel_lib, user_site
from grader.sandbox.kernel import ForkServer, host_pid
from grader.sandbox.limits import Limits
from grader.sandbox.watch import writable_cgroup

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])   # the folder that holds this grader package


class SandboxUnavailable(RuntimeError):
    """No isolation can be had on this machine; the message says why and how to fix it."""


HOW_TO_FIX = ("Install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`) and allow user namespaces "
              "(`sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu 24.04 also "
              "`sysctl kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile for bwrap), or run "
              "the grader as root. To run untrusted notebooks without isolation anyway, pass --no-sandbox.")


class Sandbox:
    """Runs notebooks in confined kernels. `hide`: folders no kernel may see even inside a bound Python
    installation (the checkout and the grading folders are never bound in the first place).

    Use as a context manager, or call ``start()`` and ``close()``. Raises SandboxUnavailable from ``start`` when
    isolation was asked for and cannot be had."""

    def __init__(self, limits: Limits, *, isolate: bool = True, preload: bool = True, kernel: str = "python3",
                 hide: list[Path] = (), staging: Path | None = None):
        self.limits, self.isolate, self.preload, self.kernel = limits, isolate, preload, kernel
        self.hide = [Path(p) for p in hide]
        self.staging = Path(staging or tempfile.mkdtemp(prefix="grader-run-"))
        self.staging.mkdir(parents=True, exist_ok=True)
        os.chmod(self.staging, 0o700)
        self.logs = self.staging / "logs"
        self.logs.mkdir(exist_ok=True)
        self.lib = make_kernel_lib(self.staging / "lib") if isolate else None
        self.server: ForkServer | None = None
        self.kernel_uid = NOBODY if (isolate and os.geteuid() == 0) else None
        self.cgroup_pids = writable_cgroup("pids")[0] if os.geteuid() == 0 else ""
        self.cgroup_memory = writable_cgroup("memory")[0] if os.geteuid() == 0 else ""
        self.report: dict[str, bool] = {}
        self.start_error = ""
        self._count = 0

    # --- set-up --------------------------------------------------------------------------------------------------
    def prefix(self, extra_roots: list[str] = ()) -> list[str]:
        if not self.isolate:
            return []
        return bwrap_command(lib=self.lib, logs=self.logs, hide=self.hide + [self.staging], gpus=self.limits.gpus,
                             extra_roots=list(extra_roots))

    def server_env(self) -> dict:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
               "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
               "PYTHONPATH": self.python_path(),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "CUDA_VISIBLE_DEVICES": self.gpu_env()}
        env = {k: v for k, v in env.items() if v is not None}
        if not self.isolate:
            env = {**os.environ, **env}
        return env

    def start(self, log=print) -> dict[str, bool]:
        """Start the fork server and check, with one real confined kernel, what isolation holds."""
        if self.isolate and not find_bwrap():
            raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed. {HOW_TO_FIX}")
        if self.preload and self.kernel == "python3":
            self.server = ForkServer(self.prefix(), self.server_env(), self.isolate, self.logs / "server.stderr")
            try:
                hello = self.server.ready()
            except RuntimeError as err:
                self.server.close()
                self.server = None
                if self.isolate:
                    raise SandboxUnavailable(f"{err}. {HOW_TO_FIX}") from err
                log(f"kernels: {err}; each kernel starts from scratch")
            else:
                log("kernels: forked from a server that preloaded " + ", ".join(hello.get("preloaded", [])))
        from grader.sandbox.isolation import check_isolation

        self.report = check_isolation(self)
        held = [k for k, ok in self.report.items() if ok]
        broken = [k for k, ok in self.report.items() if not ok]
        if self.isolate:
            log("sandbox: bubblewrap; " + "; ".join(f"{k}: holds" for k in held)
                + ("; " + "; ".join(f"{k}: DOES NOT HOLD" for k in broken) if broken else ""))
            if broken:
                if self.start_error:
                    raise SandboxUnavailable(f"the sandbox could not run a kernel: {self.start_error}. {HOW_TO_FIX}")
                raise SandboxUnavailable("the sandbox started, but its check found that " + ", ".join(broken)
                                         + f" does not hold on this machine. {HOW_TO_FIX}")
        else:
            log("sandbox: NONE (--no-sandbox): student code runs with the grader's rights; "
                + "; ".join(f"{k}: {'holds' if ok else 'does not hold'}" for k, ok in self.report.items()))
        return self.report

    def require_gpus(self, log=print) -> None:
        """For --gpus on this machine (a cluster's workers declare theirs as a dask resource instead): raises
        SandboxUnavailable when a kernel started as the notebooks' kernels are sees no CUDA device."""
        devices = self.gpus_seen()
        if not devices:
            raise SandboxUnavailable(f"--gpus {self.limits.gpus!r}: a kernel started as the notebooks' kernels are "
                                     "sees no CUDA device (torch.cuda.is_available() is False in it); grade without "
                                     "--gpus, or on a machine whose GPU is visible")
        log(f"GPUs: {devices} CUDA device(s) visible to the kernels")

    def gpus_seen(self) -> int:
        """CUDA devices a kernel sees, probed in one kernel started exactly as the notebooks' kernels are (the
        sandbox's device nodes and CUDA_VISIBLE_DEVICES); 0 when none or when the probe fails."""
        import nbformat

        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            "import torch\nprint('CUDA', torch.cuda.device_count() if torch.cuda.is_available() else 0)")])
        self.run(nb)
        for output in nb.cells[0].get("outputs", []):
            words = str(output.get("text", "")).split()
            if output.get("name") == "stdout" and len(words) == 2 and words[0] == "CUDA" and words[1].isdigit():
                return int(words[1])
        return 0

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        shutil.rmtree(self.staging, ignore_errors=True)

    # --- per kernel ----------------------------------------------------------------------------------------------
    def new_name(self) -> str:
        self._count += 1
        return f"k{self._count:05d}-{os.urandom(4).hex()}"

    def limits_dict(self) -> dict:
        return asdict(self.limits)

    def python_path(self) -> str:
        """The kernel-side package first; the user's site-packages when the grader's Python uses it (a kernel's
        HOME is its own folder, so Python would not find it by itself)."""
        first = INSIDE_LIB if self.isolate else PACKAGE_ROOT
        return ":".join(filter(None, [first, user_site()]))

    def gpu_env(self) -> str | None:
        """CUDA_VISIBLE_DEVICES for kernels: "" hides every GPU; None (for --gpus all) leaves the variable unset
        unless the grader has it."""
        if self.limits.gpus == "all":
            return os.environ.get("CUDA_VISIBLE_DEVICES")
        return self.limits.gpus

    def nproc_cap(self) -> int:
        """RLIMIT_NPROC where no pids cgroup caps a kernel. It counts every thread of the uid, so: headroom above
        what that uid runs now (the watchdog is the per-kernel cap)."""
        if self.cgroup_pids:
            return 0
        uid = self.kernel_uid if self.kernel_uid is not None else os.getuid()
        if uid == 0:
            return 0
        running = 0
        for proc in psutil.process_iter(["uids", "num_threads"]):
            if proc.info["uids"] and proc.info["uids"].real == uid:
                running += proc.info["num_threads"] or 1
        return running + 4 * self.limits.max_processes

    def kernel_env(self) -> dict[str, str]:
        box = "/box" if self.isolate else "."
        work = f"{box}/work" if self.isolate else "."
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work if not self.isolate else "/tmp",
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "JUPYTER_RUNTIME_DIR": f"{box}/conn" if self.isolate else ".",
               "IPYTHONDIR": f"{work}/.ipython", "MPLCONFIGDIR": f"{work}/.mpl",
               "PYTHONPATH": self.python_path(),
               "CUDA_VISIBLE_DEVICES": self.gpu_env()}
        env = {k: v for k, v in env.items() if v is not None}
        if not self.isolate:
            env["PATH"] = os.environ.get("PATH", env["PATH"])
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(self.limits.threads)
        return env

    def launch(self, request: dict, argv0: str) -> tuple[subprocess.Popen, int]:
        """Launcher path: one kernel under its own bwrap, not forked from the server. Returns (bwrap, host pid)."""
        import json

        boot = (f"import sys; sys.path.insert(0, {(INSIDE_LIB if self.isolate else PACKAGE_ROOT)!r}); "
                "from grader.sandbox.inside import launch; launch(sys.argv[1])")
        extra = interpreter_roots(argv0) if self.isolate else []
        env = self.server_env()
        prefix = self.prefix(extra)
        if self.isolate:
            prefix += [arg for k, v in env.items() for arg in ("--setenv", k, v)]
        proc = subprocess.Popen(prefix + [sys.executable, "-c", boot, json.dumps(request)], cwd="/",
                                env=None if self.isolate else env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(self.logs / f"{request['name']}.launcher", "wb"))
        pid_file = self.logs / f"{request['name']}.pid"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = pid_file.read_text() if pid_file.exists() else ""
            if text.isdigit():
                return proc, host_pid(proc.pid, int(text), self.isolate)
            if text.startswith("error") or proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        why = (pid_file.read_text() if pid_file.exists() else "") or \
            (self.logs / f"{request['name']}.launcher").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"the sandbox could not start the kernel: {why.strip()}")

    def run(self, nb, notebook_timeout: float | None = None):
        """Run notebook `nb` in place (outputs filled in) in a fresh confined kernel: an Execution. `notebook_timeout`
        (seconds): this run's whole-notebook limit instead of the sandbox's (what is left of a submission's time)."""
        from grader.sandbox.runner import run_notebook

        return run_notebook(nb, self, name=self.new_name(), notebook_timeout=notebook_timeout)
