"""Probe cases for masks and shared key/value heads: padded attention, mask conversion, grouped-query attention.

Generic builders, like those of :mod:`grader.verify.cases` (which they extend): an assignment's module composes
them and names the reference in ``params["reference"]`` (``mha_padding``, ``gqa``; see
:mod:`grader.verify.reference_masks`) or the check (``mask_conversion``, ``test_verdicts``; see
:mod:`grader.verify.checks_masks`). Every input comes from ``rng_for(seed, task, case)``.

Two things a module case can ask of the probe beyond ``module(x)`` (they travel in ``params`` and reach the
kernel through :meth:`grader.verify.cases.Case.kernel_spec`):

- ``forward_arrays``: {forward argument: array key}, e.g. ``{"key_padding_mask": "key_padding_mask"}``;
- ``grad_of``: an array key ``g``; the probe also reports d(sum(output * g))/dx as ``out1``. ``g`` is zero at
  padded positions (the loss reads real tokens only), so a NaN there comes from inside the module: the trace of
  a -inf fill on a fully masked row (chapter 11).
"""
from __future__ import annotations

import numpy as np

from grader.verify.cases import Case, _linear_weight, _normal, module_case, rng_for

# The three conventions a mask can be written in (chapter 11): SDPA's boolean (True = may attend),
# nn.MultiheadAttention's boolean (True = may not) and an additive float mask (0 = may attend, -inf or a very
# negative number = may not).
CONVENTIONS = ("sdpa", "mha", "additive")


def padding_mask(rng: np.random.Generator, batch: int, num_tokens: int, layout: str,
                 lengths: list[int] | None = None) -> np.ndarray:
    """(batch, num_tokens) bool, True = padding. ``layout``: "left" (padding first, as batched generation pads
    prompts), "right" (padding last) or "scattered" (anywhere, each sequence keeping at least one real token).
    ``lengths`` (real tokens per sequence) default to a draw; 0 is a sequence that is padding from start to end."""
    if layout == "scattered":
        mask = rng.random((batch, num_tokens)) < 0.4
        mask[np.arange(batch), rng.integers(0, num_tokens, batch)] = False
        return mask
    if lengths is None:
        lengths = [int(n) for n in rng.integers(1, num_tokens + 1, batch)]
    positions = np.arange(num_tokens)[None, :]
    real = np.asarray(lengths)[:, None]
    return positions < num_tokens - real if layout == "left" else positions >= real


def padded_module_case(task: str, name: str, callee: str, seed: int, *, batch: int, num_tokens: int, d_in: int,
                       d_out: int, num_heads: int, layout: str, lengths: list[int] | None = None,
                       qkv_bias: bool = False, gradient: bool = False) -> Case:
    """The chapter's causal MultiHeadAttention called as ``module(x, key_padding_mask=...)``; with ``gradient``
    the probe also reports the gradient of a loss over the real tokens with respect to x."""
    kwargs = {"d_in": d_in, "d_out": d_out, "context_length": num_tokens + 2, "dropout": 0.0,
              "num_heads": num_heads}
    case = module_case(task, name, callee, seed, batch=batch, num_tokens=num_tokens, d_in=d_in, d_out=d_out,
                       kwargs=kwargs, out_proj=True, qkv_bias=qkv_bias)
    rng = rng_for(seed, task, name + ".mask")
    case.arrays["key_padding_mask"] = padding_mask(rng, batch, num_tokens, layout, lengths)
    case.params.update(reference="mha_padding", forward_arrays={"key_padding_mask": "key_padding_mask"})
    if gradient:
        loss_weights = _normal(rng, batch, num_tokens, d_out)
        loss_weights[case.arrays["key_padding_mask"]] = 0.0
        case.arrays["loss_weights"] = loss_weights
        case.params["grad_of"] = "loss_weights"
    return case


def gqa_case(task: str, name: str, callee: str, seed: int, *, batch: int, num_tokens: int, d_in: int, d_out: int,
             num_heads: int, num_kv_heads: int, qkv_bias: bool = False) -> Case:
    """Causal grouped-query attention built as ``callee(d_in, d_out, context_length, dropout, num_heads,
    num_kv_heads)``: W_query (d_out, d_in), W_key and W_value (num_kv_heads * head_dim, d_in), out_proj."""
    rng = rng_for(seed, task, name)
    kv_width = num_kv_heads * (d_out // num_heads)
    arrays = {"x": _normal(rng, batch, num_tokens, d_in)}
    weights = []
    for attr, rows in (("W_query", d_out), ("W_key", kv_width), ("W_value", kv_width)):
        arrays[attr] = _linear_weight(rng, rows, d_in)
        if qkv_bias:
            arrays[attr + "_bias"] = _normal(rng, rows, scale=0.1)
        weights.append([-1, attr, attr, attr + "_bias" if qkv_bias else None])
    arrays["out_proj"] = _linear_weight(rng, d_out, d_out)
    arrays["out_proj_bias"] = _normal(rng, d_out, scale=0.1)
    weights.append([-1, "out_proj", "out_proj", "out_proj_bias"])
    kwargs = {"d_in": d_in, "d_out": d_out, "context_length": num_tokens + 2, "dropout": 0.0,
              "num_heads": num_heads, "num_kv_heads": num_kv_heads}
    if qkv_bias:
        kwargs["qkv_bias"] = True
    parameters = (d_in + qkv_bias) * (d_out + 2 * kv_width) + d_out * d_out + d_out
    params = {"input": "x", "reference": "gqa", "num_heads": num_heads, "num_kv_heads": num_kv_heads, "heads": 0,
              "causal": True, "parameters": parameters}
    return Case(task, name, "module", callee, kwargs=kwargs, arrays=arrays, weights=weights, params=params)


def conversion_case(task: str, name: str, callee: str, seed: int, *, shape: tuple[int, ...], source: str,
                    target: str, fill: str = "-inf") -> Case:
    """``callee(mask, source, target)`` on a seeded mask written in convention ``source``; every row keeps at least
    one key (a row with none means nothing to compare). An additive source mask hides with ``fill``: "-inf" or
    "finfo" (torch.finfo(float32).min)."""
    if source not in CONVENTIONS or target not in CONVENTIONS:
        raise ValueError(f"conventions are {CONVENTIONS}, not {source!r} -> {target!r}")
    rng = rng_for(seed, task, name)
    hidden = rng.random(shape) < 0.45
    rows = hidden.reshape(-1, shape[-1])
    rows[np.arange(rows.shape[0]), rng.integers(0, shape[-1], rows.shape[0])] = False
    if source == "sdpa":
        mask = ~hidden
    elif source == "mha":
        mask = hidden
    else:
        hide = -np.inf if fill == "-inf" else np.finfo(np.float32).min
        mask = np.where(hidden, hide, 0.0).astype(np.float32)
    return Case(task, name, "call", callee, args=[{"array": "mask"}, {"value": source}, {"value": target}],
                arrays={"mask": mask}, check="mask_conversion", params={"source": source, "target": target})


def verdicts_case(task: str, callee: str, source: str, verdicts: dict[str, bool], missed: str) -> Case:
    """The student's test function run on candidate classes (``source`` defines them): a class whose verdict is
    True must pass the test (no exception), one whose verdict is False must make it fail (any exception, as in
    pytest); ``missed`` is what the message says when the test passes a buggy class. Uses the kernel's "parity"
    driver, which records each call's return or exception."""
    return Case(task, "classes", "parity", callee, check="test_verdicts",
                kwargs={"source": source, "classes": list(verdicts)},
                params={"verdicts": dict(verdicts), "missed": missed})
