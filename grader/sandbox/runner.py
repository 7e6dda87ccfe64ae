"""Run one notebook, cell by cell, in a confined kernel, under the limits; say what happened.

nbclient runs each cell with errors allowed (a failing cell does not stop the next, as in nbgrader). What nbclient
does not do is here: a cell past its timeout is interrupted and, if it swallows the interrupt, the kernel is
killed; every message the kernel sends counts against the output cap, and past it is dropped (the notebook goes
on, as nbgrader's LimitOutput keeps the first part; issue 25: only memory stops a notebook); the watchdog's kills
(memory, processes, total time) and a kernel that dies by itself end the run with a status instead of an exception.
The files the probe cells write (``work/_probe``) are copied out of the kernel's private folder once its processes
are stopped, less those changed after their probe (grader.sandbox.probefiles).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
import zmq
from nbformat import NotebookNode

from grader.sandbox.kernel import MAX_FRAME, SandboxedKernelManager
from grader.sandbox.probefiles import ProbeFiles, copy_plain_files, open_no_links  # noqa: F401
from grader.sandbox.watch import KernelCgroups, Watchdog, freeze, kill_tree

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
    elapsed: float = 0.0                            # seconds the run took, kernel start to kernel stopped
    probe_tampered: list[str] = field(default_factory=list)   # tasks whose probe files changed after their probe


def message_size(msg: dict) -> int:
    """Bytes a kernel message carries, whatever its type: its content and metadata as JSON, plus binary buffers
    (widget state travels in those)."""
    size = 0
    for part in (msg.get("content"), msg.get("metadata")):
        if isinstance(part, dict) and isinstance(part.get("text"), str):     # a stream: its text without a copy
            size += len(part["text"])
            part = {k: v for k, v in part.items() if k != "text"}
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
        room = self.output_cap - (self.output_used - size)
        if msg_type == "stream" and room > 0 and isinstance(content.get("text"), str):
            # The message that crosses the cap: its first part is kept, as nbgrader's LimitOutput keeps it.
            kept = {**msg, "content": {**content, "text": content["text"][:room]}, "metadata": {}}
            super().process_message(kept, cell, cell_index)
            size -= room
        if not self.output_dropped:
            cell.outputs.append(NotebookNode({"output_type": "stream", "name": "stderr", "text":
                                              f"[the grader dropped the output past "
                                              f"{self.output_cap / 2**20:g} MB]\n"}))
        self.output_dropped += size
        if msg_type == "error":
            msg = {**msg, "content": _short_error(content), "metadata": {}, "buffers": []}
            return super().process_message(msg, cell, cell_index)
        return None

    async def _check_raise_for_error(self, cell, cell_index, exec_reply):
        # A cell whose error output never arrived (refused for its size, dropped past the cap) still failed: the
        # reply on the shell channel says so, and a test cell must never pass by losing its error.
        content = (exec_reply or {}).get("content") or {}
        if content.get("status") == "error" and not any(o.get("output_type") == "error" for o in cell.outputs):
            cell.outputs.append(NotebookNode({"output_type": "error", **_short_error(content)}))
        return await super()._check_raise_for_error(cell, cell_index, exec_reply)

    def watch_refused_frames(self) -> None:
        """Be told when ZeroMQ resets the output channel because a message was larger than MAX_FRAME."""
        sock = self.kc.iopub_channel.socket
        address = f"inproc://grader-iopub-{id(self):x}"
        sock.monitor(address, zmq.EVENT_DISCONNECTED)
        self._monitor = zmq.Context.shadow(sock.context.underlying).socket(zmq.PAIR)
        self._monitor.connect(address)

    def note_refused_frames(self, cell) -> None:
        """After a cell: output messages refused for their size count as dropped output, said in the cell."""
        refused = 0
        while getattr(self, "_monitor", None) is not None:
            try:
                self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            refused += 1
        if refused:
            if not self.output_dropped:
                cell.outputs.append(NotebookNode({"output_type": "stream", "name": "stderr", "text":
                                                  f"[the grader dropped output messages larger than "
                                                  f"{MAX_FRAME / 2**20:g} MB]\n"}))
            self.output_dropped += refused * MAX_FRAME

    def close_monitor(self) -> None:
        monitor, self._monitor = getattr(self, "_monitor", None), None
        if monitor is not None:
            try:
                self.kc.iopub_channel.socket.disable_monitor()
            except Exception:
                pass
            monitor.close(linger=0)

    def _update_display_id(self, display_id, msg):
        # A display made by a student cell and updated from a probe cell would show probe data on the feedback
        # page (nbclient rewrites the earlier output in place): updates stop when the probes start.
        if self.in_probe:
            return None
        return super()._update_display_id(display_id, msg)


def _drop_overwritten(line: str) -> str:
    """What a terminal shows of one line: the text after its last carriage return that something follows."""
    end = len(line.rstrip("\r"))
    cut = line.rfind("\r", 0, end)
    return line if cut < 0 else line[cut + 1:]


def coalesce_streams(outputs: list) -> list:
    """nbclient's coalesce_streams, in linear time: consecutive-kind stream outputs merged per stream (stdout before
    stderr), and text a carriage return overwrote removed. (nbclient's regular expression for the latter,
    ``.*\\r(?=[^\\n])``, takes time quadratic in a line's length: one printed line of a megabyte held the grader
    for hours.)"""
    merged, streams = [], {}
    for output in outputs:
        if output.get("output_type") == "stream" and isinstance(output.get("text"), str):
            if output["name"] in streams:
                streams[output["name"]]["text"] += output["text"]
                continue
            streams[output["name"]] = output
        merged.append(output)
    for output in streams.values():
        if "\r" in output["text"]:
            output["text"] = "\n".join(_drop_overwritten(line) for line in output["text"].split("\n"))
    for i, output in enumerate(merged):
        if output.get("output_type") == "stream" and output.get("name") == "stderr" and i + 1 < len(merged) \
                and merged[i + 1].get("output_type") == "stream" and merged[i + 1].get("name") == "stdout":
            merged.insert(i, merged.pop(i + 1))
    return merged


def _timeout_output(seconds: float, ignored: bool) -> dict:
    text = (f"The cell ran longer than {seconds:g} s and was stopped" +
            (" (it ignored the interrupt, so the kernel was stopped and later cells did not run)." if ignored else "."))
    return {"output_type": "error", "ename": "TimeoutError", "evalue": text, "traceback": [f"TimeoutError: {text}"]}


async def _responsive(client: GradingClient, grace: float) -> bool:
    """After an interrupt: True when the kernel answers a trivial request within `grace` seconds."""
    try:
        msg_id = client.kc.execute("", silent=True, store_history=False)
    except zmq.ZMQError:        # the kernel takes no message at all (SEND_TIMEOUT_MS)
        return False
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


class _Run:
    def __init__(self, nb: NotebookNode, sandbox, name: str, notebook_timeout: float | None = None):
        self.nb, self.sandbox, self.limits = nb, sandbox, sandbox.limits
        if notebook_timeout is not None:
            self.limits = dataclasses.replace(self.limits, notebook_timeout=notebook_timeout)
        self.result = Execution()
        self.km = SandboxedKernelManager(sandbox=sandbox, name=name, kernel_name=sandbox.kernel)
        self.cgroups = KernelCgroups(self.limits, sandbox.cgroup_pids, sandbox.cgroup_memory)
        self.watchdog: Watchdog | None = None
        self.probe_files = ProbeFiles(self.open_probe_folder)
        self.client = GradingClient(nb, km=self.km, timeout=int(max(1, self.limits.cell_timeout)),
                                    interrupt_on_timeout=False, allow_errors=True, startup_timeout=120,
                                    record_timing=False, iopub_timeout=5, shell_timeout_interval=1,
                                    coalesce_streams=False)        # coalesced here, in linear time
        self.client.output_cap = self.limits.output_bytes

    def open_probe_folder(self) -> int:
        """An fd of the kernel's ./_probe, opened without following links (OSError when there is none)."""
        if not self.km.kernel_host_pid:
            raise FileNotFoundError(PROBE_DIRNAME)
        parts = [p for p in f"{self.km.inside_box}/work/{PROBE_DIRNAME}".split("/") if p]
        return open_no_links(self.km.view("/"), parts)

    def copy_probe(self) -> None:
        """With every process of the kernel stopped (it is still there, so its folder is): its ./_probe into the
        grader's own folder, less the tasks whose files changed after their probe cell (ProbeFiles)."""
        if self.result.probe_dir is not None or not self.km.kernel_host_pid:
            return
        freeze(self.km.kernel_host_pid, self.cgroups)
        dest = Path(tempfile.mkdtemp(prefix="probe-", dir=self.km.host_box))
        folder, tampered = self.probe_files.collect(dest)
        if folder is None:
            shutil.rmtree(dest, ignore_errors=True)
            return
        self.result.probe_dir, self.result.probe_tampered = folder, tampered

    async def cells(self) -> None:
        km, limits = self.km, self.limits
        try:
            async with self.client.async_setup_kernel(env=self.sandbox.kernel_env(), stdout=subprocess.DEVNULL,
                                                      stderr=subprocess.DEVNULL):
                self.cgroups.join(km.kernel_host_pid)
                private = [km.view(f"{km.inside_box}"), km.view("/dev/shm")] if self.sandbox.isolate else []
                self.watchdog = Watchdog(km.kernel_host_pid, limits, self.cgroups, private_folders=private)
                self.watchdog.start()
                self.client.watch_refused_frames()
                await self.each_cell()
                self.copy_probe()
                kill_tree(km.kernel_host_pid, self.cgroups)    # frozen: nbclient's shutdown request would wait
        finally:
            if self.watchdog:
                self.watchdog.stop()
            self.copy_probe()
            if self.client.kc is not None:
                self.client.close_monitor()
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
            probe = bool(cell.metadata.get("grader", {}).get("probe"))
            client.in_probe = client.in_probe or probe
            try:
                await self.execute_cell(cell, index)
            finally:
                if probe:
                    self.probe_files.note()
            if result.stopped_at is not None:
                return

    async def execute_cell(self, cell, index: int) -> None:
        """One cell; a kernel stopped during it sets ``stopped_at``."""
        result, limits, client = self.result, self.limits, self.client
        try:
            await client.async_execute_cell(cell, index, store_history=True)
            cell.outputs = coalesce_streams(cell.outputs)
            client.note_refused_frames(cell)
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
                return
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


