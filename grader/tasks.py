"""Kept for old imports: the assignments and their tasks now live in :mod:`grader.assignments`."""
from grader.assignments import ASSIGNMENTS, Assignment, Task

__all__ = ["ASSIGNMENTS", "Assignment", "Task"]
