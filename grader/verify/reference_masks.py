"""Expected numbers for padded and grouped-query attention, what PyTorch makes of a mask, and what the mask bugs
produce. Used by :mod:`grader.verify.reference` (kinds ``mha_padding`` and ``gqa``) and
:mod:`grader.verify.checks_masks` (mask conversion).

Correct results come from PyTorch's operators in float64, never from a solution written for the course:

- ``mha_padding``: ``nn.MultiheadAttention`` with the case's weights, a causal ``attn_mask`` and the
  ``key_padding_mask`` (True = padding), with the outputs of padded positions set to zero (the course's answer
  for a query that has nothing to see, chapter 11). Its gradient with respect to the input comes from
  ``F.scaled_dot_product_attention`` under autograd, each padded query row given every key so that no row is
  empty (its output is zeroed, so it adds nothing to the gradient; an empty row would put 0 x NaN into it).
- ``gqa``: ``F.scaled_dot_product_attention(..., is_causal=True, enable_gqa=True)`` on the case's projections.
- :func:`hidden_under`: which keys SDPA or ``nn.MultiheadAttention`` hide when handed a mask, read off their
  attention weights (zero scores, identity values), so a mask's meaning is PyTorch's, not the course's.

:func:`hypotheses` writes each catalogued mask bug out (polarity flipped, padding applied to the queries, a -inf
fill on rows with nothing to see, padded outputs not zeroed or zeroed before out_proj, padding applied after the
softmax, with or without renormalising, K/V heads tiled with ``repeat``), in the forms it takes in real code, so
that a wrong output is named only when one of them reproduces it; a form that produces NaN by its nature (a -inf
fill, 0/0) is evidence only on a case where it does, and forms a case cannot tell apart are all named.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from grader import references
from grader.bugs import named
from grader.verify.cases import Case

DTYPE = torch.float64
KINDS = ("mha_padding", "gqa")


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array)).to(DTYPE)


def _bias(case: Case, name: str):
    return _t(case.arrays[name + "_bias"]) if name + "_bias" in case.arrays else None


def _projections(case: Case, x: torch.Tensor):
    return [F.linear(x, _t(case.arrays[name]), _bias(case, name)) for name in ("W_query", "W_key", "W_value")]


def _split(t: torch.Tensor, head_dim: int) -> torch.Tensor:   # (b, T, heads * head_dim) -> (b, heads, T, head_dim)
    b, num_tokens, width = t.shape
    return t.reshape(b, num_tokens, width // head_dim, head_dim).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:                  # (b, heads, T, head_dim) -> (b, T, heads * head_dim)
    b, heads, num_tokens, head_dim = t.shape
    return t.transpose(1, 2).reshape(b, num_tokens, heads * head_dim)


def _out_proj(case: Case, context: torch.Tensor) -> torch.Tensor:
    return F.linear(context, _t(case.arrays["out_proj"]), _t(case.arrays["out_proj_bias"]))


def _causal(num_tokens: int) -> torch.Tensor:
    return torch.ones(num_tokens, num_tokens, dtype=torch.bool).triu(1)   # True = the future


# ---------------------------------------------------------------------------------------- padded attention
def padded_forward(case: Case) -> torch.Tensor:
    """nn.MultiheadAttention (causal attn_mask, key_padding_mask) with the case's weights; padded rows zero."""
    x = _t(case.arrays["x"])
    padding = torch.from_numpy(case.arrays["key_padding_mask"])
    w_query = _t(case.arrays["W_query"])
    d_out, d_in = w_query.shape
    # The query is projected here (nn.MultiheadAttention wants it embed_dim wide) and the module's own query
    # projection is the identity; keys and values keep d_in through kdim/vdim.
    mha = torch.nn.MultiheadAttention(d_out, case.params["num_heads"], kdim=d_in, vdim=d_in, batch_first=True,
                                      dtype=DTYPE)
    with torch.no_grad():
        identity = torch.eye(d_out, dtype=DTYPE)
        if mha._qkv_same_embed_dim:
            mha.in_proj_weight.copy_(torch.cat([identity, _t(case.arrays["W_key"]), _t(case.arrays["W_value"])]))
        else:
            mha.q_proj_weight.copy_(identity)
            mha.k_proj_weight.copy_(_t(case.arrays["W_key"]))
            mha.v_proj_weight.copy_(_t(case.arrays["W_value"]))
        mha.in_proj_bias.zero_()
        for index, name in ((1, "W_key"), (2, "W_value")):
            if _bias(case, name) is not None:
                mha.in_proj_bias[index * d_out:(index + 1) * d_out].copy_(_bias(case, name))
        mha.out_proj.weight.copy_(_t(case.arrays["out_proj"]))
        mha.out_proj.bias.copy_(_t(case.arrays["out_proj_bias"]))
        queries = F.linear(x, w_query, _bias(case, "W_query"))
        out, _ = mha(queries, x, x, attn_mask=_causal(x.shape[1]), key_padding_mask=padding, need_weights=False)
    # A padded query's row may be NaN (nothing to see): replaced, never mixed in, by torch.where.
    return torch.where(padding[..., None], torch.zeros((), dtype=DTYPE), out)


