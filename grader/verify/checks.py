"""verify_outputs: the verified score of every task, from the numbers the probes wrote.

Runs in the grader's process. It regenerates the seeded cases, recomputes the expected numbers with PyTorch
(:mod:`grader.verify.reference`), reads the sandbox's files as plain data (:mod:`grader.verify.loading`) and
compares. A task scores all its points only when every one of its cases matches, the same all-or-nothing rule as
the task's nbgrader test cell (ps4's diagnoses earn partial credit, as their test cell gives it), so an honest
submission keeps the score its tests gave it.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from grader.bugs import CATALOGUE, named
from grader.verify import answers, calls, checks_masks, compare, diagnosis, dropout, extra
from grader.verify.cases import Case
from grader.verify.diagnosis import CaseFailure, _name_the_bug  # noqa: F401  (the failure type; tests name it)
from grader.verify.loading import BUILTIN_LABELS, ProbeDataError, exception_name, load_json, safe_dir
from grader.verify.probes import cases_by_task

# What the probe runtime itself raises about a module's layout (grader/verify/kernel_runtime.py): only attribute
# names and shapes, never the probe's inputs.
_RUNTIME_MESSAGES = re.compile(r"ValueError: (?P<attr>\w+) has no (?P<what>bias), but this case needs one "
                               r"\(qkv_bias=True, or out_proj\)(?P<rest>)")


def probe_error_text(error) -> str:
    """What a failed probe case says: the exception's type only. Its message was written by student code that
    held the probe's inputs, so it could carry them into tasks.csv and the feedback page."""
    text = str(error or "").strip()
    if not text:
        return "the probe failed"
    attempted = re.fullmatch(r"(?P<name>\w+) is not (?P<how>written yet \(it raises NotImplementedError\)|defined)",
                             text)
    if attempted and attempted.group("how") == "defined":    # not written, renamed, or the kernel stopped first
        return f"{attempted.group('name')} is not defined when the probe ran (not written yet, renamed, or an " \
               f"earlier cell stopped the kernel)"
    if attempted:     # the probe runtime's own words (the course's name only): the task is not attempted
        return f"not attempted: {attempted.group('name')} is not {attempted.group('how')}"
    if text.startswith("NotImplementedError"):
        return "NotImplementedError (not written yet)"
    own = _RUNTIME_MESSAGES.fullmatch(text)
    if own:   # the probe's own words about the module's layout (fixed text, names only): safe to show
        return f"{own.group('attr')} has no bias although the case builds the class with qkv_bias=True" \
            if own.group("what") == "bias" else f"{own.group('attr')}: {own.group('rest')}"
    return f"raised {exception_name(text)} on the grader's inputs (its message is not shown: it could carry " \
        "those inputs)"


# Other correct layouts of a module's weights the probe ran a case under, as "<case>@<layout>" (see
# grader/verify/kernel_runtime.py: a fused projection's rows per head, a square plain tensor used as F.linear's).
LAYOUTS = ("per_head", "linear")


def judge_case(case: Case, folder: Path) -> float:
    """The fraction of the task's points the case earns (1.0 unless partial credit); raises CaseFailure (or
    ProbeDataError) when it earns none. A module whose weights allow more than one correct layout is judged by
    the layout under which it is correct; when it is correct under none, the failure is said for the course's
    layout (query rows first, x @ W for a plain tensor)."""
    try:
        return _judge_layout(case, folder)
    except CaseFailure:
        for label in LAYOUTS:
            if (folder / f"{case.name}@{label}.json").is_file():
                try:
                    return _judge_layout(dataclasses.replace(case, name=f"{case.name}@{label}"), folder)
                except (CaseFailure, ProbeDataError):
                    continue
        raise


def _judge_layout(case: Case, folder: Path) -> float:
    meta = load_json(folder / f"{case.name}.json")
    if meta.get("ok") is not True:
        error = probe_error_text(meta.get("error"))
        if "has no bias although" in error and case.params.get("heads"):
            error += " (the wrapper must pass qkv_bias on to each head)"
        bug = diagnosis._weight_diagnosis(case, meta) if case.driver == "module" else ""
        raise CaseFailure(error + diagnosis._looks_like(bug))
    judged = CHECKS[case.check](case, folder, meta)
    return 1.0 if judged is None else judged


