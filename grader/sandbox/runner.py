"""Run one notebook, cell by cell, in a confined kernel, under the limits; say what happened.

nbclient runs each cell with errors allowed (a failing cell does not stop the next, as in nbgrader). What nbclient
does not do is here: a cell past its timeout is interrupted and, if it swallows the interrupt, the kernel is
killed; every message the kernel sends counts against the output cap, and past it is dropped (the notebook goes on,
as nbgrader's LimitOutput keeps the first part; issue 25: only memory stops a notebook); the watchdog's kills (memory, processes,
total time) and a kernel that dies by itself end the run with a status instead of an exception. The files the
probe cells write (``work/_probe``) are copied out of the kernel's private folder before the kernel is stopped.
"""
from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from grader.sandbox.kernel import SandboxedKernelManager
from grader.sandbox.watch import KernelCgroups, Watchdog, kill_tree

PROBE_DIRNAME = "_probe"


@dataclass
class Execution:
    status: str = "graded"           # or timeout, crashed, memory_limit, process_limit, grader_error
    message: str = ""
    ran: set[int] = field(default_factory=set)      # indices of cells that ran to the end (with or without error)
    stopped_at: int | None = None                   # index of the cell during which the run was stopped
    probe_dir: Path | None = None                   # the kernel's ./_probe, copied out (grader's own folder)
    peak_rss: int = 0
    output_dropped: int = 0                         # bytes of output past the cap, dropped
    stderr_tail: str = ""                           # last lines the kernel wrote to stderr
    permanent: bool = False                         # a grader_error that grading again cannot fix


def message_size(msg: dict) -> int:
    """Bytes a kernel message carries, whatever its type: its content and metadata as JSON, plus binary buffers
    (widget state travels in those)."""
    size = 0
    for part in (msg.get("content"), msg.get("metadata")):
        if part:
            size += len(json.dumps(part, default=str, ensure_ascii=False))
    return size + sum(len(b) for b in msg.get("buffers") or [])


def _short_error(content: dict) -> dict:
    """An error output past the cap: its exception's name only (a failed test must still count as failed)."""
    name = str(content.get("ename") or "Error")[:100]
    text = "[the grader dropped this error's message: the output cap was reached]"
    return {"ename": name, "evalue": text, "traceback": [f"{name}: {text}"]}


class GradingClient(NotebookClient):
    """NotebookClient that counts every message a kernel sends for a cell against `output_cap` bytes (streams,
    displays and their updates, results, errors with their tracebacks, metadata, widget state, comm messages),
    keeps what fits and drops the rest, saying so once in the cell where dropping starts. An error past the cap
    stays as its exception's name (scoring needs to know a test failed); a status message as its state."""

    output_cap: int = 0
    output_used: int = 0
    output_dropped: int = 0
    in_probe: bool = False          # set while the grader's probe cells run

    def process_message(self, msg, cell, cell_index):
        size = message_size(msg)
        self.output_used += size
        if not self.output_cap or self.output_used <= self.output_cap:
            return super().process_message(msg, cell, cell_index)
        msg_type = msg.get("msg_type")
        content = msg.get("content") or {}
        if msg_type == "status":
            msg = {**msg, "content": {"execution_state": content.get("execution_state")}, "metadata": {}}
            return super().process_message(msg, cell, cell_index)
        if msg_type == "clear_output":
            return super().process_message(msg, cell, cell_index)
        if not self.output_dropped:
            cell.outputs.append(NotebookNode({"output_type": "stream", "name": "stderr", "text":
                                              f"[the grader dropped the output past "
                                              f"{self.output_cap / 2**20:g} MB]\n"}))
        self.output_dropped += size
        if msg_type == "error":
            msg = {**msg, "content": _short_error(content), "metadata": {}, "buffers": []}
            return super().process_message(msg, cell, cell_index)
        return None

    def _update_display_id(self, display_id, msg):
        # A display made by a student cell and updated from a probe cell would show probe data on the feedback
        # page (nbclient rewrites the earlier output in place): updates stop when the probes start.
        if self.in_probe:
            return None
        return super()._update_display_id(display_id, msg)


