"""The chapter's attention module with one catalogued bug switched on, from the module's own weights.

One computation, read by both sides: the notebooks' checks (:mod:`grader.diagnose`, in the student's kernel) and the
grader's verification (:mod:`grader.verify.reference`, in float64 outside the kernel). A bug is named only when its
reference reproduces the student's output, so each bug the course names for a module is one setting of
:func:`attention_with_bug`; :data:`MODULE_BUGS` lists them (catalogue code -> the setting).

Runs wherever torch runs (CPU or CUDA, any float dtype); imports only the catalogue (:mod:`grader.bugs`) of the
grader, so the kernel can use it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from grader import bugs

# catalogue code -> the forms (keyword arguments of attention_with_bug) of each bug of the chapter's module: read
# from the catalogue, where each bug is defined once. Scale variants apply where their divisor differs from
# sqrt(head_dim) (see applies).
MODULE_BUGS = bugs.MODULE_BUGS

# Where dropout can act, for the dropout bugs: (catalogue code or "" for the right place, placement).
DROPOUT_PLACEMENTS = (("", "weights"), ("dropout_scores", "scores"), ("dropout_scores", "scores_masked"),
                      ("dropout_context", "context"), ("dropout_context", "output"))


def divisor(scale: str, head_dim: int, d_out: int, d_in: int) -> float:
    """What the scores are divided by under ``scale`` (see attention_with_bug)."""
    return {"sqrt_head_dim": math.sqrt(head_dim), "none": 1.0, "multiplied": 1.0 / math.sqrt(head_dim),
            "head_dim": float(head_dim), "sqrt_d_out": math.sqrt(d_out), "sqrt_d_in": math.sqrt(d_in),
            "after_softmax": 1.0}[scale]


def applies(code: str, num_heads: int, head_dim: int, d_out: int, d_in: int, causal: bool,
            has_out: bool) -> bool:
    """Whether bug ``code`` of MODULE_BUGS can show in a module of these sizes (its reference differs from the
    right computation by construction): a scale equal to sqrt(head_dim) or a merge of one head cannot."""
    change = MODULE_BUGS[code][0]
    if "scale" in change and change["scale"] not in ("none", "multiplied", "after_softmax"):
        return not math.isclose(divisor(change["scale"], head_dim, d_out, d_in), math.sqrt(head_dim))
    if change.get("merge") == "view":
        return num_heads > 1
    if "mask" in change:
        return causal
    if change.get("use_out") is False:
        return has_out
    return True


def attention_with_bug(x: torch.Tensor, qkv, out, num_heads: int, *, causal: bool = True,
                       scale: str = "sqrt_head_dim", mask: str = "before", softmax_dim: int = -1,
                       merge: str = "transpose", use_out: bool = True, dropout: float = 0.0,
                       dropout_on: str = "weights", seed: int | None = None) -> torch.Tensor:
    """The chapter's (causal) multi-head attention computed with the given weights and one bug switched on.

    x (b, T, d_in); qkv [(weight (d_out, d_in), bias or None)] * 3; out (weight (d_out, d_out), bias) or None.
    ``scale``: the scores divided by sqrt(head_dim) (right), "none", "multiplied" (times sqrt(head_dim)),
    "head_dim", "sqrt_d_out", "sqrt_d_in", or "after_softmax" (the weights divided by sqrt(head_dim));
    ``mask`` (causal only): "before" (right: -inf on future scores), "none", "after" (future weights zeroed after
    the softmax, not renormalised), "diagonal" (each token hidden from itself too: NaN in the first row),
    "polarity" (the course's mask, True = future, handed to F.scaled_dot_product_attention, which reads True as
    "may attend"), "polarity_fill" (the same, as masked_fill(~mask, -inf)), "additive" (the 0/1 mask added to the scaled
    scores), "additive_unscaled" (added before the scaling); ``softmax_dim`` -1 (right) or -2; ``merge``
    "transpose" (right) or "view" (heads viewed straight back to (b, T, d_out)); ``use_out`` False: out_proj
    skipped. ``dropout`` p > 0 with ``seed``: dropout in training mode at ``dropout_on`` ("weights", right;
    "scores" before the mask, "scores_masked" after it, "context" before out_proj, "output" after it), drawn
    after torch.manual_seed(seed), so that it replays the draw of a module called right after the same seed on
    the same device. Returns (b, T, d_out); raises RuntimeError when the weights do not fit x.
    """
    queries, keys, values = (F.linear(x, weight, bias) for weight, bias in qkv)
    batch, num_tokens, d_out = queries.shape
    head_dim = d_out // num_heads

    def split(t: torch.Tensor) -> torch.Tensor:                     # (b, T, d_out) -> (b, num_heads, T, head_dim)
        return t.reshape(batch, num_tokens, num_heads, -1).transpose(1, 2)

    def drop(t: torch.Tensor, where: str) -> torch.Tensor:
        return F.dropout(t, dropout, training=True) if dropout and dropout_on == where else t

    if seed is not None:
        torch.manual_seed(seed)
    queries, keys, values = split(queries), split(keys), split(values)
    future = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=x.device).triu(1)
    if causal and mask == "polarity":    # SDPA draws its own dropout on the weights
        context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=future,
                                                 dropout_p=dropout if dropout_on == "weights" else 0.0)
    else:
        scores = queries @ keys.transpose(-2, -1) / divisor(scale, head_dim, d_out, x.shape[-1])
        scores = drop(scores, "scores")
        if causal and mask in ("before", "diagonal", "polarity_fill"):
            hidden = future | torch.eye(num_tokens, dtype=torch.bool, device=x.device) if mask == "diagonal" \
                else ~future if mask == "polarity_fill" else future
            scores = scores.masked_fill(hidden, float("-inf"))
        elif causal and mask == "additive":
            scores = scores + future.to(scores.dtype)
        elif causal and mask == "additive_unscaled":        # added before the scaling: (q k^T + mask) / sqrt(d)
            scores = scores + future.to(scores.dtype) / divisor(scale, head_dim, d_out, x.shape[-1])
        scores = drop(scores, "scores_masked")
        weights = torch.softmax(scores, dim=softmax_dim)
        if causal and mask == "after":
            weights = weights.masked_fill(future, 0.0)
        if scale == "after_softmax":
            weights = weights / math.sqrt(head_dim)
        context = drop(weights, "weights") @ values                      # (b, num_heads, T, head_dim)
    if merge == "transpose":
        context = context.transpose(1, 2)                               # (b, T, num_heads, head_dim)
    context = drop(context.reshape(batch, num_tokens, d_out), "context")
    if out is None or not use_out:
        return context
    return drop(F.linear(context, out[0], out[1]), "output")


def heads_averaged(head_outputs: list[torch.Tensor]) -> torch.Tensor:
    """The heads' outputs (each (b, T, d)) averaged instead of concatenated: (b, T, d)."""
    return torch.stack(head_outputs).mean(0)


def first_difference(have: torch.Tensor, want: torch.Tensor) -> str:
    """Where ``have`` first differs from ``want`` (same shape), measured: the first index in row-major order whose
    values are not close, and both values there, e.g. "first at [0, 2, 1]: 0.318 where 0.127 is right"."""
    have, want = have.detach().double().cpu(), want.detach().double().cpu()
    if have.shape != want.shape:
        return f"shape {tuple(have.shape)} where {tuple(want.shape)} is right"
    wrong = ~torch.isclose(have, want, atol=1e-4, rtol=1e-3, equal_nan=True)
    if not wrong.any():
        return ""
    index = [int(i) for i in wrong.nonzero()[0]]
    return (f"first at {index}: {float(have[tuple(index)]):.4g} where {float(want[tuple(index)]):.4g} is right "
            f"({int(wrong.sum())} of {wrong.numel()} entries differ)")
