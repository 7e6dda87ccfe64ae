"""What isolation holds, found by the very path that runs students' notebooks: one confined kernel, started at
start-up like any other, tries to reach a server on 127.0.0.1, a unix socket and a canary file in a folder it must
not see, to write outside its folder, to signal the grader, and makes the system calls its seccomp filter
(grader.sandbox.seccomp) denies: a kernel keyring, new namespaces, a tmpfs mount, userfaultfd, io_uring, memfd and
System V shared memory. What it could not do holds; where isolation was asked for and anything does not hold,
the grader refuses, saying what and why (``grader check`` and ``grader grade`` both start here)."""
from __future__ import annotations

import json
import os
import socket

import nbformat

CHECKS = {
    "no network": "net",
    "hidden files unreadable": "read",
    "no writes outside its folder": "write",
    "no host unix socket": "unix",
    "grader's processes out of reach": "procs",
    "seccomp filter": "seccomp",
    "no shared kernel keyring": "keyring",
    "no new namespaces": "namespaces",
    "no mounts": "mount",
    "no userfaultfd or io_uring": "uffd_uring",
    "no uncounted shared memory": "shm",
}
SECCOMP_CHECKS = ("seccomp filter", "no shared kernel keyring", "no new namespaces", "no mounts",
                  "no userfaultfd or io_uring", "no uncounted shared memory")
# The system calls the probe makes, with arguments that succeed where no filter denies them.
SYSCALLS = ("add_key", "keyctl", "unshare", "setns", "clone3", "mount", "userfaultfd", "io_uring_setup",
            "memfd_create", "shmget")

PROBE = '''
import json, os, socket
r = {}
try:
    socket.create_connection(("127.0.0.1", %(port)d), timeout=2).close(); r["net"] = False
except OSError:
    r["net"] = True
try:
    open(%(canary)r).read(); r["read"] = False
except OSError:
    r["read"] = True
try:
    with open(%(target)r, "w") as f:
        f.write("escaped")
    r["write"] = False
except OSError:
    r["write"] = True
try:
    u = socket.socket(socket.AF_UNIX); u.settimeout(2); u.connect(%(sock)r); u.close(); r["unix"] = False
except OSError:
    r["unix"] = True
try:
    os.kill(%(pid)d, 0); r["procs"] = False
except ProcessLookupError:
    r["procs"] = True
except OSError:
    r["procs"] = False
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
nr = %(numbers)r
def call(name, *args):
    """errno of the call (0: it succeeded, and the fd, key or segment it made is released; None: not known)."""
    if name not in nr:
        return None
    ret = libc.syscall(nr[name], *args)
    err = ctypes.get_errno() if ret < 0 else 0
    if ret >= 0 and name in ("userfaultfd", "io_uring_setup", "memfd_create"):
        os.close(ret)
    if ret >= 0 and name == "shmget":
        libc.shmctl(ret, 0, None)       # IPC_RMID
    return err
def in_child(name, *args):
    """errno of the call made in a forked, single-threaded child (unshare refuses a threaded process anyway)."""
    if name not in nr:
        return None
    pid = os.fork()
    if pid == 0:
        os._exit(min(call(name, *args), 255))
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
def denied(err, want=None):
    return err not in (None, 0) and (want is None or err == want)
with open("/proc/self/status") as f:
    r["seccomp"] = any(line.split() == ["Seccomp:", "2"] for line in f)
# The calls are made only by a confined, filtered kernel: in one that is not (--no-sandbox, a filter missing) they
# would act on the machine itself (a key in its keyring, a mount over its folders), so there they do not hold.
if %(isolated)r and r["seccomp"]:
    os.mkdir("mha-probe-mount")           # the kernel's own empty folder: the only place a mount could cover
    mounted = in_child("mount", b"none", b"mha-probe-mount", b"tmpfs", 0, None)
    if mounted == 0:
        libc.umount2(b"mha-probe-mount", 2)        # MNT_DETACH
    r["mount"] = denied(mounted)
    r["keyring"] = (denied(call("add_key", b"user", b"mha-probe", b"x", 1, -2))
                    and denied(call("keyctl", 0, -4, 0)))
    r["namespaces"] = (denied(in_child("unshare", 0x10000000)) and denied(in_child("unshare", 0x00020000))
                       and denied(call("clone3", None, 0), errno.ENOSYS)
                       and denied(call("setns", 0, 0), errno.EPERM))
    r["uffd_uring"] = (denied(call("userfaultfd", 1))
                       and denied(call("io_uring_setup", 1, ctypes.create_string_buffer(120))))
    r["shm"] = denied(call("memfd_create", b"mha-probe", 0)) and denied(call("shmget", 0, 4096, 0o1600))
print("ISOLATION " + json.dumps(r))
'''


