"""Naming what went wrong in a probe case: the bug whose reference reproduces the output, or what is known.

Shared by every probe kind's checks (:mod:`grader.verify.compare`, :mod:`grader.verify.calls`,
:mod:`grader.verify.dropout`, ...): the tolerances, the one failure type (:class:`CaseFailure`), the naming by
reproduction (:func:`_name_the_bug`, from :func:`grader.verify.reference.hypotheses`), what to say when no known bug
reproduces the output (where it first differs), and what the module's own weights and their shapes show.
Runs in the grader's process and reads the probe's files as data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from grader.bugs import BY_CODE, code_of, named
from grader.verify import reference
from grader.verify.cases import Case
from grader.verify.loading import ProbeDataError, load_array

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


# The wrapper's own bug: there d_out is the width of one head, so dividing it shrinks every head (named from the
# heads' weights, which then have d_out // num_heads rows; never from the output's width, which averaged heads share).
_WRAPPER_DIVIDED = named("wrapper_divided", "in the wrapper d_out is the width of one head")


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
