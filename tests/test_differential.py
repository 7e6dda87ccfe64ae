"""Differential diagnosis in verification (issue: diagnoses that are right or say they don't know).

Each bug below is written here as plain code, independently of the grader's own bug references, and run on the
probe's seeded inputs; its outputs are written where the kernel would write them. The grader must name the bug
only when its reference reproduces those outputs, and otherwise say that the output matches no known bug and where
it first differs. No message may name a catalogued bug that is not the one planted.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from grader.assignments import ASSIGNMENTS
from grader.bugs import BUGS, CATALOGUE
from grader.verify import checks


def case_of(assignment: str, task: str, name: str):
    return next(c for c in ASSIGNMENTS[assignment].probe_cases(21, None) if c.task == task and c.name == name)


def t(array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array)).double()


def probe(case, folder, outputs) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"ok": True, "buffers": ["mask"], "state_dict": ["mask"], "parameters": case.params.get("parameters"),
            "weight_shapes": {}}
    (folder / f"{case.name}.json").write_text(json.dumps(meta))
    for index, out in enumerate(outputs):
        np.save(folder / f"{case.name}.out{index}.npy", np.asarray(out, dtype=np.float32))


def failure(case, folder, outputs) -> str:
    probe(case, folder, outputs)
    with pytest.raises(checks.CaseFailure) as err:
        checks.judge_case(case, folder)
    return str(err.value)


def named_bugs(message: str) -> set[str]:
    return {bug.code for bug in CATALOGUE if bug.name in message}


def linear(case, name, x):
    bias = case.arrays.get(name + "_bias")
    out = x @ t(case.arrays[name]).T
    return out + t(bias) if bias is not None else out


def one_head(case, *, scale=None, diagonal=1, causal=True, flatten=False, scale_after=False):
    """A single attention head written out by hand; its knobs plant one bug each."""
    x = t(case.arrays["x"])
    batch, tokens, width = x.shape
    if flatten:
        x = x.reshape(1, batch * tokens, width)
    q, k, v = (linear(case, n, x) for n in ("W_query", "W_key", "W_value"))
    scores = q @ k.transpose(-2, -1)
    if causal:
        size = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(size, size, dtype=torch.bool).triu(diagonal), float("-inf"))
    if scale_after:
        weights = torch.softmax(scores, dim=-1) / math.sqrt(q.shape[-1])
    else:
        weights = torch.softmax(scores * (scale if scale is not None else q.shape[-1] ** -0.5), dim=-1)
    return (weights @ v).reshape(batch, tokens, -1)


def many_heads(case, *, diagonal=1, flatten=False, shared_small_projection=False, transpose_back=True):
    """The chapter's MultiHeadAttention written out by hand (split, attend, merge, out_proj)."""
    x = t(case.arrays["x"])
    batch, tokens, width = x.shape
    heads = case.params["num_heads"]
    if flatten:
        x = x.reshape(1, batch * tokens, width)
    b, n = x.shape[:2]
    if shared_small_projection:
        # The bug from public code: split the *input* into heads first, then one small projection for all heads.
        piece = width // heads
        parts = x.reshape(b, n, heads, piece).transpose(1, 2)
        small = [t(case.arrays[name])[:piece, :piece] for name in ("W_query", "W_key", "W_value")]
        q, k, v = (parts @ w.T for w in small)
    else:
        q, k, v = (linear(case, name, x).reshape(b, n, heads, -1).transpose(1, 2)
                   for name in ("W_query", "W_key", "W_value"))
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(diagonal), float("-inf"))
    context = torch.softmax(scores, dim=-1) @ v
    context = (context.transpose(1, 2) if transpose_back else context).reshape(b, n, -1)
    if context.shape[-1] != t(case.arrays["out_proj"]).shape[1]:
        return context.reshape(batch, tokens, -1)
    return linear(case, "out_proj", context).reshape(batch, tokens, -1)


