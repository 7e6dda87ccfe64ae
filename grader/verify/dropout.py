"""The dropout probe kinds (``dropout_pattern``, ``dropout_placement``), and dropout bugs named by replay: the same
random stream for the student's module and for each bug's reference.

The probe seeds ``torch.manual_seed(0)`` right before the module's forward pass (grader/verify/kernel_runtime.py);
here each hypothesis (the right computation with dropout on the weights, a mask bug with dropout on the weights, or
dropout at another place) is computed right after the same seed, in float32 on the CPU, so it draws the same
dropout mask as a module that ran on the CPU. A bug is named only when its replay reproduces the output. A module
that ran on another device drew from another generator: nothing can be replayed, and nothing is named.

Runs in the grader's process on the probe's numbers, like :mod:`grader.verify.checks`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from grader import references
from grader.bugs import named
from grader.verify.cases import Case
from grader.verify.diagnosis import ATOL, RTOL, CaseFailure, _looks_like
from grader.verify.loading import load_array


def _weights(case: Case, head: int):
    prefix = "" if head < 0 else f"h{head}_"
    a = case.arrays
    return [(torch.from_numpy(a[prefix + n]), torch.from_numpy(a[prefix + n + "_bias"])
             if prefix + n + "_bias" in a else None) for n in ("W_query", "W_key", "W_value")]


def _replay(case: Case, change: dict, placement: str) -> np.ndarray:
    """The case's training-mode output with ``change`` (keyword arguments of attention_with_bug) and dropout at
    ``placement``, drawn after torch.manual_seed(0): one module, or separate heads drawing in turn."""
    x = torch.from_numpy(case.arrays["x"])
    p = case.params["dropout"]
    out = (torch.from_numpy(case.arrays["out_proj"]), torch.from_numpy(case.arrays["out_proj_bias"])) \
        if "out_proj" in case.arrays else None
    torch.manual_seed(0)
    with torch.no_grad():
        if case.params.get("heads"):
            heads = [references.attention_with_bug(x, _weights(case, h), None, 1, dropout=p, dropout_on=placement,
                                                   **change) for h in range(case.params["heads"])]
            produced = torch.cat(heads, dim=-1)
            return (torch.nn.functional.linear(produced, *out) if out is not None else produced).numpy()
        heads = int(case.kwargs.get("num_heads") or 1)
        return references.attention_with_bug(x, _weights(case, -1), out, heads, dropout=p, dropout_on=placement,
                                             **change).numpy()


def hypotheses(case: Case) -> list[tuple[str, np.ndarray]]:
    """(bug code, or "" for the right computation; its replayed output) for one bug switched on at a time: dropout
    at another place than the weights, or a mask/merge bug of the chapter's module with dropout on the weights."""
    found = []
    heads = int(case.kwargs.get("num_heads") or 1) if not case.params.get("heads") else 1
    width = case.arrays["x"].shape[-1]
    for code, placement in references.DROPOUT_PLACEMENTS:
        try:
            found.append((code, _replay(case, {}, placement)))
        except RuntimeError:
            continue
    for code, forms in references.MODULE_BUGS.items():
        if not references.applies(code, heads, width // heads, width, width, True, "out_proj" in case.arrays):
            continue
        for change in forms:
            try:
                found.append((code, _replay(case, change, "weights")))
            except RuntimeError:
                continue
    return found


def replayed(case: Case, meta: dict, output: np.ndarray) -> tuple[list[str], np.ndarray | None, int]:
    """(the codes of the bugs whose replay reproduces ``output``, the right computation's replay or None, how many
    hypotheses were tried). Nothing is replayed for a module that ran on another device than the CPU."""
    if str(meta.get("device", "cpu")) != "cpu":
        return [], None, 0
    tried = hypotheses(case)
    right = next((produced for code, produced in tried if code == ""), None)
    found = []
    for code, produced in tried:
        if code and code not in found and produced.shape == output.shape \
                and np.allclose(output.astype(np.float64), produced, atol=ATOL, rtol=RTOL, equal_nan=True):
            found.append(code)
    return found, right, len(tried) - 1


def check_dropout_pattern(case: Case, folder: Path, meta: dict) -> None:
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
        found, right, tried = replayed(case, meta, weights)
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
        said = "in training mode the attention weights are not each either dropped (0) or scaled by 1/(1-p)"
        found, right, tried = replayed(case, meta, weights)
        if found:
            raise CaseFailure(said + _looks_like(" or ".join(named(code) for code in found))
                              + " (replayed with the same random stream)")
        raise CaseFailure(f"{said}: not one of the {tried} known bugs the grader replayed for this case "
                          f"(grader/bugs.py){_where(weights, right)}")


def _where(output: np.ndarray, right: np.ndarray | None) -> str:
    """Where ``output`` first differs from the right computation's replay, or why there is no replay."""
    if right is None:
        return " (the module ran on another device: its dropout cannot be replayed here)"
    return f"; {references.first_difference(torch.from_numpy(output), torch.from_numpy(right))} (the right " \
           f"computation, replayed with the same random stream)"


def check_dropout_placement(case: Case, folder: Path, meta: dict) -> None:
    """See :func:`grader.verify.cases.dropout_placement_case`: within each head's block of columns a row must have
    one value, a multiple of 2 / (t + 1); and some weights must have been dropped. A row that breaks this is named
    only by replay (:func:`replayed`): dropout after the weights, or a bug of the module with its dropout right."""
    out = load_array(folder / f"{case.name}.out0.npy", allow_nonfinite=True)
    size, blocks = case.arrays["x"].shape[-1], case.params["blocks"]
    if out.shape != (1, size, size):
        raise CaseFailure(f"training-mode output has shape {out.shape}, expected {(1, size, size)}")
    keep = 1.0 - case.params["dropout"]
    rows = out[0].astype(np.float64)
    width = size // blocks
    problem = "" if np.isfinite(rows).all() else "training mode gives NaN or infinity"
    for block in range(blocks):
        part = rows[:, block * width:(block + 1) * width]
        visible = np.arange(1, size + 1)
        kept = part[:, 0] * visible * keep          # the number of kept keys in each row
        if problem:
            break
        if not np.allclose(part, part[:, :1], atol=ATOL):
            problem = "in training mode single entries of the output were dropped"
        elif np.allclose(part, 1.0, atol=ATOL):
            continue                                 # nothing dropped in this head (said below if in none)
        elif not np.allclose(kept, np.round(kept), atol=1e-3) or (kept < -1e-3).any() \
                or (kept > visible + 1e-3).any():
            problem = "in training mode the attention rows are not each a sum of dropped (0) or scaled (1/(1-p)) " \
                      "weights"
    if problem:
        found, right, tried = replayed(case, meta, out)
        if found == ["dropout_context"]:
            raise CaseFailure(named("dropout_context", f"{problem}, as dropout on the context (or after out_proj) "
                                                       f"drops them, replayed with the same random stream: dropout "
                                                       f"must act on the attention weights, before they multiply "
                                                       f"the values"))
        if found:
            raise CaseFailure(problem + _looks_like(" or ".join(named(code) for code in found))
                              + " (replayed with the same random stream)")
        where = f"; {references.first_difference(torch.from_numpy(out), torch.from_numpy(right))} (the right " \
                f"computation, replayed with the same random stream)" if right is not None else \
            " (the module ran on another device: its dropout cannot be replayed here)"
        raise CaseFailure(f"{problem}: not one of the {tried} known bugs the grader replayed for this case "
                          f"(grader/bugs.py){where}")
    dropped_any = any(not np.allclose(rows[:, b * width:(b + 1) * width], 1.0, atol=ATOL) for b in range(blocks))
    if not dropped_any:
        detail = "training mode with dropout=0.5 changed no attention weight"
        if case.params.get("heads"):
            detail += " (the wrapper must pass dropout on to every head)"
        raise CaseFailure(named("dropout_never", detail))
