"""Checks of one module instance called several times (``Case.calls``): what a single call cannot show.

- ``calls``: every call must equal the reference for its own input. Behaviour that depends on earlier calls (a mask
  made at the first call's length, state changed by a call or by ``.train()``) and sequences of a batch that affect
  each other show here; a bug is named only when its reference reproduces every call, errors included
  (:func:`grader.verify.reference.sequence_hypotheses`).
- ``eval_twice``: two calls in eval mode with dropout 0.5 on the same input must both be the reference's; dropout
  left on is named when each output is one that dropout on the weights (or after them) can produce.

Runs in the grader's process and reads the probe's files as data, like :mod:`grader.verify.compare`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from grader.bugs import named
from grader.verify import reference
from grader.verify.cases import Case
from grader.verify.diagnosis import (CaseFailure, _close, _looks_like, _shape_diagnosis, _weight_diagnosis,
                                     _weights_moved)
from grader.verify.diagnosis import _name_the_bug as _named_by_reference
from grader.verify.loading import exception_name, load_array


def _outputs(case: Case, folder: Path, meta: dict) -> list:
    """Each call's output as an array, or (``reference.RAISES``, the error's type) for a call that failed. Only the
    type is kept: the message was written by student code that held the probe's inputs."""
    found = [load_array(folder / f"{case.name}.out0.npy", allow_nonfinite=True)]
    records = meta.get("calls") if isinstance(meta.get("calls"), list) else []
    for index in range(1, len(case.calls) + 1):
        record = records[index - 1] if index - 1 < len(records) and isinstance(records[index - 1], dict) else {}
        if record.get("ok") is True:
            found.append(load_array(folder / f"{case.name}.call{index}.npy", allow_nonfinite=True))
        else:
            found.append((reference.RAISES, exception_name(record.get("error"))))
    return found


def _raised(output) -> bool:
    return isinstance(output, tuple)


def _reproduces(predicted: list, outputs: list) -> bool:
    for want, got in zip(predicted, outputs):
        if isinstance(want, str):               # the bug's reference raises at this call
            if not _raised(got):
                return False
        elif _raised(got) or not _close(got, np.asarray(want, dtype=np.float64)):
            return False
    return True


def _name_the_bug(case: Case, outputs: list) -> str:
    """Every catalogued bug whose reference reproduces all the calls (joined with " or "), else ""."""
    found = []
    for bug, predicted in reference.sequence_hypotheses(case):
        if _reproduces(predicted, outputs) and bug not in found:
            found.append(bug)
    return " or ".join(found)


def _describe(case: Case, calls: list[Case], outputs: list, wanted: list) -> str:
    """What went wrong, call by call, in the probe's own terms (lengths, modes, the changed sequence), short: the
    task's message says it once, whole."""
    def label(index: int) -> str:
        call = calls[index]
        return f"call {index + 1} ({call.arrays['x'].shape[-2]} tokens{', training mode' if call.train else ''})"

    raised = [i for i, got in enumerate(outputs) if _raised(got)]
    if raised:
        return f"{label(raised[0])} raised {outputs[raised[0]][1]} after {label(0)} ran"
    changed = case.params.get("changed_sequence")
    if changed is not None and len(outputs) == 2 and outputs[0].shape == outputs[1].shape == wanted[0].shape:
        moved = [b for b in range(outputs[0].shape[0]) if b != changed and not _close(outputs[0][b], outputs[1][b])]
        if moved:
            return f"changing sequence {changed} of the batch changed the output of sequence(s) {moved}"
    repeated = [i for i, call in enumerate(calls) if i and call.arrays["x"] is case.arrays["x"]]
    if repeated and _close(outputs[0], wanted[0]) and not _close(outputs[repeated[-1]], wanted[0]):
        return (f"{label(repeated[-1])} repeats call 1's input and its output changed: state kept between calls "
                f"(set by an earlier call or by .train())")
    wrong = next(i for i, (got, want) in enumerate(zip(outputs, wanted)) if not _close(got, want))
    return f"{label(wrong)} differs from PyTorch's"


def check_calls(case: Case, folder: Path, meta: dict) -> None:
    """Raise CaseFailure unless every call of ``case`` equals the reference for its input (see the module doc)."""
    calls = reference.call_cases(case)
    outputs = _outputs(case, folder, meta)
    wanted = [reference.expected(call)[0] for call in calls]
    for got, want in zip(outputs, wanted):
        if not _raised(got) and got.shape != want.shape:
            bug = _shape_diagnosis(case, got, want) or _weight_diagnosis(case, meta)
            raise CaseFailure(f"an output has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
                              + _looks_like(bug))
    if all(not _raised(got) and _close(got, want) for got, want in zip(outputs, wanted)):
        return
    what = _describe(case, calls, outputs, wanted)
    bug = _name_the_bug(case, outputs) or _weight_diagnosis(case, meta) or _weights_moved(case, folder)
    if bug:
        raise CaseFailure(what + _looks_like(bug))
    checked = len(reference.sequence_hypotheses(case))
    raise CaseFailure(f"{what}: not one of the {checked} known bugs the grader checked for this case "
                      f"(grader/bugs.py)")


def _dropout_on_in_eval(output: np.ndarray, keep: float) -> bool:
    """Whether ``output`` (1, T, d) is one that dropout left on could give on the eval_twice inputs (all-ones
    values): in row t every entry a whole number of kept keys times 1 / ((t + 1) keep), at most t + 1 of them."""
    if output.ndim != 3 or not np.isfinite(output).all():
        return False
    rows = output[0].astype(np.float64) * np.arange(1, output.shape[1] + 1)[:, None] * keep
    return bool(np.allclose(rows, np.round(rows), atol=1e-3) and (rows > -1e-3).all()
                and (rows <= np.arange(1, output.shape[1] + 1)[:, None] + 1e-3).all())


def check_eval_twice(case: Case, folder: Path, meta: dict) -> None:
    """Raise CaseFailure unless both eval-mode calls give the reference's output (see the module doc)."""
    outputs = _outputs(case, folder, meta)
    want = reference.expected(case)[0]
    if any(_raised(got) for got in outputs):
        raise CaseFailure(f"the second call in eval mode raised {outputs[1][1]}")
    for got in outputs:
        if got.shape != want.shape:
            raise CaseFailure(f"an output has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
                              + _looks_like(_shape_diagnosis(case, got, want) or _weight_diagnosis(case, meta)))
    if all(_close(got, want) for got in outputs):
        return
    differ = not _close(outputs[0], outputs[1])
    said = "two eval-mode calls on one input differ" if differ else "in eval mode the output is not the reference's"
    if all(_dropout_on_in_eval(got, 1.0 - case.params["dropout"]) for got in outputs):
        raise CaseFailure(named("dropout_eval", f"{said}, each as dropout with p={case.params['dropout']} gives "
                                                f"(nn.Dropout follows .eval(); F.dropout needs "
                                                f"training=self.training)"))
    # A bug of the module (its reference, computed in eval mode) that gives both outputs: not a dropout bug.
    bug = _named_by_reference(case, [outputs[0]]) if _close(outputs[0], outputs[1]) else ""
    bug = bug or _weight_diagnosis(case, meta) or _weights_moved(case, folder)
    error = max(float(np.abs(got.astype(np.float64) - want).max()) for got in outputs if got.shape == want.shape)
    raise CaseFailure(f"{said} (largest error {error:.3g})"
                      + _looks_like(bug or f"not one of the known bugs the grader checks for dropout in eval mode "
                                           f"(grader/bugs.py)"))

