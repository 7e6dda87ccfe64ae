"""Checks that turn the symptoms of broken attention code into the name of the bug.

Students' visible tests and the hidden tests call these; each raises ``AssertionError`` whose message starts
with the bug's name (the strings in ``BUGS``), so that a failing test says *what* is wrong, not only *that*.
Every reference is one of PyTorch's own operators (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``
with the module's weights copied in); nothing here is a solution to an exercise. Everything runs on CUDA when
there is a GPU and on the CPU otherwise.

API
---
``device()``                                   the device checks run on (cuda if available, else cpu)
``BUGS``                                       bug code -> the phrase a failure message starts with
``expected_parameter_count(d_in, d_out, qkv_bias=False, out_proj=True)``
``call(fn, *args)``                             fn(*args), with errors whose cause is known renamed to the bug
``check_shape(actual, expected, num_heads=None, what="output")``
``check_parameter_count(module, d_in, d_out, num_heads=1, qkv_bias=False)``
``check_attention_weights(weights, causal=False, scores=None)``   rows sum to 1, nothing on a future key
``check_no_future_leakage(forward, x)``        changing a future token must not change an earlier position
``check_batch_independence(forward, x)``       each sequence's output depends on that sequence only
``check_scaled_dot_product(fn)``               fn(queries, keys, values) -> (context, weights) vs SDPA
``check_attention_module(module, d_in, num_heads=1, causal=True)``  module vs nn.MultiheadAttention
``check_d_in_not_d_out(make_module, d_in, d_out, **check_kwargs)``  the same check at d_in != d_out
``check_dropout(module, d_in, p)``             off in eval mode, on in training mode, on the weights
``check_mask_buffer(module, context_length, name="mask")``  a buffer: in state_dict, moves with .to()
                                               (leaves the module on the meta device: pass a fresh one)
``check_split_heads(split_heads)`` / ``check_combine_heads(combine_heads)``
``check_divisibility_error(make_module)``      ValueError naming num_heads when d_out % num_heads != 0
``check_wrapper(wrapper, d_in, d_out, num_heads)``   heads side by side, each a causal single head
``sdpa_reference(queries, keys, values, causal=False, scale=None)``  (context, weights) from PyTorch's SDPA
``mha_reference(x, qkv, out, num_heads, causal, ...)``  nn.MultiheadAttention computing with given weights
``softmax_wrong_dim_reference(x, qkv, out, num_heads, causal)``  the same module with softmax over dim=-2
``attention_variant_reference(x, qkv, out, num_heads, mask=, softmax_dim=, merge=)``  the module, one bug switched on

Module checks find the projections by the course's names: ``W_query``, ``W_key``, ``W_value`` (or one fused
``W_qkv``/``qkv`` with the query rows first) and ``out_proj`` (or ``proj``); they compare in eval mode, float32.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from grader import references  # the bugs' references, shared with grader.verify
from grader.bugs import BUGS  # the catalogue: one name per bug, shared with grader.verify


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _fail(code: str, detail: str) -> None:
    raise AssertionError(f"{BUGS[code]}: {detail}")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    # float32 on either device; loose enough for CUDA kernels, far tighter than any bug's effect. NaN matches NaN:
    # some bugs' references produce it where the student's code does.
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-3, equal_nan=True)


def _inputs(batch: int, num_tokens: int, width: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_tokens, width, generator=gen).to(device())


def call(forward: Callable, *args):
    """Run student code. An error is renamed to a bug only when what defines that bug is there: a view on a
    transposed tensor (``contiguous``), a shape error from a module whose weights have that bug's shape
    (``d_in_d_out``), a device error from a module holding its mask as a plain tensor (``mask_buffer``). Any other
    error is raised as it is."""
    try:
        return forward(*args)
    except RuntimeError as err:
        text = str(err)
        first = text.splitlines()[0] if text else type(err).__name__
        if "view size is not compatible" in text:
            _fail("contiguous", f"view() on a transposed tensor raised: {first}")
        shaped = "shapes cannot be multiplied" in text or "size of tensor a" in text or "must match the size" in text
        wrong = _wrong_width(forward, args[0].shape[-1]) if shaped and isinstance(forward, nn.Module) and args \
            else ""
        if wrong:
            _fail(_width_bug(wrong), f"{wrong}, and the forward pass failed on a shape: {first}")
        used = _transposed_use(forward, args[0], first) if shaped and isinstance(forward, nn.Module) and args \
            and isinstance(args[0], torch.Tensor) else ""
        if used:
            _fail("d_in_d_out", f"{used} is used transposed (x @ {used}.weight), which fails with the very same "
                                f"error: {first}")
        if ("same device" in text or "not on the expected device" in text) and isinstance(forward, nn.Module) \
                and _plain_mask(forward):
            _fail("mask_buffer", f"'{_plain_mask(forward)}' is a plain tensor attribute and stayed behind when the "
                                 f"module moved to another device (register it with self.register_buffer): {first}")
        raise


def _wrong_width(module: nn.Module, d_in: int) -> str:
    """What is wrong with the shape of the module's Q/K/V or out_proj layer (nn.Linear), when it is the
    ``d_in_d_out`` bug's (a layer that takes d_in where d_out belongs, or the reverse), else ""."""
    layers = {n: getattr(module, n) for n in ("W_query", "W_key", "W_value", "out_proj")
              if isinstance(getattr(module, n, None), nn.Linear)}
    query = layers.get("W_query")
    if query is None or query.in_features != d_in:
        return f"W_query takes {query.in_features} features where the input has {d_in}" if query is not None else ""
    d_out = query.out_features
    for name, layer in layers.items():
        wanted = (d_in, d_out) if name != "out_proj" else (d_out, d_out)
        if (layer.in_features, layer.out_features) != wanted:
            # (out_proj built with d_in is its own bug; the text's last word says so, see _width_bug)
            own = name == "out_proj" and (layer.in_features, layer.out_features) == (d_in, d_out)
            return f"{name} is nn.Linear({layer.in_features}, {layer.out_features}) where nn.Linear{wanted} " \
                   f"belongs" + (": built with d_in" if own else "")
    return ""