def run_notebook(nb: NotebookNode, sandbox, name: str, notebook_timeout: float | None = None) -> Execution:
    """Run `nb` in place (outputs are filled in) in a fresh confined kernel of `sandbox`, within `notebook_timeout`
    seconds when given (else the sandbox's limit)."""
    run = _Run(nb, sandbox, name, notebook_timeout)
    result, limits = run.result, run.limits
    started = time.monotonic()
    try:
        asyncio.run(run.cells())
    except DeadKernelError:
        pass
    except Exception as err:          # e.g. the kernel died before it answered its first request
        if run.watchdog is None:
            result.status = "grader_error"
            result.message = f"The kernel did not start ({type(err).__name__}: {' '.join(str(err).split())[:200]})."
    result.elapsed = time.monotonic() - started
    result.stderr_tail = run.km.stderr_tail()
    if run.watchdog:
        result.peak_rss = run.watchdog.peak_rss
    result.output_dropped = run.client.output_dropped
    reason = run.watchdog.reason if run.watchdog else ""
    if reason == "memory":
        result.status = "memory_limit"
        result.message = (f"The notebook used more than {limits.memory_bytes / 2**30:g} GiB of memory (its "
                          "processes, the files in its folders, its shared memory) and was stopped; later cells did "
                          "not run.")
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
    if result.probe_tampered:
        result.message = " ".join(filter(None, [result.message, (
            "The grader's probe results of " + ", ".join(result.probe_tampered) + " changed after their probe "
            "finished (a thread or process the notebook left running?); they were dropped, and those tasks are "
            "not verified.")]))
    if result.status == "grader_error" and result.stderr_tail:
        result.message += " The kernel's last words: " + " | ".join(result.stderr_tail.splitlines()[-6:])
    return result
