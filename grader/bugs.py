"""The course's bug catalogue: every bug the course teaches or grades, named once.

Each :class:`Bug` has a stable ``code`` (what code and tests refer to) and a ``name``: the phrase every message
about that bug starts with, wherever it is detected. Three places name bugs and all three take the name from here:

- the notebooks' own tests, through :mod:`grader.diagnose` (``AssertionError`` messages in the student's kernel);
- verification outside the kernel (:mod:`grader.verify`), in tasks.csv and the feedback pages;
- the mutation tests (``tests/mutations/``), which plant each bug and require its name in the feedback.

``where`` says where the course teaches the bug (a chapter of the book, an assignment's task), so that a message
can be traced back to the text that explains it. The two historical bugs of the bug clinics are from the
textbook repository rasbt/LLMs-from-scratch, issue #67, fixed by PR #68 (see FACTS.md).

This module is plain data and standard library only: the sandboxed kernel imports it (through
:mod:`grader.diagnose`), so it must not import torch or the rest of the grader.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bug:
    code: str      # stable identifier, e.g. "width"
    name: str      # the phrase a message about this bug starts with
    where: str     # where the course teaches it

    def says(self, detail: str = "") -> str:
        """The bug's name, then ``detail`` after a colon when there is one."""
        return f"{self.name}: {detail}" if detail else self.name


