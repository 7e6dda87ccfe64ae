"""Feedback and tasks.csv never quote text a probe produced (issue 23: student code put the probe's inputs into
an exception message that tasks.csv then printed). Every case of every assignment gets a result file full of a
marker, in every field a check reads (errors, raised types, returned types, verdicts, answers, built-in call
labels); neither the verified messages nor the run's flags may contain it. No kernel: the files are written here."""
from __future__ import annotations

import json

import pytest

from grader.assignments import ASSIGNMENTS
from grader.verify import verify_outputs
from grader.verify.integrity import runtime_flags
from grader.verify.probes import cases_by_task

from conftest import REPO

LEAK = "Leak7e3Input"       # what student code would have put there: an identifier, so it passes a name check


def leaky_meta(case, ok: bool) -> dict:
    error = f"{LEAK}: {LEAK} 0.125 0.5"
    calls = case.kwargs.get("calls") if isinstance(case.kwargs.get("calls"), list) else []
    verdicts = case.params.get("verdicts") or {}
    return {"ok": ok, "error": error, "raised": LEAK * 3, "raised_bases": [], "type": LEAK, "is_float": False,
            "is_int": False, "builtin_attention_calls": {LEAK: 3, "F.scaled_dot_product_attention": 1},
            "answer": {LEAK: LEAK} if ok else LEAK,
            "scenarios": [{"name": name, "error": error} for name in ("steady", "warmup", "sync", "gpu")],
            "results": [{"error": error} for _ in calls],
            "verdicts": {name: {"error": f"{LEAK} without a colon", "type": LEAK} for name in verdicts},
            "calls": [{"ok": False, "error": error} for _ in range(8)]}


@pytest.mark.parametrize("ok", [False, True])
@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_no_probe_text_reaches_a_message_or_a_flag(tmp_path, name, ok):
    assignment = ASSIGNMENTS[name]
    source = REPO / "solutions" / name / f"{name}.ipynb"
    probe = tmp_path / "_probe"
    for task, cases in cases_by_task(assignment, source, 3).items():
        (probe / task).mkdir(parents=True, exist_ok=True)
        for case in cases:
            (probe / task / f"{case.name}.json").write_text(json.dumps(leaky_meta(case, ok)))
    results = verify_outputs(assignment, source, 3, probe)
    assert results
    for task, verified in results.items():
        assert verified[0] == 0.0 or not ok, (task, verified)
        assert LEAK not in verified[2], (task, verified[2])
    flags = runtime_flags(assignment, probe)
    assert all(LEAK not in flag for flag in flags), flags
    said = [verified[2] for verified in results.values()] + flags
    if name == "ps1":               # the grader's own label stays (ps1's tasks are written from scratch)
        assert any("F.scaled_dot_product_attention x" in text for text in said), said
