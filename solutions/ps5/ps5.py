# %% [markdown] id="intro"
# # Problem set 5: performance
#
# Chapter 9 (the performance lab) times several attention modules and asks where the time goes. Here you build the
# instruments yourself: a timer you can trust, a count of the arithmetic, a count of the memory, and then you use
# them to explain a real timing anomaly.
#
# | Task | Points | You define |
# |---|---|---|
# | (a) a correct timer | {{ points.timing }} | `time_forward(module, x, warmup=5, repeats=20)` |
# | (b) counting FLOPs | {{ points.flops }} | `attention_flops(batch, num_tokens, d_in, d_out, num_heads)` |
# | (c) counting bytes | {{ points.memory }} | `attention_weights_bytes(batch, num_tokens, num_heads, dtype)` |
# | (d) a timing anomaly | {{ points.anomaly }} | `anomaly_answer` |
#
# Replace each `raise NotImplementedError()` with your code and run the test cell under it. The visible tests are
# a first check; more tests run when the notebook is graded. Before handing in, run
# `python -m grader check ps5.ipynb` in a terminal. Everything here runs on a GPU if the kernel has one and on the
# CPU otherwise.

# %% nbgrader="given" id="setup"
import statistics
import time

import torch
from torch import nn

from grader import diagnose_perf

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("running on", device)


# %% [markdown] id="timing_intro"
# ## (a) A timer you can trust
#
# Three things make a naive `start = time.perf_counter(); module(x); print(time.perf_counter() - start)` wrong:
#
# 1. **One-time costs.** The first calls of a module pay for things later calls do not: memory allocation, kernel
#    selection, lazy initialisation, caches warming up. Run a few untimed *warm-up* calls first.
# 2. **Asynchronous GPUs.** On CUDA, `module(x)` only *queues* kernels and returns, usually long before the GPU has
#    finished. Stopping the clock then measures the launch, not the work. Wait for the GPU with
#    `torch.cuda.synchronize()` before you read the clock (or time with `torch.cuda.Event`s, and synchronise before
#    asking for `elapsed_time`). On the CPU there is nothing to wait for, and `torch.cuda.synchronize()` would fail
#    on a machine without CUDA: synchronise only when `x` is on a CUDA device.
# 3. **Noise.** One call can be slow because the machine did something else. Time each call separately and report
#    the **median**, which a few slow outliers do not move.
#
# We time inference, so run the forward passes under `torch.no_grad()`: recording the autograd graph costs time and
# memory that inference does not pay.
#
# Write `time_forward(module, x, warmup=5, repeats=20)`: call `module(x)` `warmup` times without timing, then
# time `repeats` calls one by one, and return the median in **milliseconds** as a Python `float`.
#
# `grader.diagnose_perf` has test doubles you can use in your own experiments: `ScheduledSleep([ms, ...])`, a module
# that sleeps a chosen time per call and counts its calls, and `simulated_cuda()`, which makes this machine behave
# like an asynchronous GPU inside a `with` block (read its docstring).

# %% nbgrader="solution" id="timing"
def time_forward(module, x, warmup=5, repeats=20):
    """Median wall-clock milliseconds of one forward pass module(x), measured after `warmup` untimed calls."""
    ### BEGIN SOLUTION
    on_cuda = x.device.type == "cuda"

    def wait_for_device():
        # CUDA only queues kernels: the clock must stop when the work ends, not when the launch returns
        if on_cuda:
            torch.cuda.synchronize()

    times_ms = []
    with torch.no_grad():
        for _ in range(warmup):  # pays the one-time costs outside the measurement
            module(x)
        wait_for_device()  # the warm-up work must not spill into the first timed call
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            wait_for_device()
            times_ms.append((time.perf_counter() - start) * 1000)
    return float(statistics.median(times_ms))
    ### END SOLUTION