def test_the_hand_written_modules_are_right_without_a_bug(tmp_path):
    """The test's own code, without a knob turned, passes: so each failure below is the planted bug's."""
    for case, output in ((case_of("ps1", "self_attention", "d_in_ne_d_out"), lambda c: one_head(c, causal=False)),
                         (case_of("ps2", "causal_attention", "full_context"), one_head),
                         (case_of("ps3", "multi_head_attention", "d_in_ne_d_out"), many_heads)):
        probe(case, tmp_path / case.name, [output(case)])
        assert checks.judge_case(case, tmp_path / case.name) == 1.0


def test_scale_after_the_softmax_is_named_not_the_softmax_dimension(tmp_path):
    case = case_of("ps1", "scaled_dot_product", "batched_rectangular")
    q, k, v = (t(case.arrays[n]) for n in ("queries", "keys", "values"))
    weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1) / math.sqrt(q.shape[-1])
    message = failure(case, tmp_path, [weights @ v, weights])
    assert named_bugs(message) == {"scale_after_softmax"}, message


def test_one_head_scaled_by_sqrt_d_in_is_named(tmp_path):
    case = case_of("ps1", "self_attention", "d_in_ne_d_out")
    d_in = case.arrays["x"].shape[-1]
    message = failure(case, tmp_path, [one_head(case, causal=False, scale=d_in ** -0.5)])
    assert named_bugs(message) == {"scale_d_in"}, message


@pytest.mark.parametrize("assignment, task, name", [("ps2", "causal_attention", "full_context"),
                                                    ("ps3", "multi_head_attention", "square")])
def test_a_batch_flattened_into_one_sequence_is_named(tmp_path, assignment, task, name):
    case = case_of(assignment, task, name)
    output = one_head(case, flatten=True) if assignment == "ps2" else many_heads(case, flatten=True)
    message = failure(case, tmp_path, [output])
    assert named_bugs(message) == {"batch"}, message


@pytest.mark.parametrize("assignment, task, name", [("ps2", "causal_attention", "full_context"),
                                                    ("ps3", "multi_head_attention", "d_in_ne_d_out")])
def test_a_mask_that_hides_each_token_from_itself_is_named(tmp_path, assignment, task, name):
    case = case_of(assignment, task, name)
    output = one_head(case, diagonal=0) if assignment == "ps2" else many_heads(case, diagonal=0)
    assert torch.isnan(output).any()  # the first token has no key left
    message = failure(case, tmp_path, [output])
    assert named_bugs(message) == {"mask_diagonal"}, message


def test_heads_merged_without_transposing_back_are_named_in_verification(tmp_path):
    case = case_of("ps3", "multi_head_attention", "d_in_ne_d_out")
    message = failure(case, tmp_path, [many_heads(case, transpose_back=False)])
    assert named_bugs(message) == {"view_no_transpose"}, message


def test_a_shared_small_projection_after_splitting_is_not_given_a_wrong_name(tmp_path):
    """Not a bug the course catalogues: the message says so, names none, and says where the output differs."""
    case = case_of("ps3", "multi_head_attention", "square")
    message = failure(case, tmp_path, [many_heads(case, shared_small_projection=True)])
    assert named_bugs(message) == set(), message
    assert "not one of the" in message and "known bugs" in message
    assert "token 0" in message, message


def test_an_unknown_bug_says_so_and_where_it_first_differs(tmp_path):
    case = case_of("ps2", "causal_attention", "full_context")
    right = one_head(case)
    wrong = right.clone()
    wrong[:, 2:] *= 1.5          # tokens 0 and 1 right, later ones off: after the first token
    message = failure(case, tmp_path, [wrong])
    assert named_bugs(message) == set(), message
    assert "not one of the" in message and "from token 2 on while token 0" in message, message
    one_sequence = right.clone()
    one_sequence[1] += 0.5       # only the second sequence is off
    message = failure(case, tmp_path / "b", [one_sequence])
    assert named_bugs(message) == set() and "sequence(s) [1] of the batch only" in message, message