def _transposed_use(module: nn.Module, x: torch.Tensor, first: str) -> str:
    """The name of a Q/K/V nn.Linear whose weight, multiplied as ``x @ layer.weight`` (the weight used transposed:
    nn.Linear stores it (out_features, in_features)), raises exactly the error ``first`` the forward pass raised;
    else "". The bug's own computation reproduces the error, so it may be named (``d_in_d_out``)."""
    for name in ("W_query", "W_key", "W_value"):
        layer = getattr(module, name, None)
        if not isinstance(layer, nn.Linear):
            continue
        try:
            with torch.no_grad():
                x @ layer.weight
        except RuntimeError as err:
            if str(err).splitlines()[0] == first:
                return name
    return ""


def _width_bug(wrong: str) -> str:
    """The catalogue code of what _wrong_width found: out_proj taking d_in (``out_proj_d_in``), else d_in_d_out."""
    return "out_proj_d_in" if wrong.startswith("out_proj is") and wrong.endswith("built with d_in") else "d_in_d_out"


def _plain_mask(module: nn.Module) -> str:
    """The name of a 0/1 (or bool) square tensor the module (or a sub-module) holds as a plain attribute, not a
    buffer, else "" (only such a tensor is the ``mask_buffer`` bug; another tensor left behind is not)."""
    for owner in module.modules():
        for name, value in vars(owner).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and value.dim() == 2 \
                    and value.shape[0] == value.shape[1] and bool(((value == 0) | (value == 1)).all()):
                return name
    return ""


# ---------------------------------------------------------------------------------------------- shapes, counts
def expected_parameter_count(d_in: int, d_out: int, qkv_bias: bool = False, out_proj: bool = True) -> int:
    """Q, K, V projections d_in -> d_out (bias optional) plus an output projection d_out -> d_out with bias."""
    qkv = 3 * (d_in * d_out + (d_out if qkv_bias else 0))
    return qkv + (d_out * d_out + d_out if out_proj else 0)


def check_shape(actual: torch.Tensor, expected: tuple, num_heads: int | None = None, what: str = "output") -> None:
    expected = tuple(expected)
    shape = tuple(actual.shape)
    if shape == expected:
        return
    if num_heads and num_heads > 1 and shape[:-1] == expected[:-1] and shape[-1] == num_heads * expected[-1]:
        _fail("width", f"{what} is {num_heads} x {expected[-1]} = {shape[-1]} wide, expected {expected[-1]} "
                       f"(each head must get d_out // num_heads, not d_out)")
    raise AssertionError(f"{what} has shape {shape}, expected {expected}")


def check_parameter_count(module: nn.Module, d_in: int, d_out: int, num_heads: int = 1,
                          qkv_bias: bool = False) -> None:
    count = sum(p.numel() for p in module.parameters())
    expected = expected_parameter_count(d_in, d_out, qkv_bias)
    if count == expected:
        return
    qkv_only = expected_parameter_count(d_in, d_out, qkv_bias, out_proj=False)
    if count == qkv_only:
        _fail("no_out_proj", f"{count:,} parameters = the Q, K, V projections only, expected {expected:,}")
    if count == qkv_only + d_in * d_out + d_out and d_in != d_out:
        _fail("d_in_d_out", f"{count:,} parameters: the output projection looks like nn.Linear(d_in, d_out)")
    if num_heads > 1 and count >= num_heads * qkv_only:
        _fail("width", f"{count:,} parameters, at least {num_heads} x the {qkv_only:,} of the Q, K, V projections")
    raise AssertionError(f"{count:,} parameters, expected {expected:,} for d_in={d_in}, d_out={d_out}: not one of "
                         f"the known bugs (no out_proj, out_proj built with d_in, d_out not divided) gives that count")


# --------------------------------------------------------------------------------------- attention weights
def check_attention_weights(weights: torch.Tensor, causal: bool = False, scores: torch.Tensor | None = None) -> None:
    """Weights (..., T_q, T_k): finite, each row sums to 1, zero on future keys when causal.

    Only these properties are checked (whether the weights are the right ones is for the checks that compare with
    PyTorch). ``scores`` (..., T_q, T_k): the scores the weights were computed from (after any scaling); with
    them, weights that break a property are named only when a known bug's reference computed from those scores
    reproduces them: the mask missing (``future``), the future weights zeroed after the softmax
    (``mask_after_softmax``), a mask that hides each token from itself (``mask_diagonal``), softmax over the
    queries (``softmax_dim``). Otherwise, and always without scores, the AssertionError says what is wrong without
    naming a bug. Raises AssertionError.
    """
    weights = weights.detach().float()
    problem = _weights_problem(weights, causal)
    if not problem:
        return
    if scores is not None:
        scores = scores.detach().float().to(weights.device)
        future = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).triu(1)
        masked = scores.masked_fill(future, float("-inf")) if causal else scores
        for code, produced, what in _weight_variants(scores, masked, future, causal):
            if weights.shape == produced.shape and torch.allclose(weights, produced, atol=1e-4, rtol=1e-3,
                                                                  equal_nan=True):
                _fail(code, f"the weights equal {what}")
        _fail("mismatch", f"not one of the known bugs: {problem}, and no known bug reproduces the weights from the "
                          f"scores")
    _fail("mismatch", f"{problem} (no bug is named without the scores the weights came from: "
                      f"check_attention_weights(weights, causal, scores=...))")


