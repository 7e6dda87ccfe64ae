"""Stage 5, verify: the scores student code cannot fake, and the flags a person should review.

Two calls around the execute stage, composed by ``grader.grade.grade_one``:

- :func:`plan` (before execute): the probe cells to append after the student's cells, for this submission's seed;
- :func:`verify` (after execute): each task's verified score from the files the probes wrote, read as data in
  the grader's process, plus the integrity flags (static, from the submitted cells; runtime, from the probes'
  tripwires).

Both take a :class:`Verification` made once per run by :func:`prepare`, which checks the assignment's contract
first (:func:`grader.assignments.check_contract`): every graded task has probe cases and every answer key is
found, or the run stops before grading anyone, naming the task. An assignment the registry does not know (a
custom ``--source``) has no verification: its tasks are scored by their test cells alone, and ``prepare`` says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grader import verify as checks
from grader.assignments import Assignment, check_contract, get


@dataclass(frozen=True)
class Verification:
    """What verification needs for a whole run: the assignment (None: not verified), its source notebook, and
    the course's own cells of that source (not flagged)."""
    assignment: Assignment | None
    source_path: Path
    course_cells: frozenset[str] = field(default_factory=frozenset)

    @property
    def active(self) -> bool:
        return self.assignment is not None


def prepare(assignment: str, source_path: Path, log=None) -> Verification:
    """The run's Verification. Raises ContractError (naming the task) when a registered assignment's pieces do not
    fit: a graded task without probes, a missing answer key, graded cells that are not the declared tasks."""
    spec = get(assignment)
    if spec is None:
        if log:
            log(f"{assignment} is not one of the course's assignments (grader/assignments/): its tasks are scored "
                f"by their test cells only, without verification outside the kernel")
        return Verification(None, Path(source_path))
    check_contract(spec, Path(source_path))
    return Verification(spec, Path(source_path), frozenset(checks.course_cell_sources(Path(source_path))))


def plan(v: Verification, seed: int) -> list[str]:
    """The probe cells for ``seed`` (none when the assignment is not verified)."""
    return list(checks.plan_probes(v.assignment, v.source_path, seed)) if v.active else []


def verify(v: Verification, seed: int, probe_dir: Path | None, notebook_json: dict) -> tuple[dict, list[str]]:
    """({task: (verified score, max score, message)}, flags) for one submission; ({}, []) when not verified.
    ``probe_dir`` is None when the kernel left no probe folder: every task is then "not verified"."""
    if not v.active:
        return {}, []
    flags = list(checks.integrity_flags(v.assignment, notebook_json, set(v.course_cells)))
    probe_dir = probe_dir if probe_dir is not None else Path("/nonexistent-probe-dir")
    verified = checks.verify_outputs(v.assignment, v.source_path, seed, probe_dir)
    flags += [f for f in checks.runtime_flags(v.assignment, probe_dir) if f not in flags]
    return verified, flags