def test_shape_evidence_names_only_the_shapes_a_bug_makes(tmp_path):
    """A weight of an unexpected shape is described, not blamed on 'd_in where d_out belongs'."""
    case = case_of("ps3", "multi_head_attention", "square")
    folder = tmp_path / "w"
    folder.mkdir()
    odd = {"-1.W_query": [2, 2], "-1.W_key": [8, 8], "-1.W_value": [8, 8], "-1.out_proj": [8, 8]}
    (folder / f"{case.name}.json").write_text(json.dumps({"ok": False, "error": "RuntimeError: size mismatch",
                                                          "weight_shapes": odd}))
    with pytest.raises(checks.CaseFailure) as err:
        checks.judge_case(case, folder)
    assert named_bugs(str(err.value)) == set() and "W_query has shape (2, 2)" in str(err.value), str(err.value)
    transposed = {**odd, "-1.W_query": list(case.arrays["W_query"].shape[::-1])}
    case6 = case_of("ps3", "multi_head_attention", "d_in_ne_d_out")
    transposed = {"-1.W_query": list(case6.arrays["W_query"].shape[::-1])}
    (folder / f"{case6.name}.json").write_text(json.dumps({"ok": False, "error": "RuntimeError: x",
                                                           "weight_shapes": transposed}))
    with pytest.raises(checks.CaseFailure, match=BUGS["d_in_d_out"]):
        checks.judge_case(case6, folder)


# ------------------------------------------------------------------------- the notebooks' checks (in-kernel)
class _Head(torch.nn.Module):
    """A single head written as the chapter does, with a scaling rule to choose."""

    def __init__(self, d_in, d_out, scale_by="d_out", extra=0.0):
        super().__init__()
        self.W_query, self.W_key, self.W_value = (torch.nn.Linear(d_in, d_out, bias=False) for _ in range(3))
        self.scale_by, self.d_in, self.extra = scale_by, d_in, extra

    def forward(self, x):
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        width = self.d_in if self.scale_by == "d_in" else q.shape[-1]
        weights = torch.softmax(q @ k.transpose(-2, -1) / width ** 0.5, dim=-1)
        # `extra` is an unknown bug that shows only when d_in != d_out
        return weights @ v + (self.extra if self.d_in != q.shape[-1] else 0.0)


def test_the_notebooks_check_names_a_sqrt_d_in_scale_not_a_weight_bug():
    from grader import diagnose

    with pytest.raises(AssertionError) as err:
        diagnose.check_d_in_not_d_out(lambda d_in, d_out: _Head(d_in, d_out, "d_in"), 3, 6, causal=False)
    assert str(err.value).startswith(BUGS["scale_d_in"]), str(err.value)
    assert BUGS["d_in_d_out"] not in str(err.value)


def test_the_notebooks_check_does_not_guess_a_name_for_an_unknown_bug():
    from grader import diagnose

    diagnose.check_d_in_not_d_out(lambda d_in, d_out: _Head(d_in, d_out), 3, 6, causal=False)   # right: passes
    with pytest.raises(AssertionError) as err:
        diagnose.check_d_in_not_d_out(lambda d_in, d_out: _Head(d_in, d_out, extra=0.3), 3, 6, causal=False)
    assert str(err.value).startswith(BUGS["mismatch"]) and "no bug this course knows" in str(err.value)
    assert named_bugs(str(err.value)) == {"mismatch"}, str(err.value)


