"""The grader's handles on sandboxed kernels: the fork server, and a jupyter_client KernelManager whose kernel is
started by it (or by the launcher) inside bubblewrap, and reached over unix sockets in the kernel's own folder.

The kernel's folder ``/box`` is a tmpfs in the kernel's mount namespace: the grader sees it as
``/proc/<kernel pid>/root/box`` (the kernel is alive while the grader talks to it). So nothing a kernel writes
ever lands on the grader's disk, and a kernel that fills its folder fills only its own capped tmpfs.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import zmq
from jupyter_client import AsyncKernelManager

from grader.sandbox.bubblewrap import INSIDE_BOX, INSIDE_LIB, INSIDE_LOGS


CHANNELS = ("shell", "iopub", "stdin", "hb", "control")
MAX_FRAME = 16 * 2**20      # bytes: the largest message frame the grader accepts from a kernel
QUEUED = 64                 # messages that may wait unread on one channel
SEND_TIMEOUT_MS = 10_000    # a message to a kernel that no longer takes any is given up after this


class KernelSocketError(RuntimeError):
    """The kernel's connection folder does not hold the sockets the kernel was started with."""


def open_no_follow(root: str, inside_path: str, kind: int) -> int:
    """An O_PATH file descriptor of `inside_path` under folder `root` (the kernel's root as /proc/PID/root, which
    the grader enters once), opened one name at a time without following any link, checked to be of `kind`
    (stat.S_IFSOCK, stat.S_IFREG, stat.S_IFDIR). Raises OSError (ELOOP for a link) or KernelSocketError."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in [p for p in inside_path.split("/") if p]:
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        if stat.S_IFMT(os.fstat(fd).st_mode) != kind:
            raise KernelSocketError(f"{inside_path} is not a {'socket' if kind == stat.S_IFSOCK else 'file'}")
    except BaseException:
        os.close(fd)
        raise
    return fd


class ForeignProcess:
    """Enough of subprocess.Popen for jupyter_client's provisioner, for a kernel that is not our child."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, launcher: subprocess.Popen | None = None):
        self.pid = pid
        self.launcher = launcher          # bwrap (or the launcher) when this kernel was not forked by the server
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state in ("Z", "X"):
                    self.returncode = -signal.SIGKILL
            except (OSError, IndexError):
                self.returncode = -signal.SIGKILL   # gone (reaped by its supervisor): its code is not ours to read
        if self.returncode is not None and self.launcher is not None:
            self.launcher.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        if self.launcher is not None:
            try:
                self.launcher.kill()
                self.launcher.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def ns_pids(pid: int) -> list[int]:
    """The pid of `pid` in each namespace it is in, outermost first (NSpid in /proc/PID/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def host_pid(root: int, inner: int, isolate: bool, timeout: float = 10.0) -> int:
    """The host pid of the kernel whose pid is `inner` in the server's (or launcher's) namespace, found among the
    descendants of `root` (bwrap). Without isolation the two are the same."""
    if not isolate:
        return inner
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for proc in psutil.Process(root).children(recursive=True):
                levels = ns_pids(proc.pid)
                if len(levels) == 3 and levels[1] == inner:
                    return proc.pid
        except psutil.Error:
            break
        time.sleep(0.02)
    raise RuntimeError(f"the sandboxed kernel (pid {inner} in its sandbox) was not found")


class ForkServer:
    """The fork server (grader.sandbox.inside.serve) under bwrap: spawn(request) -> the kernel's host pid."""

    def __init__(self, prefix: list[str], env: dict, isolate: bool, log: Path):
        boot = f"import sys; sys.path.insert(0, {INSIDE_LIB!r}); from grader.sandbox.inside import serve; serve()"
        if not isolate:     # the grader's own package, from this checkout
            boot = boot.replace(repr(INSIDE_LIB), repr(str(Path(__file__).resolve().parents[2])))
        self.isolate = isolate
        self._lock = threading.Lock()
        self._log = open(log, "wb")
        cmd = prefix + [sys.executable, "-c", boot]
        if isolate:
            cmd = prefix + [arg for k, v in env.items() for arg in ("--setenv", k, v)] + [sys.executable, "-c", boot]
        self.proc = subprocess.Popen(cmd, cwd="/", env=env if not isolate else None, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self.hello: dict | None = None
        self.log = log

    def ready(self) -> dict:
        """Wait for the server's imports; its hello (modules preloaded)."""
        if self.hello is None:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                tail = self.log.read_text(errors="replace")[-2000:].strip()
                raise RuntimeError(f"the sandbox did not start (exit {self.proc.returncode}): {tail}")
            self.hello = json.loads(line)
        return self.hello

    def spawn(self, request: dict) -> int:
        with self._lock:
            self.ready()
            if self.proc.poll() is not None:
                raise RuntimeError("the fork server has exited")
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline() or '{"error": "no reply"}')
        if "pid" not in reply:
            raise RuntimeError(f"the sandbox could not start a kernel: {reply.get('error')}")
        return host_pid(self.proc.pid, int(reply["pid"]), self.isolate)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class SandboxedKernelManager(AsyncKernelManager):
    """A KernelManager whose kernel runs in the sandbox (grader.sandbox.service.Sandbox)."""

    def __init__(self, *, sandbox, name: str, **kw):
        self.sandbox, self.name = sandbox, name
        self.host_box = sandbox.staging / name          # the grader's own files for this kernel (never the kernel's)
        self.host_box.mkdir(mode=0o700)
        self.inside_box = INSIDE_BOX if sandbox.isolate else str(self.host_box / "box")
        self.kernel_host_pid: int | None = None
        self.socket_fds: list[int] = []                 # O_PATH fds of the kernel's sockets, held while it runs
        super().__init__(transport="ipc", connection_file=str(self.host_box / "kernel.json"), **kw)
        self.ip = f"{self.inside_box}/conn/k"

    def view(self, inside_path: str) -> str:
        """A path of the kernel's file system, as the grader reaches it."""
        if not self.sandbox.isolate:
            return inside_path
        return f"/proc/{self.kernel_host_pid}/root{inside_path}"

    def request(self, kernel_cmd: list[str], env: dict) -> dict:
        cmd = list(kernel_cmd)
        if "-f" in cmd:
            cmd[cmd.index("-f") + 1] = f"{self.inside_box}/conn/kernel.json"
        connection = json.loads(Path(self.connection_file).read_text())
        return {"name": self.name, "isolate": self.sandbox.isolate, "box": self.inside_box,
                "logs": INSIDE_LOGS if self.sandbox.isolate else str(self.sandbox.logs),
                "connection": connection, "env": env, "limits": self.sandbox.limits_dict(),
                "kernel_uid": self.sandbox.kernel_uid, "nproc_cap": self.sandbox.nproc_cap(), "cmd": cmd}

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        request = self.request(kernel_cmd, self.sandbox.kernel_env())   # never the grader's own environment
        cmd = request.pop("cmd")
        native = [i for i, arg in enumerate(cmd) if arg == "ipykernel_launcher"]
        server = self.sandbox.server
        launcher = None
        if server is not None and native and cmd[native[-1] - 2] == sys.executable:
            request["argv"] = cmd[native[-1] + 1:]
            pid = server.spawn(request)
        else:
            request["exec"] = cmd
            launcher, pid = self.sandbox.launch(request, cmd[0])
        self.kernel_host_pid = pid
        provisioner = self.provisioner
        provisioner.process = ForeignProcess(pid, launcher)
        provisioner.pid = provisioner.pgid = pid      # the kernel called setsid()
        provisioner.cwd = None
        self._reconcile_connection_info(provisioner.connection_info)
        self.ip = await self.pin_sockets()

    async def pin_sockets(self, timeout: float = 120.0) -> str:
        """Wait for the kernel to bind its five sockets, open each without following a link (checked to be a
        socket) and return the `ip` through which the grader connects: a folder of the grader's own whose entries
        point at ``/proc/self/fd/N`` of those descriptors. So every (re)connection reaches the socket the kernel
        bound at start-up, whatever the kernel later puts in its folder (a link to a host socket: issue 23)."""
        root = self.view("/") if self.sandbox.isolate else "/"
        conn = f"{self.inside_box}/conn"
        links = self.host_box / "sockets"
        links.mkdir(mode=0o700)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = list(CHANNELS)
        while pending:
            channel = pending[0]
            try:
                fd = open_no_follow(root, f"{conn}/k-{getattr(self, channel + '_port')}", stat.S_IFSOCK)
            except FileNotFoundError:
                if loop.time() > deadline or self.provisioner.process.poll() is not None:
                    raise KernelSocketError("the kernel did not open its sockets") from None
                await asyncio.sleep(0.02)
                continue
            except OSError as err:      # ELOOP: a link where the kernel's socket should be
                raise KernelSocketError(f"the kernel's connection folder holds something other than its sockets "
                                        f"({type(err).__name__})") from None
            self.socket_fds.append(fd)
            os.symlink(f"/proc/self/fd/{fd}", links / f"k-{getattr(self, channel + '_port')}")
            pending.pop(0)
        return str(links / "k")

    def client(self, **kw):
        """The grader's client of this kernel, whose sockets bound what one kernel can make the grader hold: an
        output message frame larger than MAX_FRAME is refused by ZeroMQ (the connection is reset and made again,
        the message lost, which the runner notices and says), and at most QUEUED messages wait unread per channel.
        Output within those bounds is counted and capped by the runner (``--output``)."""
        kc = super().client(**kw)
        kc.context.setsockopt(zmq.RCVHWM, QUEUED)
        kc.context.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)   # a send never blocks the grader for good
        connect_iopub, largest = kc.connect_iopub, max(MAX_FRAME, 4 * self.sandbox.limits.output_bytes)

        def capped_iopub(identity=None):
            # Only the output channel: a reply refused on the shell channel would leave it without a peer.
            kc.context.setsockopt(zmq.MAXMSGSIZE, largest)
            try:
                return connect_iopub(identity=identity)
            finally:
                kc.context.setsockopt(zmq.MAXMSGSIZE, -1)

        kc.connect_iopub = capped_iopub
        return kc

    def close_sockets(self) -> None:
        """Release the descriptors `pin_sockets` holds (after the channels are closed)."""
        fds, self.socket_fds = self.socket_fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def cleanup_ipc_files(self) -> None:
        self.close_sockets()        # the sockets live in the kernel's own tmpfs, gone with it

    def stderr_tail(self, lines: int = 12) -> str:
        try:
            text = (self.sandbox.logs / f"{self.name}.stderr").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])
