"""Three wrapper/softmax bugs that used to get a wrong or generic diagnosis, in the notebook checks and in verify.

Each test builds the bug as a small module (or as the numbers a probe would have written) and asserts the name
of the bug in the message, calling grader.diagnose and grader.verify directly: no kernel, no notebook.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from grader import diagnose
from grader.verify import checks, reference
from grader.assignments import ASSIGNMENTS
from grader.bugs import BUGS
from grader.verify.probes import cases_by_task


class _Head(nn.Module):
    """One causal head written independently of the course's solution (the reference is PyTorch's SDPA)."""

    def __init__(self, d_in, d_out, context_length, softmax_dim=-1, num_heads=1):
        super().__init__()
        self.num_heads = num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=False)
        self.W_key = nn.Linear(d_in, d_out, bias=False)
        self.W_value = nn.Linear(d_in, d_out, bias=False)
        self.softmax_dim = softmax_dim
        self.register_buffer("mask", torch.ones(context_length, context_length).triu(1).bool())

    def attend(self, x):
        b, t, _ = x.shape
        q, k, v = (w(x).view(b, t, self.num_heads, -1).transpose(1, 2)
                   for w in (self.W_query, self.W_key, self.W_value))
        scores = (q @ k.transpose(-2, -1)).masked_fill(self.mask[:t, :t], float("-inf"))
        weights = torch.softmax(scores / math.sqrt(q.shape[-1]), dim=self.softmax_dim)
        return (weights @ v).transpose(1, 2).reshape(b, t, -1)

    def forward(self, x):
        return self.attend(x)


class _MultiHead(_Head):
    def __init__(self, d_in, d_out, context_length, num_heads, softmax_dim=-1):
        super().__init__(d_in, d_out, context_length, softmax_dim, num_heads)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):
        return self.out_proj(self.attend(x))


class _Wrapper(nn.Module):
    def __init__(self, d_in, d_out, context_length, num_heads, divide=False, share=False):
        super().__init__()
        width = d_out // num_heads if divide else d_out
        if share:
            head = _Head(d_in, width, context_length)
            self.heads = nn.ModuleList([head] * num_heads)
        else:
            self.heads = nn.ModuleList([_Head(d_in, width, context_length) for _ in range(num_heads)])

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)


# ------------------------------------------------------------------------------------------------- diagnose
def test_honest_modules_pass():
    diagnose.check_wrapper(_Wrapper(4, 3, 8, 2), d_in=4, d_out=3, num_heads=2)
    diagnose.check_attention_module(_MultiHead(8, 8, 8, num_heads=2), d_in=8, num_heads=2)
    diagnose.check_no_future_leakage(_MultiHead(4, 8, 8, num_heads=2).eval(), torch.randn(2, 8, 4))


@pytest.mark.parametrize("d_out, num_heads", [(3, 2), (4, 2), (2, 2), (6, 3)])
def test_wrapper_dividing_d_out_is_named(d_out, num_heads):
    with pytest.raises(AssertionError, match="^d_out divided by num_heads: .*width of ONE head"):
        diagnose.check_wrapper(_Wrapper(4, d_out, 8, num_heads, divide=True), d_in=4, d_out=d_out,
                               num_heads=num_heads)


def test_wrapper_with_one_shared_head_is_named():
    with pytest.raises(AssertionError, match="^heads share one module: build a new CausalAttention for each head"):
        diagnose.check_wrapper(_Wrapper(4, 3, 8, 2, share=True), d_in=4, d_out=3, num_heads=2)


@pytest.mark.parametrize("num_heads", [1, 2])
def test_softmax_over_queries_is_not_blamed_on_the_mask(num_heads):
    wrong = _MultiHead(6, 8, 8, num_heads=num_heads, softmax_dim=-2)
    with pytest.raises(AssertionError, match="^softmax over the wrong dimension"):
        diagnose.check_attention_module(wrong, d_in=6, num_heads=num_heads)
    with pytest.raises(AssertionError, match="^softmax over the wrong dimension"):
        diagnose.check_no_future_leakage(wrong.eval(), torch.randn(2, 8, 6))


def test_a_missing_mask_is_still_the_mask():
    leaky = _MultiHead(6, 8, 8, num_heads=2)
    leaky.mask.zero_()
    with pytest.raises(AssertionError, match="^mask missing or applied after softmax"):
        diagnose.check_no_future_leakage(leaky.eval(), torch.randn(2, 8, 6))


# --------------------------------------------------------------------------------------------------- verify
def _case(assignment, task, name):
    return next(c for c in ASSIGNMENTS[assignment].probe_cases(3, None) if c.task == task and c.name == name)


def _probe(case, folder, outputs, weight_shapes=None, used=None, ok=True):
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"ok": ok, "buffers": ["mask"], "state_dict": ["mask"], "parameters": case.params["parameters"],
            "weight_shapes": weight_shapes or {}}
    if not ok:
        meta["error"] = "the probe could not set a weight"
    (folder / f"{case.name}.json").write_text(json.dumps(meta))
    for i, out in enumerate(outputs):
        np.save(folder / f"{case.name}.out{i}.npy", np.asarray(out, dtype=np.float32))
    for (head, attr), array in (used or {}).items():
        np.save(folder / f"{case.name}.used.{head}.{attr}.npy", np.asarray(array, dtype=np.float32))


@pytest.mark.parametrize("name", ["d_in_ne_d_out", "short_input"])
def test_verify_names_a_divided_wrapper_from_its_weights(tmp_path, name):
    case = _case("ps3", "wrapper", name)
    heads = case.params["num_heads"]
    shapes = {f"{h}.{a}": [case.arrays[k].shape[0] // heads, case.arrays[k].shape[1]]
              for h, a, k, _ in case.weights}
    _probe(case, tmp_path, [], weight_shapes=shapes, ok=False)
    with pytest.raises(checks.CaseFailure, match=f"{BUGS['wrapper_divided']}: in the wrapper d_out is the width"):
        checks.judge_case(case, tmp_path)


@pytest.mark.parametrize("name", ["d_in_ne_d_out", "short_input"])
def test_verify_names_a_divided_wrapper_from_its_output(tmp_path, name):
    """A narrow output alone is no evidence of the divided wrapper (averaged heads are as narrow): with the heads'
    weights of the right shape, the same narrow output is described, not named; averaged heads are named by their
    own reference."""
    case = _case("ps3", "wrapper", name)
    want = reference.expected(case)[0]
    heads = case.params["num_heads"]
    narrow = want[..., :heads * (want.shape[-1] // heads // heads)]
    _probe(case, tmp_path, [narrow])
    with pytest.raises(checks.CaseFailure) as failure:
        checks.judge_case(case, tmp_path)
    assert str(failure.value).startswith("the result has shape") and BUGS["wrapper_divided"] not in str(failure.value)
    averaged = reference.heads_averaged(case).numpy()
    _probe(case, tmp_path, [averaged])
    with pytest.raises(checks.CaseFailure, match=f"looks like {BUGS['heads_averaged']}"):
        checks.judge_case(case, tmp_path)


def test_verify_names_shared_heads(tmp_path):
    case = _case("ps3", "wrapper", "d_in_ne_d_out")
    last = case.params["heads"] - 1
    # One module set head after head keeps the last head's weights: every head computes head `last`.
    want = reference.expected(case)[0]
    width = want.shape[-1] // case.params["heads"]
    repeated = np.concatenate([want[..., last * width:]] * case.params["heads"], axis=-1)
    used = {(h, a): case.arrays[f"h{last}_{a}"] for h, a, _, _ in case.weights}
    _probe(case, tmp_path, [repeated], used=used)
    with pytest.raises(checks.CaseFailure, match=f"{BUGS['shared_heads']}: build a new CausalAttention"):
        checks.judge_case(case, tmp_path)


@pytest.mark.parametrize("assignment, task", [("ps3", "multi_head_attention"), ("ps4", "fixed_projection")])
def test_verify_names_softmax_over_the_wrong_dimension(tmp_path, assignment, task):
    case = next(c for c in cases_by_task(ASSIGNMENTS[assignment], None, 3)[task] if c.check == "reference")
    a = case.arrays
    to = lambda key: torch.from_numpy(a[key]).double() if key in a else None  # noqa: E731
    qkv = [(to(n), to(n + "_bias")) for n in ("W_query", "W_key", "W_value")]
    wrong = diagnose.softmax_wrong_dim_reference(to("x"), qkv, (to("out_proj"), to("out_proj_bias")),
                                                 case.params["num_heads"])
    # The bug must show: its output is far from the right one (else any output would "match" it).
    assert not np.allclose(wrong.numpy(), reference.expected(case)[0], atol=1e-3)
    _probe(case, tmp_path, [wrong.numpy()])
    with pytest.raises(checks.CaseFailure, match=f"looks like {BUGS['softmax_dim']}"):
        checks.judge_case(case, tmp_path)
