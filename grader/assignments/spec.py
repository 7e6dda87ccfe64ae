"""What an assignment module declares: its tasks and points, its probe cases and its answer keys.

One module per assignment (``grader/assignments/ps1.py`` ...) builds one :class:`Assignment`; the registry in
``grader/assignments/__init__.py`` lists them. Nothing else in the grader knows an assignment by name: the
pipeline, verification and the tests ask the registry.

The contract between an assignment's pieces (:func:`check_contract`) is checked by ``python -m grader release``,
at the start of ``python -m grader grade`` and by ``tests/test_contract.py``: every graded task has probe cases, so
no task can silently fall back to the in-kernel tests that student code could fake, every answer key is found, and
the source notebook's graded cells are the declared tasks with the declared points.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ANSWER_KEY_FILE = "answer_key.json"


@dataclass(frozen=True)
class Check:
    """A part of a task worth some of its points (credit by check).

    ``cases``: the probe cases judged for it, by name ("*": every case no other check names); ``bugs``: catalogue
    codes (:mod:`grader.bugs`) whose diagnosis costs this check wherever it is found, in a probe case or in the
    notebook's own failing test (a missing mask buffer costs the mask check, not the whole task); ``only_its_bugs``
    (see below).
    """
    name: str
    points: float
    cases: tuple[str, ...] = ("*",)
    bugs: tuple[str, ...] = ()
    # True: a failure of one of its cases costs it only when the failure names one of its bugs (a check of one
    # property, such as the mask being a buffer, judged on cases that also check the output).
    only_its_bugs: bool = False


@dataclass(frozen=True)
class Task:
    """One graded task: an nbgrader solution cell (grade_id == name) and its test cell (grade_id "test_" + name).

    Without ``checks`` a task is all or nothing, as its nbgrader test cell; with them its points are split over
    the checks, which must add up to ``points``."""
    name: str
    points: int
    names: tuple[str, ...]     # what the student defines, and what the probes call
    summary: str
    kind: str = "code"         # "code": behaviour is verified; "answer": a value compared with the answer key
    from_scratch: bool = True  # built-in attention (F.scaled_dot_product_attention, nn.MultiheadAttention) flagged
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Assignment:
    """An assignment's grading knowledge.

    ``cases(seed, source_nb, keys)`` returns the probe cases (:class:`grader.verify.cases.Case`) drawn from the seed;
    ``source_nb`` is the instructor's source notebook (classes some cases take from it) and ``keys`` the answer
    keys read from ``answer_key.json`` beside it ({} when the assignment has none). The task's points written
    here are the only ones: the source notebook (``solutions/<name>/<name>.py``) takes them from here.
    """
    name: str
    title: str
    chapters: tuple[str, ...]
    tasks: tuple[Task, ...]
    cases: Callable = None
    keyed_tasks: tuple[str, ...] = field(default_factory=tuple)   # tasks whose cases need answer_key.json

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def max_score(self) -> int:
        return sum(t.points for t in self.tasks)

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no task {name!r}")

    def answer_keys(self, source_nb: Path | None) -> dict:
        """The answer keys beside the source notebook ({} without a source or for an assignment without keys).

        Raises ContractError when the assignment needs keys and the file is missing or not a JSON object.
        """
        if not self.keyed_tasks or source_nb is None:
            return {}
        path = Path(source_nb).with_name(ANSWER_KEY_FILE)
        try:
            keys = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ContractError(self.name, list(self.keyed_tasks),
                                f"no readable answer key at {path} ({type(err).__name__})") from None
        if not isinstance(keys, dict):
            raise ContractError(self.name, list(self.keyed_tasks), f"{path} does not hold a JSON object")
        missing = [task for task in self.keyed_tasks if task not in keys]
        if missing:
            raise ContractError(self.name, missing, f"{path} has no key for them")
        return keys

    def probe_cases(self, seed: int, source_nb: Path | None) -> list:
        """Every probe case for ``seed``. Raises ContractError when an answer key is missing."""
        if self.cases is None:
            return []
        return list(self.cases(seed, Path(source_nb) if source_nb else None, self.answer_keys(source_nb)))


class ContractError(Exception):
    """An assignment's pieces do not fit: a graded task without probes, an answer key not found, a source notebook
    whose graded cells are not the declared tasks. The message names the assignment and the tasks."""

    def __init__(self, assignment: str, tasks: list[str], why: str):
        self.assignment, self.tasks, self.why = assignment, list(tasks), why
        super().__init__(f"{assignment}: task(s) {', '.join(self.tasks)}: {why}")


def graded_cells_of(source_nb: Path) -> dict[str, float]:
    """{test cell grade_id: points} of the source notebook's autograded test cells, read as JSON."""
    cells = json.loads(Path(source_nb).read_text())["cells"]
    found = {}
    for cell in cells:
        meta = (cell.get("metadata") or {}).get("nbgrader") or {}
        if cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution"):
            found[str(meta.get("grade_id"))] = float(meta.get("points") or 0)
    return found


def check_contract(assignment: Assignment, source_nb: Path | None, seed: int = 0) -> None:
    """Raise ContractError unless every task of ``assignment`` has probe cases and every answer key is found; with a
    source notebook, its graded test cells must be exactly the tasks, with the same points."""
    if source_nb is not None:
        try:
            graded = graded_cells_of(source_nb)
        except (OSError, ValueError, KeyError) as err:
            raise ContractError(assignment.name, [t.name for t in assignment.tasks],
                                f"the source notebook {source_nb} cannot be read ({type(err).__name__})") from None
        declared = {f"test_{t.name}": float(t.points) for t in assignment.tasks}
        wrong = sorted({gid for gid in set(graded) | set(declared) if graded.get(gid) != declared.get(gid)})
        if wrong:
            details = "; ".join(f"{gid}: {graded.get(gid, 'no cell')} in the notebook, "
                                f"{declared.get(gid, 'not declared')} declared" for gid in wrong)
            raise ContractError(assignment.name, [g[len("test_"):] if g.startswith("test_") else g for g in wrong],
                                f"the source notebook's graded cells differ from the declared tasks ({details})")
    cases = assignment.probe_cases(seed, source_nb)
    for task in assignment.tasks:
        if task.checks:
            if abs(sum(c.points for c in task.checks) - task.points) > 1e-9:
                raise ContractError(assignment.name, [task.name], "its checks' points do not add up to the task's")
            names = {case.name for case in cases if case.task == task.name}
            named = {n for c in task.checks for n in c.cases if n != "*"}
            if named - names:
                raise ContractError(assignment.name, [task.name], f"checks name cases that do not exist: "
                                                                  f"{sorted(named - names)}")
            empty = [c.name for c in task.checks if c.cases != ("*",) and not set(c.cases) & names]
            if not any(c.cases == ("*",) for c in task.checks) and names - named:
                raise ContractError(assignment.name, [task.name], f"cases no check judges: {sorted(names - named)}")
            if empty:
                raise ContractError(assignment.name, [task.name], f"checks without a case: {empty}")
    covered = {case.task for case in cases}
    unknown = sorted(covered - {t.name for t in assignment.tasks})
    if unknown:
        raise ContractError(assignment.name, unknown, "probe cases for tasks the assignment does not declare")
    missing = [t.name for t in assignment.tasks if t.name not in covered]
    if missing:
        raise ContractError(assignment.name, missing,
                            "no probe case: the task would be scored only by in-kernel tests that student code "
                            "can fake")