CATALOGUE: tuple[Bug, ...] = (
    # ---- scores and softmax (chapter 1, ps1)
    Bug("raw_scores_scaled", "scores scaled by 1/sqrt(d_k) where the raw dot products are asked",
        "chapter 1; ps1 attention_scores"),
    Bug("scale_multiplied", "scores multiplied instead of divided by sqrt(d_k)", "chapter 1; ps1, ps4"),
    Bug("scale_missing", "scores not scaled by 1/sqrt(d_k)", "chapter 1; ps1"),
    Bug("scale_d_k", "scores divided by d_k instead of sqrt(d_k)", "chapter 1; ps1-ps4"),
    Bug("scale_width", "scores scaled by sqrt(d_out) instead of sqrt(head_dim)", "chapter 4; ps3"),
    Bug("softmax_dim", "softmax over the wrong dimension", "chapter 1; ps1, ps2, ps4"),
    Bug("scale_after_softmax", "1/sqrt(d_k) applied after the softmax instead of to the scores", "chapter 1; ps1"),
    Bug("scale_d_in", "scores scaled by sqrt(d_in) instead of sqrt(d_k)", "chapters 1 and 4; ps1-ps3"),
    # ---- the causal mask (chapter 2, ps2)
    Bug("future", "mask missing or applied after softmax", "chapter 2; ps2"),
    Bug("mask_after_softmax", "mask applied after softmax without renormalising", "chapter 2; ps2, ps4"),
    Bug("mask_diagonal", "the causal mask hides each token from itself (triu with diagonal=0)", "chapter 2; ps2, ps3"),
    Bug("mask_additive", "the 0/1 mask added to the scores instead of hiding the future with -inf",
        "chapter 2 (masked_fill with -inf); ps2-ps4"),
    Bug("mask_buffer", "mask is not a registered buffer", "chapter 2; ps2, ps3"),
    Bug("dropout_eval", "dropout active in eval mode", "chapter 2; ps2, ps3"),
    Bug("dropout_never", "dropout not applied in training mode", "chapter 2; ps2, ps3"),
    Bug("dropout_scores", "dropout on scores instead of weights", "chapter 2; ps2, ps3"),
    Bug("dropout_context", "dropout after the attention weights (on the context vectors or after out_proj)",
        "chapter 2 (rasbt #280); ps2, ps3"),
    # ---- projections and widths (chapters 1, 3-6; ps1, ps3, ps4)
    Bug("d_in_d_out", "a weight uses d_in where d_out belongs, or is transposed", "chapters 1 and 8; ps1, ps3, ps4"),
    Bug("weights_changed", "the module changes its weights in forward", "chapter 1; ps1-ps4"),
    Bug("batch", "sequences in a batch affect each other", "chapter 3; ps3"),
    # ---- many heads (chapters 3-5, ps3)
    Bug("width", "d_out not divided by num_heads", "chapter 7 (rasbt #67); ps3, ps4"),
    Bug("wrapper_divided", "d_out divided by num_heads", "chapter 3; ps3 wrapper"),
    Bug("shared_heads", "heads share one module", "chapter 3; ps3 wrapper"),
    Bug("view_no_transpose", "view without transpose: tokens and heads mixed up", "chapters 4 and 5; ps3"),
    Bug("heads_averaged", "head outputs averaged instead of concatenated", "chapter 3 (concatenate along the last "
        "dim); ps3 wrapper"),
    Bug("contiguous", "missing .contiguous() before .view()", "chapter 5; ps3"),
    Bug("divisibility", "no clear error when d_out is not divisible by num_heads", "chapter 4; ps3, ps4"),
    # ---- the output projection (chapters 6 and 8, ps3, ps4)
    Bug("no_out_proj", "no output projection", "chapter 8 (rasbt #67, fixed by PR #68); ps3, ps4"),
    Bug("out_proj_unused", "output projection defined but not applied in forward", "chapter 8 (rasbt PR #131); ps4"),
    Bug("out_proj_d_in", "out_proj built with d_in where d_out belongs", "chapter 8 (rasbt PR #183); ps4"),
    # ---- timing (chapter 9, ps5)
    Bug("no_warmup", "no warm-up", "chapter 9; ps5 timing"),
    Bug("mean_timing", "mean instead of median", "chapter 9; ps5 timing"),
    Bug("autograd_timing", "autograd on while timing", "chapter 9; ps5 timing"),
    Bug("no_sync", "no synchronisation on CUDA", "chapter 9; ps5 timing"),
    Bug("seconds", "seconds instead of milliseconds", "chapter 9; ps5 timing"),
    # ---- state kept between calls (chapter 2; ps2-ps4, seen by calling one module several times)
    Bug("mask_cached", "mask made for the first call's length and reused on later calls",
        "chapter 2 (slice the buffer to num_tokens on every call); ps2-ps4"),
    # ---- no known bug
    Bug("mismatch", "output differs from PyTorch's reference", "every module task"),
    # ---- masks and shared K/V heads (chapter 11, ps6)
    Bug("mask_polarity", "boolean mask polarity flipped",
        "chapter 11 (bug clinic III; rasbt #1061, pytorch #170400); ps2-ps6"),
    Bug("padding_on_queries", "padding mask applied to queries instead of keys", "chapter 11; ps6"),
    Bug("mask_neg_inf", "-inf fill on fully masked rows (NaN)", "chapter 11; ps6"),
    Bug("padded_not_zeroed", "outputs of padded queries not zero (zero them after out_proj)", "chapter 11; ps6"),
    Bug("padding_renormalised", "padding applied to the weights after the softmax, then renormalised (0/0 on rows "
        "with nothing to see)", "chapter 11; ps6"),
    Bug("kv_repeat", "K/V heads repeated with repeat where repeat_interleave belongs", "chapter 11; ps6"),
)

BY_CODE: dict[str, Bug] = {bug.code: bug for bug in CATALOGUE}

# Bugs of one kind, for checks that answer for all of them (grader/assignments: credit by check).
DROPOUT_BUGS = ("dropout_eval", "dropout_never", "dropout_scores", "dropout_context")

# code -> name: the form the notebooks' checks and the mutation tests use.
BUGS: dict[str, str] = {bug.code: bug.name for bug in CATALOGUE}


def named(code: str, detail: str = "") -> str:
    """The message for bug ``code``: its catalogue name, then ``detail``. Raises KeyError for an unknown code."""
    return BY_CODE[code].says(detail)


def code_of(message: str) -> str | None:
    """The code of the catalogued bug a message starts with (the longest name that matches), else None."""
    text = str(message)
    matches = [bug for bug in CATALOGUE if text.startswith(bug.name)]
    return max(matches, key=lambda bug: len(bug.name)).code if matches else None