def _weights_problem(weights: torch.Tensor, causal: bool) -> str:
    """What is wrong with attention weights on their own (not finite, weight on the future, rows not summing to
    1), or "" when nothing is."""
    if not torch.isfinite(weights).all():
        first_row_only = weights.shape[-2] > 1 and bool(torch.isnan(weights[..., 0, :]).all()) \
            and bool(torch.isfinite(weights[..., 1:, :]).all())
        return "the first query's row is NaN" if first_row_only else "the weights contain NaN or inf"
    if causal:
        future = torch.ones(weights.shape[-2:], dtype=torch.bool, device=weights.device).triu(1)
        if weights[..., future].numel() and weights[..., future].abs().max() > 1e-6:
            return f"a query puts weight {weights[..., future].abs().max():.3g} on a future key"
    rows = weights.sum(-1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        return f"the attention rows sum to {rows.min():.3g}..{rows.max():.3g}, not 1"
    return ""


def _weight_variants(scores, masked, future, causal):
    """(bug code, the weights that bug computes from the scores, what it computes) for the known weight bugs."""
    yield "softmax_dim", torch.softmax(masked, dim=-2), "softmax over the queries (dim=-2): use softmax(dim=-1)"
    if causal:
        yield "future", torch.softmax(scores, dim=-1), "softmax of the scores without the causal mask"
        yield "mask_after_softmax", torch.softmax(scores, dim=-1).masked_fill(future, 0.0), \
            "softmax of the unmasked scores with the future zeroed afterwards (rows no longer sum to 1): mask the " \
            "scores with -inf before the softmax"
        diagonal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).triu(0)
        yield "mask_diagonal", torch.softmax(scores.masked_fill(diagonal, float("-inf")), dim=-1), \
            "softmax with each token hidden from itself too (triu with diagonal=0): the first row is NaN"


def check_finite_output(output: torch.Tensor, diagonal_reference=None) -> None:
    """An attention output (b, T, d) must be finite.

    ``diagonal_reference``: the outputs of known bugs computed with the module's weights, as [(bug code, output)]
    (or one tensor: the module with a mask that also hides each token from itself, ``mask_diagonal``); a bug is
    named only when its output reproduces this one, NaN where it has NaN. Raises AssertionError, without a bug's
    name otherwise.
    """
    output = output.detach()
    if torch.isfinite(output).all():
        return
    candidates = diagonal_reference if isinstance(diagonal_reference, list) else \
        [("mask_diagonal", diagonal_reference)] if diagonal_reference is not None else []
    for code, produced in candidates:
        if produced is not None and _close(output, produced):
            _fail(code, _NONFINITE_WORDS.get(code, "the module computed with your weights and this bug gives the "
                                                   "same NaN"))
    _fail("mismatch", f"not one of the known bugs ({len(candidates)} tried): the output contains NaN or inf, and no "
                      f"bug's reference reproduces it")


_NONFINITE_WORDS = {
    "mask_diagonal": "the first token's output is NaN: its query has no key left to attend to, and the module "
                     "computed with a mask that hides each token from itself gives the same",
    "mask_polarity": "the last token's output is NaN: the mask hides what it should show (True read as 'may "
                     "attend'), so the last query has no key left, and the module computed with the flipped mask "
                     "gives the same"}


def _diagonal_reference(forward: Callable, x: torch.Tensor) -> list:
    """[(bug code, output)] of the bugs that make a causal module's output NaN (a mask that hides each token from
    itself, a flipped mask in masked_fill), computed with forward's own weights on x ([] without them)."""
    references_ = _leak_references(forward, {"mask_diagonal": {"mask": "diagonal"}})
    references_ += _leak_references(forward, {"mask_polarity": {"mask": "polarity_fill"}})
    return [(code, run(x)) for code, run in references_]


def check_no_future_leakage(forward: Callable, x: torch.Tensor) -> None:
    """forward(x) -> (b, T, d), x (b, T, d_in). Changing the last token may change only the last position.

    Also runs forward twice on x: two different outputs are dropout left on (``dropout_eval``). When earlier
    positions move, the bug is named only if its reference, computed with the module's own weights (a module with
    the course's projection names, see ``_projections``), reproduces both outputs: the mask missing (``future``),
    the mask applied after the softmax (``mask_after_softmax``), softmax over the queries (``softmax_dim``), heads
    merged with view but no transpose back (``view_no_transpose``). Otherwise the AssertionError says that no known
    bug reproduces it, and which positions moved. Raises AssertionError (see above), or what ``forward`` raises.
    """
    num_tokens = x.shape[-2]
    with torch.no_grad():
        before = call(forward, x)
        again = call(forward, x)
        check_finite_output(before, _diagonal_reference(forward, x))
        if not _close(before, again):
            torch.manual_seed(0)
            replayed = _dropout_replays(forward, x, call(forward, x))
            if replayed:
                _fail("dropout_eval", f"the same input gave two different outputs, and the output equals the module "
                                      f"computed with your weights and dropout p={replayed} on the weights, drawn "
                                      f"from the same random stream (nn.Dropout follows .eval(); F.dropout needs "
                                      f"training=self.training)")
            _fail("mismatch", f"not one of the known bugs: the same input gave two different outputs, and no "
                              f"dropout replayed with the same random stream reproduces them: "
                              f"{references.first_difference(again, before)}")
        changed_x = x.clone()
        changed_x[..., -1, :] = changed_x[..., -1, :] * -3.0 + 1.0
        after = call(forward, changed_x)
    moved = [t for t in range(num_tokens - 1) if not _close(before[..., t, :], after[..., t, :])]
    if not moved:
        return
    for code, reference in _leak_references(forward):
        if _close(before, reference(x)) and _close(after, reference(changed_x)):
            _fail(code, f"changing the last token changed earlier positions {moved}, and the outputs equal the "
                        f"module computed with your weights and {_LEAKS[code]}")
    _fail("mismatch", f"not one of the known bugs: changing the last token changed earlier positions {moved} "
                      f"(a causal module may change only the last), and no bug this check knows "
                      f"({', '.join(_LEAKS)}) reproduces the output")