# %% nbgrader="tests" id="test_timing"
# Visible check: a module that sleeps 10 ms per call must time at about 10 ms, in milliseconds, as a float.
steady = diagnose_perf.ScheduledSleep([10])
measured = time_forward(steady, torch.zeros(4, device=device), warmup=2, repeats=5)
assert isinstance(measured, float), f"return a Python float, not {type(measured).__name__}"
assert not (0.005 <= measured <= 0.05), \
    f"a module that sleeps 10 ms timed at {measured:.4f}: that is seconds; return milliseconds"
assert 9 <= measured <= 40, f"a module that sleeps 10 ms per call timed at {measured:.2f} ms"
assert steady.calls >= 2 + 5, (f"module called {steady.calls} times with warmup=2, repeats=5, expected at least 7: "
                              f"no warm-up, or too few timed calls")
print(f"10 ms module timed at {measured:.2f} ms")
### BEGIN HIDDEN TESTS
# Warm-up: the first 5 calls cost 60 ms (one-time costs), later calls 2 ms. With warmup=5 none of the timed calls
# may be a slow one; a timer without (enough) warm-up reports the slow calls.
slow_start = diagnose_perf.ScheduledSleep([60] * 5 + [2])
measured = time_forward(slow_start, torch.zeros(4), warmup=5, repeats=5)
assert measured < 20, (f"no warm-up: a module whose first 5 calls are slow timed at {measured:.1f} ms with "
                       f"warmup=5; run `warmup` untimed calls before timing")
assert slow_start.calls >= 10, f"module called {slow_start.calls} times, expected warmup + repeats = 10"
assert slow_start.calls <= 40, f"module called {slow_start.calls} times for warmup=5, repeats=5"

# Median, not mean: after 2 warm-up calls, 2 of the 8 timed calls sleep 100 ms and the others 2 ms.
spiky = diagnose_perf.ScheduledSleep([2, 2, 2, 2, 100, 2, 2, 100, 2])
measured = time_forward(spiky, torch.zeros(4), warmup=2, repeats=8)
assert measured < 15, (f"mean instead of median: 6 calls of 2 ms and 2 of 100 ms timed at {measured:.1f} ms; "
                       f"a median would ignore the two outliers")

# Inference timing: autograd off in the timed calls.
grad_probe = diagnose_perf.ScheduledSleep([1])
time_forward(grad_probe, torch.zeros(4, requires_grad=True), warmup=2, repeats=3)
assert not any(grad_probe.grad_enabled[2:]), \
    "autograd on while timing: run the forward passes under torch.no_grad() (or torch.inference_mode())"

# CUDA without a GPU: inside simulated_cuda() the module queues 20 ms of work per call and returns at once, and
# only torch.cuda.synchronize() / CUDA events wait for it (see grader/diagnose_perf.py). An honest simulation of an
# asynchronous device, so a timer that never waits measures ~0 ms here exactly as it would on a real GPU.
try:
    with diagnose_perf.simulated_cuda(work_ms=20) as (queued, x_on_cuda, gpu):
        measured = time_forward(queued, x_on_cuda, warmup=2, repeats=5)
except RuntimeError as err:
    raise AssertionError(f"no synchronisation on CUDA: on a simulated GPU your timer failed with {err}") from None
assert measured >= 15, (f"no synchronisation on CUDA: a forward pass that keeps the GPU busy 20 ms timed at "
                        f"{measured:.3f} ms; the clock stopped before the GPU finished. Call "
                        f"torch.cuda.synchronize() before reading the clock when x is on CUDA")
assert measured <= 60, f"a forward pass of 20 ms of GPU work timed at {measured:.1f} ms"

# And on a real GPU, when the kernel has one: each call launches a kernel that spins on the GPU for ~20 ms.
if torch.cuda.is_available():
    spin, expected_ms = diagnose_perf.gpu_spin_module(20)
    measured = time_forward(spin, torch.zeros(4, device="cuda"), warmup=2, repeats=5)
    assert measured >= 0.7 * expected_ms, (f"no synchronisation on CUDA: a kernel of {expected_ms:.1f} ms timed "
                                           f"at {measured:.3f} ms on {torch.cuda.get_device_name()}")
