"""The child side of the sandbox: ``confine`` turns the process about to become a kernel into a confined one.

It runs either in the launcher (``launcher_main``, started by ``grader.sandbox.SandboxedKernelManager`` behind
``unshare``, which then ``exec``s the kernel) or in a child of the fork server (``grader.pipeline.forkserver``,
which makes its own namespaces first). The order matters: join the cgroups before anything can fork, hide paths
while still root, set the rlimits, enter the private working folder, and give up root last.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import sys
from pathlib import Path

import psutil

from grader.sandbox import NOBODY, Limits

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC = 1, 2, 4, 8, 4096, 16384


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                  data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _hide_paths(box: Path, hide: list[str]) -> None:
    """Cover each hidden folder with an empty read-only tmpfs; keep our own box visible inside the staging root."""
    box_fd = os.open(box, os.O_RDONLY | os.O_DIRECTORY)
    for path in sorted(set(hide), key=len):
        if os.path.isfile(path):    # a single file (the gradebook, an LMS zip): an empty device in its place
            _mount("/dev/null", path, None, MS_BIND, None)
            continue
        if not os.path.isdir(path):
            continue
        _mount("none", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755")
        if Path(box).is_relative_to(path):
            # Recreate the way down to our own box inside the tmpfs, then bind the real box back onto it.
            rel = Path(box).relative_to(path)
            (Path(path) / rel).mkdir(parents=True, exist_ok=True)
            _mount(f"/proc/self/fd/{box_fd}", str(box), None, MS_BIND | MS_REC, None)
        _mount("none", path, None, 0x20 | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_BIND, None)  # 0x20: MS_REMOUNT
    os.close(box_fd)


CLONE_NEWNS, CLONE_NEWNET, MS_PRIVATE = 0x00020000, 0x40000000, 1 << 18


def confine(config: dict, kernel_argv: list[str], unshare_here: bool = False) -> list[str]:
    """Apply every restriction to this very process (the launcher, or a child of the fork server) before it
    becomes the kernel; returns the kernel's argv (its connection file moves when the uid is dropped)."""
    limits = Limits(**config["limits"])
    box = Path(config["box"])
    work = box / "work"
    for procs in config["cgroup_procs"]:   # join before anything else can fork
        Path(procs).write_text(str(os.getpid()))
    if unshare_here:   # the launcher got its namespaces from the unshare command instead
        flags = (CLONE_NEWNET if config["net_namespace"] else 0) | (CLONE_NEWNS if config["mount_namespace"] else 0)
        libc = ctypes.CDLL(None, use_errno=True)
        if flags and libc.unshare(flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        if config["mount_namespace"]:   # our mounts must not propagate back to the grader's namespace
            _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    if config["mount_namespace"]:
        _hide_paths(box, config["hide"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    os.chdir(work)
    kernel_argv = list(kernel_argv)
    if config["drop_to_nobody"] and os.geteuid() == 0:
        # The connection file is 0600 root; hand the kernel its own copy, then give up root for good.
        conn = kernel_argv[kernel_argv.index("-f") + 1]
        own = box / "conn" / "kernel-nobody.json"
        shutil.copyfile(conn, own)
        for path in (own, box / "conn", work):
            os.chown(path, NOBODY, NOBODY)
        kernel_argv[kernel_argv.index("-f") + 1] = str(own)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    if os.geteuid() != 0 and not config["pids_cgroup"]:
        # RLIMIT_NPROC counts every thread of the uid, other kernels' included: headroom above what runs now.
        uid = os.getuid()
        running = 0
        for proc in psutil.process_iter(["uids", "num_threads"]):
            if proc.info["uids"] and proc.info["uids"].real == uid:
                running += proc.info["num_threads"] or 1
        cap = running + 2 * limits.max_processes
        resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))
    return kernel_argv


def launcher_main(argv: list[str]) -> None:
    config = json.loads(argv[0])
    kernel_cmd = confine(config, argv[argv.index("--") + 1:])
    os.execvpe(kernel_cmd[0], kernel_cmd, os.environ)


if __name__ == "__main__":
    launcher_main(sys.argv[1:])
