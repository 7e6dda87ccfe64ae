"""The course's bug catalogue: every bug the course teaches or grades, defined once.

Each :class:`Bug` has a stable ``code`` (what code and tests refer to) and a ``name``: the phrase every message
about that bug starts with, wherever it is detected. Beside them, each entry says what the bug *is*:

- ``reference``: the correct computation with this one bug switched on, from the module's own weights. For a bug
  of the chapter's attention module it is one or more settings ("forms") of
  :func:`grader.references.attention_with_bug`, which both the notebooks' checks (:mod:`grader.diagnose`, in the
  student's kernel) and the grader's verification (:mod:`grader.verify`) compute; for the others it names the
  function that computes it. A bug is named only when its reference reproduces the output.
- ``recipes``: how the course's solution becomes this bug (text replacements in one solution cell), with the task
  and check that must lose points; the tests plant every recipe through the real ``grade`` and ``check``.
- ``where``: where it can occur and where the course teaches it; ``lesson``: the book section that teaches it
  (chapter file, section title; :func:`anchor` gives the section's id on the rendered page); ``hint``: a question
  that points a student at it, never code.

The two historical bugs of the bug clinics are from the textbook repository rasbt/LLMs-from-scratch, issue #67,
fixed by PR #68 (see FACTS.md). This module is plain data and standard library only: the sandboxed kernel imports
it (through :mod:`grader.diagnose`), so it must not import torch or the rest of the grader.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """The course's solution with one bug planted: ``replacements`` (old, new) in the solution cell ``cell`` of
    ``assignment``, each old text occurring once there. ``task`` loses points; with ``check`` only that check's
    (credit by check), with ``check`` None the task may lose more."""
    assignment: str
    cell: str
    replacements: tuple[tuple[str, str], ...]
    task: str
    check: str | None = None


@dataclass(frozen=True)
class Bug:
    code: str      # stable identifier, e.g. "width"
    name: str      # the phrase a message about this bug starts with
    where: str     # where it can occur and where the course teaches it
    lesson: tuple[str, str] = ("", "")      # (chapter file, section title) of the book section that teaches it
    hint: str = ""                          # a question that points at the bug (never code)
    reference: tuple | str = ()             # forms of attention_with_bug's settings, or the reference's function
    recipes: tuple[Recipe, ...] = ()

    def says(self, detail: str = "") -> str:
        """The bug's name, then ``detail`` after a colon when there is one."""
        return f"{self.name}: {detail}" if detail else self.name


