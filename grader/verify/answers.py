"""Answer tasks (ps4 ``diagnoses``, ps5 ``anomaly_answer``): the student's value as JSON against the instructor's key.

The key is read from the instructor's source notebook in solutions/, from the hidden test's own text, parsed with
``ast`` and ``ast.literal_eval``: nothing of the notebook is executed, and the key never enters the grader package
a student installs. The scoring mirrors the test cell: ps4's diagnoses earn 4 x (right labels) / 8, nothing when a
module is missing, a label is not one of ``BUG_LABELS`` or none is right; ps5's anomaly is all or nothing.
"""
from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path

from grader.verify.cases import Case


class AnswerFailure(Exception):
    """The answer is wrong or malformed; the text says how."""


def _cells(source_nb: Path) -> list[tuple[str, str]]:
    """(grade_id or cell id, source) of every code cell of the instructor's notebook."""
    cells = json.loads(Path(source_nb).read_text())["cells"]
    found = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        meta = (cell.get("metadata") or {}).get("nbgrader") or {}
        source = cell.get("source")
        found.append((meta.get("grade_id") or cell.get("id") or "",
                      "".join(source) if isinstance(source, list) else str(source)))
    return found


def _assigned_literal(source: str, name: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


@lru_cache(maxsize=8)
def diagnoses_key(source_nb: str) -> tuple[dict, list]:
    """({module: label}, BUG_LABELS) from ps4's hidden test and given cells."""
    key, labels = None, None
    for grade_id, source in _cells(Path(source_nb)):
        try:
            if grade_id == "test_diagnoses":
                raw = _assigned_literal(source, "answer_key")
                key = {name: value[0] if isinstance(value, tuple) else value for name, value in raw.items()}
            elif "BUG_LABELS" in source and labels is None:
                labels = list(_assigned_literal(source, "BUG_LABELS"))
        except (KeyError, SyntaxError, ValueError):
            continue
    if not key or not labels:
        raise KeyError("no answer_key/BUG_LABELS in the source notebook")
    return key, labels


@lru_cache(maxsize=8)
def anomaly_key(source_nb: str) -> str:
    """The letter in ps5's hidden test ``assert anomaly_answer == "B"``."""
    for grade_id, source in _cells(Path(source_nb)):
        if grade_id != "test_anomaly":
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) \
                    and node.left.id == "anomaly_answer" and isinstance(node.ops[0], ast.Eq) \
                    and isinstance(node.comparators[0], ast.Constant):
                return str(node.comparators[0].value)
    raise KeyError("no `anomaly_answer == ...` in the hidden test")


ANSWER_TASKS = {"ps4": [("diagnoses", "diagnoses")], "ps5": [("anomaly", "anomaly_answer")]}


def answer_cases(assignment: str, source_nb: Path | None = None) -> list[Case]:
    """One case per answer task whose key the source notebook holds (none without a source notebook)."""
    cases = []
    for task, name in ANSWER_TASKS.get(assignment, []):
        if source_nb is None:
            continue
        try:
            if task == "diagnoses":
                diagnoses_key(str(source_nb))
            else:
                anomaly_key(str(source_nb))
        except (OSError, KeyError, ValueError, SyntaxError):
            continue  # no key: the task keeps the score of its test cell
        cases.append(Case(task, "answer", "answer", name, check="answer", params={"source_nb": str(source_nb)}))
    return cases


def check_answer(case: Case, meta: dict) -> float:
    """The fraction of the task's points the answer earns (1.0 all, 0 none); AnswerFailure when none."""
    answer = meta.get("answer")
    if case.task == "diagnoses":
        key, labels = diagnoses_key(case.params["source_nb"])
        if not isinstance(answer, dict) or not all(isinstance(v, str) for v in answer.values()):
            raise AnswerFailure("diagnoses must be a dict mapping each mystery module's name to a label")
        missing = sorted(set(key) - set(answer))
        if missing:
            raise AnswerFailure(f"no diagnosis for {missing}")
        unknown = sorted(name for name, label in answer.items() if label not in labels)
        if unknown:
            raise AnswerFailure(f"labels not in BUG_LABELS for {unknown}")
        right = sum(answer.get(name) == label for name, label in key.items())
        if right == 0:
            raise AnswerFailure("no mystery module diagnosed correctly")
        return right / len(key)
    letter = anomaly_key(case.params["source_nb"])
    if not isinstance(answer, str) or answer not in {"A", "B", "C", "D"}:
        raise AnswerFailure(f"anomaly_answer must be one of 'A', 'B', 'C', 'D', not {str(answer)[:20]!r}")
    if answer != letter:
        raise AnswerFailure(f"{answer} is not the explanation; compare the FLOPs of the two wrappers")
    return 1.0