def _answer(case: Case, folder: Path, meta: dict) -> float:
    return answers.check_answer(case, meta)


# The one dispatch table: probe kind (Case.check) -> its check, (case, folder, meta) -> the fraction of the task's
# points it earns (None: all); each raises CaseFailure when it earns none. One module per kind.
CHECKS = {
    "reference": compare.check_reference,
    "raises": lambda case, folder, meta: compare.check_raises(case, meta),
    "dropout_pattern": dropout.check_dropout_pattern,
    "dropout_placement": dropout.check_dropout_placement,
    "calls": calls.check_calls,
    "eval_twice": calls.check_eval_twice,
    "answer": _answer,
    **{kind: (lambda check: lambda case, folder, meta: check(case, meta))(check)
       for kind, check in extra.CHECKS.items()},
    **checks_masks.MASK_CHECKS,
}


def builtin_calls(folder: Path, cases: list[Case]) -> dict[str, int]:
    """Calls of PyTorch's built-in attention the kernel's tripwires saw while the cases ran (for a review flag)."""
    seen: dict[str, int] = {}
    for case in cases:
        try:
            calls = load_json(folder / f"{case.name}.json").get("builtin_attention_calls") or {}
        except ProbeDataError:
            continue
        if isinstance(calls, dict):
            for name, count in calls.items():
                # Only the probe runtime's own labels: the file is the kernel's to write.
                if name in BUILTIN_LABELS and isinstance(count, int) and count > 0:
                    seen[name] = seen.get(name, 0) + count
    return seen


class Verified(tuple):
    """(verified score, max score, message), unpacked like a tuple, plus ``checks``: for a task with credit by
    check, {check name: (points, passed, what failed)} (empty for an all-or-nothing task)."""

    def __new__(cls, score: float, max_score: float, message: str, checks: dict | None = None,
                check_bugs: dict | None = None):
        made = super().__new__(cls, (score, max_score, message))
        made.checks = dict(checks or {})
        made.check_bugs = dict(check_bugs or {})     # check name -> the catalogue codes it answers for
        return made


def _checks_of(task, case_name: str, failure: str, bug: str | None = None) -> list:
    """The task's checks a failure costs: with ``bug`` (a failure that judges one bug's property), the checks that
    answer for it; else the check whose bugs include the failure's diagnosis, else every check that judges the
    case (a case that fails for an unknown reason proves none of the checks built on it)."""
    if bug is not None:
        return [check for check in task.checks if bug in check.bugs]
    owning = [check for check in task.checks if any(named(code) in failure for code in check.bugs)]
    if owning:      # several when a failure names bugs of several checks ("A or B": either may be the cause)
        return owning
    listing = [check for check in task.checks if case_name in check.cases and not check.only_its_bugs]
    return listing or [check for check in task.checks if check.cases == ("*",)]


