"""The inside half of the sandbox: what runs within bubblewrap, in the fork server and in each kernel before it
becomes a kernel. Standard library only: this file is part of the kernels' read-only copy of the package.

Processes, isolated mode (host pid namespace on the left):

    bwrap                         bubblewrap (grader.sandbox.bubblewrap): new user (unless root), network, IPC,
      server                      pid, UTS and cgroup namespaces; read-only system and Python; nothing of the
                                  instructor's files. The server imported torch and ipykernel once.
        supervisor, one a kernel  new mount, pid, network and IPC namespaces of its own; keeps the kernel's
                                  stderr tail in the grader's log folder; reports the kernel's pid
          kernel (pid 1)          its own /proc, /box (a capped tmpfs: conn/, work/, tmp/), /dev/shm and /tmp;
                                  the log folder covered; no capabilities, no new privileges, the
                                  seccomp filter (grader.sandbox.seccomp); then ipykernel

A process in one kernel's pid namespace cannot name, signal or trace anything outside it, and when the kernel
(its pid 1) dies, the kernel's namespace and every process in it die with it. With ``isolate`` false
(``--no-sandbox``) the same code runs without any namespace, in a folder on disk.

Requests (JSON, one per kernel): ``name`` (log file stem), ``isolate``, ``box`` (the kernel's folder as the
kernel sees it), ``logs`` (the grader's log folder as this process sees it), ``connection`` (the connection file's
content), ``argv`` (ipykernel's arguments, fork server) or ``exec`` (a whole kernel command, launcher),
``env``, ``limits`` (grader.sandbox.limits.Limits as a dict), ``kernel_uid`` (run as this uid; root only),
``nproc_cap`` (RLIMIT_NPROC, 0 for none).
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
LINUX_CAPABILITY_VERSION_3 = 0x20080522
STDERR_TAIL = 8192          # bytes of a kernel's stderr kept for the grader's messages
SECCOMP_PATH = "/opt/mha-course/seccomp.bpf"    # the kernels' filter (grader.sandbox.seccomp), bound read-only
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                 "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}


def remount_read_only(target: str) -> None:
    """Make the mount at `target` read-only, keeping its other flags (a user namespace may not drop them)."""
    flags = 0
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                flags = sum(_OPTION_FLAGS.get(opt, 0) for opt in fields[5].split(","))
    mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_privileges(kernel_uid: int | None) -> None:
    """Become `kernel_uid` (root: clears every capability) or clear every capability; no new privileges ever
    (setuid binaries and file capabilities do nothing after this). Fails closed: raises if any capability is left."""
    for cap in range(64):        # the bounding set too, where we may (CAP_SETPCAP)
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break
    if kernel_uid is not None:
        os.setgroups([])
        os.setresgid(kernel_uid, kernel_uid, kernel_uid)
        os.setresuid(kernel_uid, kernel_uid, kernel_uid)
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    with open("/proc/self/status") as f:
        caps = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
    if int(caps.get("CapEff", "1"), 16) or int(caps.get("CapPrm", "1"), 16):
        raise OSError(f"capabilities left after dropping them: {caps.get('CapEff')}")


def confine_kernel(request: dict) -> None:
    """In the kernel process, pid 1 of its fresh namespaces, before any student code: its own /proc, /box,
    /dev/shm and /tmp, the shared writable places covered or read-only, limits, then no privileges."""
    limits = request["limits"]
    uid = request.get("kernel_uid")
    owner = (uid, uid) if uid is not None else (os.getuid(), os.getgid())
    box = request["box"]
    mount("none", "/", None, MS_REC | MS_PRIVATE)          # nothing we mount propagates anywhere
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in ("sys", "sysrq-trigger", "irq", "bus"):     # as bubblewrap does for its own /proc
        if os.path.exists(f"/proc/{name}"):
            mount(f"/proc/{name}", f"/proc/{name}", None, MS_BIND | MS_REC)
            remount_read_only(f"/proc/{name}")
    mount("tmpfs", box, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={int(limits['disk_bytes'])},mode=0700,uid={owner[0]},gid={owner[1]}")
    for sub in ("conn", "work", "tmp"):
        os.mkdir(f"{box}/{sub}", 0o700)
        os.chown(f"{box}/{sub}", *owner)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(limits['shm_bytes'])},mode=1777")
    cover_keeping_mounts(f"{box}/tmp", "/tmp")
    mount("tmpfs", "/dev/pts", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555")
    remount_read_only("/dev")
    mount("tmpfs", request["logs"], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=0555")
    write_connection_file(request, owner)
    set_rlimits(request)
    drop_privileges(uid)
    load_seccomp(SECCOMP_PATH)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(path: str) -> bool:
    """Install the seccomp filter at `path` (a BPF program: struct sock_filter[], 8 bytes each) on this process and
    everything it will start; needs no privilege once no-new-privileges is set. False when there is no filter file
    (a machine without libseccomp: the start-up check finds the calls allowed and says so); raises when a filter is
    there and cannot be installed."""
    try:
        with open(path, "rb") as f:
            program = f.read()
    except FileNotFoundError:
        return False
    if not program or len(program) % 8:
        raise OSError(f"the seccomp filter {path} is not a BPF program ({len(program)} bytes)")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "prctl(PR_SET_SECCOMP)")
    return True


def cover_keeping_mounts(source: str, target: str) -> None:
    """Bind `source` over `target`, then bind again, read-only, whatever was mounted below `target` (a Python
    installation under /tmp that bwrap bound there): the kernel gets its own folder without losing its Python."""
    with open("/proc/self/mountinfo") as f:
        points = sorted({line.split()[4] for line in f if line.split()[4].startswith(target + "/")},
                        key=lambda p: p.count("/"))
    below: list[str] = []
    for point in points:
        if not any(point == p or point.startswith(p + "/") for p in below):
            below.append(point)
    held = [(point, os.open(point, os.O_PATH | os.O_DIRECTORY)) for point in below]
    mount(source, target, None, MS_BIND)
    for point, fd in held:
        os.makedirs(point, mode=0o755, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", point, None, MS_BIND | MS_REC)
        remount_read_only(point)
        os.close(fd)


def write_connection_file(request: dict, owner: tuple[int, int] | None = None) -> None:
    path = f"{request['box']}/conn/kernel.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(request["connection"], f)
    if owner:
        os.chown(path, *owner)


def set_rlimits(request: dict) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    size = int(request["limits"]["file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    if request.get("nproc_cap"):
        resource.setrlimit(resource.RLIMIT_NPROC, (request["nproc_cap"], request["nproc_cap"]))


def become_kernel(request: dict) -> None:
    """In the forked kernel process: confine, then run ipykernel (fork server) or exec the kernel. Never returns."""
    code = 70
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if request["isolate"]:
            confine_kernel(request)
        else:
            for sub in ("conn", "work"):
                os.makedirs(f"{request['box']}/{sub}", mode=0o700, exist_ok=True)
            write_connection_file(request)
            set_rlimits(request)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(f"{request['box']}/work")
        if request.get("exec"):
            argv = request["exec"]
            os.execvpe(argv[0], argv, os.environ)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(int(request["limits"].get("threads", 1)))
        sys.path.insert(0, "")
        from ipykernel.kernelapp import IPKernelApp

        sys.argv = [sys.executable, *request["argv"]]
        IPKernelApp.launch_instance(argv=request["argv"])
        code = 0
    except BaseException as err:          # said on stderr, which the supervisor keeps for the grader
        try:
            os.write(2, f"sandbox: the kernel could not start: {type(err).__name__}: {err}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def supervise(request: dict, report) -> None:
    """The supervisor: new namespaces, fork the kernel, report its pid, keep the tail of its stderr, reap it.
    `report(text)` tells the grader (through the server) the kernel's pid, or an error. Never returns."""
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if request["isolate"]:
            unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
        log = os.open(f"{request['logs']}/{request['name']}.stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        read_end, write_end = os.pipe()
        pid = os.fork()
    except BaseException as err:
        report(f"error: {type(err).__name__}: {err}")
        os._exit(1)
    if pid == 0:
        os.close(read_end)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(write_end, 2)
        # Nothing else of the supervisor's or the server's: the log file, the report pipe (the server waits for
        # it to close), the server's own pipes to the grader.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        become_kernel(request)
    os.close(write_end)
    report(str(pid))
    tail = b""
    while True:
        try:
            chunk = os.read(read_end, 65536)
        except OSError:
            break
        if not chunk:
            break
        tail = (tail + chunk)[-STDERR_TAIL:]
        os.ftruncate(log, 0)
        os.pwrite(log, tail, 0)
    try:
        _, status = os.waitpid(pid, 0)
        os.pwrite(log, f"\n[kernel exit status {os.waitstatus_to_exitcode(status)}]\n".encode(), len(tail))
    except OSError:
        pass
    os._exit(0)


def launch(config_json: str) -> None:
    """Launcher path (a kernel that is not forked from the server): supervise one kernel, pid into a file."""
    request = json.loads(config_json)
    pid_file = os.open(f"{request['logs']}/{request['name']}.pid", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def report(text: str) -> None:
        os.write(pid_file, text.encode())
        os.close(pid_file)

    supervise(request, report)


def _reap(signum, frame) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve() -> None:
    """The fork server: preload, then one JSON request per stdin line -> one JSON reply line (pid or error)."""
    import importlib

    loaded = []
    for name in ("ipykernel.kernelapp", "IPython", "numpy", "torch", "grader.diagnose"):
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:
            pass
    signal.signal(signal.SIGCHLD, _reap)
    print(json.dumps({"preloaded": loaded, "uid": os.getuid()}), flush=True)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            read_end, write_end = os.pipe()
            pid = os.fork()
        except Exception as err:
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
            continue
        if pid == 0:
            os.close(read_end)

            def report(text: str, fd=write_end) -> None:
                os.write(fd, text.encode())
                os.close(fd)

            supervise(request, report)
        os.close(write_end)
        answer = b""
        while chunk := os.read(read_end, 4096):
            answer += chunk
        os.close(read_end)
        text = answer.decode(errors="replace")
        print(json.dumps({"pid": int(text)} if text.isdigit() else {"error": text or "no reply"}), flush=True)
    # stdin closed: the grader is done with us. Leave at once: tearing down a process that preloaded torch takes
    # seconds, and the kernels it forked are their own processes by now (each confined and watched on its own).
    sys.stdout.flush()
    os._exit(0)
