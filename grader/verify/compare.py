"""The ``reference`` and ``raises`` probe kinds: outputs compared with PyTorch's, an error judged by its type.

A "reference" case's outputs must equal :func:`grader.verify.reference.expected` (float64, PyTorch's operators);
when they do not, the bug is named only when its reference reproduces them (:mod:`grader.verify.diagnosis`). A
module case that checks its mask buffer is judged on the mask alone too (:func:`_mask_buffer_failure`), so that a
module failing for another reason keeps the mask check it passes. A "raises" case wants an exception of a type
(any subclass), never particular words.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from grader.bugs import named
from grader.verify import reference
from grader.verify.cases import Case
from grader.verify.diagnosis import (CaseFailure, _close, _looks_like, _name_the_bug, _shape_diagnosis, _unknown,
                                     _weight_diagnosis, _weights_moved)
from grader.verify.loading import ProbeDataError, exception_name, load_array, load_json


def check_reference(case: Case, folder: Path, meta: dict) -> None:
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


def mask_buffer_failure(case: Case, folder: Path, failure: str) -> str:
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


def check_raises(case: Case, meta: dict) -> None:
    """The error is judged by its type (any subclass of the one the notebook asks for), never by its words."""
    wanted = case.params["exception"]
    if wanted not in (meta.get("raised_bases") or []):
        raised = meta.get("raised")
        if raised == "NotImplementedError":
            raise CaseFailure(f"not attempted: {case.callee} is not written yet (it raises NotImplementedError)")
        call = f"{case.callee}({', '.join(f'{k}={v}' for k, v in case.kwargs.items())})"
        detail = f"{call} should raise {wanted}" + (f", raised {exception_name(raised)}" if raised
                                                     else ", raised nothing")
        raise CaseFailure(named("divisibility", detail) if wanted == "ValueError" and "d_out" in case.kwargs
                          and "num_heads" in case.kwargs else detail)
