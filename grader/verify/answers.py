"""Answer tasks (filled in when ps4/ps5 exist)."""
from __future__ import annotations


def answer_cases(assignment: str) -> list:
    return []


def check_answer(case, meta) -> None:
    raise KeyError(case.check)