class _Leaky(torch.nn.Module):
    """The chapter's causal multi-head module written here, with one way of letting the future in switched on."""

    def __init__(self, d_in=6, d_out=8, num_heads=2, leak="none"):
        super().__init__()
        self.num_heads, self.leak = num_heads, leak
        self.W_query, self.W_key, self.W_value = (torch.nn.Linear(d_in, d_out) for _ in range(3))
        self.out_proj = torch.nn.Linear(d_out, d_out)

    def forward(self, x):
        b, t, d_in = x.shape
        q, k, v = (w(x).view(b, t, self.num_heads, -1).transpose(1, 2) for w in (self.W_query, self.W_key,
                                                                                  self.W_value))
        future = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if self.leak != "mask_after_softmax":
            scores = scores.masked_fill(future, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if self.leak == "mask_after_softmax":
            weights = weights.masked_fill(future, 0.0)     # zeroed after the softmax, not renormalised
        context = weights @ v
        if self.leak != "view_no_transpose":
            context = context.transpose(1, 2)
        out = self.out_proj(context.reshape(b, t, -1))
        if self.leak == "mean_of_the_sequence":            # no catalogued bug: every token sees the sequence mean
            out = out + x.mean(dim=1, keepdim=True)[..., :1]
        return out


@pytest.mark.parametrize("leak", ["mask_after_softmax", "view_no_transpose"])
def test_the_notebooks_leakage_check_names_a_bug_only_when_its_reference_reproduces_it(leak):
    from grader import diagnose

    torch.manual_seed(0)
    diagnose.check_no_future_leakage(_Leaky().eval(), torch.randn(2, 7, 6))          # the right module passes
    with pytest.raises(AssertionError) as err:
        diagnose.check_no_future_leakage(_Leaky(leak=leak).eval(), torch.randn(2, 7, 6))
    assert str(err.value).startswith(BUGS[leak]) and named_bugs(str(err.value)) == {leak}, str(err.value)


def test_the_notebooks_leakage_check_says_when_no_known_bug_reproduces_the_leak():
    from grader import diagnose

    torch.manual_seed(0)
    x = torch.randn(2, 7, 6)
    for forward in (_Leaky(leak="mean_of_the_sequence").eval(),
                    lambda inputs: inputs + inputs.mean(dim=1, keepdim=True)):   # not a module: nothing to rerun
        with pytest.raises(AssertionError) as err:
            diagnose.check_no_future_leakage(forward, x)
        message = str(err.value)
        assert message.startswith(BUGS["mismatch"] + ": not one of the known bugs"), message
        assert "changed earlier positions [0, 1, 2, 3, 4, 5]" in message
        assert named_bugs(message) == {"mismatch"}, message


class _Flattened(_Leaky):
    """The right module, run on the batch laid end to end as one sequence."""

    def forward(self, x):
        b, t, d_in = x.shape
        return super().forward(x.reshape(1, b * t, d_in)).reshape(b, t, -1)


class _DiagonalMasked(_Leaky):
    """The right module with a mask that also hides each token from itself (its first token's output is NaN)."""

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (w(x).view(b, t, self.num_heads, -1).transpose(1, 2) for w in (self.W_query, self.W_key,
                                                                                  self.W_value))
        scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(
            torch.ones(t, t, dtype=torch.bool).triu(0), float("-inf"))
        return self.out_proj((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, -1))


def test_the_notebooks_batch_check_names_a_flattened_batch_only_when_reproduced():
    from grader import diagnose

    torch.manual_seed(0)
    x = torch.randn(3, 4, 6)
    diagnose.check_batch_independence(_Leaky().eval(), x)
    with pytest.raises(AssertionError) as err:
        diagnose.check_batch_independence(_Flattened().eval(), x)
    assert named_bugs(str(err.value)) == {"batch"}, str(err.value)
    # Sequences mixed some other way (every sequence shifted by the batch mean): no name.
    with pytest.raises(AssertionError) as err:
        diagnose.check_batch_independence(lambda inputs: inputs + inputs.mean(dim=0), x)
    assert named_bugs(str(err.value)) == {"mismatch"} and "not one of the known bugs" in str(err.value)


def test_nan_in_the_first_token_is_named_only_when_the_diagonal_mask_reproduces_it():
    from grader import diagnose

    torch.manual_seed(0)
    x = torch.randn(2, 5, 6)
    with pytest.raises(AssertionError) as err:
        diagnose.check_no_future_leakage(_DiagonalMasked().eval(), x)
    assert str(err.value).startswith(BUGS["mask_diagonal"]), str(err.value)

    def first_token_nan(inputs):
        out = inputs[..., :4].clone()
        out[:, 0] = float("nan")
        return out
    with pytest.raises(AssertionError) as err:
        diagnose.check_no_future_leakage(first_token_nan, x)
    assert named_bugs(str(err.value)) == {"mismatch"} and "not one of the known bugs" in str(err.value)
