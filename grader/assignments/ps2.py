"""ps2, causal attention (chapter 2): tasks, probe cases."""
from __future__ import annotations

from grader.assignments.spec import Assignment, Check, Task
from grader.bugs import DROPOUT_BUGS, OUTPUT_BUGS
from grader.verify.cases import (Case, batch_case, dropout_case, dropout_placement_case, eval_twice_case, lengths_case,
                                 mask_case, module_case, with_params)


def cases(seed: int, source_nb=None, keys=None) -> list:
    """Masks of 1, 4 and 7 tokens; masked softmax with the causal mask and a random one; CausalAttention at
    d_in != d_out, shorter than its context, with biases, and in training mode with dropout 0.5 (on the weights, not
    on the scores nor after the weights); one instance called at several lengths, in training then eval mode, and on
    a batch with one sequence changed; eval mode with dropout 0.5 twice on the same input."""
    found = [Case("causal_mask", f"tokens_{n}", "call", "causal_mask", args=[{"value": n}],
                  params={"num_tokens": n, "reference": "causal_mask"}) for n in (1, 4, 7)]
    found += with_params([mask_case("masked_softmax", "causal", seed, 5, 5, 2, causal=True),
                          mask_case("masked_softmax", "random_mask", seed, 3, 6, 1, causal=False)],
                         reference="masked_softmax")
    found += with_params([
        module_case("causal_attention", "full_context", "CausalAttention", seed, batch=2, num_tokens=6, d_in=5,
                    d_out=8, kwargs={"d_in": 5, "d_out": 8, "context_length": 6, "dropout": 0.0}),
        module_case("causal_attention", "short_input_eval_dropout", "CausalAttention", seed, batch=2,
                    num_tokens=4, d_in=6, d_out=6,
                    kwargs={"d_in": 6, "d_out": 6, "context_length": 9, "dropout": 0.5}),
        module_case("causal_attention", "with_bias", "CausalAttention", seed, batch=1, num_tokens=5, d_in=6,
                    d_out=3, kwargs={"d_in": 6, "d_out": 3, "context_length": 5, "dropout": 0.0},
                    qkv_bias=True),
    ], reference="heads", mask_buffer=True)
    found.append(dropout_case("causal_attention", "CausalAttention", seed))
    found.append(dropout_placement_case("causal_attention", "CausalAttention", seed))
    # One instance called several times: other lengths, .train() then .eval(), one sequence of the batch changed;
    # and eval mode with dropout 0.5, twice.
    found += with_params([lengths_case("causal_attention", "CausalAttention", seed, d_in=5, d_out=4,
                                       kwargs={"d_in": 5, "d_out": 4}),
                          batch_case("causal_attention", "CausalAttention", seed, d_in=4, d_out=6,
                                     kwargs={"d_in": 4, "d_out": 6})],
                         reference="heads")
    found.append(eval_twice_case("causal_attention", "CausalAttention", seed))
    return found


ASSIGNMENT = Assignment(
    "ps2",
    "Causal attention",
    ("book/02_causal_attention",),
    (
        Task("causal_mask", 2, ("causal_mask",),
             "causal_mask(num_tokens): bool (T, T), True where a query must not see the key (j > i)"),
        Task("masked_softmax", 3, ("masked_softmax",),
             "masked_softmax(scores, mask): -inf where mask is True, then softmax over the last dim"),
        Task("causal_attention", 5, ("CausalAttention",),
             "CausalAttention(d_in, d_out, context_length, dropout, qkv_bias=False), mask buffer 'mask'",
             checks=(Check("equivalence", 3, ("full_context", "with_bias", "lengths_and_modes",
                                              "batch_independence"), bugs=OUTPUT_BUGS),
                     Check("mask_buffer", 1, ("full_context", "with_bias"), bugs=("mask_buffer",),
                           only_its_bugs=True),
                     Check("dropout", 1, ("short_input_eval_dropout", "dropout_train", "dropout_placement",
                                          "eval_twice"),
                           bugs=DROPOUT_BUGS))),
    ),
    cases=cases,
)
