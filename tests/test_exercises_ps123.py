"""Mutation testing of ps1-ps3 through nbgrader's real autograde.

Each planted bug (tests/mutations/ps123.py) must lose marks on the tasks it breaks, and the feedback the student
gets must name it; each correct-but-different implementation (tests/mutations/ps123_alternatives.py) must get
full marks. All notebooks of one assignment are graded in one nbgrader course (one gradebook), each in its own
kernel, once per test session. Edits in cells whose tests do not run through each other's code share a notebook
(``exercise_harness.pack``), and each is judged on its own tasks' scores and test-cell output.
"""
from __future__ import annotations

import pytest

from exercise_harness import grade_assignment, pack
from grader.assignments import ASSIGNMENTS
from mutations.ps123 import DEPENDS, MUTATIONS
from mutations.ps123_alternatives import ALTERNATIVES

pytestmark = [pytest.mark.slow, pytest.mark.nbgrader]


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """graded(assignment) -> {notebook id: autograde result}, every variant graded once per session."""
    return lambda name: grade_assignment(name, tmp_path_factory.mktemp(f"graded-{name}"))


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
        # Named where it failed: in the output of that task's own test cell.
        assert mutation.diagnosis in result["outputs"][task], f"{mutation.id}: {result['outputs'][task][-2000:]}"
    assert mutation.diagnosis in result["feedback"], \
        f"{mutation.id}: feedback does not say {mutation.diagnosis!r}:\n{result['feedback'][-3000:]}"
    # The phrase comes from the failure, not from the notebook's text.
    assert mutation.diagnosis not in solution["feedback"]
    # A bug costs only the tasks whose tests run through the edited cells (no collateral penalties).
    depends = DEPENDS[mutation.assignment]
    for task in ASSIGNMENTS[mutation.assignment].tasks:
        if not ({task.name} | depends.get(task.name, set())) & set(result["edited_cells"]):
            assert result["scores"][task.name] == task.points, f"{mutation.id} also cost {task.name}"


@pytest.mark.parametrize("alternative", ALTERNATIVES, ids=lambda a: f"{a.assignment}-{a.id}")
def test_other_correct_implementation_gets_full_marks(alternative, graded):
    result = graded(alternative.assignment)[alternative.id]
    expected = {t.name: float(t.points) for t in ASSIGNMENTS[alternative.assignment].tasks}
    assert result["scores"] == expected, f"{alternative.id}: {result['scores']}\n{result['feedback'][-3000:]}"


def test_packing_keeps_dependent_edits_apart():
    """ps1's SelfAttention runs through scaled_dot_product: their bugs must be graded in separate notebooks."""
    ps1 = [m for m in MUTATIONS if m.assignment == "ps1"]
    for group in pack(ps1, DEPENDS["ps1"]):
        cells = {m.cell for m in group}
        assert not ({"scaled_dot_product", "self_attention"} <= cells), [m.id for m in group]
    ps2 = pack([m for m in MUTATIONS if m.assignment == "ps2"], DEPENDS["ps2"])
    assert all(len({m.cell for m in group}) == len(group) for group in ps2), "two edits of one cell packed"
