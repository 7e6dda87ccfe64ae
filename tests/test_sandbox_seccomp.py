"""The kernels' seccomp filter (issue 23), probed in real sandboxed kernels of one sandbox, as the grader runs a class:
a kernel keyring is no channel between two kernels, no kernel makes a namespace or mounts a tmpfs (not even
through util-linux's ``unshare``), userfaultfd and io_uring are refused, memory the watchdog cannot count
(memfd, System V shared memory) cannot be had, and what notebooks do use (torch, ipykernel, threads, processes)
still works. Run as root and, through tests/test_sandbox_matrix.py, as a normal user."""
from __future__ import annotations

import errno
import json

import nbformat
import pytest

from grader.sandbox import Limits
from grader.sandbox.service import Sandbox

pytestmark = pytest.mark.slow

CALLS = r'''
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
NR = %(numbers)s
def call(name, *args):
    ret = libc.syscall(NR[name], *args)
    return ctypes.get_errno() if ret < 0 else 0
def in_child(fn):
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(min(fn(), 255))
        except BaseException:
            os._exit(254)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
'''

SENDER = CALLS + r'''
err = call("add_key", b"user", b"mha-answers", b"the classmate's code", 20, -4)     # KEY_SPEC_USER_KEYRING
print("RESULT " + json.dumps({"add_key": err, "keys": open("/proc/keys").read()}))
'''

RECEIVER = CALLS + r'''
found = libc.syscall(NR["keyctl"], 10, -4, b"user", b"mha-answers", 0)        # KEYCTL_SEARCH
print("RESULT " + json.dumps({"search": ctypes.get_errno() if found < 0 else 0,
                              "request_key": call("request_key", b"user", b"mha-answers", None, 0),
                              "keys": open("/proc/keys").read()}))
'''

ESCAPES = CALLS + r'''
import subprocess, sys
r = {}
r["unshare_user"] = in_child(lambda: call("unshare", 0x10000000))
r["unshare_mount"] = in_child(lambda: call("unshare", 0x00020000))
def clone_newuser():
    ret = libc.syscall(NR["clone"], 0x10000000 | 17, 0, 0, 0, 0)     # CLONE_NEWUSER | SIGCHLD
    if ret == 0:
        os._exit(0)                   # the new process, in a user namespace of its own: the attack worked
    return ctypes.get_errno() if ret < 0 else 0
r["clone_newuser"] = in_child(clone_newuser)
r["clone3"] = call("clone3", None, 0)
r["setns"] = call("setns", 0, 0)
os.mkdir("mount-here")      # the kernel's own folder: nothing else is ever a mount target, filter or not
r["mount_tmpfs"] = in_child(lambda: call("mount", b"none", b"mount-here", b"tmpfs", 0, b"size=8g"))
tool = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "-o", "size=8g",
                       "none", "mount-here"], capture_output=True, text=True)
r["unshare_tool"] = [tool.returncode, tool.stderr.strip()[-200:]]
r["userfaultfd"] = call("userfaultfd", 1)
r["io_uring_setup"] = call("io_uring_setup", 8, ctypes.create_string_buffer(120))
r["bpf"] = call("bpf", 0, None, 0)
r["ptrace_traceme"] = in_child(lambda: call("ptrace", 0, 0, 0, 0))
r["memfd_create"] = call("memfd_create", b"hoard", 0)
r["shmget"] = call("shmget", 0, 2**30, 0o1600)
r["msgget"] = call("msgget", 0, 0o1600)
r["keyctl"] = call("keyctl", 0, -4, 0)
with open("/proc/self/status") as f:
    r["seccomp"] = [line.split()[1] for line in f if line.startswith("Seccomp:")][0]
print("RESULT " + json.dumps(r))
'''

STILL_WORKS = r'''
import json, os, subprocess, sys, threading, multiprocessing
import torch
r = {}
r["matmul"] = float((torch.ones(64, 64) @ torch.ones(64, 64))[0, 0])
t = threading.Thread(target=lambda: r.__setitem__("thread", True)); t.start(); t.join()
r["subprocess"] = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout.strip()
pid = os.fork()
if pid == 0:
    os._exit(3)
r["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
with multiprocessing.get_context("fork").Pool(2) as pool:
    r["pool"] = pool.map(abs, [-1, -2])
from torch.utils.data import DataLoader, TensorDataset      # workers share tensors through shared memory
r["shared"] = torch.zeros(4).share_memory_().is_shared()
r["loader"] = [b[0].tolist() for b in DataLoader(TensorDataset(torch.arange(4.)), batch_size=2, num_workers=2)]
print("RESULT " + json.dumps(r))
'''


def syscall_numbers() -> dict[str, int]:
    from grader.sandbox.seccomp import libseccomp

    lib = libseccomp()
    assert lib is not None, "libseccomp (Debian libseccomp2) is not installed"
    names = ("add_key", "keyctl", "request_key", "unshare", "clone", "clone3", "setns", "mount", "userfaultfd",
             "io_uring_setup", "bpf", "ptrace", "memfd_create", "shmget", "msgget")
    return {name: lib.seccomp_syscall_resolve_name(name.encode()) for name in names}


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(Limits(cell_timeout=120)) as box:
        report = box.start(log=lambda m: None)
        assert all(report.values()), report
        yield box


def run_code(sandbox, code: str) -> dict:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code % {"numbers": syscall_numbers()}
                                                                    if "%(numbers)s" in code else code)])
    execution = sandbox.run(nb)
    text = "".join(str(o.get("text", "")) + "".join(o.get("traceback", [])) for o in nb.cells[0].get("outputs", []))
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert execution.status == "graded" and lines, (execution.status, execution.message, text[-3000:])
    return json.loads(lines[-1][len("RESULT "):])


def test_a_kernel_keyring_is_no_channel_between_two_kernels(sandbox):
    sent = run_code(sandbox, SENDER)
    received = run_code(sandbox, RECEIVER)
    assert sent["add_key"] == errno.EPERM, sent
    assert received["search"] == errno.EPERM and received["request_key"] == errno.EPERM, received
    assert "mha-answers" not in received["keys"], received


def test_no_namespace_mount_tracing_userfaultfd_io_uring_or_uncounted_memory(sandbox):
    r = run_code(sandbox, ESCAPES)
    assert r["seccomp"] == "2", r
    for name in ("unshare_user", "unshare_mount", "clone_newuser", "setns", "mount_tmpfs", "userfaultfd",
                 "io_uring_setup", "bpf", "ptrace_traceme", "memfd_create", "shmget", "msgget", "keyctl"):
        assert r[name] == errno.EPERM, (name, r)
    assert r["clone3"] == errno.ENOSYS, r          # so that glibc falls back to clone, whose flags are filtered
    assert r["unshare_tool"][0] != 0 and "Operation not permitted" in r["unshare_tool"][1], r


def test_what_notebooks_use_still_works(sandbox):
    r = run_code(sandbox, STILL_WORKS)
    assert r == {"matmul": 64.0, "thread": True, "subprocess": "42", "fork": 3, "pool": [1, 2], "shared": True,
                 "loader": [[0.0, 1.0], [2.0, 3.0]]}, r
