"""The attention implementations raced in the performance lab, and the harness that races them.

One file, imported by two readers: the chapter book/09_performance_lab.md (executed when the book is built) and
the benchmark command ``python -m grader bench`` (which loads it by path). Both time exactly this code.

Every module takes ``x`` of shape (batch, num_tokens, d_in) and returns (batch, num_tokens, d_out); the one
exception is the historical 9216 wrapper, which is the chapter-3 wrapper built with the wrong ``d_out``.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionConfig:
    batch: int
    num_tokens: int
    d_in: int
    d_out: int
    num_heads: int

    @property
    def head_dim(self) -> int:
        return self.d_out // self.num_heads

    def as_dict(self) -> dict:
        return asdict(self)


# The historical benchmark's size (GPT-2 small, rasbt/LLMs-from-scratch ch03 bonus): run on a GPU.
FULL_CONFIG = AttentionConfig(batch=8, num_tokens=1024, d_in=768, d_out=768, num_heads=12)
# A 2-core CPU needs about 2 s per forward at FULL_CONFIG, so it races the same width and heads on one sequence
# of 512 tokens: 1/20 of the work, of which attention is still a quarter (two fifths at full size).
CPU_CONFIG = AttentionConfig(batch=1, num_tokens=512, d_in=768, d_out=768, num_heads=12)
# Small enough for CI to run every code path in a second or two.
TINY_CONFIG = AttentionConfig(batch=2, num_tokens=32, d_in=64, d_out=64, num_heads=4)


# ---------------------------------------------------------------------------------------------- the variants
class CausalAttention(nn.Module):
    """One causal head (chapter 2): its own W_query, W_key, W_value and a mask buffer."""

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        num_tokens = x.shape[1]
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)  # (b, T, d_out) each
        scores = queries @ keys.transpose(1, 2)  # (b, T, T)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1))
        return weights @ values  # (b, T, d_out)


class MultiHeadAttentionWrapper(nn.Module):
    """Chapter 3: heads side by side. d_out is PER HEAD, the output is num_heads * d_out wide, no out_proj.

    Built with d_out=768 and 12 heads this is the historical bug: a (8, 1024, 9216) output.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList(
            CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads))

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)  # (b, T, num_heads * d_out)


class MultiHeadAttentionWrapperFixed(nn.Module):
    """The wrapper after the fix (PR #68): d_out is the TOTAL width, each head gets d_out // num_heads, out_proj."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.wrapper = MultiHeadAttentionWrapper(d_in, d_out // num_heads, context_length, dropout, num_heads,
                                                 qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):
        return self.out_proj(self.wrapper(x))  # (b, T, d_out)


class MultiHeadAttention(nn.Module):
    """The chapter's module (chapter 6): split heads with view/transpose, one batched matmul, out_proj."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def split(self, t):
        b, num_tokens, _ = t.shape
        return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)  # (b, H, T, head_dim)

    def forward(self, x):
        b, num_tokens, _ = x.shape
        queries, keys, values = self.split(self.W_query(x)), self.split(self.W_key(x)), self.split(self.W_value(x))
        scores = queries @ keys.transpose(2, 3)  # (b, H, T, T)
        scores.masked_fill_(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim ** 0.5, dim=-1))
        context = (weights @ values).transpose(1, 2)  # (b, T, H, head_dim)
        return self.out_proj(context.contiguous().view(b, num_tokens, -1))  # (b, T, d_out)


class MultiHeadAttentionFusedQKV(nn.Module):
    """One (d_in -> 3 d_out) projection instead of three: one large matmul reads x once."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        qkv = self.qkv(x).view(b, num_tokens, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4)  # each (b, H, T, head_dim)
        scores = queries @ keys.transpose(2, 3)  # (b, H, T, T)
        scores.masked_fill_(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim ** 0.5, dim=-1))
        context = (weights @ values).transpose(1, 2)  # (b, T, H, head_dim)
        return self.out_proj(context.reshape(b, num_tokens, -1))


class MultiHeadAttentionEinsum(nn.Module):
    """Projections and attention written as einsums. Weights are stored (d_out, d_in) like nn.Linear's, so
    'btd,od->bto' is x @ W.T: storing them the other way round is the bug hidden when d_in == d_out (#857)."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Parameter(torch.empty(d_out, d_in))
        self.W_key = nn.Parameter(torch.empty(d_out, d_in))
        self.W_value = nn.Parameter(torch.empty(d_out, d_in))
        for weight in (self.W_query, self.W_key, self.W_value):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's own initialisation
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        heads = (b, num_tokens, self.num_heads, self.head_dim)
        queries = torch.einsum("btd,od->bto", x, self.W_query).view(heads)  # (b, T, H, head_dim)
        keys = torch.einsum("btd,od->bto", x, self.W_key).view(heads)
        values = torch.einsum("btd,od->bto", x, self.W_value).view(heads)
        scores = torch.einsum("bqhd,bkhd->bhqk", queries, keys)  # (b, H, T, T)
        scores.masked_fill_(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim ** 0.5, dim=-1))
        context = torch.einsum("bhqk,bkhd->bqhd", weights, values)  # (b, T, H, head_dim)
        return self.out_proj(context.reshape(b, num_tokens, -1))


