"""Probes that call one module instance several times (issue 13): other lengths, training then eval mode, one
sequence of the batch changed, and eval mode twice with dropout on.

Each module below is written here, runs through the real probe runtime (the text of
``grader/verify/kernel_runtime.py``, executed in this process on the grader's own cases) and is judged by the real
``verify_outputs``. A correct module keeps every point; each planted bug costs the check it belongs to and is named
only when its reference reproduces every call; otherwise the message names no bug and says what the calls showed.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from grader.assignments import ASSIGNMENTS
from grader.bugs import BUGS, CATALOGUE
from grader.verify import verify_outputs
from grader.verify.probes import RUNTIME, cases_by_task

HEAD = '''
class CausalAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        batch, num_tokens = x.shape[:2]
        x = x  # FLATTEN
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = queries @ keys.transpose(1, 2)
        mask = self.mask.bool()[:x.shape[1], :x.shape[1]]  # MASK
        scores = scores.masked_fill(mask, -torch.inf)
        weights = self.dropout(torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1))  # DROPOUT
        return (weights @ values).reshape(batch, num_tokens, -1)
'''

MULTI_HEAD = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError("d_out must be divisible by num_heads")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        batch, num_tokens = x.shape[:2]
        x = x  # FLATTEN
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        queries, keys, values = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = queries @ keys.transpose(2, 3)
        mask = self.mask.bool()[:t, :t]  # MASK
        scores = scores.masked_fill(mask, -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim ** 0.5, dim=-1))  # DROPOUT
        context = (weights @ values).transpose(1, 2).reshape(b, t, self.d_out)
        return self.out_proj(context).reshape(batch, num_tokens, -1)
'''

WRAPPER = '''
class MultiHeadAttentionWrapper(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList([CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
                                    for _ in range(num_heads)])

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)


class FixedMultiHeadAttentionWrapper(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError("d_out must be divisible by num_heads")
        self.heads = nn.ModuleList([CausalAttention(d_in, d_out // num_heads, context_length, dropout, qkv_bias)
                                    for _ in range(num_heads)])
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):
        return self.out_proj(torch.cat([head(x) for head in self.heads], dim=-1))
'''

# Each bug is one line of the modules above, replaced.
BUGGY_LINES = {
    "correct": {},
    # The batch laid end to end as one sequence: tokens attend across sequences.
    "flattened": {"x = x  # FLATTEN": "x = x.reshape(1, -1, x.shape[-1])"},
    # The mask cut to the first call's length once, then reused (sliced again, or as it is).
    "cached_sliced": {"mask = self.mask.bool()[:x.shape[1], :x.shape[1]]  # MASK":
                      "self.__dict__.setdefault('cached', self.mask.bool()[:x.shape[1], :x.shape[1]])\n"
                      "        mask = self.cached[:x.shape[1], :x.shape[1]]",
                      "mask = self.mask.bool()[:t, :t]  # MASK":
                      "self.__dict__.setdefault('cached', self.mask.bool()[:t, :t])\n"
                      "        mask = self.cached[:t, :t]"},
    "cached_unsliced": {"mask = self.mask.bool()[:x.shape[1], :x.shape[1]]  # MASK":
                        "self.__dict__.setdefault('cached', self.mask.bool()[:x.shape[1], :x.shape[1]])\n"
                        "        mask = self.cached",
                        "mask = self.mask.bool()[:t, :t]  # MASK":
                        "self.__dict__.setdefault('cached', self.mask.bool()[:t, :t])\n        mask = self.cached"},
    # Training mode writes into the mask buffer: every later call attends to the future.
    "train_clears_mask": {"mask = self.mask.bool()[:x.shape[1], :x.shape[1]]  # MASK":
                          "self.mask.mul_(0.0 if self.training else 1.0)\n"
                          "        mask = self.mask.bool()[:x.shape[1], :x.shape[1]]",
                          "mask = self.mask.bool()[:t, :t]  # MASK":
                          "self.mask.mul_(0.0 if self.training else 1.0)\n        mask = self.mask.bool()[:t, :t]"},
    # Dropout that ignores .eval().
    "dropout_in_eval": {"self.dropout(torch.softmax(":
                        "F.dropout(p=self.dropout.p, training=True, input=torch.softmax("},
}


def module_source(bug: str) -> str:
    source = HEAD + MULTI_HEAD + WRAPPER
    for old, new in BUGGY_LINES[bug].items():
        source = source.replace(old, new)
    return source


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """probe(assignment, task, bug) -> the task's Verified, the module run through the real probe runtime."""
    wired = [(F, "scaled_dot_product_attention"), (F, "multi_head_attention_forward"),
             (torch.nn.MultiheadAttention, "forward")]
    originals = [getattr(owner, name) for owner, name in wired]
    monkeypatch.chdir(tmp_path)

    def run(assignment: str, task: str, bug: str):
        namespace = {"torch": torch, "nn": torch.nn, "F": F}
        exec(module_source(bug), namespace)
        exec(RUNTIME.read_text(), namespace)
        cases = cases_by_task(ASSIGNMENTS[assignment], None, 17)[task]
        namespace["_mha_probe"].run_task(task, json.dumps([c.kernel_spec() for c in cases]), namespace)
        return verify_outputs(ASSIGNMENTS[assignment], None, 17, tmp_path / "_probe")[task]

    yield run
    for (owner, name), original in zip(wired, originals):   # the runtime's tripwires wrap PyTorch's attention
        setattr(owner, name, original)


