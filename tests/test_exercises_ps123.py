"""Mutation testing of ps1-ps3 through nbgrader's real autograde.

Each planted bug (tests/mutations/ps123.py) must lose marks on the tasks it breaks, and the feedback the student
gets must name it; each correct-but-different implementation (tests/mutations/ps123_alternatives.py) must get
full marks. All notebooks of one assignment are graded in one nbgrader course (one gradebook), each in its own
kernel, once per test session.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from exercise_harness import REPO, autograde_many, mutate, replace_cell
from grader.tasks import ASSIGNMENTS
from mutations.ps123 import MUTATIONS
from mutations.ps123_alternatives import ALTERNATIVES

pytestmark = pytest.mark.slow
_GRADED: dict[str, dict[str, dict]] = {}


def source_nb(name: str) -> Path:
    return REPO / "solutions" / name / f"{name}.ipynb"


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """graded(assignment) -> {notebook id: autograde result}; grades every variant of that assignment once."""

    def grade(name: str) -> dict[str, dict]:
        if name not in _GRADED:
            tmp = tmp_path_factory.mktemp(f"graded-{name}")
            notebooks = {"solution": source_nb(name)}
            for m in MUTATIONS:
                if m.assignment == name:
                    notebooks[m.id] = mutate(source_nb(name), m.cell, list(m.replacements),
                                             tmp / "nbs" / m.id / f"{name}.ipynb")
            for alt in ALTERNATIVES:
                if alt.assignment == name:
                    notebooks[alt.id] = replace_cell(source_nb(name), alt.cell, alt.code,
                                                     tmp / "nbs" / alt.id / f"{name}.ipynb")
            _GRADED[name] = autograde_many(source_nb(name), notebooks, tmp / "grading")
        return _GRADED[name]

    return grade


def test_the_issue_bugs_are_all_planted():
    """The fourteen bugs the course promises to catch, each with at least one mutation."""
    from grader.diagnose import BUGS

    required = {"width", "no_out_proj", "out_proj_unused", "d_in_d_out", "scale_multiplied", "softmax_dim",
                "future", "mask_buffer", "view_no_transpose", "contiguous", "dropout_scores", "dropout_eval"}
    planted = {code for code, phrase in BUGS.items() if any(m.diagnosis == phrase for m in MUTATIONS)}
    assert required <= planted, f"no mutation for {required - planted}"
    ids = {m.id for m in MUTATIONS}
    # Distinct bugs that share a diagnosis are planted separately: out_proj built with d_in and transposed weights,
    # a missing mask and a mask applied after the softmax.
    assert {"out_proj_with_d_in", "weights_transposed_mha", "no_mask", "mask_after_softmax"} <= ids
    assert len(MUTATIONS) >= 14
    assert {a.id for a in ALTERNATIVES} >= {"mha_einsum", "mha_fused_qkv", "mha_reshape_permute",
                                            "mha_loop_over_heads"}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: f"{m.assignment}-{m.id}")
def test_mutation_loses_marks_and_is_named(mutation, graded):
    results = graded(mutation.assignment)
    result, solution = results[mutation.id], results["solution"]
    assert solution["total"] == ASSIGNMENTS[mutation.assignment].max_score, solution["feedback"][-2000:]
    for task in mutation.loses:
        assert result["scores"][task] < solution["scores"][task], \
            f"{mutation.id} did not lose marks on {task}: {result['scores']}"
    assert mutation.diagnosis in result["feedback"], \
        f"{mutation.id}: feedback does not say {mutation.diagnosis!r}:\n{result['feedback'][-3000:]}"
    # The phrase comes from the failure, not from the notebook's text.
    assert mutation.diagnosis not in solution["feedback"]


@pytest.mark.parametrize("alternative", ALTERNATIVES, ids=lambda a: f"{a.assignment}-{a.id}")
def test_other_correct_implementation_gets_full_marks(alternative, graded):
    result = graded(alternative.assignment)[alternative.id]
    expected = {t.name: float(t.points) for t in ASSIGNMENTS[alternative.assignment].tasks}
    assert result["scores"] == expected, f"{alternative.id}: {result['scores']}\n{result['feedback'][-3000:]}"
