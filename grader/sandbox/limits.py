"""What one notebook may use. Plain data: it crosses into the sandbox as JSON."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """Limits on one notebook's kernel and everything it starts. Units are in the names' comments."""
    cell_timeout: float = 60.0          # seconds one cell may run
    notebook_timeout: float = 600.0     # seconds the whole notebook may run
    memory_bytes: int = 4 * 2**30       # resident memory of the process tree plus its private folders (tmpfs)
    max_processes: int = 64             # processes in the kernel's tree (threads too, where a pids cgroup counts)
    output_bytes: int = 2 * 2**20       # output kept in the notebook; the rest is dropped, the notebook goes on
    output_stop_bytes: int = 64 * 2**20   # output received past which the kernel is stopped (grader's memory)
    file_bytes: int = 256 * 2**20       # largest file the kernel may write
    disk_bytes: int = 512 * 2**20       # the kernel's private folder (a tmpfs: /box, with work/ and tmp/)
    shm_bytes: int = 64 * 2**20         # the kernel's private /dev/shm
    interrupt_grace: float = 5.0        # seconds an interrupted cell gets to stop before the kernel is killed
    gpus: str = ""                      # CUDA_VISIBLE_DEVICES for the kernel ("" = no GPU, "all", or "0,1")
    threads: int = 1                    # OMP/MKL threads per kernel, so parallel kernels do not oversubscribe