### END HIDDEN TESTS

# %% [markdown] id="flops_intro"
# ## (b) Counting the arithmetic
#
# Multiplying an $m \times k$ matrix by a $k \times n$ matrix takes $m \cdot k \cdot n$ multiply-adds; count each
# multiply-add as **2 FLOPs**. For one forward pass of the chapter's `MultiHeadAttention` on an input of shape
# `(batch, num_tokens, d_in)`, count only the matrix multiplications:
#
# - `'projections'`: the query, key and value projections and the output projection `out_proj`;
# - `'attention'`: the scores $QK^\top$ and the weighted sum of the values, for every head, counted dense (as if no
#   causal mask let a kernel skip the upper triangle).
#
# Leave out biases, the scaling, the mask, softmax and dropout: they are small next to the matrix products.
# Return a dict with the two keys. At the size of the historical benchmark (batch 8, 1024 tokens, 768 wide, 12 heads)
# the two numbers come to about 39 and 26 GFLOP.

# %% nbgrader="solution" id="flops"
def attention_flops(batch, num_tokens, d_in, d_out, num_heads):
    """FLOPs (2 per multiply-add) of the matrix products in one forward pass of multi-head attention."""
    ### BEGIN SOLUTION
    tokens = batch * num_tokens
    head_dim = d_out // num_heads
    # W_query, W_key, W_value: (tokens, d_in) @ (d_in, d_out); out_proj: (tokens, d_out) @ (d_out, d_out)
    projections = 2 * tokens * (3 * d_in * d_out + d_out * d_out)
    # per head: Q K^T is (T, head_dim) @ (head_dim, T), weights @ V is (T, T) @ (T, head_dim)
    attention = 2 * batch * num_heads * 2 * num_tokens * num_tokens * head_dim
    return {"projections": projections, "attention": attention}
    ### END SOLUTION


# %% nbgrader="tests" id="test_flops"
full = attention_flops(8, 1024, 768, 768, 12)
assert isinstance(full, dict) and {"projections", "attention"} <= set(full), \
    "return a dict with the keys 'projections' and 'attention'"
print(f"projections {full['projections'] / 1e9:.2f} GFLOP, attention {full['attention'] / 1e9:.2f} GFLOP "
      f"(compare with the numbers above)")
assert all(full[key] > 0 for key in ("projections", "attention")), "FLOP counts must be positive numbers"
doubled = attention_flops(16, 1024, 768, 768, 12)
assert all(abs(doubled[key] / full[key] - 2) < 1e-9 for key in ("projections", "attention")), \
    "twice the batch is twice the work, for both counts"
### BEGIN HIDDEN TESTS
def expected_flops(batch, num_tokens, d_in, d_out, num_heads):
    head_dim = d_out // num_heads
    return {"projections": 2 * batch * num_tokens * (3 * d_in * d_out + d_out * d_out),
            "attention": 4 * batch * num_heads * num_tokens * num_tokens * head_dim}

def explain(key, ratio, batch, num_tokens, d_in, d_out, num_heads):
    """Name the usual mistake behind a result that is `ratio` times the right count."""
    near = lambda value: abs(ratio - value) <= 1e-3 * value
    if near(0.5):
        if key == "attention":
            return ("half the count: multiply-adds counted as 1 FLOP, or only one of the two products "
                    "(Q K^T and weights @ V) counted")
        return "half the count: a multiply-add is 2 FLOPs, not 1"
    if key == "projections":
        if near(3 * d_in / (3 * d_in + d_out)):
            return "the output projection out_proj is missing from the count"
        if near((3 * d_in + d_in) / (3 * d_in + d_out)):
            return "out_proj counted as d_in x d_out: it maps d_out to d_out"
        if near(4 * d_out / (3 * d_in + d_out)) or near(4 * d_in / (3 * d_in + d_out)):
            return "d_in and d_out mixed up: Q, K, V map d_in to d_out, out_proj d_out to d_out"
    if key == "attention":
        if near(num_heads):
            return "each head counted with the full width d_out instead of head_dim = d_out // num_heads"
        if near(1.0 / num_tokens):
            return "num_tokens counted once: scores are num_tokens x num_tokens per head"
        if near(1.0 / num_heads):
            return "only one head counted"
        if near(d_in / d_out):
            return "the attention products use head_dim = d_out // num_heads, not d_in"
    return "not a known slip; recount the matrix shapes"