# The bugs check_no_future_leakage can reproduce, and what each one's reference computes.
_LEAKS = {"future": "no causal mask",
          "mask_after_softmax": "the future weights zeroed after the softmax (rows no longer sum to 1): mask the "
                                "scores with -inf before it",
          "softmax_dim": "softmax(dim=-2): normalise each query's scores over the keys, softmax(dim=-1)",
          "view_no_transpose": "the heads merged by view without transposing back: transpose(1, 2) first",
          "mask_polarity": "the course's mask (True = future) passed to F.scaled_dot_product_attention, which "
                           "reads True as 'may attend': pass ~mask, or is_causal=True",
          "mask_additive": "the 0/1 mask added to the scores: masked_fill(mask, -inf) hides the future"}


def _dropout_replays(forward: Callable, x: torch.Tensor, output: torch.Tensor) -> float:
    """The dropout probability p (that of the module's nn.Dropout, else 0.5) when ``output``, computed right after
    torch.manual_seed(0), equals the module computed with its own weights and dropout p on the weights drawn
    after the same seed; else 0.0."""
    if not isinstance(forward, nn.Module):
        return 0.0
    p = next((m.p for m in forward.modules() if isinstance(m, nn.Dropout) and m.p > 0), 0.5)
    num_heads = int(getattr(forward, "num_heads", 1) or 1)
    try:
        layouts = _projection_layouts(forward, x.shape[-1])
    except AssertionError:
        return 0.0
    for qkv, out in layouts:
        try:
            produced = references.attention_with_bug(x, qkv, out, num_heads, dropout=p, seed=0)
        except RuntimeError:
            continue
        if _close(output, produced):
            return p
    return 0.0


def _leak_references(forward: Callable, changes: dict | None = None) -> list:
    """[(bug code, x -> that bug's output)] computed with ``forward``'s own weights, under each layout correct code
    gives them (``changes``: {code: keyword arguments of attention_variant_reference}, by default the leaks
    check_no_future_leakage knows); [] when forward is not a module with the course's projection names (nothing
    can then be reproduced)."""
    if not isinstance(forward, nn.Module):
        return []
    try:
        layouts = _projection_layouts(forward)
    except AssertionError:
        return []
    num_heads = int(getattr(forward, "num_heads", 1) or 1)
    variants = [("future", {"mask": "none"}), ("mask_after_softmax", {"mask": "after"}),
                ("softmax_dim", {"softmax_dim": -2}), ("mask_polarity", {"mask": "polarity"}),
                ("mask_polarity", {"mask": "polarity_fill"}), ("mask_additive", {"mask": "additive"}),
                ("mask_additive", {"mask": "additive_unscaled"})]
    if num_heads > 1:
        variants.append(("view_no_transpose", {"merge": "view"}))
    if changes is not None:
        variants = list(changes.items())

    def reference(qkv, out, change):
        def run(inputs):
            try:
                return attention_variant_reference(inputs, qkv, out, num_heads, **change)
            except Exception:  # noqa: BLE001 - a reference that cannot run reproduces nothing
                return torch.full((1,), float("nan"), device=inputs.device)
        return run
    return [(code, reference(qkv, out, change)) for qkv, out in layouts for code, change in variants]


def check_batch_independence(forward: Callable, x: torch.Tensor) -> None:
    """forward(x) -> (b, T, d), x (b, T, d_in): each sequence alone must give what it gives inside the batch (every
    one is tried: in a causal module laid end to end only the later sequences see the others).

    When it does not, ``batch`` is named only if the module (with the course's projection names) computed on the
    batch laid end to end as one sequence, causal or not, reproduces the batch's output; otherwise the
    AssertionError says no known bug reproduces it. Raises AssertionError, or what ``forward`` raises.
    """
    with torch.no_grad():
        together = call(forward, x)
        moved = [b for b in range(x.shape[0]) if not _close(together[b:b + 1], call(forward, x[b:b + 1]))]
    if not moved:
        return
    batch, num_tokens, width = x.shape
    for code, reference in _leak_references(forward, {"flat_causal": {}, "flat": {"mask": "none"}}):
        produced = reference(x.reshape(1, batch * num_tokens, width))
        if produced.numel() == together.numel() and _close(together, produced.reshape(together.shape)):
            _fail("batch", f"sequence(s) {moved} give a different output alone than inside the batch, and the "
                           f"batch's output equals the module computed on the batch laid end to end as one sequence")
    _fail("mismatch", f"not one of the known bugs: sequence(s) {moved} give a different output alone than inside "
                      f"the batch (an operation over dim 0?), and the module computed on the batch laid end to end "
                      f"as one sequence does not reproduce it")