class MultiHeadAttentionBlockCausal(nn.Module):
    """The course's fastest from-scratch version: fused QKV, and causal attention computed in query blocks so
    that block i never multiplies by keys it would mask (about half the QK^T and AV work at long contexts), with
    the scale folded into the matmul and no (T, T) boolean mask read at all outside the diagonal block."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False, block_size=128):
        super().__init__()
        self.num_heads, self.head_dim, self.block_size = num_heads, d_out // num_heads, block_size
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # Additive mask for one diagonal block: 0 on and below the diagonal, -inf above (block_size x block_size).
        block_mask = torch.full((block_size, block_size), -torch.inf).triu(diagonal=1)
        self.register_buffer("block_mask", block_mask, persistent=False)

    def forward(self, x):
        b, num_tokens, _ = x.shape
        qkv = self.qkv(x).view(b, num_tokens, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4)  # each (b, H, T, head_dim)
        queries, keys, values = (t.reshape(b * self.num_heads, num_tokens, self.head_dim)
                                 for t in (queries, keys, values))  # (b*H, T, head_dim)
        blocks = []
        for start in range(0, num_tokens, self.block_size):
            end = min(start + self.block_size, num_tokens)
            # Scores of this query block against every key up to its end: (b*H, end-start, end).
            scores = torch.bmm(queries[:, start:end], keys[:, :end].transpose(1, 2)).mul_(self.head_dim ** -0.5)
            scores[:, :, start:end] += self.block_mask[:end - start, :end - start]
            weights = self.dropout(torch.softmax(scores, dim=-1))
            blocks.append(torch.bmm(weights, values[:, :end]))  # (b*H, end-start, head_dim)
        context = torch.cat(blocks, dim=1).view(b, self.num_heads, num_tokens, self.head_dim).transpose(1, 2)
        return self.out_proj(context.reshape(b, num_tokens, -1))  # (b, T, d_out)


class MultiHeadAttentionSDPA(nn.Module):
    """Fused QKV, then PyTorch's fused kernel F.scaled_dot_product_attention with is_causal=True."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, d_out // num_heads, dropout
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):
        b, num_tokens, _ = x.shape
        qkv = self.qkv(x).view(b, num_tokens, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4)  # each (b, H, T, head_dim)
        context = F.scaled_dot_product_attention(queries, keys, values, is_causal=True,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(context.transpose(1, 2).reshape(b, num_tokens, -1))  # (b, T, d_out)


class PyTorchMultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention with a causal mask.

    In eval mode without autograd (batch_first, self-attention) both need_weights settings take the module's fast
    path, one native op (_native_multi_head_attention). With autograd on, need_weights=True computes and returns the
    (averaged) attention weights with explicit matmuls and a softmax; need_weights=False calls
    scaled_dot_product_attention."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False, need_weights=True):
        super().__init__()
        self.need_weights = need_weights
        if d_in != d_out:
            raise ValueError("nn.MultiheadAttention needs d_in == d_out for self-attention")
        # bias=True because the course's out_proj has a bias; the in-projection bias is zeroed when weights are
        # copied, which makes it the course's qkv_bias=False.
        self.multihead_attn = nn.MultiheadAttention(d_out, num_heads, dropout=dropout, bias=True, batch_first=True)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        num_tokens = x.shape[1]
        out, _ = self.multihead_attn(x, x, x, attn_mask=self.mask[:num_tokens, :num_tokens], is_causal=True,
                                     need_weights=self.need_weights)
        return out


# -------------------------------------------------------------------------------- building a fair race
VARIANTS = {
    # name: (label for tables and plots, from scratch?)
    "wrapper_fixed": ("Wrapper, fixed (PR #68)", True),
    "mha": ("Chapter MultiHeadAttention", True),
    "fused_qkv": ("Fused QKV", True),
    "einsum": ("Einsum", True),
    "block_causal": ("Block-causal (fused QKV)", True),
    "sdpa": ("F.scaled_dot_product_attention", False),
    "torch_mha_weights": ("nn.MultiheadAttention, need_weights=True", False),
    "torch_mha": ("nn.MultiheadAttention, need_weights=False", False),
    "wrapper_9216": ("Wrapper as before PR #68 (the 9216 bug)", True),
}
REFERENCE = "sdpa"  # every ratio is to this one
BUGGY, FIXED = "wrapper_9216", "wrapper_fixed"


def _copy(dest: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dest.copy_(src)


def copy_weights(reference: MultiHeadAttention, module: nn.Module) -> nn.Module:
    """Give ``module`` exactly the reference's Q/K/V and out_proj weights, so every variant computes one function."""
    wq, wk, wv = reference.W_query.weight, reference.W_key.weight, reference.W_value.weight  # (d_out, d_in)
    if isinstance(module, MultiHeadAttentionWrapperFixed):
        hd = reference.head_dim
        for i, head in enumerate(module.wrapper.heads):  # head i owns rows i*hd:(i+1)*hd of each projection
            for mine, full in ((head.W_query, wq), (head.W_key, wk), (head.W_value, wv)):
                _copy(mine.weight, full[i * hd:(i + 1) * hd])
    elif isinstance(module, MultiHeadAttentionEinsum):
        for mine, full in ((module.W_query, wq), (module.W_key, wk), (module.W_value, wv)):
            _copy(mine, full)
    elif isinstance(module, PyTorchMultiheadAttention):
        attn = module.multihead_attn
        _copy(attn.in_proj_weight, torch.cat([wq, wk, wv]))
        nn.init.zeros_(attn.in_proj_bias)
        _copy(attn.out_proj.weight, reference.out_proj.weight)
        _copy(attn.out_proj.bias, reference.out_proj.bias)
        return module
    elif hasattr(module, "qkv"):
        _copy(module.qkv.weight, torch.cat([wq, wk, wv]))
    elif isinstance(module, MultiHeadAttention):
        module.load_state_dict(reference.state_dict())
    else:
        raise TypeError(f"no weight mapping for {type(module).__name__}")
    _copy(module.out_proj.weight, reference.out_proj.weight)
    _copy(module.out_proj.bias, reference.out_proj.bias)
    return module


def build_variants(cfg: AttentionConfig, device, dtype=torch.float32, seed: int = 123,
                   names=tuple(VARIANTS)) -> dict[str, nn.Module]:
    """Every variant at ``cfg``, dropout 0, with the reference MultiHeadAttention's weights copied in.

    The 9216 wrapper cannot share weights (it has 9x more): it gets its own seeded ones and is only raced.
    """
    torch.manual_seed(seed)
    args = (cfg.d_in, cfg.d_out, cfg.num_tokens, 0.0, cfg.num_heads)
    reference = MultiHeadAttention(*args)
    constructors = {
        "wrapper_fixed": lambda: MultiHeadAttentionWrapperFixed(*args),
        "mha": lambda: MultiHeadAttention(*args),
        "fused_qkv": lambda: MultiHeadAttentionFusedQKV(*args),
        "einsum": lambda: MultiHeadAttentionEinsum(*args),
        "block_causal": lambda: MultiHeadAttentionBlockCausal(*args),
        "sdpa": lambda: MultiHeadAttentionSDPA(*args),
        "torch_mha_weights": lambda: PyTorchMultiheadAttention(*args, need_weights=True),
        "torch_mha": lambda: PyTorchMultiheadAttention(*args, need_weights=False),
        # The historical construction: the chapter-3 wrapper given the TOTAL width as its per-head d_out.
        "wrapper_9216": lambda: MultiHeadAttentionWrapper(cfg.d_in, cfg.d_out, cfg.num_tokens, 0.0, cfg.num_heads),
    }
    modules = {}
    for name in names:
        module = constructors[name]()
        if name != BUGGY:
            copy_weights(reference, module)
        modules[name] = module.to(device=device, dtype=dtype)
    return modules


def max_differences(modules: dict[str, nn.Module], x: torch.Tensor) -> dict[str, float]:
    """Largest absolute difference of each variant's output from the reference's, on the same input."""
    with torch.no_grad():
        expected = modules[REFERENCE].eval()(x)
        return {name: (m.eval()(x) - expected).abs().max().item()
                for name, m in modules.items() if name != BUGGY}


# ------------------------------------------------------------------------------------------- work and time
def forward_flops(cfg: AttentionConfig) -> dict[str, int]:
    """Multiply-adds x 2 of one dense forward pass (the causal mask is not used to skip work here)."""
    b, t = cfg.batch, cfg.num_tokens
    projections = 2 * b * t * cfg.d_in * cfg.d_out * 3 + 2 * b * t * cfg.d_out * cfg.d_out
    attention = 2 * 2 * b * cfg.num_heads * t * t * cfg.head_dim  # Q K^T, then weights @ V
    return {"projections": projections, "attention": attention}


def buggy_forward_flops(cfg: AttentionConfig) -> int:
    """The 9216 wrapper: every head projects to the full d_out and attends at that width; no out_proj."""
    b, t, h = cfg.batch, cfg.num_tokens, cfg.num_heads
    return h * (2 * b * t * cfg.d_in * cfg.d_out * 3 + 2 * 2 * b * t * t * cfg.d_out)


def make_step(module: nn.Module, x: torch.Tensor, backward: bool):
    """A zero-argument callable: one forward (eval mode, no grad), or one forward + backward (train mode).
    Each call sets the mode itself, so forward and backward steps of one module can be raced side by side."""
    if not backward:
        def step():
            module.eval()
            with torch.no_grad():
                module(x)
        return step
    with torch.no_grad():
        grad_out = torch.randn_like(module(x))

    def step():
        module.train()
        module.zero_grad(set_to_none=True)
        module(x).backward(grad_out)
    return step


def race(steps: dict[str, object], repeats: int = 5, min_seconds: float = 0.0, warmup: int = 2) -> dict:
    """Time several steps round-robin: each round times every step once, so a change of machine load hits all
    of them alike (and paired_ratio compares steps within a round).

    torch.utils.benchmark.Timer synchronises CUDA before reading its clock, so a sample covers the kernels, not
    just their launch; blocked_autorange runs at least one block of calls (and one calibration call) per round.
    Returns per name: median and interquartile range over rounds (seconds per call) and the samples.
    """
    from torch.utils import benchmark

    timers = {}
    for name, step in steps.items():
        for _ in range(warmup):  # first calls pay for allocation, lazy init, kernel selection
            step()
        timers[name] = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads(),
                                       label=str(name))
    samples = {name: [] for name in steps}
    for _ in range(repeats):
        for name, timer in timers.items():
            samples[name].append(timer.blocked_autorange(min_run_time=min_seconds).median)
    results = {}
    for name, values in samples.items():
        q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
        results[name] = {"median_s": statistics.median(values), "iqr_s": q[2] - q[0], "samples_s": values}
    return results


def paired_ratio(results: dict, name: str, baseline: str) -> float:
    """Median over rounds of time(name) / time(baseline) measured in the same round: robust to load drift."""
    pairs = zip(results[name]["samples_s"], results[baseline]["samples_s"])
    return statistics.median(a / b for a, b in pairs)


# ------------------------------------------------------------------------------------------------- memory
class PeakTensorBytes:
    """Peak bytes of tensors created while active (a TorchDispatchMode sees every op's outputs; a weak reference
    to each storage tells when autograd and Python have let it go). Tensors that existed before (parameters,
    buffers, the input) are not counted; buffers a fused kernel allocates internally are invisible to it."""

    def __init__(self, existing=()):
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self
        self.existing = {t.untyped_storage()._cdata for t in existing}
        self.live, self.peak_bytes = {}, 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        storage = t.untyped_storage()
                        key = storage._cdata
                        if key not in tracker.existing and key not in tracker.live:
                            tracker.live[key] = (StorageWeakRef(storage), storage.nbytes())
                tracker.live = {k: v for k, v in tracker.live.items() if not v[0].expired()}
                tracker.peak_bytes = max(tracker.peak_bytes, sum(n for _, n in tracker.live.values()))
                return out

        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def peak_memory_bytes(module: nn.Module, x: torch.Tensor, backward: bool) -> tuple[int, str]:
    """Peak memory of one step beyond what was already allocated: measured by the CUDA allocator on a GPU,
    estimated from the sizes of the tensors the step creates elsewhere. Returns (bytes, how it was obtained)."""
    step = make_step(module, x, backward)
    step()  # warm-up: lazy init and first-call allocations are not the step's own
    module.zero_grad(set_to_none=True)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        used = torch.cuda.max_memory_allocated() - before, "torch.cuda.max_memory_allocated"
    else:
        existing = [*module.parameters(), *module.buffers(), x]
        with PeakTensorBytes(existing) as tracker:
            step()
        used = tracker.peak_bytes, "estimate: peak bytes of live tensors created by the step"
    module.zero_grad(set_to_none=True)
    return used