def syscall_numbers() -> dict[str, int]:
    """{name: number} of SYSCALLS on this machine's architecture (from libseccomp; {} without it)."""
    from grader.sandbox.seccomp import libseccomp

    lib = libseccomp()
    if lib is None:
        return {}
    numbers = {name: lib.seccomp_syscall_resolve_name(name.encode()) for name in SYSCALLS}
    return {name: n for name, n in numbers.items() if n >= 0}


def refusal(report: dict[str, bool], start_error: str, seccomp_missing: str) -> str:
    """Why the grader refuses to run notebooks: what does not hold, and the fix that applies."""
    from grader.sandbox.preflight import NO_SANDBOX

    broken = [k for k, ok in report.items() if not ok]
    if start_error:
        return (f"the sandbox could not run a kernel: {start_error}. This is not a matter of bubblewrap or of "
                f"namespaces (both were checked): please report it with this message. {NO_SANDBOX}")
    why = ""
    if seccomp_missing:
        from grader.sandbox.seccomp import libseccomp

        why = f" No seccomp filter could be built: {seccomp_missing}." + (
            " Install libseccomp (Debian/Ubuntu: `apt-get install libseccomp2`)." if libseccomp() is None else "")
    elif any(k in broken for k in SECCOMP_CHECKS):
        why = (" The kernels' seccomp filter is not in force (a kernel older than 3.17, or a system call this "
               "libseccomp does not know): please report it with this message.")
    return ("the sandbox started, but its check found that " + ", ".join(broken) + " does not hold on this "
            "machine (holds: " + ", ".join(k for k, ok in report.items() if ok) + ")." + why + " " + NO_SANDBOX)


def check_isolation(sandbox) -> dict[str, bool]:
    """{check: holds} for CHECKS, from one kernel of `sandbox`. A kernel that cannot start holds nothing."""
    canary_dir = sandbox.staging / "canary"
    canary_dir.mkdir(exist_ok=True)
    os.chmod(sandbox.staging, 0o711)        # only isolation, not permissions, may keep the kernel out
    os.chmod(canary_dir, 0o777)
    canary = canary_dir / "secret.txt"
    canary.write_text("the kernel must not read this")
    canary.chmod(0o644)
    target = canary_dir / "escaped.txt"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = str(canary_dir / "s")
    unix.bind(sock_path)
    os.chmod(sock_path, 0o777)
    unix.listen(8)
    code = PROBE % {"port": listener.getsockname()[1], "canary": str(canary), "target": str(target),
                    "sock": sock_path, "pid": os.getpid(), "numbers": syscall_numbers(),
                    "isolated": bool(sandbox.isolate)}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    try:
        execution = sandbox.run(nb)
    finally:
        listener.close()
        unix.close()
        os.chmod(sandbox.staging, 0o700)
    found: dict = {}
    for output in nb.cells[0].get("outputs", []):
        for line in str(output.get("text", "")).splitlines():
            if line.startswith("ISOLATION "):
                found = json.loads(line[len("ISOLATION "):])
    report = {name: bool(found.get(key)) for name, key in CHECKS.items()}
    if target.exists():
        report["no writes outside its folder"] = False
    if not found:
        sandbox.start_error = (execution.message + (" " + execution.stderr_tail if execution.stderr_tail else "")
                               ).strip() or "the check kernel printed nothing"
    if sandbox.isolate and not all(report.values()):
        from grader.sandbox.bubblewrap import SECCOMP_FILE
        from grader.sandbox.seccomp import write_filter
        from grader.sandbox.service import SandboxUnavailable

        missing = ""
        if not (sandbox.lib / SECCOMP_FILE).is_file():
            missing = write_filter(sandbox.staging / "seccomp-retry.bpf") or "the filter file was not written"
        raise SandboxUnavailable(refusal(report, sandbox.start_error, missing))
    return report