def _timeout_output(seconds: float, ignored: bool) -> dict:
    text = (f"The cell ran longer than {seconds:g} s and was stopped" +
            (" (it ignored the interrupt, so the kernel was stopped and later cells did not run)." if ignored else "."))
    return {"output_type": "error", "ename": "TimeoutError", "evalue": text, "traceback": [f"TimeoutError: {text}"]}


async def _responsive(client: GradingClient, grace: float) -> bool:
    """After an interrupt: True when the kernel answers a trivial request within `grace` seconds."""
    msg_id = client.kc.execute("", silent=True, store_history=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline:
        try:
            reply = await client.kc.shell_channel.get_msg(timeout=max(0.05, deadline - loop.time()))
        except Exception:
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            return True
    return False


def open_no_links(root: str, parts: list[str]) -> int:
    """A file descriptor of folder `root`/`parts`..., refusing a link at every step: the kernel owns these folders
    and could swap one for a link that points into the grader's own file system."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def copy_plain_files(src: Path | int, dest: Path, max_files: int = 2000, max_bytes: int = 256 * 2**20) -> Path:
    """Copy regular files and folders out of the sandbox for verification, through file descriptors (a link is
    never followed, whenever it appears), stopping at a file count and a byte budget. `src`: a folder or an fd of
    one (which this closes)."""
    budget = [max_files, max_bytes]

    def walk(fd: int, to: Path, depth: int) -> None:
        for name in sorted(os.listdir(fd)):
            if budget[0] <= 0:
                return
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) and depth < 4:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                    try:
                        (to / name).mkdir()
                        walk(sub, to / name, depth + 1)
                    finally:
                        os.close(sub)
                elif stat.S_ISREG(st.st_mode) and st.st_size <= budget[1]:
                    src_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
                    with os.fdopen(src_fd, "rb") as source:
                        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
                            continue
                        data = source.read(budget[1] + 1)
                    if len(data) > budget[1]:
                        continue
                    (to / name).write_bytes(data)
                    budget[0] -= 1
                    budget[1] -= len(data)
            except OSError:
                continue

    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW) if not isinstance(src, int) else src
    try:
        walk(fd, dest, 0)
    finally:
        os.close(fd)
    return dest


class _Run:
    def __init__(self, nb: NotebookNode, sandbox, name: str):
        self.nb, self.sandbox, self.limits = nb, sandbox, sandbox.limits
        self.result = Execution()
        self.km = SandboxedKernelManager(sandbox=sandbox, name=name, kernel_name=sandbox.kernel)
        self.cgroups = KernelCgroups(self.limits, sandbox.cgroup_pids, sandbox.cgroup_memory)
        self.watchdog: Watchdog | None = None
        self.client = GradingClient(nb, km=self.km, timeout=int(max(1, self.limits.cell_timeout)),
                                    interrupt_on_timeout=False, allow_errors=True, startup_timeout=120,
                                    record_timing=False, iopub_timeout=5, shell_timeout_interval=1,
                                    coalesce_streams=True)
        self.client.output_cap = self.limits.output_bytes

    def copy_probe(self) -> None:
        """While the kernel is alive: its ./_probe into the grader's own folder."""
        if self.result.probe_dir is not None or not self.km.kernel_host_pid:
            return
        try:
            root = self.km.view("/")
            parts = [p for p in f"{self.km.inside_box}/work/{PROBE_DIRNAME}".split("/") if p]
            fd = open_no_links(root, parts)
        except OSError:
            return
        dest = Path(tempfile.mkdtemp(prefix="probe-", dir=self.km.host_box))
        self.result.probe_dir = copy_plain_files(fd, dest)

    async def cells(self) -> None:
        km, limits = self.km, self.limits
        try:
            async with self.client.async_setup_kernel(env=self.sandbox.kernel_env(), stdout=subprocess.DEVNULL,
                                                      stderr=subprocess.DEVNULL):
                self.cgroups.join(km.kernel_host_pid)
                private = [km.view(f"{km.inside_box}"), km.view("/dev/shm")] if self.sandbox.isolate else []
                self.watchdog = Watchdog(km.kernel_host_pid, limits, self.cgroups, private_folders=private)
                self.watchdog.start()
                await self.each_cell()
                self.copy_probe()
        finally:
            if self.watchdog:
                self.watchdog.stop()
            self.copy_probe()
            if self.client.kc is not None:
                self.client.kc.stop_channels()
            kill_tree(km.kernel_host_pid, self.cgroups)
            process = getattr(km.provisioner, "process", None) if km.provisioner else None
            if process is not None:
                process.kill()
            try:
                await km.cleanup_resources()
            except Exception:
                pass

    async def each_cell(self) -> None:
        result, limits, client = self.result, self.limits, self.client
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code":
                continue
            client.in_probe = client.in_probe or bool(cell.metadata.get("grader", {}).get("probe"))
            try:
                await client.async_execute_cell(cell, index, store_history=True)
                if self.watchdog.reason:      # the kernel was killed just as the cell ended
                    raise DeadKernelError("stopped")
                result.ran.add(index)
            except CellTimeoutError:
                await client.km.interrupt_kernel()
                alive = await _responsive(client, limits.interrupt_grace)
                cell.outputs.append(NotebookNode(_timeout_output(limits.cell_timeout, ignored=not alive)))
                result.status = "timeout"
                if alive:
                    result.ran.add(index)
                    result.message = (f"A cell ran longer than {limits.cell_timeout:g} s and was interrupted; "
                                      "the other cells were graded normally.")
                    continue
                result.stopped_at = index
                result.message = (f"A cell ran longer than {limits.cell_timeout:g} s and ignored the interrupt "
                                  "(a loop that catches KeyboardInterrupt?) or the kernel stopped answering; the "
                                  "kernel was stopped, later cells did not run.")
                self.watchdog.trip("cell_timeout")
                return
            except DeadKernelError:
                result.stopped_at = index
                return
            except (RecursionError, ValueError, TypeError, KeyError) as err:
                # An output the grader cannot read (JSON nested thousands of levels deep...): that output is
                # dropped and said so; the kernel goes on with the next cell.
                cell.outputs.append(NotebookNode({"output_type": "stream", "name": "stderr", "text":
                                                  f"[the grader could not read an output of this cell "
                                                  f"({type(err).__name__}); it was dropped]\n"}))
                result.ran.add(index)


def run_notebook(nb: NotebookNode, sandbox, name: str) -> Execution:
    """Run `nb` in place (outputs are filled in) in a fresh confined kernel of `sandbox`."""
    run = _Run(nb, sandbox, name)
    result, limits = run.result, sandbox.limits
    try:
        asyncio.run(run.cells())
    except DeadKernelError:
        pass
    except Exception as err:          # e.g. the kernel died before it answered its first request
        if run.watchdog is None:
            result.status = "grader_error"
            result.message = f"The kernel did not start ({type(err).__name__}: {' '.join(str(err).split())[:200]})."
    result.stderr_tail = run.km.stderr_tail()
    if run.watchdog:
        result.peak_rss = run.watchdog.peak_rss
    result.output_dropped = run.client.output_dropped
    reason = run.watchdog.reason if run.watchdog else ""
    if reason == "memory":
        result.status = "memory_limit"
        result.message = (f"The notebook used more than {limits.memory_bytes / 2**30:g} GiB of memory (its "
                          "processes, the files in its folders, its shared memory) and was stopped; later cells did not run.")
    elif reason == "processes":
        result.status = "process_limit"
        result.message = (f"The notebook started more than {limits.max_processes} processes and was stopped; "
                          "later cells did not run.")
    elif reason == "notebook_timeout":
        result.status = "timeout"
        result.message = (f"The notebook ran longer than its total limit of {limits.notebook_timeout:g} s and was "
                          "stopped; later cells did not run.")
    elif result.stopped_at is not None and result.status != "timeout":
        result.status = "crashed"
        result.message = ("The kernel died while running a cell (os._exit, a crash in native code, ...); later "
                          "cells did not run.")
    if result.output_dropped:
        result.message = " ".join(filter(None, [result.message, (
            f"The notebook printed more than {limits.output_bytes / 2**20:g} MB (prints, displays, errors, widget "
            "state); the output past that was dropped (not stored), and the notebook was graded normally.")]))
    if result.status == "grader_error" and result.stderr_tail:
        result.message += " The kernel's last words: " + " | ".join(result.stderr_tail.splitlines()[-6:])
    return result
