"""Dropout bugs named by replay: the same random stream for the student's module and for each bug's reference.

The probe seeds ``torch.manual_seed(0)`` right before the module's forward pass (grader/verify/kernel_runtime.py);
here each hypothesis (the right computation with dropout on the weights, a mask bug with dropout on the weights, or
dropout at another place) is computed right after the same seed, in float32 on the CPU, so it draws the same
dropout mask as a module that ran on the CPU. A bug is named only when its replay reproduces the output. A module
that ran on another device drew from another generator: nothing can be replayed, and nothing is named.

Runs in the grader's process on the probe's numbers, like :mod:`grader.verify.checks`.
"""
from __future__ import annotations

import numpy as np
import torch

from grader import references
from grader.verify.cases import Case

ATOL, RTOL = 1e-4, 1e-3


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
