"""The watchdog counts memory that no process's resident memory shows (issue 23): memfd files held open or only
mapped, and System V segments left detached in a kernel's own IPC namespace. No kernel needed: the memory is made
here (or in a child), and the counting functions are called on it."""
from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import threading
import time

import psutil

from grader.sandbox.sysv import CLONE_NEWUSER, SysvReader
from grader.sandbox.watch import CLONE_NEWIPC, enter_ipc_namespace, memfd_bytes, sysv_shm_bytes

MiB = 2**20


def test_a_memfd_held_open_counts_its_written_bytes():
    me = [psutil.Process()]
    before = memfd_bytes(me)
    fd = os.memfd_create("watch-test")
    try:
        for _ in range(4):
            os.write(fd, b"x" * (16 * MiB))
        assert memfd_bytes(me) - before >= 64 * MiB
    finally:
        os.close(fd)
    assert memfd_bytes(me) == before


def test_a_memfd_only_mapped_counts_its_mapping():
    me = [psutil.Process()]
    before = memfd_bytes(me)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    fd = os.memfd_create("watch-test-mapped")
    os.ftruncate(fd, 32 * MiB)
    # libc's mmap, not Python's (which keeps a duplicate descriptor): after close only /proc/PID/maps shows it
    addr = libc.mmap(None, 32 * MiB, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    os.close(fd)
    try:
        assert addr not in (None, ctypes.c_void_p(-1).value)
        assert memfd_bytes(me) - before >= 32 * MiB
    finally:
        libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(32 * MiB))
    assert memfd_bytes(me) == before


@contextlib.contextmanager
def detached_segment(flags: int, size: int):
    """A child process that unshares ``flags`` (CLONE_NEWIPC, and CLONE_NEWUSER for a normal user), fills a System V
    segment of ``size`` bytes and detaches it, then waits; yields (its pid, whether the unshare worked) and ends the
    child when the block ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ok = libc.unshare(flags) == 0
            if ok:
                shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)
                addr = libc.shmat(shmid, None, 0)
                ctypes.memset(ctypes.c_void_p(addr), 1, size)
                libc.shmdt(ctypes.c_void_p(addr))
            os.write(ready_w, b"1" if ok else b"0")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    try:
        yield pid, os.read(ready_r, 1) == b"1"
    finally:
        os.write(done_w, b"1")
        os.waitpid(pid, 0)


def test_a_detached_system_v_segment_of_another_ipc_namespace_counts_where_the_grader_may_enter():
    size = 48 * MiB
    # a child in an IPC namespace of its own (root only), a segment filled, detached
    with detached_segment(CLONE_NEWIPC, size) as (pid, unshared):
        seen = {}

        def look():                  # a thread of its own, as the watchdog: the namespace is entered per thread
            seen["entered"] = enter_ipc_namespace(pid)
            seen["bytes"] = sysv_shm_bytes() if seen["entered"] else 0

        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
        if os.geteuid() == 0:
            assert unshared and seen["entered"] and seen["bytes"] >= size
        else:                        # a normal user can neither make nor enter one: nothing to count, nothing counted
            assert not seen["entered"]
        # The grader's own threads stay in its own namespace.
        assert os.stat("/proc/self/ns/ipc").st_ino == os.stat(f"/proc/{os.getpid()}/task/{os.getpid()}/ns/ipc").st_ino


def test_the_helper_counts_a_detached_segment_of_a_kernels_own_namespaces():
    """As a kernel of a normal user's grader: a child in a user and IPC namespace of its own (only an IPC one as
    root) leaves a filled segment detached; the helper process, entering those namespaces, reports it."""
    size = 40 * MiB
    flags = CLONE_NEWIPC | (0 if os.geteuid() == 0 else CLONE_NEWUSER)
    with detached_segment(flags, size) as (pid, unshared):
        assert unshared
        reader = SysvReader.start(pid)
        assert reader is not None
        try:
            deadline = time.monotonic() + 20
            while reader.latest() < size and time.monotonic() < deadline:
                time.sleep(0.1)
            assert reader.latest() >= size
        finally:
            reader.close()
