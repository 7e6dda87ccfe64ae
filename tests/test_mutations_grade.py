"""Real bugs learners report in public attention code, through the real ``python -m grader grade``.

Each student of a small class is the honest solution with one bug planted by text replacement. The grade must
take the points of the right task and say the right thing: the bug's catalogue name when its reference reproduces
the output, or an honest "not one of the known bugs". No message may name a catalogued bug other than the one
planted, and no task may say "verified" beside a failing test. One ``grade`` run per assignment.
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
    ],
    "ps3": [
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
    return lambda assignment: cache.setdefault(assignment, run(assignment))


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
    if "the notebook's test failed" in message:
        assert "verified on" not in message
    for task, row in mine.items():          # no collateral damage beyond the tasks whose tests use the cell
        if task != plant.loses and plant.cell not in DEPENDS[assignment].get(task, set()):
            assert float(row["score"]) == float(row["max_score"]), (task, row)