def _gradient(case: Case, module) -> torch.Tensor:
    """d(sum(module(x) * g))/dx in float64, for a function ``module`` of the input."""
    x = _t(case.arrays["x"]).requires_grad_(True)
    (module(x) * _t(case.arrays[case.params["grad_of"]])).sum().backward()
    return x.grad.detach()


def padded_gradient(case: Case) -> torch.Tensor:
    padding = torch.from_numpy(case.arrays["key_padding_mask"])
    head_dim = case.arrays["W_query"].shape[0] // case.params["num_heads"]

    def forward(x):
        queries, keys, values = (_split(t, head_dim) for t in _projections(case, x))
        may_attend = ~(_causal(x.shape[1]) | padding[:, None, None, :])      # SDPA: True = take part
        may_attend = may_attend | padding[:, None, :, None]                 # padded queries: any key, no empty row
        context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=may_attend)
        out = _out_proj(case, _merge(context))
        return torch.where(padding[..., None], torch.zeros((), dtype=DTYPE), out)

    return _gradient(case, forward)


def _written_out(case: Case, hidden: torch.Tensor, fill: float, empty_rows: str, padded_rows: str,
                 after_softmax: torch.Tensor | None = None, renormalise: bool = False, scale: str = "sqrt_head_dim",
                 merge: str = "transpose", softmax_dim: int = -1):
    """The chapter's module written out with one choice per place a mask bug can sit: ``hidden`` (True = may not
    attend, broadcast to (b, heads, T, T)), the ``fill`` of hidden scores, what a row with nothing visible gives
    (``empty_rows``: "softmax" of the fill, or "zero" as SDPA's CPU kernel returns) and what happens to padded
    outputs (``padded_rows``: "zero", "keep", "multiply" by 0, which keeps a NaN, or "zero_context": the context
    zeroed before out_proj, which leaves out_proj's bias). ``after_softmax``: a mask (True = hide) applied to the
    weights after the softmax, the rows then divided by their sums when ``renormalise``. ``scale``, ``merge`` and
    ``softmax_dim``: the scaling, the merge of the heads and the softmax's dimension, as in
    :func:`grader.references.attention_with_bug` (a bug of the chapter's module beside a right mask). Returns
    [output] and, for a gradient case, the gradient too."""
    padding = torch.from_numpy(case.arrays["key_padding_mask"])
    head_dim = case.arrays["W_query"].shape[0] // case.params["num_heads"]

    def forward(x):
        queries, keys, values = (_split(t, head_dim) for t in _projections(case, x))
        d_out = head_dim * case.params["num_heads"]
        scores = queries @ keys.transpose(-2, -1) / references.divisor(scale, head_dim, d_out, x.shape[-1])
        weights = torch.softmax(scores.masked_fill(hidden, fill), dim=softmax_dim)
        if empty_rows == "zero":
            weights = weights.masked_fill(hidden.expand_as(weights).all(dim=-1, keepdim=True), 0.0)
        if after_softmax is not None:
            weights = weights.masked_fill(after_softmax, 0.0)
            if renormalise:
                weights = weights / weights.sum(dim=-1, keepdim=True)
        context = weights @ values
        context = _merge(context) if merge == "transpose" else context.reshape(x.shape[0], x.shape[1], d_out)
        if padded_rows == "zero_context":
            context = context.masked_fill(padding[..., None], 0.0)
        out = _out_proj(case, context)
        if padded_rows == "zero":
            out = out.masked_fill(padding[..., None], 0.0)
        elif padded_rows == "multiply":
            out = out * (~padding)[..., None]
        return out

    with torch.no_grad():
        produced = [forward(_t(case.arrays["x"])).numpy()]
    if case.params.get("grad_of"):
        produced.append(_gradient(case, forward).numpy())
    return produced