def verify_outputs(assignment, source_nb: Path, seed: int, probe_dir: Path) -> dict[str, Verified]:
    """Per task of ``assignment`` (a :class:`grader.assignments.Assignment`): a :class:`Verified`, (verified
    score, max score, message). A task declared with checks earns the points of each check whose cases all pass;
    otherwise it is all or nothing, as its nbgrader test cell.

    Never raises on anything the sandbox wrote; raises ContractError when an answer key is missing (checked before
    grading starts, see :func:`grader.assignments.check_contract`)."""
    grouped = cases_by_task(assignment, Path(source_nb) if source_nb else None, seed)
    results: dict[str, Verified] = {}
    for task in assignment.tasks:
        cases = grouped.get(task.name)
        if not cases:
            continue  # the contract (checked before grading) guarantees cases; kept for custom callers
        failures, fraction = [], 1.0
        try:
            folder = safe_dir(probe_dir, task.name)
        except ProbeDataError as exc:
            results[task.name] = Verified(0.0, float(task.points), f"not verified, {exc}",
                                          {c.name: (c.points, False, str(exc)) for c in task.checks},
                                          {c.name: tuple(c.bugs) for c in task.checks})
            continue
        for case in cases:
            try:
                fraction = min(fraction, judge_case(case, folder))
            except (CaseFailure, ProbeDataError) as exc:
                failures.append((case.name, f"case {case.name}: {exc}"))
                buffer = compare.mask_buffer_failure(case, folder, str(exc))
                if buffer:          # the mask is judged on its own, whatever else failed: it costs the mask check
                    failures.append((case.name, f"case {case.name}: {buffer}", "mask_buffer"))
            except Exception as exc:  # a grader bug must cost a task, not the whole run
                failures.append((case.name, f"case {case.name}: could not be checked ({type(exc).__name__}: {exc})"))
        if failures and {failure[0] for failure in failures} == {c.name for c in cases} \
                and all(_UNATTEMPTED.search(failure[1]) for failure in failures):
            said = failures[0][1].split(": ", 1)[1]      # every case says so: said once, for the task
            made = _by_check(task, cases, failures) if task.checks else Verified(0.0, float(task.points), said)
            results[task.name] = Verified(made[0], made[1], said, made.checks, made.check_bugs)
        elif task.checks:
            results[task.name] = _by_check(task, cases, failures)
        elif failures:
            more = f" (and {len(failures) - 1} more failing case(s))" if len(failures) > 1 else ""
            results[task.name] = Verified(0.0, float(task.points), f"verification failed, {failures[0][1]}{more}")
        else:
            score = round(task.points * fraction, 6)
            partial = f"; {score:g} of {task.points} points" if fraction < 1 else ""
            results[task.name] = Verified(score, float(task.points),
                                          f"verified on {len(cases)} case(s) drawn at grading time{partial}")
        calls = builtin_calls(folder, cases)
        if calls and task.from_scratch:
            text = ", ".join(f"{name} x{count}" for name, count in sorted(calls.items()))
            old = results[task.name]
            results[task.name] = Verified(old[0], old[1], f"{old[2]}; built-in attention ran during the probe "
                                                          f"({text})", old.checks, old.check_bugs)
    return results


# What every case of a task says when its code is not there to run (probe_error_text's own words).
_UNATTEMPTED = re.compile(r"^case [^:]+: (not attempted: |\w+ is not defined when the probe ran)")


def _by_check(task, cases, failures) -> Verified:
    """Credit by check: each check keeps its points unless one of its cases failed (or a failure elsewhere was
    diagnosed as one of its bugs)."""
    failed: dict[str, str] = {}
    # A failure that names one catalogued bug speaks for its check first, then one that names several (a case
    # whose inputs cannot tell them apart), then one that does not know the bug.
    def named_count(failure) -> int:
        count = sum(bug.name in failure[1] for bug in CATALOGUE if bug.code != "mismatch")
        return {0: 2, 1: 0}.get(count, 1)

    failures = sorted(failures, key=named_count)
    charged: dict[str, list[tuple[str, str]]] = {}
    for case_name, text, *bug in failures:
        for check in _checks_of(task, case_name, text, *bug):
            charged.setdefault(check.name, []).append((case_name, text))
    for check in task.checks:       # said with one of the check's own cases when one of them failed
        if check.name in charged:
            own = [text for case_name, text in charged[check.name] if case_name in check.cases]
            failed[check.name] = (own or [text for _, text in charged[check.name]])[0]
    outcome = {c.name: (c.points, c.name not in failed, failed.get(c.name, "")) for c in task.checks}
    owners = {c.name: tuple(c.bugs) for c in task.checks}
    score = round(sum(points for points, passed, _ in outcome.values() if passed), 6)
    if not failed:
        return Verified(score, float(task.points), f"verified on {len(cases)} case(s) drawn at grading time",
                        outcome, owners)
    by_text: dict[str, list[str]] = {}
    for name, text in failed.items():          # one failure that costs several checks is said once
        by_text.setdefault(text, []).append(name)
    lost = "; ".join(("check " if len(names) == 1 else "checks ")
                     + ", ".join(f"{name} ({outcome[name][0]:g} of {task.points} points)" for name in names)
                     + f" failed, {text}" for text, names in by_text.items())
    kept = [f"{name} ({points:g})" for name, (points, passed, _) in outcome.items() if passed]
    return Verified(score, float(task.points), f"verification: {lost}" + (f"; verified: {', '.join(kept)}"
                                                                           if kept else ""), outcome, owners)
