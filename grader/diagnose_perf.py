"""Test doubles for the performance exercises (ps5): modules with a known cost and a simulated asynchronous GPU.

Student-facing and free of solutions: these are the instruments a timing test needs, not a timing function.

- :class:`ScheduledSleep` is a module whose forward pass sleeps for a chosen number of milliseconds per call (so a
  timer can be checked against a known answer) and records every call: how many, and whether autograd was on.
- :func:`simulated_cuda` makes a CPU-only machine behave, for the duration of a ``with`` block, like a GPU that
  runs work asynchronously: a module's forward only *queues* work and returns at once; the work "finishes" in
  wall-clock time, and only ``torch.cuda.synchronize()`` (or a CUDA event) waits for it. A timer that stops the clock
  without synchronising measures almost nothing, exactly as it would on a real GPU.

Why simulate: the course's graders and most students have no GPU, but the bug "forgot to synchronise" only shows on
one. The simulation patches the few ``torch.cuda`` entry points a timer uses (``synchronize``, ``Event``,
``current_stream``, ``is_available``, and ``torch.accelerator.synchronize``) and hands the timer a tensor whose
``device`` says ``cuda``. It restores everything on exit. On a machine with a real GPU, test the real thing as well
(:func:`gpu_spin_module`: a :class:`GpuSpin` whose forward pass keeps the GPU busy a known time).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn


class ScheduledSleep(nn.Module):
    """Sleeps ``schedule[i]`` ms on its i-th call (the last entry repeats); records calls and autograd state."""

    def __init__(self, schedule_ms: Sequence[float]):
        super().__init__()
        if not schedule_ms:
            raise ValueError("schedule_ms needs at least one duration")
        self.schedule_ms = [float(ms) for ms in schedule_ms]
        self.calls = 0
        self.grad_enabled: list[bool] = []

    def forward(self, x):
        ms = self.schedule_ms[min(self.calls, len(self.schedule_ms) - 1)]
        self.calls += 1
        self.grad_enabled.append(torch.is_grad_enabled())
        time.sleep(ms / 1000)
        return x


class _SimulatedGPU:
    """A single in-order stream: queued work finishes at ``busy_until`` (a ``time.perf_counter`` timestamp)."""

    def __init__(self):
        self.busy_until = time.perf_counter()
        self.synchronize_calls = 0

    def enqueue(self, ms: float) -> None:
        self.busy_until = max(self.busy_until, time.perf_counter()) + ms / 1000

    def wait_until(self, timestamp: float) -> None:
        delay = timestamp - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def synchronize(self, *args, **kwargs) -> None:
        self.synchronize_calls += 1
        self.wait_until(self.busy_until)


class _SimulatedEvent:
    """Mimics ``torch.cuda.Event``: ``record`` marks the point the queue has reached, which completes later."""

    gpu: _SimulatedGPU  # set by simulated_cuda()

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.enable_timing = enable_timing
        self.timestamp: float | None = None

    def record(self, stream=None) -> None:
        self.timestamp = max(self.gpu.busy_until, time.perf_counter())

    def query(self) -> bool:
        return self.timestamp is not None and time.perf_counter() >= self.timestamp

    def synchronize(self) -> None:
        if self.timestamp is not None:
            self.gpu.wait_until(self.timestamp)

    def wait(self, stream=None) -> None:
        pass

    def elapsed_time(self, end_event: "_SimulatedEvent") -> float:
        if not self.enable_timing or not end_event.enable_timing:
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self.timestamp is None or end_event.timestamp is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        # A real GPU refuses to report a time for an event it has not reached yet (cudaErrorNotReady).
        if not (self.query() and end_event.query()):
            raise RuntimeError("CUDA error: device not ready (elapsed_time on an event that has not completed; "
                               "synchronize first)")
        return (end_event.timestamp - self.timestamp) * 1000


class _SimulatedStream:
    def __init__(self, gpu: _SimulatedGPU):
        self.gpu = gpu

    def synchronize(self) -> None:
        self.gpu.synchronize()

    def record_event(self, event=None):
        event = event or _SimulatedEvent(enable_timing=True)
        event.record()
        return event


class SimulatedCudaTensor(torch.Tensor):
    """A CPU tensor that reports ``device == cuda``: what a timer sees when it is handed GPU data."""

    @property
    def device(self):
        return torch.device("cuda", 0)

    @property
    def is_cuda(self):
        return True


class QueuedWork(nn.Module):
    """On the simulated GPU: each forward queues ``ms`` of work and returns at once (as a real kernel launch does)."""

    def __init__(self, gpu: _SimulatedGPU, ms: float):
        super().__init__()
        self.gpu = gpu
        self.ms = float(ms)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        self.gpu.enqueue(self.ms)
        return x


@contextlib.contextmanager
def simulated_cuda(work_ms: float = 20.0) -> Iterator[tuple[QueuedWork, SimulatedCudaTensor, _SimulatedGPU]]:
    """Yield ``(module, x, gpu)``: a module that queues ``work_ms`` per call, an input "on cuda", the fake GPU.

    Inside the block ``torch.cuda.synchronize``, ``torch.cuda.Event``, ``torch.cuda.current_stream``,
    ``torch.cuda.is_available`` and ``torch.accelerator.synchronize`` talk to the simulated GPU.
    """
    gpu = _SimulatedGPU()
    event_cls = type("Event", (_SimulatedEvent,), {"gpu": gpu})
    patches = [
        (torch.cuda, "synchronize", gpu.synchronize),
        (torch.cuda, "Event", event_cls),
        (torch.cuda, "current_stream", lambda device=None: _SimulatedStream(gpu)),
        (torch.cuda, "is_available", lambda: True),
    ]
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "synchronize"):
        patches.append((accelerator, "synchronize", gpu.synchronize))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        x = torch.zeros(2, 4).as_subclass(SimulatedCudaTensor)
        yield QueuedWork(gpu, work_ms), x, gpu
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


class GpuSpin(nn.Module):
    """On a real GPU: each forward launches a kernel that spins for ``cycles`` clock cycles and returns at once.

    The kernel runs asynchronously, like every CUDA kernel: a timer that does not wait for the GPU sees almost
    nothing of it. How many cycles make how many milliseconds depends on the GPU's clock, so measure it.
    """

    def __init__(self, cycles: int):
        super().__init__()
        self.cycles = int(cycles)

    def forward(self, x):
        if not torch.cuda.is_available():
            raise RuntimeError("GpuSpin needs a CUDA device")
        torch.cuda._sleep(self.cycles)
        return x


def gpu_spin_module(target_ms: float = 20.0) -> tuple[GpuSpin, float]:
    """A :class:`GpuSpin` calibrated to about ``target_ms`` per call, and its cost measured with CUDA events."""
    if not torch.cuda.is_available():
        raise RuntimeError("gpu_spin_module needs a CUDA device")
    probe_cycles = 10_000_000
    torch.cuda._sleep(probe_cycles)  # the first launch pays one-time costs; keep it out of the calibration
    torch.cuda.synchronize()

    def measure(cycles: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    cycles = max(1, int(probe_cycles * target_ms / max(measure(probe_cycles), 1e-3)))
    return GpuSpin(cycles), measure(cycles)