# -------------------------------------------------------------------------------------------- references
def sdpa_reference(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, causal: bool = False,
                   scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, weights) from F.scaled_dot_product_attention; the weights come from attending to identity values."""
    context = F.scaled_dot_product_attention(queries, keys, values, is_causal=causal, scale=scale)
    eye = torch.eye(keys.shape[-2], dtype=keys.dtype, device=keys.device)
    eye = eye.expand(*keys.shape[:-1], keys.shape[-2]).contiguous()
    weights = F.scaled_dot_product_attention(queries, keys, eye, is_causal=causal, scale=scale)
    return context, weights


def check_scaled_dot_product(fn: Callable, causal: bool = False) -> None:
    """fn(queries, keys, values) -> (context, weights) must equal softmax(q k^T / sqrt(d_k)) v."""
    d_k = 8
    queries, keys = _inputs(2, 5, d_k, seed=1), _inputs(2, 6, d_k, seed=2)
    values = _inputs(2, 6, 3, seed=3)
    result = call(fn, queries, keys, values)
    assert isinstance(result, tuple) and len(result) == 2, "return a tuple (context, weights)"
    context, weights = result
    check_shape(weights, (2, 5, 6), what="weights")
    check_shape(context, (2, 5, 3), what="context")
    ref_context, ref_weights = sdpa_reference(queries, keys, values)
    if _close(context, ref_context) and _close(weights, ref_weights):
        return
    # Differential diagnosis: a bug is named when its own computation reproduces the weights.
    for code, scale, what in (("scale_multiplied", math.sqrt(d_k), "q k^T * sqrt(d_k)"),
                              ("scale_missing", 1.0, "q k^T without dividing by sqrt(d_k)")):
        if _close(weights, sdpa_reference(queries, keys, values, scale=scale)[1]):
            _fail(code, f"your weights equal softmax({what}); the right weights are softmax(q k^T / sqrt(d_k))")
    if _close(weights, sdpa_reference(queries, keys, values, scale=1.0)[1] / math.sqrt(d_k)):
        _fail("scale_after_softmax", "the weights equal softmax(q k^T) / sqrt(d_k): scale the scores, then softmax")
    check_attention_weights(weights)
    if _close(weights, ref_weights):
        _fail("mismatch", "the weights are right but context != weights @ values")
    _fail("mismatch", f"not one of the known bugs (scaling, softmax dimension): the weights differ from "
                      f"F.scaled_dot_product_attention's, {references.first_difference(weights, ref_weights)}")


def _linear(layer) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(layer, nn.Linear):
        return layer.weight, layer.bias
    raise AssertionError(f"expected an nn.Linear, found {type(layer).__name__}")


def _projection_layouts(module: nn.Module, d_in: int | None = None) -> list:
    """[(qkv, out)]: the module's query, key and value projections [(weight (d_out, d_in), bias)] * 3 and its
    output projection (weight, bias) or None, under each layout correct code may give its weights; a module is
    judged by the layout under which it is correct (the course's comes first).

    Q, K, V as ``W_query``, ``W_key``, ``W_value``: nn.Linear, or plain tensors used as x @ W (d_in, d_out) or as
    F.linear(x, W) (d_out, d_in) (their shape decides when d_in != d_out); or one fused ``W_qkv``/``qkv``
    (nn.Linear(d_in, 3 * d_out)) with all query rows first or ``[q_h | k_h | v_h]`` for each head. The output
    projection: ``out_proj`` (or ``proj``). ``d_in``: keep the layouts whose weights take d_in features (all
    when none does). Raises AssertionError when no projections are found.
    """
    found = _all_layouts(module)
    fitting = [layout for layout in found if d_in is None or all(w.shape[-1] == d_in for w, _ in layout[0])]
    return fitting or found


def _all_layouts(module: nn.Module) -> list:
    out = next((getattr(module, n) for n in ("out_proj", "proj") if isinstance(getattr(module, n, None),
                                                                             nn.Linear)), None)
    out = _linear(out) if out is not None else None
    names = ("W_query", "W_key", "W_value")
    if all(hasattr(module, n) for n in names):
        layers = [getattr(module, n) for n in names]
        if not all(isinstance(layer, torch.Tensor) for layer in layers):
            return [([_linear(layer) for layer in layers], out)]
        biases = [getattr(module, n + "_bias", None) for n in names]       # beside a plain tensor, if any
        biases = [b if isinstance(b, torch.Tensor) else None for b in biases]
        return [([(w if as_linear else w.t(), b) for w, b in zip(layers, biases)], out)
                for as_linear in (False, True)]          # x @ W, then F.linear(x, W)
    fused = next((getattr(module, n) for n in ("W_qkv", "qkv") if hasattr(module, n)), None)
    if fused is None:
        raise AssertionError("no projections found: name them W_query, W_key, W_value (or one fused W_qkv)")
    weight, bias = _linear(fused)
    found = [(list(zip(weight.chunk(3), bias.chunk(3) if bias is not None else (None,) * 3)), out)]
    num_heads = int(getattr(module, "num_heads", 1) or 1)
    if num_heads > 1 and weight.shape[0] % (3 * num_heads) == 0:
        head_dim = weight.shape[0] // (3 * num_heads)

        def rows(t: torch.Tensor, part: int) -> torch.Tensor:   # [q_h | k_h | v_h] per head -> part's rows
            return t.reshape(num_heads, 3, head_dim, *t.shape[1:])[:, part].reshape(num_heads * head_dim,
                                                                                  *t.shape[1:])
        found.append(([(rows(weight, p), rows(bias, p) if bias is not None else None) for p in range(3)], out))
    return found


def _projections(module: nn.Module):
    """The first of :func:`_projection_layouts` (the course's layout)."""
    return _projection_layouts(module)[0]


@torch.no_grad()
def mha_reference(x: torch.Tensor, qkv, out, num_heads: int, causal: bool, query_scale: float = 1.0,
                  transpose: tuple[bool, bool, bool] = (False, False, False)) -> torch.Tensor:
    """nn.MultiheadAttention computing with the given weights: the projections are applied with F.linear and
    fed through identity in-projections (so d_in may differ from d_out); ``out=None`` means identity."""
    projected = []
    for (weight, bias), flip in zip(qkv, transpose):
        projected.append(F.linear(x, weight.t() if flip else weight, bias))
    queries, keys, values = projected
    queries = queries * query_scale
    d_out = queries.shape[-1]
    ref = nn.MultiheadAttention(d_out, num_heads, bias=True, batch_first=True, device=x.device, dtype=x.dtype)
    eye = torch.eye(d_out, device=x.device, dtype=x.dtype)
    ref.in_proj_weight.copy_(torch.cat([eye, eye, eye]))
    ref.in_proj_bias.zero_()
    ref.out_proj.weight.copy_(eye if out is None else out[0])
    ref.out_proj.bias.copy_(torch.zeros(d_out) if out is None or out[1] is None else out[1])
    num_tokens = x.shape[-2]
    mask = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=x.device).triu(1) if causal else None
    context, _ = ref(queries, keys, values, attn_mask=mask, need_weights=False)
    return context


@torch.no_grad()
def attention_variant_reference(x: torch.Tensor, qkv, out, num_heads: int, mask: str = "before",
                                softmax_dim: int = -1, merge: str = "transpose", **switches) -> torch.Tensor:
    """The chapter's causal module with the given weights and one bug switched on (``mask``: "before" right,
    "none", "after", "diagonal", "polarity", "additive"; ``softmax_dim``; ``merge``: "transpose" right or "view";
    further switches of :func:`grader.references.attention_with_bug`). x (b, T, d_in) -> (b, T, d_out); raises
    RuntimeError when the weights do not fit x."""
    return references.attention_with_bug(x, qkv, out, num_heads, mask=mask, softmax_dim=softmax_dim, merge=merge,
                                         **switches)


@torch.no_grad()
def softmax_wrong_dim_reference(x: torch.Tensor, qkv, out, num_heads: int, causal: bool = True) -> torch.Tensor:
    """The chapter's module with one bug: softmax over the queries (dim=-2) instead of the keys (dim=-1)."""
    return attention_variant_reference(x, qkv, out, num_heads, mask="before" if causal else "none", softmax_dim=-2)


def _named_variants(x, qkv, out, num_heads: int, causal: bool):
    """(bug code, that bug's output) for each catalogued bug of the chapter's module that can show at these sizes,
    computed with the module's own weights (grader.references)."""
    d_out, d_in = qkv[0][0].shape[0], x.shape[-1]
    for code, forms in references.MODULE_BUGS.items():
        if references.applies(code, num_heads, d_out // num_heads, d_out, d_in, causal, out is not None):
            for change in forms:
                try:
                    yield code, references.attention_with_bug(x, qkv, out, num_heads, causal=causal, **change)
                except RuntimeError:
                    continue
    if all(w.shape[0] == w.shape[1] for w, _ in qkv):
        for flips in ((True, True, True), (True, False, False), (False, True, False), (False, False, True)):
            yield "d_in_d_out", mha_reference(x, qkv, out, num_heads, causal, transpose=flips)
    if out is not None and out[0].shape[0] == out[0].shape[1]:
        yield "d_in_d_out", mha_reference(x, qkv, (out[0].t(), out[1]), num_heads, causal)


def check_attention_module(module: nn.Module, d_in: int, num_heads: int = 1, causal: bool = True,
                           batch: int = 2, num_tokens: int = 6) -> None:
    """The module in eval mode equals nn.MultiheadAttention holding the module's own weights, under one of the
    layouts correct code gives them (see ``_projection_layouts``). Otherwise a bug is named only when its
    reference (grader.references, the module's weights) reproduces the output; else the AssertionError says it
    is not one of the known bugs and where the output first differs. Raises AssertionError."""
    module = module.to(device()).eval()
    x = _inputs(batch, num_tokens, d_in, seed=4)
    layouts = _projection_layouts(module, d_in)
    with torch.no_grad():
        actual = call(module, x)
    d_out = layouts[0][0][0][0].shape[0]
    check_shape(actual, (batch, num_tokens, d_out), num_heads)
    expected = None
    for qkv, out in layouts:
        try:
            wanted = mha_reference(x, qkv, out, num_heads, causal)
        except RuntimeError:
            continue
        if _close(actual, wanted):
            return
        expected = wanted if expected is None else expected
    qkv, out = layouts[0]
    tried, found = set(), []
    for code, produced in _named_variants(x, qkv, out, num_heads, causal):
        tried.add(code)
        if _close(actual, produced) and code not in found:
            found.append(code)
    if len(found) == 1:
        _fail(found[0], f"your output equals the module computed with your weights and exactly this bug "
                        f"({_VARIANT_WORDS.get(found[0], BUGS[found[0]])})")
    if found:     # the same numbers at these sizes (sqrt(d_in) = sqrt(d_out) when d_in == d_out): each fits
        raise AssertionError(" or ".join(BUGS[code] for code in found) + ": your output equals the module computed "
                             "with your weights and each of these bugs (this check's sizes cannot tell them apart)")
    check_finite_output(actual, _diagonal_reference(module, x) if causal else None)
    if causal:
        check_no_future_leakage(module, x)
    where = references.first_difference(actual, expected) if expected is not None else \
        "the module's weights do not fit the reference"
    _fail("mismatch", f"not one of the known bugs ({len(tried)} tried): the output differs from "
                      f"nn.MultiheadAttention with your weights copied in (num_heads={num_heads}, causal={causal}), "
                      f"{where}")


# What each variant computes, in a message's words.
_VARIANT_WORDS = {
    "scale_missing": "scores q k^T not divided by sqrt(head_dim)",
    "scale_multiplied": "scores multiplied by sqrt(head_dim)",
    "scale_d_k": "scores divided by head_dim instead of sqrt(head_dim)",
    "scale_width": "scores divided by sqrt(d_out)",
    "scale_d_in": "scores divided by sqrt(d_in)",
    "scale_after_softmax": "the weights divided by sqrt(head_dim) after the softmax",
    "softmax_dim": "softmax(dim=-2): normalise each query's scores over the keys, softmax(dim=-1)",
    "mask_polarity": "the course's mask (True = future) passed to F.scaled_dot_product_attention, which reads "
                     "True as 'may attend': pass ~mask, or is_causal=True",
    "mask_additive": "the 0/1 mask added to the scores: masked_fill(mask, -inf) hides the future",
    "view_no_transpose": "the heads merged by view without transposing back: transpose(1, 2) first",
    "out_proj_unused": "out_proj never applied",
}


def check_d_in_not_d_out(make_module: Callable[[int, int], nn.Module], d_in: int, d_out: int,
                         **check_kwargs) -> None:
    """Bugs that hide when d_in == d_out: run the same reference check with d_in != d_out."""
    assert d_in != d_out, "pick different sizes"
    # First at d_in == d_out: a failure there is some other bug and keeps its own name.
    check_attention_module(make_module(d_out, d_out), d_out, **check_kwargs)
    try:
        module = make_module(d_in, d_out)
        check_attention_module(module, d_in, **check_kwargs)
    except AssertionError as err:
        if not str(err).startswith(BUGS["mismatch"]):
            raise      # a known bug whose reference reproduces the output at these sizes: its own name
        # Right at d_in == d_out, wrong at d_in != d_out, and no known bug reproduces it: say what is known.
        raise AssertionError(f"{BUGS['mismatch']}: right at d_in == d_out = {d_out}, but not at d_in={d_in}, and "
                             f"no bug this course knows reproduces it: check each place that uses d_in or d_out "
                             f"({err})") from None
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        wrong = _wrong_width(module, d_in)
        if wrong:
            _fail(_width_bug(wrong), f"right at d_in == d_out, but at d_in={d_in}, d_out={d_out} the module failed "
                                     f"({wrong}): {first}")
        raise AssertionError(f"{BUGS['mismatch']}: right at d_in == d_out = {d_out}, but at d_in={d_in} the module "
                             f"failed, and its layers have the right shapes, so it is not one of the known bugs "
                             f"(a step that mixes d_in and d_out widths, such as x + ...?): {first}") from None


# ------------------------------------------------------------------------------------------------ dropout
def check_dropout(module: nn.Module, d_in: int, p: float = 0.5, num_tokens: int = 6, batch: int = 8) -> None:
    """Built with dropout=p (causal): deterministic in eval mode; in training mode it drops attention *weights*.

    Dropout bugs are named by replay: the module is called right after torch.manual_seed(0), and each placement's
    reference (grader.references, the module's own weights, dropout on the scores, the weights, the context or the
    output) is computed right after the same seed on the same device, so it draws the same dropout mask. A
    placement other than the weights is named only when its replay reproduces the output; a module whose random
    draws are made differently (a loop over heads) is judged by what any draw shows: position 0 attends to one key
    with weight 1, so dropout on the weights must change it. Raises AssertionError.
    """
    module = module.to(device())
    x = _inputs(batch, num_tokens, d_in, seed=5)
    try:
        layouts = _projection_layouts(module, d_in)
    except AssertionError:
        layouts = []
    num_heads = int(getattr(module, "num_heads", 1) or 1)

    def replayed(output):
        """The placements whose replay reproduces ``output``, the right one ("") first when it does."""
        found = []
        # Dropout at each place, then each bug of the module with dropout where it belongs (its dropout is right).
        hypotheses = list(references.DROPOUT_PLACEMENTS) + [
            (code, dict(form)) for code, forms in references.MODULE_BUGS.items() for form in forms
            if "mask" in form or "merge" in form]
        for qkv, out in layouts:
            for code, place in hypotheses:
                switches = place if isinstance(place, dict) else {"dropout_on": place}
                try:
                    produced = references.attention_with_bug(x, qkv, out, num_heads, dropout=p, seed=0, **switches)
                except RuntimeError:
                    continue
                if _close(output, produced) and code not in found:
                    found.append(code)
        return sorted(found, key=bool)

    with torch.no_grad():
        module.eval()
        torch.manual_seed(0)
        first, second = call(module, x), call(module, x)
        if not _close(first, second):
            if replayed(first):
                _fail("dropout_eval", "two forward passes in eval() mode differ, and the first equals the module "
                                      "computed with dropout on (nn.Dropout follows .eval(); F.dropout needs "
                                      "training=self.training)")
            raise AssertionError(f"{BUGS['mismatch']}: two forward passes in eval() mode differ, and no dropout "
                                 f"placement replayed with the same random stream reproduces them (not one of the "
                                 f"known bugs): {references.first_difference(second, first)}")
        module.train()
        torch.manual_seed(0)
        trained = call(module, x)
    module.eval()
    if _close(trained, first):
        _fail("dropout_never", f"training mode with dropout={p} gives the eval output")
    with torch.no_grad():
        found = replayed(trained)
    if found and not found[0]:
        return                                   # the right placement, replayed
    if found and found[0] in _DROPOUT_WORDS:
        _fail(found[0], f"the training-mode output equals the module computed with your weights and dropout "
                        f"{_DROPOUT_WORDS[found[0]]}, drawn from the same random stream")
    if found:
        _fail(found[0], f"the training-mode output equals the module computed with your weights, dropout on the "
                        f"weights (drawn from the same random stream) and this bug: "
                        f"{_VARIANT_WORDS.get(found[0], BUGS[found[0]])}")
    if torch.isnan(trained).any() or _close(trained[:, 0], first[:, 0]):
        what = "training mode gives NaN" if torch.isnan(trained).any() else \
            "position 0 (one key, weight 1) is never dropped in training mode"
        raise AssertionError(f"{BUGS['mismatch']}: {what}, and no dropout placement replayed with the same random "
                             f"stream reproduces the output (not one of the known bugs)")


_DROPOUT_WORDS = {"dropout_scores": "on the scores (before the softmax)",
                  "dropout_context": "after the attention weights (on the context vectors or after out_proj)"}


def check_mask_buffer(module: nn.Module, context_length: int, name: str = "mask") -> None:
    buffers = dict(module.named_buffers())
    if name not in buffers:
        where = "a parameter (it would be trained)" if name in dict(module.named_parameters()) else \
            "a plain attribute or missing"
        _fail("mask_buffer", f"'{name}' is {where}; use self.register_buffer('{name}', ...)")
    if name not in module.state_dict():
        _fail("mask_buffer", f"'{name}' is not in state_dict() (persistent=False?)")
    mask = buffers[name]
    if tuple(mask.shape[-2:]) != (context_length, context_length):
        raise AssertionError(f"'{name}' has shape {tuple(mask.shape)}, expected ({context_length}, {context_length})")
    moved = module.to("meta")
    if dict(moved.named_buffers())[name].device.type != "meta":
        _fail("mask_buffer", f"'{name}' did not move with .to()")


# ------------------------------------------------------------------------------------------ head plumbing
def _encoded(batch: int, num_tokens: int, num_heads: int, head_dim: int) -> torch.Tensor:
    """A (b, T, num_heads * head_dim) tensor whose entry says where it came from: 1000 b + 100 t + column."""
    width = num_heads * head_dim
    b = torch.arange(batch).view(batch, 1, 1) * 1000
    t = torch.arange(num_tokens).view(1, num_tokens, 1) * 100
    c = torch.arange(width).view(1, 1, width)
    return (b + t + c).float().to(device())


def check_split_heads(split_heads: Callable) -> None:
    batch, num_tokens, num_heads, head_dim = 2, 5, 3, 4
    x = _encoded(batch, num_tokens, num_heads, head_dim)
    out = call(split_heads, x, num_heads)
    if tuple(out.shape) == (batch, num_tokens, num_heads, head_dim):
        raise AssertionError("shape (b, T, num_heads, head_dim): transpose(1, 2) so heads come before tokens")
    check_shape(out, (batch, num_heads, num_tokens, head_dim), what="split_heads output")
    if torch.equal(out.reshape(-1), x.reshape(-1)) and not _head_slices_match(out, x, head_dim):
        _fail("view_no_transpose", "viewed straight to (b, num_heads, T, head_dim): each 'head' holds a run of "
                                   "tokens; view to (b, T, num_heads, head_dim) then transpose(1, 2)")
    assert _head_slices_match(out, x, head_dim), "out[:, h, t] must be x[:, t, h*head_dim:(h+1)*head_dim]"


def _head_slices_match(heads: torch.Tensor, x: torch.Tensor, head_dim: int) -> bool:
    return all(torch.equal(heads[:, h], x[:, :, h * head_dim:(h + 1) * head_dim]) for h in range(heads.shape[1]))


def check_combine_heads(combine_heads: Callable) -> None:
    batch, num_tokens, num_heads, head_dim = 2, 5, 3, 4
    x = _encoded(batch, num_tokens, num_heads, head_dim)
    heads = torch.stack([x[:, :, h * head_dim:(h + 1) * head_dim] for h in range(num_heads)], dim=1).contiguous()
    out = call(combine_heads, heads)
    check_shape(out, (batch, num_tokens, num_heads * head_dim), what="combine_heads output")
    if torch.equal(out, x):
        return
    if torch.equal(out.reshape(-1), heads.reshape(-1)):
        _fail("view_no_transpose", "viewed (b, num_heads, T, head_dim) straight to (b, T, d_out): transpose(1, 2) "
                                   "first, then .contiguous().view(...) (or .reshape)")
    raise AssertionError("out[:, t, h*head_dim:(h+1)*head_dim] must be heads[:, h, t]")


def check_divisibility_error(make_module: Callable[[int, int], nn.Module]) -> None:
    """make_module(d_out, num_heads) with d_out=10, num_heads=4 must raise ValueError (any subclass, any words).
    Raises AssertionError naming ``divisibility`` otherwise."""
    try:
        make_module(10, 4)
    except ValueError:
        return        # judged by its type (the notebook asks for a ValueError), not by its words
    except Exception as err:  # noqa: BLE001 - any other type is the failure we report
        _fail("divisibility", f"raised {type(err).__name__}: {err} instead of ValueError")
    _fail("divisibility", "d_out=10, num_heads=4 built without error")


# --------------------------------------------------------------------------------------------- the wrapper
def check_wrapper(wrapper: nn.Module, d_in: int, d_out: int, num_heads: int, num_tokens: int = 6) -> None:
    """Wrapper with d_out per head: heads in ``self.heads``, output = the heads' outputs side by side."""
    wrapper = wrapper.to(device()).eval()
    heads = getattr(wrapper, "heads", None)
    assert isinstance(heads, nn.ModuleList) and len(heads) == num_heads, \
        f"keep the {num_heads} heads in self.heads = nn.ModuleList([...])"
    if len({id(head) for head in heads}) < num_heads:
        # [head] * num_heads repeats one object: every "head" has the same weights and the same output.
        _fail("shared_heads", "build a new CausalAttention for each head (a list comprehension, not "
                              "[head] * num_heads)")
    x = _inputs(2, num_tokens, d_in, seed=6)
    with torch.no_grad():
        out = call(wrapper, x)
    head_width = d_out // num_heads
    widths = {w.shape[0] for head in heads if all(hasattr(head, n) for n in ("W_query", "W_key", "W_value"))
              for w, _ in _projections(head)[0]}
    if num_heads > 1 and widths == {head_width} and out.shape[-1] != num_heads * d_out:
        # The heads' own layers are d_out // num_heads wide: that is the bug, whatever the output.
        _fail("wrapper_divided", f"each head's projections are {head_width} wide: in the wrapper d_out is the "
                                 f"width of ONE head (each head is CausalAttention(d_in, d_out)), so the "
                                 f"concatenation is num_heads * d_out = {num_heads * d_out} wide")
    if num_heads > 1 and tuple(out.shape) == (2, num_tokens, d_out) and widths == {d_out}:
        per_head = [mha_reference(x, _projections(head)[0], None, 1, causal=True) for head in heads]
        if _close(out, references.heads_averaged(per_head)):
            _fail("heads_averaged", f"the output is {d_out} wide and equals the mean of the heads' outputs: "
                                    f"concatenate them along the last dim (torch.cat(..., dim=-1))")
    check_shape(out, (2, num_tokens, num_heads * d_out), what="wrapper output")
    for h, head in enumerate(heads):
        qkv, _ = _projections(head)
        expected = mha_reference(x, qkv, None, 1, causal=True)
        if not _close(out[..., h * d_out:(h + 1) * d_out], expected):
            raise AssertionError(f"columns {h * d_out}..{(h + 1) * d_out - 1} are not head {h}'s causal attention "
                                 f"output (concatenate along the last dim, in order)")
    check_no_future_leakage(wrapper, x)
