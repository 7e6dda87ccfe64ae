"""Stage 3, execute: run the sanitized notebook, cell by cell, in a sandboxed kernel (grader.sandbox).

nbclient runs each cell with errors allowed (a failing cell does not stop the next, as in nbgrader). What nbclient
does not do is handled here: a cell past its timeout is interrupted and, if it swallows the interrupt, the kernel
is killed; output beyond the cap stops the kernel; the watchdog's kills (memory, processes, total time) and a
kernel that dies by itself end the run with a status instead of an exception.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from grader.sandbox import Limits, SandboxedKernelManager, Watchdog, kill_tree


@dataclass
class Execution:
    status: str = "graded"           # or timeout, crashed, memory_limit, process_limit, output_limit, grader_error
    message: str = ""
    ran: set[int] = field(default_factory=set)      # indices of cells that ran to the end (with or without error)
    stopped_at: int | None = None                   # index of the cell during which the run was stopped
    probe_dir: Path | None = None                   # ./_probe of the kernel's working folder (copied out)
    peak_rss: int = 0


def _text_size(content: dict) -> int:
    size = len(content.get("text", "") or "")
    for value in (content.get("data") or {}).values():
        size += len(value) if isinstance(value, str) else len(str(value))
    size += sum(len(line) for line in content.get("traceback", []) or [])
    return size


class GradingClient(NotebookClient):
    """NotebookClient that counts the output a notebook sends and stops the kernel past the cap."""

    output_cap: int = 0
    output_used: int = 0
    on_output_cap = None

    def output(self, outs, msg, display_id, cell_index):
        self.output_used += _text_size(msg.get("content", {}))
        if self.output_cap and self.output_used > self.output_cap:
            if self.on_output_cap:
                self.on_output_cap()
            return None
        return super().output(outs, msg, display_id, cell_index)


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


async def _run_cells(client: GradingClient, km: SandboxedKernelManager, nb: NotebookNode, limits: Limits,
                     result: Execution, watchdog_box: list) -> None:
    work = km.box / "work"
    try:
        async with client.async_setup_kernel(cwd=str(work), env=km.kernel_env(),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            watchdog = Watchdog(km.kernel_pid, limits, km.cgroups)
            watchdog_box.append(watchdog)
            client.on_output_cap = lambda: watchdog.trip("output")
            watchdog.start()
            await _each_cell(client, nb, limits, result, watchdog)
    finally:
        # We own the kernel manager, so nbclient leaves the kernel to us: kill it and everything it started.
        if watchdog_box:
            watchdog_box[0].stop()
        if client.kc is not None:
            client.kc.stop_channels()
        kill_tree(km.kernel_pid, km.cgroups)
        try:
            await km.cleanup_resources()
        except Exception:
            pass


async def _each_cell(client: GradingClient, nb: NotebookNode, limits: Limits, result: Execution,
                     watchdog: Watchdog) -> None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            await client.async_execute_cell(cell, index, store_history=True)
            if watchdog.reason:      # the kernel was killed just as the cell ended
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
                              "(a loop that catches KeyboardInterrupt?); the kernel was stopped, later cells "
                              "did not run.")
            watchdog.trip("cell_timeout")
            return
        except DeadKernelError:
            result.stopped_at = index
            return


def execute(nb: NotebookNode, box: Path, hide: list[Path], limits: Limits, kernel_name: str = "python3",
            startup_timeout: float = 120, forkserver=None) -> Execution:
    """Run `nb` in place (outputs are filled in) in a kernel whose private folder is `box`/work."""
    result = Execution()
    (box / "work").mkdir(parents=True, exist_ok=True)
    km = SandboxedKernelManager(box=box, hide=hide, limits=limits, kernel_name=kernel_name, forkserver=forkserver)
    client = GradingClient(nb, km=km, timeout=int(max(1, limits.cell_timeout)), interrupt_on_timeout=False,
                           allow_errors=True, startup_timeout=int(startup_timeout), record_timing=False,
                           iopub_timeout=5, shell_timeout_interval=1, coalesce_streams=True)
    client.output_cap = limits.output_bytes
    watchdog_box: list[Watchdog] = []
    try:
        asyncio.run(_run_cells(client, km, nb, limits, result, watchdog_box))
    except DeadKernelError:
        pass
    except RuntimeError as err:          # e.g. the kernel died before it answered its first request
        if not watchdog_box:
            result.status, result.message = "grader_error", f"The kernel did not start: {err}"
    finally:
        watchdog = watchdog_box[0] if watchdog_box else None
        if watchdog:
            watchdog.stop()
            result.peak_rss = watchdog.peak_rss
    reason = watchdog.reason if watchdog else ""
    if reason == "memory":
        result.status = "memory_limit"
        result.message = (f"The notebook used more than {limits.memory_bytes / 2**30:g} GiB of memory and was "
                          "stopped; later cells did not run.")
    elif reason == "processes":
        result.status = "process_limit"
        result.message = (f"The notebook started more than {limits.max_processes} processes and was stopped; "
                          "later cells did not run.")
    elif reason == "output":
        result.status = "output_limit"
        result.message = (f"The notebook printed more than {limits.output_bytes / 2**20:g} MB of output and was "
                          "stopped; later cells did not run.")
    elif reason == "notebook_timeout":
        result.status = "timeout"
        result.message = (f"The notebook ran longer than its total limit of {limits.notebook_timeout:g} s and was "
                          "stopped; later cells did not run.")
    elif result.stopped_at is not None and result.status != "timeout":
        result.status = "crashed"
        result.message = ("The kernel died while running a cell (os._exit, a crash in native code, ...); later "
                          "cells did not run.")
    probe = box / "work" / "_probe"
    if probe.is_dir() and not probe.is_symlink():
        result.probe_dir = copy_plain_files(probe, Path(tempfile.mkdtemp(prefix="probe-", dir=box)))
    return result


def copy_plain_files(src: Path, dest: Path, max_files: int = 2000, max_bytes: int = 256 * 2**20) -> Path:
    """Copy regular files and folders out of the sandbox for grader.verify: links and anything else are skipped
    (never followed), and the copy stops at a file count and a byte budget."""
    budget = [max_files, max_bytes]

    def walk(folder: Path, to: Path, depth: int) -> None:
        for path in sorted(folder.iterdir()):
            if budget[0] <= 0 or path.is_symlink():
                continue
            if path.is_dir() and depth < 4:
                (to / path.name).mkdir()
                walk(path, to / path.name, depth + 1)
            elif path.is_file() and path.stat().st_size <= budget[1]:
                shutil.copyfile(path, to / path.name, follow_symlinks=False)
                budget[0] -= 1
                budget[1] -= path.stat().st_size

    walk(src, dest, 0)
    return dest