def _padding_hypotheses(case: Case) -> list[tuple[str, list[np.ndarray]]]:
    padding = torch.from_numpy(case.arrays["key_padding_mask"])
    causal = _causal(padding.shape[1])
    keys_padded, queries_padded = padding[:, None, None, :], padding[:, None, :, None]
    finite = torch.finfo(DTYPE).min
    forms = []
    for padded in ("zero", "keep"):
        for empty in ("softmax", "zero"):
            # True read as "may attend" in the padding mask only (a tokenizer's attention_mask passed as is) ...
            forms.append(("mask_polarity", causal | ~keys_padded, finite, empty, padded))
            # ... and the padding hiding the queries' rows instead of the keys' columns.
            forms.append(("padding_on_queries", causal | queries_padded, finite, empty, padded))
        # The whole combined mask handed to SDPA as it is: every query sees exactly what it should not.
        forms.append(("mask_polarity", ~(causal | keys_padded), finite, "zero", padded))
    for padded in ("zero", "keep", "multiply"):
        forms.append(("mask_neg_inf", causal | keys_padded, float("-inf"), "softmax", padded))
    # Right mask and fill, but the padded queries' outputs left as they come, or zeroed before out_proj.
    for empty in ("softmax", "zero"):
        forms.append(("padded_not_zeroed", causal | keys_padded, finite, empty, "keep"))
    forms.append(("padded_not_zeroed", causal | keys_padded, finite, "softmax", "zero_context"))
    details = {"mask_polarity": "True in key_padding_mask means padding (may not attend)",
               "padding_on_queries": "the mask must hide padded keys, (batch, 1, 1, T), not padded queries",
               "mask_neg_inf": "a query with nothing to see gets NaN; fill with torch.finfo(dtype).min and zero "
                               "the padded outputs",
               "padded_not_zeroed": "a padded position's output must be exactly 0",
               "mask_after_softmax": "the padding must hide the keys in the scores, before the softmax",
               "padding_renormalised": "a query with nothing to see gets NaN; hide padded keys in the scores "
                                       "with torch.finfo(dtype).min and zero the padded outputs"}
    found = [(code, _written_out(case, hidden, fill, empty, padded)) for code, hidden, fill, empty, padded in forms]
    # The chapter's module bugs beside a right mask: every scale variant, softmax over the queries, heads merged
    # without transposing back (grader/bugs.py: the same bugs as in ps1-ps4).
    heads = case.params["num_heads"]
    d_out, d_in = case.arrays["W_query"].shape
    for code, forms_of_bug in references.MODULE_BUGS.items():
        for form in forms_of_bug:
            if set(form) <= {"scale", "merge", "softmax_dim"} and form.get("scale") != "after_softmax" and \
                    references.applies(code, heads, d_out // heads, d_out, d_in, True, True):
                found.append((code, _written_out(case, causal | keys_padded, finite, "softmax", "zero", **form)))
                details.setdefault(code, "")
    # The padding applied to the weights after the causal softmax: as they are, or renormalised (0/0 where a row
    # keeps nothing).
    for padded in ("zero", "keep", "multiply"):
        found.append(("mask_after_softmax", _written_out(case, causal, finite, "softmax", padded,
                                                         after_softmax=keys_padded)))
        found.append(("padding_renormalised", _written_out(case, causal, finite, "softmax", padded,
                                                           after_softmax=keys_padded, renormalise=True)))
    # A form is evidence only where it shows: a -inf fill (or 0/0) that yields no NaN on this case's inputs is the
    # finite fill's output, and naming it would say NaN of an output that has none.
    shows = lambda code, outs: code not in ("mask_neg_inf", "padding_renormalised") or any(  # noqa: E731
        not np.isfinite(out).all() for out in outs)
    return [(named(code, details[code]), outs) for code, outs in found if shows(code, outs)]


def _scale_hypotheses(case: Case) -> list[tuple[str, list[np.ndarray]]]:
    """Grouped-query attention with each scale variant of the catalogue (K/V heads shared right)."""
    heads = case.params["num_heads"]
    d_out, d_in = case.arrays["W_query"].shape
    found = []
    for code, forms in references.MODULE_BUGS.items():
        for form in forms:
            if set(form) == {"scale"} and form["scale"] != "after_softmax" and \
                    references.applies(code, heads, d_out // heads, d_out, d_in, True, True):
                scale = 1.0 / references.divisor(form["scale"], d_out // heads, d_out, d_in)
                found.append((named(code), [gqa_forward(case, scale=scale).numpy()]))
    return found


# ------------------------------------------------------------------------------------- grouped-query attention
def gqa_forward(case: Case, share=None, scale: float | None = None) -> torch.Tensor:
    """Causal attention with K/V heads shared by SDPA itself (enable_gqa=True); ``share`` replaces that sharing
    with an explicit one (a bug's), (b, num_kv_heads, T, d) -> (b, num_heads, T, d)."""
    x = _t(case.arrays["x"])
    head_dim = case.arrays["W_query"].shape[0] // case.params["num_heads"]
    queries, keys, values = (_split(t, head_dim) for t in _projections(case, x))
    if share is None:
        context = F.scaled_dot_product_attention(queries, keys, values, is_causal=True, enable_gqa=True, scale=scale)
    else:
        context = F.scaled_dot_product_attention(queries, share(keys), share(values), is_causal=True, scale=scale)
    return _out_proj(case, _merge(context))


def _gqa_hypotheses(case: Case) -> list[tuple[str, list[np.ndarray]]]:
    group = case.params["num_heads"] // case.params["num_kv_heads"]
    tiled = gqa_forward(case, share=lambda t: t.repeat(1, group, 1, 1))
    return [(named("kv_repeat", "query head h uses K/V head h // group_size, the order of repeat_interleave"),
             [tiled.numpy()])]


# ------------------------------------------------------------------------------------------- entry points
def expected(case: Case) -> list[np.ndarray]:
    """The correct output(s) of a case of kind ``mha_padding`` or ``gqa``; KeyError for any other kind."""
    kind = case.params.get("reference")
    if kind == "mha_padding":
        found = [padded_forward(case).numpy()]
        if case.params.get("grad_of"):
            found.append(padded_gradient(case).numpy())
        return found
    if kind == "gqa":
        return [gqa_forward(case).numpy()]
    raise KeyError(f"no mask reference {kind!r} (task {case.task!r}, case {case.name!r})")


def hypotheses(case: Case) -> list[tuple[str, list[np.ndarray]]]:
    """(bug name, what that bug outputs) for the mask and K/V-sharing bugs a case can show; [] for other kinds."""
    kind = case.params.get("reference")
    if kind == "mha_padding":
        return _padding_hypotheses(case)
    if kind == "gqa":
        return _gqa_hypotheses(case) + _scale_hypotheses(case)
    return []


# ------------------------------------------------------------------------------------------ what a mask means
def hidden_under(convention: str, mask: np.ndarray) -> np.ndarray:
    """bool array, True where PyTorch's operator hides the key when handed ``mask``: ``sdpa`` or ``additive`` as
    ``F.scaled_dot_product_attention``'s attn_mask, ``mha`` as ``nn.MultiheadAttention``'s. Read from the attention
    weights with zero scores and identity values (a visible key gets a positive weight, a hidden one exactly 0);
    the mask's last axis is the keys, and every row must keep one key."""
    rows = np.asarray(mask).reshape(-1, mask.shape[-1])
    num_rows, num_keys = rows.shape
    queries, identity = torch.zeros(1, num_rows, num_keys, dtype=DTYPE), torch.eye(num_keys, dtype=DTYPE)[None]
    with torch.no_grad():
        if convention == "mha":
            mha = torch.nn.MultiheadAttention(num_keys, 1, bias=False, batch_first=True, dtype=DTYPE)
            mha.in_proj_weight.copy_(torch.eye(num_keys, dtype=DTYPE).repeat(3, 1))
            mha.out_proj.weight.copy_(identity[0])
            weights = mha(queries, identity, identity, attn_mask=torch.from_numpy(rows), need_weights=False)[0]
        else:
            attn_mask = torch.from_numpy(rows) if convention == "sdpa" else _t(rows)
            weights = F.scaled_dot_product_attention(queries, identity, identity, attn_mask=attn_mask)
    return (weights[0] == 0).numpy().reshape(mask.shape)
