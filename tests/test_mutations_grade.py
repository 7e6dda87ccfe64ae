"""Real bugs learners report in public attention code, through the real ``python -m grader grade``.

Each student of a small class is the honest solution with one bug planted by text replacement. The grade must
take the points of the right task and say the right thing: the bug's catalogue name when its reference reproduces
the output, or an honest "not one of the known bugs". No message may name a catalogued bug other than the one
planted, and no task may say "verified" beside a failing test. Correct implementations written differently from
the solution (``ALTERNATIVES``) must keep full marks in the same run: one ``grade`` run per assignment.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from grader.bench_grading import honest_copy
from grader.bugs import BUGS, CATALOGUE
from mutations.ps123 import DEPENDS
from mutations.ps123_alternatives import MHA_FUSED_QKV

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Planted:
    student: str
    cell: str                                   # the solution cell's id (= the task, or a given cell)
    replacements: tuple[tuple[str, str], ...]
    loses: str                                  # the task that must lose its points
    says: str                                   # a phrase its message must hold
    names: frozenset = frozenset()              # the catalogued bugs the message may name (all of them must be)
    score: float | None = None                  # the exact score the task must keep, when the bug costs one check


PLANTED = {
    "ps1": [
        Planted("scale_after_softmax", "scaled_dot_product",
                (("weights = torch.softmax(attention_scores(queries, keys) / math.sqrt(d_k), dim=-1)",
                  "weights = torch.softmax(attention_scores(queries, keys), dim=-1) / math.sqrt(d_k)"),),
                "scaled_dot_product", BUGS["scale_after_softmax"], frozenset({"scale_after_softmax"})),
        Planted("scale_by_d_in", "self_attention",
                (("context, _ = scaled_dot_product(queries, keys, values)\n        return context",
                  "scores = queries @ keys.transpose(-2, -1) / x.shape[-1] ** 0.5\n"
                  "        return torch.softmax(scores, dim=-1) @ values"),),
                "self_attention", BUGS["scale_d_in"], frozenset({"scale_d_in"})),
        # The batch laid end to end as one sequence: every token attends across sequences.
        Planted("flattened_batch", "self_attention",
                (("        queries = self.W_query(x)\n",
                  "        batch = x.shape[0]\n        x = x.reshape(1, -1, x.shape[-1])\n"
                  "        queries = self.W_query(x)\n"),
                 ("        return context", "        return context.reshape(batch, -1, context.shape[-1])")),
                "self_attention", BUGS["batch"], frozenset({"batch"})),
    ],
    "ps2": [
        Planted("mask_diagonal", "causal_attention",
                (('torch.triu(torch.ones(context_length, context_length), diagonal=1)',
                  'torch.triu(torch.ones(context_length, context_length), diagonal=0)'),),
                "causal_attention", BUGS["mask_diagonal"], frozenset({"mask_diagonal"})),
        Planted("dropout_on_context", "causal_attention",
                (("        weights = self.dropout(weights)\n        return weights @ values",
                  "        return self.dropout(weights @ values)"),),
                "causal_attention", BUGS["dropout_context"], frozenset({"dropout_context"})),
        # The mask cut to the first call's length once and kept: the notebook's own tests call one length at a
        # time, the probe calls one instance at several lengths. Only the equivalence check's points go.
        Planted("mask_cached_first_call", "causal_attention",
                (("        scores = scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)\n",
                  "        if getattr(self, 'first_mask', None) is None:\n"
                  "            self.first_mask = self.mask.bool()[:num_tokens, :num_tokens]\n"
                  "        scores = scores.masked_fill(self.first_mask[:num_tokens, :num_tokens], -torch.inf)\n"),),
                "causal_attention", BUGS["mask_cached"], frozenset({"mask_cached"}), score=2.0),
    ],
    "ps3": [
        # Public code's bug: the *input* split into heads first, then one small projection shared by all heads
        # (nn.Linear(d_in // num_heads, head_dim)). No catalogued bug's reference gives it: said as unknown.
        Planted("split_input_then_shared_projection", "multi_head_attention",
                tuple((f"self.{name} = nn.Linear(d_in, d_out, bias=qkv_bias)",
                       f"self.{name} = nn.Linear(d_in // num_heads, d_out // num_heads, bias=qkv_bias)")
                      for name in ("W_query", "W_key", "W_value")) + (
                    ("        queries = self.W_query(x).view(batch, num_tokens, self.num_heads, self.head_dim)"
                     ".transpose(1, 2)\n",
                     "        parts = x.view(batch, num_tokens, self.num_heads, -1).transpose(1, 2)\n"
                     "        queries = self.W_query(parts)\n"),
                    ("self.W_key(x).view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)",
                     "self.W_key(parts)"),
                    ("self.W_value(x).view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)",
                     "self.W_value(parts)")),
                "multi_head_attention", "not one of the known bugs"),
        # The textbook's own line: an assert where the docstring asks for a ValueError. Only the divisibility
        # check's point goes.
        Planted("textbook_assert", "multi_head_attention",
                (('        if d_out % num_heads != 0:\n'
                  '            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")',
                  '        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"'),),
                "multi_head_attention", BUGS["divisibility"], frozenset({"divisibility"}), score=4.0),
        Planted("dropout_after_out_proj", "multi_head_attention",
                (("        weights = self.dropout(weights)\n", ""),
                 ("return self.out_proj(context)", "return self.dropout(self.out_proj(context))")),
                "multi_head_attention", BUGS["dropout_context"], frozenset({"dropout_context"})),
        Planted("wrapper_drops_qkv_bias", "wrapper",
                (("CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)",
                  "CausalAttention(d_in, d_out, context_length, dropout)"),),
                "wrapper", "must pass qkv_bias on to each head"),
        Planted("wrapper_heads_without_dropout", "wrapper",
                (("CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)",
                  "CausalAttention(d_in, d_out, context_length, 0.0, qkv_bias)"),),
                "wrapper", "must pass dropout on to every head", frozenset({"dropout_never"})),
        Planted("functional_dropout_always_on", "multi_head_attention",
                (("weights = self.dropout(weights)", "weights = torch.nn.functional.dropout(weights, 0.5)"),),
                "multi_head_attention", "the notebook's test failed, which costs check dropout",
                frozenset({"dropout_eval"})),
    ],
}


# Correct implementations written differently: each replaces a whole solution cell and must keep full marks.
CAUSAL_WHERE_TRUE_ATTENDS = '''
class CausalAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # True means "may attend" here (the opposite of the chapter's mask)
        self.register_buffer("mask", torch.tril(torch.ones(context_length, context_length, dtype=torch.bool)))

    def forward(self, x):
        t = x.shape[1]
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = q @ k.transpose(1, 2) / math.sqrt(k.shape[-1])
        scores = torch.where(self.mask[:t, :t], scores, torch.full_like(scores, float("-inf")))
        return self.dropout(torch.softmax(scores, dim=-1)) @ v
'''

_MHA_INIT = '''
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
'''

MHA_HEADS_IN_THE_BATCH = '''
def fold_heads(t, num_heads):
    """(b, T, d_out) -> (b * num_heads, T, head_dim): each head becomes a batch entry."""
    b, n, d = t.shape
    return t.view(b, n, num_heads, d // num_heads).transpose(1, 2).reshape(b * num_heads, n, d // num_heads)


def unfold_heads(t, num_heads):
    """(b * num_heads, T, head_dim) -> (b, T, num_heads * head_dim)."""
    bh, n, hd = t.shape
    return t.view(bh // num_heads, num_heads, n, hd).transpose(1, 2).reshape(bh // num_heads, n, num_heads * hd)


class MultiHeadAttention(nn.Module):''' + _MHA_INIT + '''\
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        t = x.shape[1]
        q, k, v = (fold_heads(layer(x), self.num_heads) for layer in (self.W_query, self.W_key, self.W_value))
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(self.mask[:t, :t].bool(), float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out_proj(unfold_heads(torch.bmm(weights, v), self.num_heads))
'''

MHA_ATTENTION_HELPER = '''
def attention(queries, keys, values, mask, dropout):
    """softmax(q k^T / sqrt(d_k)) v with a large negative number (not -inf) where mask is True."""
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1])
    scores = scores.masked_fill(mask, -1e9)
    return dropout(torch.softmax(scores, dim=-1)) @ values


class MultiHeadAttention(nn.Module):''' + _MHA_INIT + '''\
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        context = attention(split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x)),
                            self.mask[:t, :t], self.dropout)
        return self.out_proj(context.transpose(1, 2).reshape(b, t, self.d_out))
'''

MHA_WHERE_TRUE_ATTENDS = '''
class MultiHeadAttention(nn.Module):''' + _MHA_INIT + '''\
        self.register_buffer("mask", torch.ones(context_length, context_length, dtype=torch.bool).tril())

    def forward(self, x):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        scores = torch.where(self.mask[:t, :t], scores, float("-inf"))
        context = self.dropout(torch.softmax(scores, dim=-1)) @ v
        return self.out_proj(context.transpose(1, 2).reshape(b, t, self.d_out))
'''

ALTERNATIVES = {
    "ps2": {"where_true_attends": ("causal_attention", CAUSAL_WHERE_TRUE_ATTENDS)},
    "ps3": {"fused_qkv": ("multi_head_attention", MHA_FUSED_QKV),
            "heads_in_the_batch": ("multi_head_attention", MHA_HEADS_IN_THE_BATCH),
            "attention_helper_minus_1e9": ("multi_head_attention", MHA_ATTENTION_HELPER),
            "where_true_attends": ("multi_head_attention", MHA_WHERE_TRUE_ATTENDS)},
}


def alternative_notebook(assignment: str, cell_id: str, code: str) -> nbformat.NotebookNode:
    source = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    nb = honest_copy(source)
    next(c for c in nb.cells if c.get("id") == cell_id).source = code.strip() + "\n"
    return nb


def planted_notebook(assignment: str, plant: Planted) -> nbformat.NotebookNode:
    source = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    nb = honest_copy(source)
    cell = next(c for c in nb.cells if c.get("id") == plant.cell)
    for old, new in plant.replacements:
        assert cell.source.count(old) == 1, f"{plant.student}: {old!r} must occur once in {plant.cell}"
        cell.source = cell.source.replace(old, new)
    return nb


def named_codes(message: str) -> set[str]:
    # "output differs from PyTorch's reference" is the no-name fallback, not a diagnosis.
    return {bug.code for bug in CATALOGUE if bug.name in message and bug.code != "mismatch"}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    def run(assignment: str) -> dict[str, dict[str, dict]]:
        root = tmp_path_factory.mktemp(f"planted-{assignment}")
        subs, out = root / "submissions", root / "out"
        source = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
        students = {"honest": honest_copy(source)}
        students.update({p.student: planted_notebook(assignment, p) for p in PLANTED[assignment]})
        students.update({f"alt_{name}": alternative_notebook(assignment, cell, code)
                         for name, (cell, code) in ALTERNATIVES.get(assignment, {}).items()})
        for student, nb in students.items():
            (subs / student).mkdir(parents=True)
            nbformat.write(nb, subs / student / f"{assignment}.ipynb")
        proc = subprocess.run([sys.executable, "-m", "grader", "grade", assignment, str(subs), "--out", str(out),
                               "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows: dict[str, dict[str, dict]] = {}
        with open(out / "tasks.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                rows.setdefault(row["student_id"], {})[row["task"]] = row
        return rows
    cache: dict[str, dict] = {}

    def graded_once(assignment: str) -> dict[str, dict[str, dict]]:
        if assignment not in cache:      # (setdefault would evaluate run() again for every test)
            cache[assignment] = run(assignment)
        return cache[assignment]
    return graded_once


@pytest.mark.parametrize("assignment, plant", [(a, p) for a, plants in PLANTED.items() for p in plants],
                         ids=lambda v: v.student if isinstance(v, Planted) else v)
def test_a_planted_bug_loses_the_right_points_with_the_right_words(graded, assignment, plant):
    rows = graded(assignment)
    honest = rows["honest"]
    assert all(float(r["score"]) == float(r["max_score"]) for r in honest.values()), honest
    mine = rows[plant.student]
    lost = mine[plant.loses]
    assert float(lost["score"]) < float(lost["max_score"]), lost
    message = lost["message"]
    assert plant.says in message, message
    assert named_codes(message) <= set(plant.names), f"names a bug that was not planted: {message}"
    assert set(plant.names) <= named_codes(message), f"does not name the planted bug: {message}"
    if plant.score is not None:
        assert float(lost["score"]) == plant.score, lost
    if "the notebook's test failed" in message:
        assert "verified on" not in message
    for task, row in mine.items():          # no collateral damage beyond the tasks whose tests use the cell
        if task != plant.loses and plant.cell not in DEPENDS[assignment].get(task, set()):
            assert float(row["score"]) == float(row["max_score"]), (task, row)


@pytest.mark.parametrize("assignment, name", [(a, n) for a, alts in ALTERNATIVES.items() for n in alts])
def test_a_correct_alternative_keeps_full_marks(graded, assignment, name):
    """Fused QKV, heads folded into the batch by helper functions, an attention() helper masking with -1e9, masks
    where True means "may attend" (torch.where): behaviour is what is graded, so each keeps every point."""
    rows = graded(assignment)[f"alt_{name}"]
    for task, row in rows.items():
        assert float(row["score"]) == float(row["max_score"]), (name, task, row)
