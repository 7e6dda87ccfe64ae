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

import numpy as np
import torch

from grader import references
from grader.bugs import BY_CODE, CATALOGUE, code_of, named
from grader.verify import dropout, reference
from grader.verify.cases import Case
from grader.verify.loading import ProbeDataError, load_array, load_json, safe_dir

# float32 results of these small problems sit within ~1e-6 of float64 (CUDA kernels within ~1e-5); every named bug
# is off by more than 1e-2. The same tolerances as the notebooks' own tests (grader.diagnose).
ATOL = 1e-4
RTOL = 1e-3


class CaseFailure(Exception):
    """A case did not match; the text says how, in words for the student."""


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal within the tolerances; NaN matches NaN (a known bug may produce it where a student's code does)."""
    return got.shape == want.shape and np.allclose(got.astype(np.float64), want, atol=ATOL, rtol=RTOL,
                                                   equal_nan=True)


def _name_the_bug(case: Case, outputs: list[np.ndarray]) -> str:
    """Every catalogued bug whose reference implementation reproduces ``outputs`` on the case's inputs, joined with
    " or " (several only when several reproduce); "" when none does. Differential diagnosis: a bug is named only
    on the evidence of its own reference, never from a symptom alone."""
    found = []
    for bug, produced in reference.hypotheses(case):
        pairs = [(got, want) for got, want in zip(outputs, produced) if want is not None]
        if pairs and all(_close(got, np.asarray(want, dtype=np.float64)) for got, want in pairs) \
                and bug not in found:
            found.append(bug)
    if len(found) > 1:     # the case cannot tell them apart: the bare names, each of which fits
        bare = list(dict.fromkeys(BY_CODE[code_of(bug)].name if code_of(bug) else bug for bug in found))
        return " or ".join(bare) + (" (this case's inputs cannot tell them apart)" if len(bare) > 1 else "")
    return " or ".join(found)


def _looks_like(bug: str) -> str:
    """The tail of a failure message: a catalogued bug is "looks like <name>"; other evidence is said as is."""
    if not bug:
        return ""
    return f": looks like {bug}" if code_of(bug) else f": {bug}"


def _unknown(case: Case, have: np.ndarray, want: np.ndarray) -> str:
    """What to say when no catalogued bug reproduces the output: that, and where the output first differs."""
    checked = len(reference.hypotheses(case))
    text = f"not one of the {checked} known bugs the grader checked for this case (grader/bugs.py)"
    where = _where_it_differs(case, have, want)
    return f"{text}; {where}" if where else text


def _where_it_differs(case: Case, have: np.ndarray, want: np.ndarray) -> str:
    """Localise a wrong module output from the output alone: by sequence, then by token. In causal attention the
    first token attends only to itself, so its output is its value projected (and out_proj): right there and
    wrong later points at the scores, the mask or the softmax; wrong already there points at the projections."""
    if have.shape != want.shape or have.ndim != 3 or case.params.get("reference") not in ("heads", "mha",
                                                                                         "heads_out_proj"):
        return ""
    matches = [_close(have[b], want[b]) for b in range(have.shape[0])]
    if any(matches) and not all(matches):
        wrong = [b for b, ok in enumerate(matches) if not ok]
        return (f"differs in sequence(s) {wrong} of the batch only: a sequence's output depends on the others, or "
                f"the batch is not handled per sequence")
    causal = case.params.get("causal") or case.params.get("reference") == "heads_out_proj"
    if not causal:
        return ""
    if _close(have[:, :1], want[:, :1]):
        later = next(t for t in range(1, have.shape[1]) if not _close(have[:, t:t + 1], want[:, t:t + 1]))
        return (f"differs from token {later} on while token 0 (which sees only itself) is right: look at the "
                f"scores, their scaling, the mask and the softmax")
    return ("differs already at token 0, which attends only to itself: look at the value projection, the merge of "
            "the heads and out_proj")


def _shape_diagnosis(case: Case, got: np.ndarray, want: np.ndarray) -> str:
    """A catalogued bug whose reference gives an output of ``got``'s shape and reproduces it, else "": each head
    d_out wide in a module whose d_out is the total (``width``, from the shape: its weights are then the wrong
    shape too, see _weight_diagnosis), the heads' outputs averaged instead of concatenated (``heads_averaged``)."""
    heads = case.params.get("num_heads", 1) if case.driver == "module" else 1
    if got.ndim == want.ndim and got.shape[:-1] == want.shape[:-1] and heads > 1 \
            and got.shape[-1] == heads * want.shape[-1]:
        return named("width", "the output is num_heads times too wide")
    if case.params.get("heads", 0) > 1 and case.params.get("reference") in ("heads", "heads_out_proj") \
            and got.ndim == 3:
        try:
            averaged = reference.heads_averaged(case).numpy()
        except RuntimeError:
            return ""
        if _close(got, averaged):
            return named("heads_averaged", "the output equals the mean of the heads' outputs: concatenate them "
                                           "along the last dim (torch.cat(..., dim=-1))")
    return ""


def _weight_diagnosis(case: Case, meta: dict) -> str:
    """Names a bug from the shapes of the module's own weights, recorded before the probe set them, only when the
    shape is the one that bug makes; any other shape is described as it is, without a bug's name."""
    shapes = meta.get("weight_shapes") or {}
    for head, attr, key, _ in case.weights:
        have = shapes.get(f"{head}.{attr}")
        want = list(case.arrays[key].shape)
        if isinstance(have, str):
            if attr == "out_proj":
                return named("no_out_proj", "the module has no out_proj")
            continue
        if not isinstance(have, list) or have == want:
            continue
        d_in = case.arrays["x"].shape[-1]
        kv_heads = case.params.get("num_kv_heads")
        if kv_heads and attr in ("W_key", "W_value") and case.params.get("num_heads", 1) != kv_heads \
                and have == [want[0] // kv_heads * case.params["num_heads"], d_in]:
            # One K/V head per query head: no catalogued bug makes this shape in grouped-query attention.
            return (f"{attr} is {tuple(have)}, expected {tuple(want)}: K/V heads not shared, {attr} must project "
                    f"to num_kv_heads * head_dim (not one of the known bugs the grader checks, grader/bugs.py)")
        if kv_heads and attr in ("W_key", "W_value") and have != want[::-1]:
            # The catalogue's shape bugs are about query-sized projections; K/V ones here are described as they are.
            return f"{attr} has shape {tuple(have)} where the course's layout has {tuple(want)} (num_kv_heads * " \
                   f"head_dim rows; not one of the known bugs the grader checks, grader/bugs.py)"
        if attr == "out_proj":
            if have == [want[0], d_in]:
                return named("out_proj_d_in")
            return f"out_proj has shape {tuple(have)} where the course's layout has {tuple(want)}"
        if case.params.get("num_heads", 1) > 1 and have and have[0] == want[0] * case.params["num_heads"]:
            return named("width", "each head is d_out wide")
        if case.params.get("per_head_d_out") and case.params.get("num_heads", 1) > 1 and have \
                and have[0] == want[0] // case.params["num_heads"]:
            return _WRAPPER_DIVIDED
        if have == want[::-1]:
            return named("d_in_d_out", f"{attr} is stored transposed, {tuple(have)}")
        if have == [d_in, d_in]:
            return named("d_in_d_out", f"{attr} is {tuple(have)}: built with d_in where d_out belongs")
        return (f"{attr} has shape {tuple(have)} where the course's layout has {tuple(want)} (not one of the known "
                f"bugs: the module is built differently)")
    return ""


def _weights_moved(case: Case, folder: Path) -> str:
    """The weights the module held after its forward pass (read back by the probe) against those the probe set."""
    if _heads_shared(case, folder):
        return named("shared_heads", "build a new CausalAttention for each head")
    for head, attr, key, _ in case.weights:
        try:
            used = load_array(folder / f"{case.name}.used.{head}.{attr}.npy")
        except ProbeDataError:
            return ""
        if used.shape != case.arrays[key].shape or not np.allclose(used, case.arrays[key], atol=1e-6):
            return named("weights_changed", f"{attr} after the forward pass is not the weight the probe set")
    return ""


def _heads_shared(case: Case, folder: Path) -> bool:
    """Every head read back the same W_query although the probe set different ones: one module, repeated."""
    keys = [(head, key) for head, attr, key, _ in case.weights if attr == "W_query" and head >= 0]
    if len(keys) < 2:
        return False
    try:
        used = [load_array(folder / f"{case.name}.used.{head}.W_query.npy") for head, _ in keys]
    except ProbeDataError:
        return False
    set_differently = not np.array_equal(case.arrays[keys[0][1]], case.arrays[keys[1][1]])
    return set_differently and all(u.shape == used[0].shape and np.array_equal(u, used[0]) for u in used[1:])


def _check_reference(case: Case, folder: Path, meta: dict) -> None:
    wanted = reference.expected(case)
    # NaN is read as data: some known bugs (a mask that hides a token from itself) produce it.
    got = [load_array(folder / f"{case.name}.out{i}.npy", allow_nonfinite=True) for i in range(len(wanted))]
    for index, (have, want) in enumerate(zip(got, wanted)):
        label = "the result" if len(wanted) == 1 else f"result [{index}]"
        if want.dtype == bool:
            if have.dtype != bool:
                raise CaseFailure(f"{label} has dtype {have.dtype}; a mask must be torch.bool")
            if have.shape != want.shape or not np.array_equal(have, want):
                raise CaseFailure(f"{label} marks the wrong positions (True must be the future: key j > query i)")
            continue
        if have.shape != want.shape:
            bug = _shape_diagnosis(case, have, want) or _weight_diagnosis(case, meta)
            raise CaseFailure(f"{label} has shape {tuple(have.shape)}, expected {tuple(want.shape)}"
                              + _looks_like(bug))
        if not _close(have, want):
            bug = _name_the_bug(case, got) or _weight_diagnosis(case, meta) or _weights_moved(case, folder)
            if have.dtype.kind == "f" and not np.isfinite(have).all():
                raise CaseFailure(f"{label} contains NaN or infinity" + _looks_like(bug or _unknown(case, have,
                                                                                                  want)))
            error = float(np.abs(have.astype(np.float64) - want).max())
            if not bug and case.params.get("reference") == "sdpa" and index == 0 and _close(got[1], wanted[1]):
                bug = "the weights are right, the context is not weights @ values"
            elif not bug and case.params.get("reference") == "sdpa" and index == 1 \
                    and not np.allclose(have.sum(-1), 1.0, atol=1e-3):
                bug = _unknown(case, have, want) + "; the attention rows do not sum to 1"
            raise CaseFailure(f"{label} differs from PyTorch's (largest error {error:.3g})"
                              + _looks_like(bug or _unknown(case, have, want)))
    if case.params.get("mask_buffer") and not ("mask" in (meta.get("buffers") or [])
                                              and "mask" in (meta.get("state_dict") or [])):
        raise CaseFailure(named("mask_buffer", "register it as 'mask' with self.register_buffer (so that it moves "
                                               "with .to() and is saved in state_dict)"))
    wanted_count, count = case.params.get("parameters"), meta.get("parameters")
    if case.driver == "module" and wanted_count is not None and count != wanted_count:
        bug = _count_diagnosis(case, count)
        raise CaseFailure(f"the module has {count} parameters, expected {wanted_count}" + _looks_like(bug))


def _mask_buffer_failure(case: Case, folder: Path, failure: str) -> str:
    """For a case that checks the mask buffer and failed for ``failure``: what is wrong with the mask ("" when it is
    a registered, saved buffer). A module that was never built says the case's own failure."""
    if not case.params.get("mask_buffer") or named("mask_buffer") in failure:
        return ""
    try:
        meta = load_json(folder / f"{case.name}.json")
    except ProbeDataError as exc:
        return str(exc)
    if "buffers" not in meta:
        return failure
    if "mask" in (meta.get("buffers") or []) and "mask" in (meta.get("state_dict") or []):
        return ""
    return named("mask_buffer", "register it as 'mask' with self.register_buffer (so that it moves with .to() and "
                                "is saved in state_dict)")


def _count_diagnosis(case: Case, count) -> str:
    width = case.arrays["x"].shape[-1]
    if "out_proj" in case.arrays and isinstance(count, int):
        d_out = case.arrays["out_proj"].shape[0]
        if count == case.params["parameters"] - d_out * d_out - d_out:
            return named("no_out_proj")
        if count == case.params["parameters"] - d_out * d_out + width * d_out:
            return named("out_proj_d_in")
    return ""


def _check_dropout_pattern(case: Case, folder: Path, meta: dict) -> None:
    weights = load_array(folder / f"{case.name}.out0.npy", allow_nonfinite=True)
    size = case.arrays["x"].shape[-1]
    if weights.shape != (1, size, size):
        raise CaseFailure(f"training-mode output has shape {weights.shape}, expected {(1, size, size)}")
    keep = 1.0 - case.params["dropout"]
    rows = weights[0].astype(np.float64)
    future = np.triu(np.ones((size, size), dtype=bool), k=1)
    finite = bool(np.isfinite(rows).all())
    if not finite or np.abs(rows[future]).max() > ATOL:
        said = "in training mode a token attends to a future token" if finite else \
            "training mode gives NaN or infinity"
        found, right, tried = dropout.replayed(case, meta, weights)
        if found:
            raise CaseFailure(said + _looks_like(" or ".join(named(code) for code in found))
                              + " (replayed with the same random stream)")
        where = f"; {references.first_difference(torch.from_numpy(weights), torch.from_numpy(right))} (the right " \
                f"computation, replayed with the same random stream)" if right is not None else \
            " (the module ran on another device: its dropout cannot be replayed here)"
        raise CaseFailure(f"{said}: not one of the {tried} known bugs the grader replayed for this case "
                          f"(grader/bugs.py){where}")
    uniform = 1.0 / np.arange(1, size + 1)[:, None] * np.ones((1, size))
    dropped_or_scaled = np.isclose(rows, 0.0, atol=ATOL) | np.isclose(rows, uniform / keep, atol=ATOL)
    if not dropped_or_scaled[~future].all():
        if np.allclose(rows[~future], uniform[~future], atol=ATOL):
            raise CaseFailure(named("dropout_never", "training mode with dropout=0.5 changed no attention weight "
                                                     "(dropout missing, or applied to the scores)"))
        raise CaseFailure("in training mode the attention weights are not each either dropped (0) or scaled "
                          "by 1/(1-p): dropout is not nn.Dropout on the attention weights")


def _check_dropout_placement(case: Case, folder: Path) -> None:
    """See :func:`grader.verify.cases.dropout_placement_case`: within each head's block of columns a row must have
    one value, a multiple of 2 / (t + 1); and some weights must have been dropped."""
    out = load_array(folder / f"{case.name}.out0.npy")
    size, blocks = case.arrays["x"].shape[-1], case.params["blocks"]
    if out.shape != (1, size, size):
        raise CaseFailure(f"training-mode output has shape {out.shape}, expected {(1, size, size)}")
    keep = 1.0 - case.params["dropout"]
    rows = out[0].astype(np.float64)
    width = size // blocks
    dropped_any = False
    for block in range(blocks):
        part = rows[:, block * width:(block + 1) * width]
        if not np.allclose(part, part[:, :1], atol=ATOL):
            raise CaseFailure(named("dropout_context", "in training mode single entries of the output were "
                                                       "dropped: dropout must act on the attention weights, before "
                                                       "they multiply the values"))
        visible = np.arange(1, size + 1)
        if np.allclose(part, 1.0, atol=ATOL):
            continue                                 # nothing dropped in this head (said below if in none)
        kept = part[:, 0] * visible * keep          # the number of kept keys in each row
        if not np.allclose(kept, np.round(kept), atol=1e-3) or (kept < -1e-3).any() \
                or (kept > visible + 1e-3).any():
            raise CaseFailure("in training mode the attention rows are not each a sum of dropped (0) or scaled "
                              "(1/(1-p)) weights: not one of the known bugs the grader checks for dropout "
                              "(grader/bugs.py)")
        dropped_any = True
    if not dropped_any:
        detail = "training mode with dropout=0.5 changed no attention weight"
        if case.params.get("heads"):
            detail += " (the wrapper must pass dropout on to every head)"
        raise CaseFailure(named("dropout_never", detail))


def _check_raises(case: Case, meta: dict) -> None:
    """The error is judged by its type (any subclass of the one the notebook asks for), never by its words."""
    wanted = case.params["exception"]
    if wanted not in (meta.get("raised_bases") or []):
        raised = meta.get("raised")
        if raised == "NotImplementedError":
            raise CaseFailure(f"not attempted: {case.callee} is not written yet (it raises NotImplementedError)")
        call = f"{case.callee}({', '.join(f'{k}={v}' for k, v in case.kwargs.items())})"
        detail = f"{call} should raise {wanted}" + (f", raised {raised}" if raised else ", raised nothing")
        raise CaseFailure(named("divisibility", detail) if wanted == "ValueError" and "d_out" in case.kwargs
                          and "num_heads" in case.kwargs else detail)


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
    if attempted:     # the probe runtime's own words (the course's name only): the task is not attempted
        return f"not attempted: {attempted.group('name')} is not {attempted.group('how')}"
    if text.startswith("NotImplementedError"):
        return "NotImplementedError (not written yet)"
    own = _RUNTIME_MESSAGES.fullmatch(text)
    if own:   # the probe's own words about the module's layout (fixed text, names only): safe to show
        return f"{own.group('attr')} has no bias although the case builds the class with qkv_bias=True" \
            if own.group("what") == "bias" else f"{own.group('attr')}: {own.group('rest')}"
    name = text.split(":", 1)[0].strip()
    if not name.isidentifier():
        return "the probe failed"
    return f"raised {name} on the grader's inputs (its message is not shown: it could carry those inputs)"


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
        bug = _weight_diagnosis(case, meta) if case.driver == "module" else ""
        raise CaseFailure(error + _looks_like(bug))
    if case.check == "reference":
        _check_reference(case, folder, meta)
    elif case.check == "dropout_pattern":
        _check_dropout_pattern(case, folder, meta)
    elif case.check == "dropout_placement":
        _check_dropout_placement(case, folder)
    elif case.check == "raises":
        _check_raises(case, meta)
    elif case.check in ("calls", "eval_twice"):
        from grader.verify.calls import check_calls, check_eval_twice

        (check_calls if case.check == "calls" else check_eval_twice)(case, folder, meta)
    else:
        from grader.verify.answers import AnswerFailure, check_answer
        from grader.verify.extra import ExtraFailure, check_extra

        try:
            if case.check == "answer":
                return check_answer(case, meta)
            check_extra(case, folder, meta)
        except (AnswerFailure, ExtraFailure) as exc:
            raise CaseFailure(str(exc)) from None
    return 1.0


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
                if isinstance(count, int) and count > 0:
                    seen[str(name)[:80]] = seen.get(str(name)[:80], 0) + count
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


def _checks_of(task, case_name: str, failure: str) -> list:
    """The task's checks a failure costs: the check whose bugs include the failure's diagnosis, else every check
    that judges the case (a case that fails for an unknown reason proves none of the checks built on it)."""
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
    from grader.verify.probes import cases_by_task

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
                buffer = _mask_buffer_failure(case, folder, str(exc))
                if buffer:          # the mask is judged on its own, whatever else failed
                    failures.append((case.name, f"case {case.name}: {buffer}"))
            except Exception as exc:  # a grader bug must cost a task, not the whole run
                failures.append((case.name, f"case {case.name}: could not be checked ({type(exc).__name__}: {exc})"))
        if failures and {name for name, _ in failures} == {c.name for c in cases} \
                and all(": not attempted: " in text for _, text in failures):
            said = failures[0][1].split(": ", 1)[1]      # every case says so: the task is not attempted
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
    for case_name, text in failures:
        for check in _checks_of(task, case_name, text):
            failed.setdefault(check.name, text)
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