for config in [(8, 1024, 768, 768, 12), (2, 16, 8, 24, 3), (3, 10, 40, 16, 4), (1, 7, 12, 12, 1),
               (4, 32, 16, 64, 8)]:
    got = attention_flops(*config)
    want = expected_flops(*config)
    for key in ("projections", "attention"):
        ratio = float(got[key]) / want[key]
        assert abs(ratio - 1) < 1e-2, (f"{explain(key, ratio, *config)} "
                                       f"[attention_flops{config}['{key}'] = {float(got[key]):.6g}, "
                                       f"{ratio:.4g} x the right count]")
### END HIDDEN TESTS

# %% [markdown] id="memory_intro"
# ## (c) Counting the bytes
#
# Inside every attention module sits the tensor of attention weights, one row of `num_tokens` weights for every
# query of every head of every sequence in the batch. Write `attention_weights_bytes(batch, num_tokens, num_heads,
# dtype)`: how many bytes that tensor takes for a `torch.dtype` such as `torch.float32` or `torch.bfloat16`. Ask
# PyTorch for the size of one element rather than writing a table of your own. Return an `int`.

# %% nbgrader="solution" id="memory"
def attention_weights_bytes(batch, num_tokens, num_heads, dtype):
    """Bytes of the attention weights tensor (batch, num_heads, num_tokens, num_tokens) in `dtype`."""
    ### BEGIN SOLUTION
    element_size = torch.empty((), dtype=dtype).element_size()
    return batch * num_heads * num_tokens * num_tokens * element_size
    ### END SOLUTION


# %% nbgrader="tests" id="test_memory"
full = attention_weights_bytes(8, 1024, 12, torch.float32)
print(f"attention weights at the benchmark size in float32: {full / 2**20:.0f} MiB")
assert isinstance(full, int), f"return an int (a number of bytes), not {type(full).__name__}"
assert attention_weights_bytes(8, 1024, 12, torch.float16) * 2 == full, \
    "wrong dtype size: float16 takes half the bytes of float32"
### BEGIN HIDDEN TESTS
# Judged against PyTorch itself: the bytes of a real tensor of that shape and dtype, on the meta device (free).
for batch, num_tokens, num_heads in [(8, 1024, 12), (2, 5, 3), (1, 7, 1), (3, 16, 4)]:
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        got = attention_weights_bytes(batch, num_tokens, num_heads, dtype)
        want = torch.empty(batch, num_heads, num_tokens, num_tokens, dtype=dtype, device="meta").nbytes
        if got == want:
            continue
        ratio = float(got) / want
        element = torch.empty((), dtype=dtype).element_size()
        if abs(ratio * element - 4) < 1e-9 or abs(ratio * element - 2) < 1e-9:
            why = f"wrong dtype size: {dtype} has {element}-byte elements (use element_size() or itemsize)"
        elif abs(ratio - 1.0 / num_tokens) < 1e-9:
            why = "num_tokens counted once: every query has num_tokens weights"
        elif num_heads > 1 and abs(ratio - 1.0 / num_heads) < 1e-9:
            why = "num_heads left out: each head has its own weights"
        elif abs(ratio - 1.0 / element) < 1e-9:
            why = "returned elements, not bytes"
        else:
            why = "wrong size"
        raise AssertionError(f"{why} [batch={batch}, num_tokens={num_tokens}, num_heads={num_heads}, {dtype}: "
                             f"got {got}, expected {want}]")
### END HIDDEN TESTS

