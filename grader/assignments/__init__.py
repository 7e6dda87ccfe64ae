"""The registry of the course's assignments: one module per assignment, listed here.

``ASSIGNMENTS`` maps a name (``"ps1"``) to its :class:`Assignment` (tasks and points, probe cases, answer
keys). Adding an assignment is one new module and one line in ``MODULES`` (see CONTRIBUTING.md); nothing else
in the grader names an assignment.
"""
from __future__ import annotations

from importlib import import_module

from grader.assignments.spec import (ANSWER_KEY_FILE, Assignment, Check, ContractError, Task, check_contract,
                                     graded_cells_of)

# The modules of grader/assignments/ that each define ASSIGNMENT, in the course's order.
MODULES = ("ps1", "ps2", "ps3", "ps4", "ps5", "ps6")

ASSIGNMENTS: dict[str, Assignment] = {}
for _module in MODULES:
    _assignment = import_module(f"grader.assignments.{_module}").ASSIGNMENT
    ASSIGNMENTS[_assignment.name] = _assignment


def get(name: str) -> Assignment | None:
    """The registered assignment called ``name``, or None (a custom assignment graded by its own tests)."""
    return ASSIGNMENTS.get(name)


__all__ = ["ASSIGNMENTS", "ANSWER_KEY_FILE", "Assignment", "Check", "ContractError", "MODULES", "Task", "check_contract",
           "get", "graded_cells_of"]
