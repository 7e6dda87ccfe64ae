"""The kernels' seccomp filter: the system calls no notebook needs and an attacker would use, denied in every kernel
as Docker's default profile denies them (https://docs.docker.com/engine/security/seccomp/), built once per run with
libseccomp (Debian ``libseccomp2``, through ctypes: the maintained library that writes the BPF program; its Python
binding ``python3-seccomp`` exists only for Debian's own interpreter) and written to a file that the kernel loads
itself (grader.sandbox.inside.load_seccomp) after it dropped its privileges: the fork server and the supervisors
still need ``unshare`` and ``mount`` to build each kernel's namespaces, so the filter cannot be given to bwrap.

Denied (EPERM unless said): kernel keyrings (a channel between kernels: issue 23), new namespaces of any kind
(``unshare``, ``setns``, ``clone`` with a namespace flag; ``clone3`` answers ENOSYS, so glibc falls back to
``clone`` whose flags a filter can read), every mount call, tracing and reading other processes' memory, perf
events, ``userfaultfd``, io_uring, eBPF, loading kernels and modules, memory the watchdog cannot count
(``memfd_create``, ``memfd_secret``, System V shared memory and message queues), and the host administration calls
(clock, swap, reboot, quota, accounting) a kernel never holds the capability for anyway. Everything else is allowed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

CLONE_NAMESPACES = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
                    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                    "CLONE_NEWNET": 0x40000000}
DENIED = (
    "keyctl", "add_key", "request_key",
    "unshare", "setns",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "memfd_create", "memfd_secret", "shmget", "msgget",
    "acct", "swapon", "swapoff", "reboot", "syslog", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "quotactl", "quotactl_fd", "uselib", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm", "fanotify_init", "vhangup",
)
ENOSYS = ("clone3",)
# Denied calls the start-up check tries in a real kernel (grader.sandbox.isolation); each must fail.
REQUIRED = ("keyctl", "add_key", "unshare", "setns", "mount", "clone3", "userfaultfd", "io_uring_setup", "bpf",
            "ptrace", "memfd_create", "shmget")

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def libseccomp() -> ctypes.CDLL | None:
    """libseccomp.so.2, or None where it is not installed."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def build_filter(fd: int) -> None:
    """Write the BPF program (an array of struct sock_filter, 8 bytes each) to file descriptor `fd`. Raises
    OSError when libseccomp is missing, does not know a call of REQUIRED, or fails."""
    lib = libseccomp()
    if lib is None:
        raise OSError(errno.ENOENT, "libseccomp (Debian package libseccomp2) is not installed")
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        def deny(name: str, code: int, conditions: list[_ArgCmp] = ()) -> None:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:          # a call this libseccomp (or this architecture) does not know
                if name in REQUIRED:
                    raise OSError(errno.ENOSYS, f"libseccomp does not know the system call {name}")
                return
            array = (_ArgCmp * max(1, len(conditions)))(*conditions)
            ret = lib.seccomp_rule_add_array(ctx, _act_errno(code), number, len(conditions), array)
            if ret < 0:
                raise OSError(-ret, f"seccomp_rule_add({name}): {os.strerror(-ret)}")

        for name in DENIED:
            deny(name, errno.EPERM)
        for name in ENOSYS:
            deny(name, errno.ENOSYS)
        for flag in CLONE_NAMESPACES.values():      # one rule per flag: EPERM when (flags & flag) == flag
            deny("clone", errno.EPERM, [_ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag)])
        ret = lib.seccomp_export_bpf(ctx, fd)
        if ret < 0:
            raise OSError(-ret, f"seccomp_export_bpf: {os.strerror(-ret)}")
    finally:
        lib.seccomp_release(ctx)


def write_filter(path: Path) -> str:
    """Write the kernels' filter to `path` (readable by every kernel). Returns "" or why there is none (the file is
    then absent, the kernels run without a filter and the start-up check says so)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as err:
        return str(err)
    try:
        build_filter(fd)
    except OSError as err:
        os.close(fd)
        path.unlink(missing_ok=True)
        return str(err)
    os.close(fd)
    path.chmod(0o644)
    return ""
