"""The sandboxed kernel a submission runs in.

Two halves. The *grader side* (``SandboxedKernelManager``, ``Watchdog``) starts an IPython kernel and watches it.
The *child side*, ``grader.pipeline.confine``, applies every restriction the OS allows to the process about to
become the kernel: the launcher (``unshare ... python -c <launcher> CONFIG -- KERNEL ARGV``, which then ``exec``s
the kernel, so the kernel keeps the launcher's pid) or a child of the fork server (``grader.pipeline.forkserver``,
which has torch imported already and makes its own namespaces).

Restrictions, each used only where the machine allows it (``capabilities()`` finds out once per run):

- network: a fresh network namespace (``unshare --net``); the kernel talks to the grader over unix sockets (ZMQ
  ``ipc``), which work across network namespaces, so it needs no network at all;
- files: a fresh mount namespace in which the output folder, the submissions, the solutions and the staging folder
  of the other students are covered by empty read-only tmpfs mounts; where the kernel can also run as ``nobody``
  it does, inside a private 0700 working folder;
- processes: a cgroup ``pids.max`` (cgroups v2 or v1) where writable, else ``RLIMIT_NPROC`` for an unprivileged
  uid (it does not apply to root), and always the watchdog's count of the process tree;
- memory: the watchdog sums the resident memory of the process tree and kills it over the cap, plus a cgroup
  memory limit as a backstop where writable. No ``RLIMIT_AS``: CUDA reserves huge virtual ranges and breaks under it;
- time: a per-cell timeout (nbclient) and a whole-notebook limit (the watchdog);
- output: counted by the executor; big files: ``RLIMIT_FSIZE``; no core dumps.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from jupyter_client import AsyncKernelManager

NOBODY = 65534
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])   # the folder that holds this grader package


@dataclass
class Limits:
    cell_timeout: float = 60.0          # seconds one cell may run
    notebook_timeout: float = 600.0     # seconds the whole notebook may run
    memory_bytes: int = 4 * 2**30       # resident memory of the kernel's process tree
    max_processes: int = 64             # processes (and threads, for pids.max) in the kernel's tree
    output_bytes: int = 2 * 2**20       # text and data a notebook may send back
    file_bytes: int = 256 * 2**20       # largest file the kernel may write
    interrupt_grace: float = 5.0        # seconds an interrupted cell gets to stop before the kernel is killed
    gpus: str = ""                      # CUDA_VISIBLE_DEVICES for the kernel ("" = no GPU)
    threads: int = 1                    # OMP/MKL threads per kernel, so parallel kernels do not oversubscribe


@dataclass
class Capabilities:
    net_namespace: bool = False
    mount_namespace: bool = False
    drop_to_nobody: bool = False
    cgroup_pids: str = ""        # parent folder under which a per-kernel pids cgroup can be made
    cgroup_memory: str = ""      # same for memory
    cgroup_version: int = 0
    notes: list[str] = field(default_factory=list)


def _quiet(cmd: list[str], **kw) -> bool:
    try:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                              **kw).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _writable_cgroup(controller: str) -> tuple[str, int]:
    """A cgroup folder of this process in which a child group with `controller` can be made, or ''."""
    probe = f"grader-probe-{uuid.uuid4().hex[:8]}"
    limit_file = {"pids": "pids.max", "memory": "memory.max"}[controller]
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return "", 0
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if hid == "0":   # cgroups v2: controllers live in one tree
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            v1_file = None
        elif controller in controllers.split(","):
            base = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            v1_file = {"pids": "pids.max", "memory": "memory.limit_in_bytes"}[controller]
        else:
            continue
        try:
            (base / probe).mkdir()
        except OSError:
            continue
        try:
            if (base / probe / (v1_file or limit_file)).exists():
                return str(base), 1 if v1_file else 2
        finally:
            try:
                (base / probe).rmdir()
            except OSError:
                pass
    return "", 0


@functools.lru_cache(maxsize=1)
def capabilities() -> Capabilities:
    caps = Capabilities()
    unshare = shutil.which("unshare")
    if unshare and sys.platform.startswith("linux"):
        caps.net_namespace = _quiet([unshare, "--net", "true"])
        caps.mount_namespace = _quiet([unshare, "--mount", "true"]) and os.geteuid() == 0
    if not caps.net_namespace:
        caps.notes.append("no network namespace: the kernel keeps the machine's network")
    if os.geteuid() == 0 and shutil.which("setpriv"):
        # nobody must be able to run this very interpreter and import the kernel (not true under /root/.pyenv)
        caps.drop_to_nobody = _quiet(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                      sys.executable, "-c", "import ipykernel"], cwd="/")
    caps.cgroup_pids, caps.cgroup_version = _writable_cgroup("pids")
    caps.cgroup_memory, _ = _writable_cgroup("memory")
    if not caps.cgroup_pids and os.geteuid() == 0 and not caps.drop_to_nobody:
        caps.notes.append("no process cap from the OS (root, no writable cgroup): only the watchdog counts")
    if os.geteuid() == 0 and not caps.drop_to_nobody and not caps.mount_namespace:
        caps.notes.append("kernel runs as root without a mount namespace: files are hidden by obscurity only")
    return caps


class KernelCgroups:
    """Per-kernel cgroups (pids, memory) made before launch and removed after; empty where not writable."""

    def __init__(self, limits: Limits, caps: Capabilities):
        self.dirs: dict[str, Path] = {}
        name = f"grader-{uuid.uuid4().hex[:12]}"
        wanted = {"pids": (caps.cgroup_pids, str(limits.max_processes)),
                  "memory": (caps.cgroup_memory, str(limits.memory_bytes + 2**30))}  # a backstop above the watchdog
        for controller, (base, value) in wanted.items():
            if not base:
                continue
            path = Path(base) / name
            try:
                path.mkdir()
                v1 = (path / ("pids.max" if controller == "pids" else "memory.limit_in_bytes"))
                target = v1 if controller == "pids" or v1.exists() else path / "memory.max"
                target.write_text(value)
                self.dirs[controller] = path
            except OSError:
                pass

    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for p in self.dirs.values():
            try:
                found |= {int(x) for x in (p / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def hit(self) -> str:
        """'processes' or 'memory' when the cgroup refused a fork or killed for memory, else ''."""
        if "pids" in self.dirs:
            try:
                events = (self.dirs["pids"] / "pids.events").read_text().split()
                if len(events) >= 2 and int(events[1]) > 0:
                    return "processes"
            except (OSError, ValueError):
                pass
        if "memory" in self.dirs:
            # Count OOM kills only: v1's failcnt also rises when page cache is merely reclaimed at the limit.
            for fname in ("memory.events", "memory.oom_control"):
                try:
                    words = (self.dirs["memory"] / fname).read_text().split()
                except OSError:
                    continue
                if "oom_kill" in words and int(words[words.index("oom_kill") + 1]) > 0:
                    return "memory"
        return ""

    def kill_and_remove(self) -> None:
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        for p in self.dirs.values():
            for _ in range(20):
                try:
                    p.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def process_tree(pid: int | None) -> list[psutil.Process]:
    if not pid:     # psutil.Process(None) would be the grader itself
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def kill_tree(pid: int | None, cgroups: KernelCgroups | None) -> None:
    if pid:
        # The kernel leads its own session and process group (setsid), and so do its children unless they left
        # it: one killpg reaches a whole fork bomb at once, faster than it can fork. Never the grader's own group.
        for _ in range(3):
            try:
                if os.getpgid(pid) != pid or pid == os.getpgrp():
                    break
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                break
        # Then each process still in the tree (one that left the group), stopped first so it cannot fork.
        procs = process_tree(pid)
        for p in procs:
            try:
                p.suspend()
            except psutil.Error:
                pass
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
    if cgroups:
        cgroups.kill_and_remove()


def _pss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def tree_memory(procs: list[psutil.Process]) -> int:
    """Memory of a process tree: RSS for one process; for several, proportional set sizes (shared pages of forked
    children are counted once), falling back to RSS where /proc/PID/smaps_rollup is missing."""
    total = 0
    for p in procs:
        pss = _pss(p.pid) if len(procs) > 1 else None
        if pss is None:
            try:
                pss = p.memory_info().rss
            except psutil.Error:
                pss = 0
        total += pss
    return total


class Watchdog(threading.Thread):
    """Polls the kernel's process tree; kills it over the memory or process cap or past the notebook limit."""

    def __init__(self, pid: int, limits: Limits, cgroups: KernelCgroups, interval: float | None = None):
        super().__init__(daemon=True)
        # Without a pids cgroup the watchdog is the only process cap: it looks more often.
        interval = interval or (0.1 if "pids" in cgroups.dirs else 0.03)
        self.pid, self.limits, self.cgroups, self.interval = pid, limits, cgroups, interval
        self.reason = ""          # "memory", "processes", "notebook_timeout"
        self.peak_rss = 0
        self._stop_event = threading.Event()
        self.started_at = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()

    def processes(self) -> list[psutil.Process]:
        """The kernel and everything it started: read from the cgroup when there is one (cheap), else found by
        walking /proc (psutil scans every process of the machine for that, so it is polled less often)."""
        if "pids" in self.cgroups.dirs:
            procs = []
            for pid in sorted(self.cgroups.pids()):
                try:
                    procs.append(psutil.Process(pid))
                except psutil.Error:
                    pass
            return procs
        return process_tree(self.pid)

    def trip(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
        kill_tree(self.pid, self.cgroups)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            if time.monotonic() - self.started_at > self.limits.notebook_timeout:
                self.trip("notebook_timeout")
                return
            procs = self.processes()
            hit = self.cgroups.hit()
            # Processes first: forked children share their parent's pages, which would look like a memory bomb.
            if len(procs) > self.limits.max_processes or hit == "processes":
                self.trip("processes")
                return
            rss = tree_memory(procs)
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self.limits.memory_bytes or hit == "memory":
                self.trip("memory")
                return
            if not procs:
                return


class SandboxedKernelManager(AsyncKernelManager):
    """A KernelManager whose kernel command goes through ``unshare`` and the launcher below."""

    def __init__(self, *, box: Path, hide: list[Path], limits: Limits, forkserver=None, **kw):
        self.box, self.hide, self.limits, self.forkserver = box, hide, limits, forkserver
        self.caps = capabilities()
        self.cgroups = KernelCgroups(limits, self.caps)
        conn_dir = box / "conn"
        conn_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(transport="ipc", connection_file=str(conn_dir / "kernel.json"), **kw)
        self.ip = str(conn_dir / "k")

    def launch_config(self) -> dict:
        return {"box": str(self.box), "hide": [str(p) for p in self.hide],
                "cgroup_procs": self.cgroups.procs_files(), "pids_cgroup": "pids" in self.cgroups.dirs,
                "limits": asdict(self.limits), "net_namespace": self.caps.net_namespace,
                "mount_namespace": self.caps.mount_namespace, "drop_to_nobody": self.caps.drop_to_nobody}

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        kernel_cmd = super().format_kernel_cmd(extra_arguments)
        # The launcher is this very file's code, whatever `grader` the kernel's environment would import.
        boot = f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); from grader.pipeline.confine import " \
               "launcher_main; launcher_main(sys.argv[1:])"
        launcher = [sys.executable, "-c", boot, json.dumps(self.launch_config()), "--"]
        prefix = []
        if self.caps.net_namespace or self.caps.mount_namespace:
            prefix = [shutil.which("unshare") or "unshare"]
            prefix += ["--net"] if self.caps.net_namespace else []
            prefix += ["--mount", "--propagation", "private"] if self.caps.mount_namespace else []
            prefix += ["--"]
        return prefix + launcher + kernel_cmd

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        """Through the fork server when there is one and this is its kind of kernel, else the launcher."""
        native = [i for i, arg in enumerate(kernel_cmd) if arg == "ipykernel_launcher"]
        if self.forkserver is None or not native or kernel_cmd[native[-1] - 2] != sys.executable:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        from grader.pipeline.forkserver import ForeignProcess

        argv = kernel_cmd[native[-1] + 1:]
        try:
            pid = self.forkserver.spawn(argv, self.launch_config(), dict(kw.get("env") or {}),
                                        str(kw.get("cwd") or self.box / "work"))
        except RuntimeError:    # the server is gone: this kernel (and the class) can still start the slow way
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        provisioner = self.provisioner
        provisioner.process = ForeignProcess(pid)
        provisioner.pid = provisioner.pgid = pid      # the child called setsid()
        provisioner.cwd = kw.get("cwd")
        self._reconcile_connection_info(provisioner.connection_info)

    @property
    def kernel_pid(self) -> int | None:
        proc = getattr(self.provisioner, "process", None)
        return getattr(proc, "pid", None)

    def kernel_env(self) -> dict[str, str]:
        work = str(self.box / "work")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work, "TMPDIR": work,
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "JUPYTER_RUNTIME_DIR": str(self.box / "conn"),
               "IPYTHONDIR": str(self.box / "work" / ".ipython"), "MPLCONFIGDIR": str(self.box / "work" / ".mpl"),
               # Notebooks import grader.diagnose: the same checkout as this grader, whatever is installed.
               "PYTHONPATH": PACKAGE_ROOT,
               }
        if self.limits.gpus != "all":
            env["CUDA_VISIBLE_DEVICES"] = self.limits.gpus      # "" hides every GPU from the kernel
        elif "CUDA_VISIBLE_DEVICES" in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(self.limits.threads)
        return env
