"""System V shared memory of a kernel's own IPC namespace, which no process's memory shows once a segment is
detached (issue 23). /proc/sysvipc/shm lists the segments of the *reader's* IPC namespace, so the grader reads it
from inside the kernel's: as root, the watchdog's own thread enters it (setns is per thread); as a normal user, a
helper process first enters the kernel's user namespace (which the grader's user owns: bubblewrap made it), where
it may enter the IPC namespace, and reports the total every quarter second. The helper is in none of the kernel's
other namespaces: no process of the kernel can see or signal it.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000


def enter_ipc_namespace(pid: int) -> bool:
    """Move the calling thread (only it: namespaces are per thread) into the IPC namespace of `pid`, where
    /proc/sysvipc/shm lists that namespace's segments. True when entered; False where not allowed (setns needs
    CAP_SYS_ADMIN: a grader run as root) or when `pid` shares the grader's own namespace."""
    try:
        if os.stat(f"/proc/{pid}/ns/ipc").st_ino == os.stat("/proc/self/ns/ipc").st_ino:
            return False
        fd = os.open(f"/proc/{pid}/ns/ipc", os.O_RDONLY)
    except OSError:
        return False
    try:
        return _libc.setns(fd, CLONE_NEWIPC) == 0
    finally:
        os.close(fd)


def sysv_shm_bytes() -> int:
    """Resident plus swapped bytes of every System V segment of the calling thread's IPC namespace, attached or
    not (/proc/sysvipc/shm's rss and swap columns)."""
    try:
        with open("/proc/sysvipc/shm") as table:
            header = table.readline().split()
            rss, swap = header.index("rss"), header.index("swap")
            return sum(int(f[rss]) + int(f[swap]) for f in (line.split() for line in table) if len(f) > swap)
    except (OSError, ValueError):
        return 0


# The helper: a fresh (single-threaded) interpreter may enter a user namespace; it prints the total, then again
# every 0.25 s, until the kernel is gone or the grader stops reading. It reads as sysv_shm_bytes does.
_HELPER = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
for name, flag in (("user", %d), ("ipc", %d)):
    fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY)
    if libc.setns(fd, flag) != 0 and name == "ipc":
        sys.exit(3)
    os.close(fd)
while os.path.exists(f"/proc/{pid}"):
    total = 0
    try:
        with open("/proc/sysvipc/shm") as table:
            header = table.readline().split()
            rss, swap = header.index("rss"), header.index("swap")
            total = sum(int(f[rss]) + int(f[swap]) for f in (line.split() for line in table) if len(f) > swap)
        print(total, flush=True)
    except (BrokenPipeError, OSError, ValueError):
        break
    time.sleep(0.25)
""" % (CLONE_NEWUSER, CLONE_NEWIPC)


class SysvReader:
    """The helper process for one kernel; ``latest()`` is the last total it reported (0 before the first)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.value, self.buffer = proc, 0, b""
        os.set_blocking(proc.stdout.fileno(), False)

    @classmethod
    def start(cls, pid: int) -> "SysvReader | None":
        """The helper for kernel `pid`, or None where its IPC namespace is the grader's own or cannot be read."""
        try:
            if os.stat(f"/proc/{pid}/ns/ipc").st_ino == os.stat("/proc/self/ns/ipc").st_ino:
                return None
        except OSError:
            return None
        proc = subprocess.Popen([sys.executable, "-I", "-c", _HELPER, str(pid)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        return cls(proc)

    def latest(self) -> int:
        try:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            chunk = b""
        except OSError:
            return self.value
        self.buffer = (self.buffer + chunk)[-4096:]
        lines = self.buffer.split(b"\n")
        self.buffer = lines[-1]
        for line in reversed(lines[:-1]):
            if line.strip().isdigit():
                self.value = int(line)
                break
        return self.value

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
