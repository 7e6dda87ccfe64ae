"""The code cells the pipeline appends after a student's cells: one set-up cell, then one cell per task.

A cell per task, so that a task whose code hangs until the pipeline's cell time limit stops it costs only that
task. Each cell carries its cases as JSON (inputs and weights encoded inside it); nothing in it imports the
``grader`` package, because the student's earlier cells could have replaced it in the kernel.
"""
from __future__ import annotations

import json
from pathlib import Path

from grader.verify.cases import Case

RUNTIME = Path(__file__).with_name("kernel_runtime.py")

# The folder the probe cells write into, relative to the kernel's working directory.
PROBE_DIRNAME = "_probe"


def cases_by_task(assignment, source_nb: Path | None, seed: int) -> dict[str, list[Case]]:
    """The cases of each task of ``assignment`` (a :class:`grader.assignments.Assignment`), grouped by task in the
    order the assignment's module lists them. Raises ContractError when an answer key is missing."""
    grouped: dict[str, list[Case]] = {}
    for case in assignment.probe_cases(seed, source_nb):
        grouped.setdefault(case.task, []).append(case)
    return grouped


def plan_probes(assignment, source_nb: Path, seed: int) -> list[str]:
    """Code cells to run after the student's cells, in the same kernel, even if earlier cells failed.

    They write ``./_probe/<task>/<case>.npy`` (outputs, and the weights the module holds) and
    ``./_probe/<task>/<case>.json`` (what happened, or the error) for :func:`grader.verify.verify_outputs`.
    """
    grouped = cases_by_task(assignment, Path(source_nb) if source_nb else None, seed)
    cells = [RUNTIME.read_text()]
    for task, cases in grouped.items():
        payload = json.dumps([case.kernel_spec() for case in cases], separators=(",", ":"))
        cells.append(
            f"# grader probe for task {task!r}: the cases below were drawn at grading time\n"
            f"_mha_probe.run_task({task!r}, {payload!r}, globals())\n"
        )
    return cells