def anchor(title: str) -> str:
    """The id Sphinx gives a section titled ``title`` (docutils' make_id, for the titles the book uses)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower().replace("`", "")).strip("-")


# The solution's lines that the recipes below change (ps2 causal_attention and ps3 multi_head_attention share them).
_MASK = "        scores = scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)\n"
_SOFTMAX = "        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)\n"
_DROPOUT = "        weights = self.dropout(weights)\n"
_BUFFER = 'self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))'
_SDP = "weights = torch.softmax(attention_scores(queries, keys) / math.sqrt(d_k), dim=-1)"
_HEADS = "[CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)]"


def _module(code_edits, ps2: bool = True, ps3: bool = True, check: str = "equivalence") -> tuple[Recipe, ...]:
    """The same edits planted in ps2's CausalAttention and in ps3's MultiHeadAttention."""
    found = ()
    if ps2:
        found += (Recipe("ps2", "causal_attention", tuple(code_edits), "causal_attention", check),)
    if ps3:
        found += (Recipe("ps3", "multi_head_attention", tuple(code_edits), "multi_head_attention", check),)
    return found


_CH1, _CH2, _CH3 = "book/01_one_head.md", "book/02_causal_attention.md", "book/03_many_heads.md"
_CH4, _CH5, _CH6 = "book/04_splitting_heads.md", "book/05_concatenating_heads.md", "book/06_final_projection.md"
_CH7, _CH8, _CH11 = "book/07_bug_clinic_9216.md", "book/08_bug_clinic_projection.md", "book/11_masks_in_the_wild.md"
_CH11B = "book/11b_cross_attention_and_kv_cache.md"
_SCALE = (_CH1, "Why divide by the square root of d_k?")
_APPLY = (_CH2, "Two ways to apply it")
_DROP = (_CH2, "Dropout goes on the weights, not the scores")

CATALOGUE: tuple[Bug, ...] = (
    # ---- scores and softmax (chapter 1, ps1)
    Bug("raw_scores_scaled", "scores scaled by 1/sqrt(d_k) where the raw dot products are asked",
        "chapter 1; ps1 attention_scores", (_CH1, "Scores: how similar is each token to the one asking?"),
        "Does attention_scores give q k^T as it is, with the scaling left to the next step?",
        "grader.verify.reference.hypotheses (scores)",
        (Recipe("ps1", "attention_scores", (("return queries @ keys.transpose(-2, -1)",
                                             "return queries @ keys.transpose(-2, -1) / math.sqrt(keys.shape[-1])"),),
                "attention_scores"),)),
    Bug("scale_multiplied", "scores multiplied instead of divided by sqrt(d_k)", "chapter 1; ps1-ps4", _SCALE,
        "Do the scores get smaller or larger when you scale them?", ({"scale": "multiplied"},),
        (Recipe("ps1", "scaled_dot_product", ((_SDP, _SDP.replace("/ math.sqrt", "* math.sqrt")),),
                "scaled_dot_product"),)
        + _module(((_SOFTMAX, _SOFTMAX.replace("scores /", "scores *")),))),
    Bug("scale_missing", "scores not scaled by 1/sqrt(d_k)", "chapter 1; ps1-ps4", _SCALE,
        "Where are the scores divided by the square root of the key width?", ({"scale": "none"},),
        (Recipe("ps1", "scaled_dot_product", ((_SDP, _SDP.replace(" / math.sqrt(d_k)", "")),), "scaled_dot_product"),)
        + _module(((_SOFTMAX, _SOFTMAX.replace(" / keys.shape[-1] ** 0.5", "")),))),
    Bug("scale_d_k", "scores divided by d_k instead of sqrt(d_k)", "chapter 1; ps1-ps4", _SCALE,
        "Is the divisor the key width or its square root?", ({"scale": "head_dim"},),
        (Recipe("ps1", "scaled_dot_product", ((_SDP, _SDP.replace("math.sqrt(d_k)", "d_k")),), "scaled_dot_product"),)
        + _module(((_SOFTMAX, _SOFTMAX.replace(" ** 0.5", "")),))),
    Bug("scale_width", "scores scaled by sqrt(d_out) instead of sqrt(head_dim)", "chapter 4; ps3, ps4",
        (_CH4, "One batched matmul for every head"),
        "How many numbers does one head's dot product add up: d_out or head_dim?", ({"scale": "sqrt_d_out"},),
        _module(((_SOFTMAX, _SOFTMAX.replace("keys.shape[-1]", "self.d_out")),), ps2=False)),
    Bug("softmax_dim", "softmax over the wrong dimension", "chapter 1; ps1-ps4",
        (_CH1, "Softmax: scores become weights"), "Which weights must add up to 1: a query's, or a key's?",
        ({"softmax_dim": -2},), _module(((_SOFTMAX, _SOFTMAX.replace("dim=-1", "dim=-2")),))),
    Bug("scale_after_softmax", "1/sqrt(d_k) applied after the softmax instead of to the scores", "chapter 1; ps1",
        _SCALE, "Do your weights still sum to 1 after the scaling?", ({"scale": "after_softmax"},),
        (Recipe("ps1", "scaled_dot_product",
                ((_SDP, "weights = torch.softmax(attention_scores(queries, keys), dim=-1) / math.sqrt(d_k)"),),
                "scaled_dot_product"),)),
    Bug("scale_d_in", "scores scaled by sqrt(d_in) instead of sqrt(d_k)", "chapters 1 and 4; ps1-ps4", _SCALE,
        "Is the scale the width of the keys, or of the input?", ({"scale": "sqrt_d_in"},),
        (Recipe("ps1", "self_attention", (("context, _ = scaled_dot_product(queries, keys, values)\n        return "
                                           "context", "scores = queries @ keys.transpose(-2, -1) / x.shape[-1] ** "
                                           "0.5\n        return torch.softmax(scores, dim=-1) @ values"),),
                "self_attention"),)
        + _module(((_SOFTMAX, _SOFTMAX.replace("keys.shape[-1]", "x.shape[-1]")),), ps2=False)),
    # ---- the causal mask (chapter 2, ps2)
    Bug("future", "mask missing or applied after softmax", "chapter 2; ps2-ps4", (_CH2, "The causal mask"),
        "Can a token see the tokens after it?", ({"mask": "none"},), _module(((_MASK, ""),))),
    Bug("mask_after_softmax", "mask applied after softmax without renormalising", "chapter 2; ps2-ps4, ps6", _APPLY,
        "Do the rows of your weights still sum to 1?", ({"mask": "after"},),
        _module(((_MASK, ""), (_DROPOUT, "        weights = weights.masked_fill(self.mask.bool()[:num_tokens, "
                                         ":num_tokens], 0.0)\n" + _DROPOUT)))),
    Bug("mask_diagonal", "the causal mask hides each token from itself (triu with diagonal=0)", "chapter 2; ps2-ps4",
        (_CH2, "The causal mask"), "What can the first token attend to?", ({"mask": "diagonal"},),
        _module((("diagonal=1)", "diagonal=0)"),))),
    Bug("mask_additive", "the 0/1 mask added to the scores instead of hiding the future with -inf",
        "chapter 2 (masked_fill with -inf); ps2-ps4", _APPLY,
        "What does adding 1 to a score do to its weight after the softmax: hide it?",
        ({"mask": "additive"}, {"mask": "additive_unscaled"}),
        _module(((_MASK, "        scores = scores + self.mask[:num_tokens, :num_tokens]\n"),))),
    Bug("mask_buffer", "mask is not a registered buffer", "chapter 2; ps2, ps3",
        (_CH2, "Why the mask is a registered buffer"), "Does your mask move with .to() and appear in state_dict()?",
        "grader.diagnose.check_mask_buffer (the mask's registration read off the module)",
        _module(((_BUFFER, "self.mask = " + _BUFFER[len('self.register_buffer("mask", '):-1]),), check="mask_buffer")),
    Bug("dropout_eval", "dropout active in eval mode", "chapter 2; ps2-ps4", _DROP,
        "Does your dropout know whether the module is in training mode?", "grader.references.DROPOUT_PLACEMENTS",
        _module(((_DROPOUT, "        weights = torch.nn.functional.dropout(weights, self.dropout.p)\n"),),
                check="dropout")),
    Bug("dropout_never", "dropout not applied in training mode", "chapter 2; ps2-ps4", _DROP,
        "Where is the dropout layer applied in forward?", "grader.references.DROPOUT_PLACEMENTS",
        _module(((_DROPOUT, ""),), check="dropout")),
    Bug("dropout_scores", "dropout on scores instead of weights", "chapter 2; ps2-ps4", _DROP,
        "What does dropout zero: a score (before the softmax) or a weight (after it)?",
        "grader.references.DROPOUT_PLACEMENTS",
        _module(((_SOFTMAX, _SOFTMAX.replace("softmax(scores", "softmax(self.dropout(scores)")), (_DROPOUT, "")),
                check="dropout")),
    Bug("dropout_context", "dropout after the attention weights (on the context vectors or after out_proj)",
        "chapter 2 (rasbt #280); ps2-ps4", _DROP, "Is dropout applied to the weights, before they multiply values?",
        "grader.references.DROPOUT_PLACEMENTS",
        (Recipe("ps2", "causal_attention", ((_DROPOUT + "        return weights @ values",
                                             "        return self.dropout(weights @ values)"),),
                "causal_attention", "dropout"),
         Recipe("ps3", "multi_head_attention", ((_DROPOUT, ""), ("return self.out_proj(context)",
                                                                "return self.dropout(self.out_proj(context))")),
                "multi_head_attention", "dropout"))),
    # ---- projections and widths (chapters 1, 3-6; ps1, ps3, ps4)
    Bug("d_in_d_out", "a weight uses d_in where d_out belongs, or is transposed", "chapters 1 and 8; ps1, ps3, ps4",
        (_CH8, "The siblings: four more bugs that keep the right shape"),
        "What are the in and out features of each projection when d_in != d_out?",
        "grader.diagnose._wrong_width (the layers' shapes) and grader.diagnose.mha_reference(transpose=...)",
        (Recipe("ps3", "multi_head_attention", (("self.W_value = nn.Linear(d_in, d_out",
                                                 "self.W_value = nn.Linear(d_in, d_in"),), "multi_head_attention"),)),
    Bug("weights_changed", "the module changes its weights in forward", "chapter 1; ps1-ps4",
        (_CH1, "Trainable weights: queries, keys and values"), "Does forward write to any parameter?",
        "grader.verify.diagnosis._weights_moved (the weights read back after the forward pass)"),
    Bug("batch", "sequences in a batch affect each other", "chapters 2 and 3; ps1-ps4", (_CH2, "Batches"),
        "Does any operation in forward mix dimension 0, the batch?",
        "grader.verify.reference._flattened (the batch laid end to end as one sequence)",
        (Recipe("ps1", "self_attention", (("        queries = self.W_query(x)\n",
                                           "        batch = x.shape[0]\n        x = x.reshape(1, -1, x.shape[-1])\n"
                                           "        queries = self.W_query(x)\n"),
                                          ("        return context",
                                           "        return context.reshape(batch, -1, context.shape[-1])")),
                "self_attention"),)),
    # ---- many heads (chapters 3-5, ps3)
    Bug("width", "d_out not divided by num_heads", "chapter 7 (rasbt #67); ps3, ps4", (_CH7, "Diagnosis, then the fix"),
        "Is d_out the width of one head or of all heads together, in this class?",
        "grader.diagnose.check_shape and the weights' shapes (grader.verify.diagnosis._weight_diagnosis)",
        (Recipe("ps4", "fixed_wrapper", (("CausalAttention(d_in, head_dim,", "CausalAttention(d_in, d_out,"),),
                "fixed_wrapper"),)),
    Bug("wrapper_divided", "d_out divided by num_heads", "chapter 3; ps3 wrapper",
        (_CH3, "What `d_out` means here, and what it will mean"), "In the wrapper, is d_out per head or in total?",
        "the heads' weights' shapes (grader.verify.diagnosis._weight_diagnosis)",
        (Recipe("ps3", "wrapper", ((_HEADS, _HEADS.replace("d_in, d_out,", "d_in, d_out // num_heads,")),),
                "wrapper"),)),
    Bug("shared_heads", "heads share one module", "chapter 3; ps3 wrapper",
        (_CH3, "Stacking heads: `MultiHeadAttentionWrapper`"), "Are your heads different objects?",
        "grader.verify.diagnosis._heads_shared (the heads' weights read back)",
        (Recipe("ps3", "wrapper", ((_HEADS, "[CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)] * "
                                            "num_heads"),), "wrapper"),)),
    Bug("view_no_transpose", "view without transpose: tokens and heads mixed up", "chapters 4 and 5; ps3, ps4",
        (_CH5, "The tempting shortcut: `view` without transposing back"),
        "Which axis is next to the batch when you view the heads back into one row per token?",
        ({"merge": "view"},),
        (Recipe("ps3", "multi_head_attention", (("context = (weights @ values).transpose(1, 2)",
                                                 "context = (weights @ values)"),), "multi_head_attention"),)),
    Bug("heads_averaged", "head outputs averaged instead of concatenated", "chapter 3; ps3, ps4 wrappers",
        (_CH3, "Stacking heads: `MultiHeadAttentionWrapper`"),
        "How wide is the wrapper's output: one head's width, or all of them side by side?",
        "grader.references.heads_averaged",
        (Recipe("ps3", "wrapper", (("return torch.cat([head(x) for head in self.heads], dim=-1)",
                                    "return torch.stack([head(x) for head in self.heads]).mean(0)"),), "wrapper"),)),
    Bug("contiguous", "missing .contiguous() before .view()", "chapter 5; ps3", (_CH5, "Step 2: `view` refuses"),
        "Is the tensor contiguous after the transpose?", "the view raises, as it does in the bug's own code"),
    Bug("divisibility", "no clear error when d_out is not divisible by num_heads", "chapter 6; ps3, ps4",
        (_CH6, "When `d_out` does not split into heads"), "What happens when d_out % num_heads != 0?",
        "the constructor's exception type (ValueError)",
        (Recipe("ps3", "multi_head_attention",
                (('        if d_out % num_heads != 0:\n'
                  '            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")',
                  '        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"'),),
                "multi_head_attention", "divisibility"),
         Recipe("ps4", "fixed_wrapper",
                (('        if d_out % num_heads != 0:\n'
                  '            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")',
                  '        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"'),),
                "fixed_wrapper", "divisibility"))),
    # ---- the output projection (chapters 6 and 8, ps3, ps4)
    Bug("no_out_proj", "no output projection", "chapter 8 (rasbt #67, fixed by PR #68); ps3, ps4",
        (_CH6, "Without `out_proj`, every head owns a slice"), "What mixes the heads' outputs after the concatenation?",
        "the module's layers (no out_proj) and its parameter count",
        (Recipe("ps3", "multi_head_attention", (("        self.out_proj = nn.Linear(d_out, d_out)\n", ""),
                                                ("return self.out_proj(context)", "return context")),
                "multi_head_attention"),)),
    Bug("out_proj_unused", "output projection defined but not applied in forward", "chapter 8 (rasbt PR #131); ps3, "
        "ps4", (_CH8, "The siblings: four more bugs that keep the right shape"), "Is out_proj called in forward?",
        ({"use_out": False},),
        (Recipe("ps3", "multi_head_attention", (("return self.out_proj(context)", "return context"),),
                "multi_head_attention"),
         Recipe("ps4", "fixed_projection", (("return self.out_proj(super().forward(x))", "return super().forward(x)"),),
                "fixed_projection"))),
    Bug("out_proj_d_in", "out_proj built with d_in where d_out belongs", "chapter 8 (rasbt PR #183); ps4",
        (_CH8, "The siblings: four more bugs that keep the right shape"), "What width does out_proj take in?",
        "the out_proj's shape (grader.verify.diagnosis._weight_diagnosis)",
        (Recipe("ps4", "fixed_projection", (("self.out_proj = nn.Linear(d_out, d_out)",
                                             "self.out_proj = nn.Linear(d_in, d_out)"),), "fixed_projection"),)),
    # ---- timing (chapter 9, ps5)
    Bug("no_warmup", "no warm-up", "chapter 9; ps5 timing", ("book/09_performance_lab.md", "Timing that does not lie"),
        "Is the first, slow call inside your measurement?", "grader.assignments.ps5 (timing scenarios)"),
    Bug("mean_timing", "mean instead of median", "chapter 9; ps5 timing",
        ("book/09_performance_lab.md", "Timing that does not lie"), "What does one slow outlier do to your summary?",
        "grader.assignments.ps5 (timing scenarios)"),
    Bug("autograd_timing", "autograd on while timing", "chapter 9; ps5 timing",
        ("book/09_performance_lab.md", "Timing that does not lie"), "Does the timed call record a graph?",
        "grader.assignments.ps5 (timing scenarios)"),
    Bug("no_sync", "no synchronisation on CUDA", "chapter 9; ps5 timing",
        ("book/09_performance_lab.md", "Timing that does not lie"), "Has the GPU finished when you read the clock?",
        "grader.assignments.ps5 (timing scenarios)"),
    Bug("seconds", "seconds instead of milliseconds", "chapter 9; ps5 timing",
        ("book/09_performance_lab.md", "Timing that does not lie"), "In which unit does your function answer?",
        "grader.assignments.ps5 (timing scenarios)"),
    # ---- state kept between calls (chapter 2; ps2-ps4, seen by calling one module several times)
    Bug("mask_cached", "mask made for the first call's length and reused on later calls",
        "chapter 2 (slice the buffer to num_tokens on every call); ps2-ps4",
        (_CH2, "Sequences longer than the context length"), "Is the mask sliced to num_tokens on every call?",
        "grader.verify.reference.sequence_hypotheses",
        (Recipe("ps2", "causal_attention",
                ((_MASK, "        if getattr(self, 'first_mask', None) is None:\n"
                         "            self.first_mask = self.mask.bool()[:num_tokens, :num_tokens]\n"
                         "        scores = scores.masked_fill(self.first_mask[:num_tokens, :num_tokens], "
                         "-torch.inf)\n"),),
                "causal_attention", "equivalence"),)),
    # ---- no known bug
    Bug("mismatch", "output differs from PyTorch's reference", "every module task"),
    # ---- masks and shared K/V heads (chapter 11, ps6)
    Bug("mask_polarity", "boolean mask polarity flipped",
        "chapter 11 (bug clinic III; rasbt #1061, pytorch #170400); ps2-ps6",
        (_CH11, "Bug clinic III: a True that means the opposite"),
        "Does True in your mask mean 'hide' or 'may attend' to the function you hand it to?",
        # Handed to F.scaled_dot_product_attention (a row with nothing to see gives 0), or ~mask in masked_fill (NaN).
        ({"mask": "polarity"}, {"mask": "polarity_fill"}),
        _module((("masked_fill(self.mask.bool()", "masked_fill(~self.mask.bool()"),))
        + (Recipe("ps3", "multi_head_attention",
                  (("        scores = queries @ keys.transpose(2, 3)  # (b, num_heads, T, T)\n" + _MASK + _SOFTMAX
                    + _DROPOUT + "        context = (weights @ values).transpose(1, 2)",
                    "        context = torch.nn.functional.scaled_dot_product_attention(queries, keys, values, "
                    "attn_mask=self.mask.bool()[:num_tokens, :num_tokens], dropout_p=self.dropout.p if "
                    "self.training else 0.0).transpose(1, 2)"),), "multi_head_attention"),)),
    Bug("padding_on_queries", "padding mask applied to queries instead of keys", "chapter 11; ps6",
        (_CH11, "Padding: sequences of different lengths"),
        "Does the padding hide a row (a query) or a column (a key)?",
        "grader.verify.reference_masks.hypotheses"),
    Bug("mask_neg_inf", "-inf fill on fully masked rows (NaN)", "chapter 11; ps6",
        (_CH11, "Padding: sequences of different lengths"), "What is the softmax of a row that is all -inf?",
        "grader.verify.reference_masks.hypotheses"),
    Bug("padded_not_zeroed", "outputs of padded queries not zero (zero them after out_proj)", "chapter 11; ps6",
        (_CH11, "Padding: sequences of different lengths"), "What does a padded position output after out_proj?",
        "grader.verify.reference_masks.hypotheses"),
    Bug("padding_renormalised", "padding applied to the weights after the softmax, then renormalised (0/0 on rows "
        "with nothing to see)", "chapter 11; ps6", (_CH11, "Padding: sequences of different lengths"),
        "What is 0 / 0 in a row that keeps nothing?", "grader.verify.reference_masks.hypotheses"),
    Bug("kv_repeat", "K/V heads repeated with repeat where repeat_interleave belongs", "chapter 11; ps6",
        (_CH11B, "Grouped-query and multi-query attention"), "Which query heads share K/V head 0 after your repeat?",
        "grader.verify.reference_masks.hypotheses"),
)

BY_CODE: dict[str, Bug] = {bug.code: bug for bug in CATALOGUE}

# Bugs of one kind, for checks that answer for all of them (grader/assignments: credit by check).
DROPOUT_BUGS = ("dropout_eval", "dropout_never", "dropout_scores", "dropout_context")

# code -> name: the form the notebooks' checks and the mutation tests use.
BUGS: dict[str, str] = {bug.code: bug.name for bug in CATALOGUE}

# Bugs that make a module's output wrong (or its build fail), for the checks that judge the output ("equivalence"):
# a failure that names one costs that check only, not the module's other checks (mask buffer, dropout, ...).
OUTPUT_BUGS = tuple(bug.code for bug in CATALOGUE if isinstance(bug.reference, tuple) and bug.reference) + (
    "batch", "mask_cached", "d_in_d_out", "weights_changed", "width", "wrapper_divided", "shared_heads",
    "heads_averaged", "contiguous", "no_out_proj", "out_proj_d_in")

# code -> the forms of the chapter's module with that bug (grader.references.attention_with_bug's settings).
MODULE_BUGS: dict[str, tuple[dict, ...]] = {bug.code: bug.reference for bug in CATALOGUE
                                            if isinstance(bug.reference, tuple) and bug.reference}


def named(code: str, detail: str = "") -> str:
    """The message for bug ``code``: its catalogue name, then ``detail``. Raises KeyError for an unknown code."""
    return BY_CODE[code].says(detail)


def code_of(message: str) -> str | None:
    """The code of the catalogued bug a message starts with (the longest name that matches), else None."""
    text = str(message)
    matches = [bug for bug in CATALOGUE if text.startswith(bug.name)]
    return max(matches, key=lambda bug: len(bug.name)).code if matches else None