# %% [markdown] id="anomaly_intro"
# ## (d) A timing anomaly
#
# In March 2024 a reader of the *LLMs from scratch* bonus notebook on efficient multi-head attention noticed
# (issue #67 of rasbt/LLMs-from-scratch) that its `MultiHeadAttentionWrapper` was built with `d_out=768` and 12 heads.
# In the wrapper `d_out` is the width of *one* head, so every head projected to 768 features and the output was
# `[8, 1024, 9216]` instead of `[8, 1024, 768]`. The notebook's benchmark (A100, PyTorch 2.2.1, forward pass,
# batch 8, 1024 tokens, 768 wide, 12 heads, float32) read, before and after the fix (PR #68):
#
# | module | forward pass |
# |---|---|
# | wrapper, 12 heads of 768 (the bug) | 41.1 ms |
# | wrapper, 12 heads of 64, plus `out_proj` (fixed) | 8.35 ms |
# | the chapter's `MultiHeadAttention` (unchanged) | 6.58 ms |
#
# The cell below counts both wrappers' parameters at that size on the `meta` device, which stores no data and so
# costs nothing: the buggy wrapper's twelve heads each hold three 768 x 768 projections.

# %% nbgrader="given" id="anomaly_sizes"
def wrapper_parameters(head_width, embed_dim=768, num_heads=12, with_out_proj=False):
    """Parameters of num_heads heads, each with bias-free Q, K, V projections embed_dim -> head_width."""
    with torch.device("meta"):
        layers = [nn.Linear(embed_dim, head_width, bias=False) for _ in range(3 * num_heads)]
        if with_out_proj:
            layers.append(nn.Linear(num_heads * head_width, embed_dim))
    return sum(p.numel() for layer in layers for p in layer.parameters())

for label, count in [("buggy wrapper, 12 heads of 768", wrapper_parameters(768)),
                     ("fixed wrapper, 12 heads of 64 + out_proj", wrapper_parameters(64, with_out_proj=True))]:
    print(f"{label:<42} {count:>12,} parameters")

# %% [markdown] id="anomaly_question"
# The buggy wrapper is about 5 times slower (41.1 / 8.35). Which explanation is right?
#
# - **A.** Python overhead: the wrapper's forward pass is a Python loop over the heads, and each head launches its
#   own small kernels, while a vectorised module launches a few large ones. The launches dominate the time.
# - **B.** Each head projects to 768 features instead of 64, so the Q, K, V projections and the two attention
#   products do about 12 times the arithmetic of the fixed wrapper. The slowdown stays below 12 times because part
#   of the work does not depend on the head width: every head's 1024 x 1024 scores are masked, softmaxed and
#   stored in both versions, and the fixed wrapper adds an output projection.
# - **C.** A measurement error: the buggy run stopped the clock before the GPU had finished, so its number is
#   inflated by kernels from earlier calls that were still running.
# - **D.** The missing output projection: without `out_proj` PyTorch has to copy the 9216-wide concatenation back to
#   the CPU to build the output, and that copy dominates the time.
#
# Set `anomaly_answer` to the letter, as a string such as `"A"`. Tasks (b) and (c) give you the tools to check.

# %% nbgrader="solution" id="anomaly"
### BEGIN SOLUTION
anomaly_answer = {{ keys.anomaly.answer | py }}
### END SOLUTION

# %% nbgrader="tests" id="test_anomaly"
assert anomaly_answer in {"A", "B", "C", "D"}, f"anomaly_answer must be one of 'A', 'B', 'C', 'D', not {anomaly_answer!r}"
### BEGIN HIDDEN TESTS
why_not = {
{%- for choice, why in keys.anomaly.why_not.items() %}
    {{ choice | py }}: {{ why | py }},
{%- endfor %}
}
assert anomaly_answer == {{
    keys.anomaly.answer | py }}, f"{anomaly_answer} is not it: {why_not.get(anomaly_answer, '')}. {{
    keys.anomaly.hint }}"
### END HIDDEN TESTS
