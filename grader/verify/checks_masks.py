"""The checks of mask probe cases that are not a comparison of tensors (in the dispatch table of
:mod:`grader.verify.checks`).

- ``mask_conversion``: the student's converted mask against what PyTorch's own operators make of the input mask
  (:func:`grader.verify.reference_masks.hidden_under`): a boolean result must hide exactly the keys the input
  hides, in the target's polarity; an additive result must hold 0.0 where attention is allowed and -inf (or a
  number at most -1e9, whose weight underflows to exactly 0) where it is not. The polarity bug is named only when
  the result is exactly the flipped conversion.
- ``test_verdicts``: the student's test function, run by the probe on candidate classes, must pass (return) on the
  correct ones and fail (raise) on the buggy ones; ``params["missed"]`` says what a test that passes a buggy one
  misses. Only the exception's type is shown, never its message, which
  student code wrote while holding the probe's inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from grader.bugs import named
from grader.verify.cases import Case
from grader.verify.diagnosis import CaseFailure as ExtraFailure
from grader.verify.loading import exception_name, load_array

# An additive mask's "may not": -inf, or a finite number so negative that exp(fill - max) is exactly 0.
ADDITIVE_HIDDEN_AT_MOST = -1e9


def _check_conversion(case: Case, folder: Path, meta: dict) -> None:
    from grader.verify.reference_masks import hidden_under

    source, target = case.params["source"], case.params["target"]
    call = f"{case.callee}(mask, {source!r}, {target!r})"
    mask = case.arrays["mask"]
    got = load_array(folder / f"{case.name}.out0.npy", allow_nonfinite=True)
    if got.shape != mask.shape:
        raise ExtraFailure(f"{call} returned shape {tuple(got.shape)} for a mask of shape {tuple(mask.shape)}: a "
                           f"conversion keeps the shape")
    if target in ("sdpa", "mha"):
        if got.dtype != bool:
            raise ExtraFailure(f"{call} returned dtype {got.dtype}: a boolean mask must be torch.bool")
        says_hidden = ~got if target == "sdpa" else got
    else:
        if got.dtype.kind != "f":
            raise ExtraFailure(f"{call} returned dtype {got.dtype}: an additive mask must be floating point")
        says_hidden = got <= ADDITIVE_HIDDEN_AT_MOST
        if not np.all((got == 0) | says_hidden):
            raise ExtraFailure(f"{call}: an additive mask holds 0.0 where attention is allowed and -inf (or a "
                               f"number at most {ADDITIVE_HIDDEN_AT_MOST:g}) where it is not; found other values")
    hidden = hidden_under(source, mask)
    if np.array_equal(says_hidden, hidden):
        return
    if np.array_equal(says_hidden, ~hidden):
        raise ExtraFailure(named("mask_polarity", f"{call} marks every key the input lets a query attend to as "
                                                  f"hidden, and the reverse"))
    wrong = int((says_hidden != hidden).sum())
    raise ExtraFailure(f"{call}: {wrong} of {hidden.size} positions differ from what PyTorch reads in the input "
                       f"mask (not one of the known bugs the grader checks, grader/bugs.py)")


def _check_test_verdicts(case: Case, folder: Path, meta: dict) -> None:
    verdicts = meta.get("verdicts")
    if not isinstance(verdicts, dict):
        raise ExtraFailure(f"no verdicts from {case.callee}")
    for number, (name, must_pass) in enumerate(case.params["verdicts"].items()):
        result = verdicts.get(name)
        if not isinstance(result, dict):
            raise ExtraFailure(f"no verdict for candidate class {number}")
        error = str(result.get("error") or "")
        if error == f"KeyError: {case.callee!r}":   # the probe looked the function up and found nothing
            raise ExtraFailure(f"the function {case.callee} was not defined when the probe ran (renamed, or its "
                               f"cell did not run): define it with that name")
        if must_pass and error:
            kind = exception_name(error)
            raise ExtraFailure(f"the test fails a correct module (candidate class {number}: {kind}): it is too "
                               f"strict, or it relies on how the module is written rather than on what it does")
        if not must_pass and not error:
            raise ExtraFailure(f"the test passes a module it must fail (candidate class {number}): "
                               f"{case.params.get('missed', 'it does not expose the bug')}")

MASK_CHECKS = {"mask_conversion": _check_conversion, "test_verdicts": _check_test_verdicts}