def named(message: str) -> set[str]:
    return {bug.code for bug in CATALOGUE if bug.name in message and bug.code != "mismatch"}


TASKS = [("ps2", "causal_attention"), ("ps3", "wrapper"), ("ps3", "multi_head_attention"), ("ps4", "fixed_wrapper")]


@pytest.mark.parametrize("assignment, task", TASKS)
def test_a_correct_module_keeps_every_point(probe, assignment, task):
    score, maximum, message = probe(assignment, task, "correct")
    assert score == maximum, message


@pytest.mark.parametrize("assignment, task", TASKS)
def test_a_batch_laid_end_to_end_is_seen_by_changing_one_sequence(probe, assignment, task):
    result = probe(assignment, task, "flattened")
    message = result[2]
    assert result.checks["equivalence"][1] is False, message
    said = result.checks["equivalence"][2]
    assert "case batch_independence: changing sequence 1 of the batch changed the output of sequence(s) [2]: " \
           "looks like " + BUGS["batch"] in said, said
    assert named(said) == {"batch"}, said


@pytest.mark.parametrize("assignment, task", TASKS)
@pytest.mark.parametrize("bug", ["cached_sliced", "cached_unsliced"])
def test_a_mask_cached_from_the_first_call_is_named(probe, assignment, task, bug):
    result = probe(assignment, task, bug)
    said = result.checks["equivalence"][2]
    assert "case lengths_and_modes: call 2 (6 tokens) raised RuntimeError after call 1 (4 tokens) ran: looks like " \
           + BUGS["mask_cached"] in said, said
    assert named(said) == {"mask_cached"} and BUGS["mask_cached"] in said, said
    assert result[0] == result[1] - result.checks["equivalence"][0], result   # the other checks keep their points


@pytest.mark.parametrize("assignment, task", [("ps2", "causal_attention"), ("ps3", "multi_head_attention")])
def test_state_changed_in_training_mode_is_seen_and_not_given_a_name(probe, assignment, task):
    result = probe(assignment, task, "train_clears_mask")
    said = result.checks["equivalence"][2]
    assert "call 5 (4 tokens) repeats call 1's input and its output changed: state kept between calls" in said, said
    assert named(said) == set() and "not one of the" in said, said


@pytest.mark.parametrize("assignment, task", TASKS)
def test_dropout_left_on_in_eval_mode_is_named_by_two_eval_calls(probe, assignment, task):
    result = probe(assignment, task, "dropout_in_eval")
    check = "dropout" if "dropout" in result.checks else "equivalence"
    said = result.checks[check][2]
    assert result.checks[check][1] is False, result[2]
    assert said.startswith("case eval_twice: " + BUGS["dropout_eval"]), said
    assert "two eval-mode calls on one input differ" in said
    if check == "dropout":   # the dropout check answers for it; the module is otherwise right
        assert result[0] == result[1] - result.checks["dropout"][0], result


def test_an_eval_output_that_no_dropout_gives_is_not_called_dropout(tmp_path):
    """Two equal eval outputs, off by a factor no dropout pattern makes: no bug named."""
    import numpy as np

    from grader.verify import checks
    from grader.verify.reference import expected

    case = next(c for c in ASSIGNMENTS["ps2"].probe_cases(3, None) if c.name == "eval_twice")
    (tmp_path / f"{case.name}.json").write_text(json.dumps({"ok": True, "calls": [{"ok": True}]}))
    for name in ("out0", "call1"):     # the first call's output, then the second call's
        np.save(tmp_path / f"{case.name}.{name}.npy", (expected(case)[0] * 0.7).astype(np.float32))
    with pytest.raises(checks.CaseFailure) as err:
        checks.judge_case(case, tmp_path)
    assert named(str(err.value)) == set() and "not one of the known bugs" in str(err.value), str(err.value)
