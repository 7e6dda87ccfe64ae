"""Limits the OS does not give per process: per-kernel cgroups where writable, and a watchdog thread that
polls the kernel's process tree (memory, processes, total time) and kills it past a cap.

Memory is the resident memory of the tree (proportional set sizes, so forked children's shared pages count once)
plus what the kernel holds that no process's resident memory shows (issue 23): its private tmpfs folders (``/box``,
``/dev/shm``), memfd files held open (``/proc/PID/fd``) or mapped (``/proc/PID/maps``), and the System V shared
memory of its IPC namespace, attached or not (read from inside that namespace, where the grader may enter it). Where
a memory cgroup is made for the kernel, its anonymous and shared-memory pages (``memory.stat``: tmpfs, memfd and
System V segments included, whoever maps them) count too: the larger of the two sums is the kernel's memory.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import psutil

from grader.sandbox.limits import Limits
from grader.sandbox.sysv import CLONE_NEWIPC, SysvReader, enter_ipc_namespace, sysv_shm_bytes  # noqa: F401


def writable_cgroup(controller: str) -> tuple[str, int]:
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


class KernelCgroups:
    """Per-kernel cgroups (pids, memory) made before launch and removed after; empty where not writable."""

    def __init__(self, limits: Limits, cgroup_pids: str, cgroup_memory: str):
        self.dirs: dict[str, Path] = {}
        name = f"grader-{uuid.uuid4().hex[:12]}"
        wanted = {"pids": (cgroup_pids, str(limits.max_processes)),
                  "memory": (cgroup_memory, str(limits.memory_bytes + 2**30))}  # a backstop above the watchdog
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

    def join(self, pid: int) -> None:
        """Move `pid` (the kernel, before it runs any cell) into every cgroup made for it."""
        for p in self.dirs.values():
            try:
                (p / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass

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

    def memory_bytes(self) -> int:
        """Anonymous plus shared-memory (tmpfs, memfd, System V) bytes charged to the kernel's memory cgroup, 0
        without one. cgroup v2 ``anon`` + ``shmem``; v1 ``total_rss`` + ``total_shmem`` (page cache is left out: it
        is reclaimed at the limit, not held)."""
        if "memory" not in self.dirs:
            return 0
        try:
            stat = dict(line.split()[:2] for line in (self.dirs["memory"] / "memory.stat").read_text().splitlines())
        except (OSError, ValueError):
            return 0
        keys = ("anon", "shmem") if "anon" in stat else ("total_rss", "total_shmem")
        return sum(int(stat.get(k, 0)) for k in keys)

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


def freeze(pid: int | None, cgroups: KernelCgroups | None) -> None:
    """Stop (SIGSTOP) every process of the kernel: those of its cgroup where there is one, else its tree (the
    kernel is its pid namespace's init: every process it starts stays below it). Twice, for a fork in between."""
    for _ in range(2):
        procs = process_tree(pid)
        if cgroups is not None and cgroups.dirs:
            known = {p.pid for p in procs}
            for other in cgroups.pids() - known:
                try:
                    procs.append(psutil.Process(other))
                except psutil.Error:
                    pass
        for p in procs:
            try:
                p.suspend()
            except psutil.Error:
                pass


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


def memfd_bytes(procs: list[psutil.Process]) -> int:
    """Bytes of the memfd files the processes hold: by open descriptor, the file's allocated size; mapped but no
    longer open, the size of its mappings (what /proc shows without CAP_SYS_ADMIN). Each file counts once."""
    sizes: dict[tuple, int] = {}
    mapped: dict[tuple, int] = {}
    for p in procs:
        fd_dir = f"/proc/{p.pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if not os.readlink(f"{fd_dir}/{fd}").startswith("/memfd:"):
                    continue
                st = os.stat(f"{fd_dir}/{fd}")       # the magic link: the memfd itself, never a path of the kernel's
            except OSError:
                continue
            sizes[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        try:
            with open(f"/proc/{p.pid}/maps") as maps:
                for line in maps:
                    if "/memfd:" not in line:
                        continue
                    fields = line.split()
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    key = ("map", fields[3], int(fields[4]))
                    mapped[key] = mapped.get(key, 0) + end - start
        except (OSError, ValueError, IndexError):
            continue
    inodes = {ino for (_, ino) in sizes}
    return sum(sizes.values()) + sum(size for (_, _, ino), size in mapped.items() if ino not in inodes)


class Watchdog(threading.Thread):
    """Polls the kernel's process tree; kills it over the memory or process cap or past the notebook limit."""

    def __init__(self, pid: int, limits: Limits, cgroups: KernelCgroups, interval: float | None = None,
                 private_folders: list[str] = ()):
        super().__init__(daemon=True)
        self.private_folders = list(private_folders)     # the kernel's tmpfs folders, seen from here
        # Without a pids cgroup the watchdog is the only process cap: it looks more often.
        interval = interval or (0.1 if "pids" in cgroups.dirs else 0.03)
        self.pid, self.limits, self.cgroups, self.interval = pid, limits, cgroups, interval
        self.reason = ""          # "memory", "processes", "notebook_timeout"
        self.peak_rss = 0
        self._stop_event = threading.Event()
        self.started_at = time.monotonic()
        self.in_ipc_namespace = False
        self.sysv_reader: SysvReader | None = None
        self._hidden, self._hidden_at = 0, -1.0

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

    def folder_bytes(self) -> int:
        used = 0
        for folder in self.private_folders:
            try:
                st = os.statvfs(folder)
                used += (st.f_blocks - st.f_bfree) * st.f_frsize
            except OSError:
                pass
        return used

    def hidden_bytes(self, procs: list[psutil.Process], every: float = 0.25) -> int:
        """memfd and System V bytes (reading every process's maps costs more than a poll: at most every `every` s)."""
        now = time.monotonic()
        if now - self._hidden_at >= every:
            sysv = sysv_shm_bytes() if self.in_ipc_namespace else self.sysv_reader.latest() if self.sysv_reader else 0
            self._hidden = memfd_bytes(procs) + sysv
            self._hidden_at = now
        return self._hidden

    def trip(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
        kill_tree(self.pid, self.cgroups)

    def run(self) -> None:
        self.in_ipc_namespace = enter_ipc_namespace(self.pid)
        if not self.in_ipc_namespace:       # a normal user: a helper process joins the kernel's namespaces instead
            self.sysv_reader = SysvReader.start(self.pid)
        try:
            self.watch()
        finally:
            if self.sysv_reader is not None:
                self.sysv_reader.close()

    def watch(self) -> None:
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
            rss = max(tree_memory(procs) + self.folder_bytes() + self.hidden_bytes(procs),
                      self.cgroups.memory_bytes())
            self.peak_rss = max(self.peak_rss, rss)
            if rss > self.limits.memory_bytes or hit == "memory":
                self.trip("memory")
                return
            if not procs:
                return


