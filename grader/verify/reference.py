"""Expected numbers, computed in the grader's own process with PyTorch's operators, from a case's seeded inputs.

Correct results come from PyTorch's built-ins (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention`` with
the same weights copied in) in float64, never from a solution written for the course. The attention weights come
out of the same built-in by using the identity as the values. ``hypotheses`` lists what well-known bugs would have
produced, so that a wrong output can be named with the catalogue's name (:mod:`grader.bugs`), and only when that
bug's reference implementation reproduces the output.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from grader import references
from grader.bugs import named
from grader.verify import reference_masks
from grader.verify.cases import Case

DTYPE = torch.float64


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array)).to(DTYPE)


def _eye_values(keys: torch.Tensor) -> torch.Tensor:
    """Identity values (one per key): attention over them returns the attention weights themselves."""
    num_keys = keys.shape[-2]
    return torch.eye(num_keys, dtype=DTYPE).expand(*keys.shape[:-2], num_keys, num_keys)


def attention(queries, keys, values, *, causal=False, scale=None):
    return F.scaled_dot_product_attention(queries, keys, values, is_causal=causal, scale=scale)


def attention_weights(queries, keys, *, causal=False, scale=None):
    return attention(queries, keys, _eye_values(keys), causal=causal, scale=scale)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # queries = scores and keys = identity make the built-in's scores exactly `scores` (scale 1).
    keys = torch.eye(scores.shape[-1], dtype=DTYPE)
    return F.scaled_dot_product_attention(scores, keys, keys, attn_mask=~mask, scale=1.0)


def _projections(case: Case, head: int):
    x = _t(case.arrays["x"])
    prefix = "" if head < 0 else f"h{head}_"
    arrays = case.arrays
    return x, [F.linear(x, _t(arrays[prefix + name]), _t(arrays[prefix + name + "_bias"])
                        if prefix + name + "_bias" in arrays else None) for name in ("W_query", "W_key", "W_value")]


def _head_outputs(case: Case, causal: bool, scale_of=None, variant=None) -> torch.Tensor:
    """Per-head context vectors concatenated (one head when the case has no heads)."""
    outputs = []
    for head in range(case.params["heads"]) if case.params["heads"] else [-1]:
        _, (q, k, v) = _projections(case, head)
        scale = scale_of(q.shape[-1]) if scale_of else None
        if variant is None:
            outputs.append(attention(q, k, v, causal=causal, scale=scale))
        else:
            outputs.append(variant(q, k, v))
    return torch.cat(outputs, dim=-1)


def multi_head_reference(case: Case) -> torch.Tensor:
    """The course's MultiHeadAttention: nn.MultiheadAttention with the case's weights (works for d_in != d_out)."""
    x = _t(case.arrays["x"])
    w_query = _t(case.arrays["W_query"])
    d_out, d_in = w_query.shape
    heads = case.params["num_heads"]
    # nn.MultiheadAttention wants the query in embed_dim (= d_out): project it here and give the module an
    # identity for its query projection; keys and values keep d_in through kdim/vdim.
    mha = torch.nn.MultiheadAttention(d_out, heads, kdim=d_in, vdim=d_in, batch_first=True, dtype=DTYPE)
    with torch.no_grad():
        identity, w_key, w_value = torch.eye(d_out, dtype=DTYPE), _t(case.arrays["W_key"]), _t(case.arrays["W_value"])
        if mha._qkv_same_embed_dim:  # d_in == d_out: one packed in-projection
            mha.in_proj_weight.copy_(torch.cat([identity, w_key, w_value]))
        else:
            mha.q_proj_weight.copy_(identity)
            mha.k_proj_weight.copy_(w_key)
            mha.v_proj_weight.copy_(w_value)
        mha.in_proj_bias.zero_()
        for index, name in ((1, "W_key_bias"), (2, "W_value_bias")):  # qkv_bias=True cases
            if name in case.arrays:
                mha.in_proj_bias[index * d_out:(index + 1) * d_out].copy_(_t(case.arrays[name]))
        mha.out_proj.weight.copy_(_t(case.arrays["out_proj"]))
        mha.out_proj.bias.copy_(_t(case.arrays["out_proj_bias"]))
    tokens = x.shape[-2]
    future = torch.ones(tokens, tokens, dtype=torch.bool).triu(1)
    with torch.no_grad():
        query_bias = _t(case.arrays["W_query_bias"]) if "W_query_bias" in case.arrays else None
        output, _ = mha(F.linear(x, w_query, query_bias), x, x, attn_mask=future, need_weights=False)
    return output


def _softmax_wrong_dim(q, k, v, causal):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-2).nan_to_num(0.0) @ v


def _scale_after_softmax(q, k, v, causal):
    scores = q @ k.transpose(-2, -1)
    if causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    weights = torch.softmax(scores, dim=-1) / math.sqrt(q.shape[-1])
    return weights @ v, weights


def _flattened(case: Case, compute) -> torch.Tensor:
    """``compute`` run on the batch laid end to end as one sequence: tokens attend across sequences."""
    x = case.arrays["x"]
    batch, tokens, width = x.shape
    flat = dataclasses.replace(case, arrays={**case.arrays, "x": x.reshape(1, batch * tokens, width)},
                               params=dict(case.params))
    return compute(flat).reshape(batch, tokens, -1)


def expected(case: Case) -> list[np.ndarray]:
    """The correct output(s) of a "reference" case, as float64 (bool for masks) arrays.

    ``case.params["reference"]`` names the computation (the assignment's module sets it): ``scores`` (raw
    q k^T), ``sdpa`` (context and weights), ``causal_mask``, ``masked_softmax``, ``heads`` (single heads side by
    side, causal when the case has a context length), ``split_heads``, ``combine_heads``, ``mha`` (the chapter's
    MultiHeadAttention, as nn.MultiheadAttention), ``heads_out_proj`` (separate heads, then out_proj), and
    ``mha_padding`` and ``gqa`` (in :mod:`grader.verify.reference_masks`). Raises
    KeyError for a case without a known reference.
    """
    a, kind = case.arrays, case.params.get("reference")
    if kind in reference_masks.KINDS:  # padded and grouped-query attention (grader/verify/reference_masks.py)
        return reference_masks.expected(case)
    if kind == "scores":
        return [(_t(a["queries"]) @ _t(a["keys"]).transpose(-2, -1)).numpy()]
    if kind == "sdpa":
        q, k, v = _t(a["queries"]), _t(a["keys"]), _t(a["values"])
        return [attention(q, k, v).numpy(), attention_weights(q, k).numpy()]
    if kind == "causal_mask":
        n = case.params["num_tokens"]
        return [np.arange(n)[None, :] > np.arange(n)[:, None]]
    if kind == "masked_softmax":
        return [masked_softmax(_t(a["scores"]), torch.from_numpy(a["mask"])).numpy()]
    if kind == "heads":
        return [_head_outputs(case, causal=case.params["causal"]).numpy()]
    if kind == "split_heads":
        x = a["x"].astype(np.float64)
        b, t, d = x.shape
        heads = case.params["num_heads"]
        return [x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)]
    if kind == "combine_heads":
        x = a["x"].astype(np.float64)
        b, h, t, hd = x.shape
        return [x.transpose(0, 2, 1, 3).reshape(b, t, h * hd)]
    if kind == "heads_out_proj":
        concat = _head_outputs(case, causal=True)
        return [F.linear(concat, _t(a["out_proj"]), _t(a["out_proj_bias"])).numpy()]
    if kind == "mha":
        return [multi_head_reference(case).numpy()]
    raise KeyError(f"no reference {kind!r} (task {case.task!r}, case {case.name!r})")


def hypotheses(case: Case) -> list[tuple[str, list[np.ndarray]]]:
    """(bug name, what that bug outputs) for the bugs the course teaches, where a case can show them."""
    a, kind, found = case.arrays, case.params.get("reference"), []
    if kind in reference_masks.KINDS:
        return reference_masks.hypotheses(case)
    if kind == "scores":
        q, k = _t(a["queries"]), _t(a["keys"])
        found.append((named("raw_scores_scaled"),
                      [(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).numpy()]))
    if kind == "sdpa":
        q, k, v = _t(a["queries"]), _t(a["keys"]), _t(a["values"])
        d_k = q.shape[-1]
        found.append((named("scale_multiplied"),
                      [attention(q, k, v, scale=math.sqrt(d_k)).numpy(),
                       attention_weights(q, k, scale=math.sqrt(d_k)).numpy()]))
        found.append((named("scale_missing"),
                      [attention(q, k, v, scale=1.0).numpy(), attention_weights(q, k, scale=1.0).numpy()]))
        found.append((named("scale_d_k"), [attention(q, k, v, scale=1.0 / d_k).numpy(),
                                           attention_weights(q, k, scale=1.0 / d_k).numpy()]))
        found.append((named("softmax_dim"), [_softmax_wrong_dim(q, k, v, False).numpy(), None]))
        context, weights = _scale_after_softmax(q, k, v, False)
        found.append((named("scale_after_softmax"), [context.numpy(), weights.numpy()]))
    if kind == "heads":
        causal = case.params["causal"]
        found += _module_bug_hypotheses(case)
        if case.arrays["x"].shape[0] > 1:
            found.append((named("batch", "the batch was laid out as one long sequence"),
                          [_flattened(case, lambda c: _head_outputs(c, causal)).numpy()]))
    if kind == "split_heads":
        x = a["x"].astype(np.float64)
        b, t, d = x.shape
        heads = case.params["num_heads"]
        found.append((named("view_no_transpose", "heads must be dim 1, tokens dim 2"),
                      [x.reshape(b, heads, t, d // heads)]))
    if kind == "combine_heads":
        x = a["x"].astype(np.float64)
        b, h, t, hd = x.shape
        found.append((named("view_no_transpose", "transpose back before the view, or tokens of different heads "
                                                 "are mixed"),
                      [x.reshape(b, t, h * hd)]))
    if kind == "heads_out_proj":
        found += _module_bug_hypotheses(case)
    if kind == "heads_out_proj" and case.arrays["x"].shape[0] > 1:
        found.append((named("batch", "the batch was laid out as one long sequence"),
                      [_flattened(case, lambda c: F.linear(_head_outputs(c, causal=True), _t(a["out_proj"]),
                                                           _t(a["out_proj_bias"]))).numpy()]))
    if kind == "mha":
        found += _module_bug_hypotheses(case)
        if case.arrays["x"].shape[0] > 1:
            found.append((named("batch", "the batch was laid out as one long sequence"),
                          [_flattened(case, multi_head_reference).numpy()]))
    return found


def module_weights(case: Case, head: int = -1):
    """(qkv, out) of a module case in float64: [(weight (d_out, d_in), bias or None)] * 3 of head ``head`` (-1: the
    module's own), and (out_proj, bias) or None."""
    prefix = "" if head < 0 else f"h{head}_"
    a = case.arrays
    qkv = [(_t(a[prefix + n]), _t(a[prefix + n + "_bias"]) if prefix + n + "_bias" in a else None)
           for n in ("W_query", "W_key", "W_value") if prefix + n in a]
    out = (_t(a["out_proj"]), _t(a["out_proj_bias"])) if "out_proj" in a else None
    return qkv, out


def module_with_bug(case: Case, **change) -> torch.Tensor:
    """The case's module (kind ``heads``, ``heads_out_proj`` or ``mha``) computed with one bug switched on
    (:func:`grader.references.attention_with_bug`); (b, T, width) float64. Raises RuntimeError when the bug's
    computation fails on these sizes."""
    x, kind = _t(case.arrays["x"]), case.params.get("reference")
    if kind == "mha":
        qkv, out = module_weights(case)
        return references.attention_with_bug(x, qkv, out, case.params["num_heads"], **change)
    causal = change.pop("causal", bool(case.params.get("causal")) or kind == "heads_out_proj")
    heads = [references.attention_with_bug(x, module_weights(case, h)[0], None, 1, causal=causal, **change)
             for h in (range(case.params["heads"]) if case.params["heads"] else [-1])]
    concat = torch.cat(heads, dim=-1)
    if kind != "heads_out_proj":
        return concat
    return F.linear(concat, _t(case.arrays["out_proj"]), _t(case.arrays["out_proj_bias"]))


def heads_averaged(case: Case) -> torch.Tensor:
    """The ``heads_averaged`` bug's output for a case with separate heads: their outputs averaged, (b, T, d_out),
    then out_proj when the case has one that fits."""
    causal = bool(case.params.get("causal")) or case.params.get("reference") == "heads_out_proj"
    x = _t(case.arrays["x"])
    with torch.no_grad():
        outputs = [references.attention_with_bug(x, module_weights(case, h)[0], None, 1, causal=causal)
                   for h in range(case.params["heads"])]
        mean = references.heads_averaged(outputs)
        if "out_proj" in case.arrays and case.params.get("reference") == "heads_out_proj":
            return F.linear(mean, _t(case.arrays["out_proj"]), _t(case.arrays["out_proj_bias"]))
        return mean


def _module_bug_hypotheses(case: Case) -> list[tuple[str, list[np.ndarray]]]:
    """Every catalogued bug of the chapter's module that can show in this case, each computed by its reference
    from the case's weights (grader/references.py: the same computation the notebooks' checks use)."""
    kind = case.params.get("reference")
    qkv, out = module_weights(case, 0 if case.params.get("heads") else -1)
    d_out, d_in = qkv[0][0].shape[0], case.arrays["x"].shape[-1]
    heads = case.params["num_heads"] if kind == "mha" else 1
    causal = bool(case.params.get("causal")) or kind in ("mha", "heads_out_proj")
    found = []
    with torch.no_grad():
        for code, forms in references.MODULE_BUGS.items():
            if not references.applies(code, heads, d_out // heads, d_out, d_in, causal,
                                      kind != "heads"):
                continue
            for change in forms:
                try:
                    found.append((named(code), [module_with_bug(case, causal=causal, **change).numpy()]))
                except RuntimeError:
                    continue
    return found


# ---------------------------------------------------------------- one module instance, called several times
RAISES = "raises"   # what a bug's reference predicts for a call that the bug makes fail


def call_cases(case: Case) -> list[Case]:
    """The case's forward calls as cases of their own (call 0 is the case itself), each with its input as ``x``
    ((b, T, d_in), T may differ from call to call) and its mode in ``train``, so that :func:`expected` and
    :func:`hypotheses` apply to each call."""
    found = [case]
    for index, later in enumerate(case.calls, start=1):
        found.append(dataclasses.replace(case, name=f"{case.name}.call{index}", train=bool(later["train"]),
                                         arrays={**case.arrays, "x": case.arrays[later["input"]]}, calls=[],
                                         params=dict(case.params)))
    return found


def sequence_hypotheses(case: Case) -> list[tuple[str, list]]:
    """(bug name, [what that bug gives at each call: an array shaped like that call's output, (b, T, width), or
    RAISES]) for a case with several calls (``case.calls``). Raises KeyError for a case without a known reference.

    A stateless bug is one whose reference (:func:`hypotheses`) gives every call's output. The mask made at the
    first call's length and reused (``mask_cached``) is right wherever that mask still fits and raises elsewhere:
    written as the chapter's module with ``mask = self.mask[:T, :T]`` computed once, then either sliced again
    (``cached[:T, :T]``: right for T up to the first length) or used as it is (right only at the first length).
    """
    calls = call_cases(case)
    per_call = [hypotheses(call) for call in calls]
    found = []
    for name, outputs in per_call[0]:
        later = [next((o for n, o in hyps if n == name), None) for hyps in per_call[1:]]
        if all(o is not None and o[0] is not None for o in later) and outputs[0] is not None:
            found.append((name, [outputs[0]] + [o[0] for o in later]))
    right = [expected(call)[0] for call in calls]
    lengths = [call.arrays["x"].shape[-2] for call in calls]
    for fits in (lambda n: n <= lengths[0], lambda n: n == lengths[0]):
        predicted = [want if fits(n) else RAISES for want, n in zip(right, lengths)]
        if any(isinstance(want, str) for want in predicted):
            found.append((named("mask_cached", f"it fits only the first call's {lengths[0]} tokens"), predicted))
    return found
