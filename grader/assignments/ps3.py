"""ps3, multi-head attention (chapters 3-6): tasks, probe cases."""
from __future__ import annotations

from grader.assignments.spec import Assignment, Check, Task
from grader.bugs import DROPOUT_BUGS, OUTPUT_BUGS
from grader.verify.cases import (Case, batch_case, call_case, dropout_case, dropout_placement_case,
                                 eval_twice_case, lengths_case, module_case, with_params)


def cases(seed: int, source_nb=None, keys=None) -> list:
    """The wrapper (d_out per head) at d_in != d_out, shorter than its context, with biases and with dropout passed
    on to its heads; split/combine at two head
    counts; MultiHeadAttention square, at d_in != d_out, with biases, in training mode, and with an indivisible
    d_out (it must raise ValueError); for both classes one instance called at several lengths, in training then
    eval mode, and on a batch with one sequence changed, and eval mode with dropout 0.5 twice."""
    found = with_params([
        module_case("wrapper", "d_in_ne_d_out", "MultiHeadAttentionWrapper", seed, batch=2, num_tokens=5, d_in=6,
                    d_out=4, heads=3, kwargs={"d_in": 6, "d_out": 4, "context_length": 5, "dropout": 0.0,
                                              "num_heads": 3}),
        module_case("wrapper", "short_input", "MultiHeadAttentionWrapper", seed, batch=1, num_tokens=3, d_in=4,
                    d_out=4, heads=2, kwargs={"d_in": 4, "d_out": 4, "context_length": 7, "dropout": 0.0,
                                              "num_heads": 2}),
        module_case("wrapper", "with_bias", "MultiHeadAttentionWrapper", seed, batch=2, num_tokens=4, d_in=5,
                    d_out=3, heads=2, qkv_bias=True,
                    kwargs={"d_in": 5, "d_out": 3, "context_length": 4, "dropout": 0.0, "num_heads": 2}),
    ], reference="heads", per_head_d_out=True)
    found.append(dropout_placement_case("wrapper", "MultiHeadAttentionWrapper", seed, num_heads=2,
                                        separate_heads=True))
    found += with_params([lengths_case("wrapper", "MultiHeadAttentionWrapper", seed, d_in=5, d_out=3, heads=2,
                                       kwargs={"d_in": 5, "d_out": 3, "num_heads": 2}),
                          batch_case("wrapper", "MultiHeadAttentionWrapper", seed, d_in=4, d_out=2, heads=3,
                                     kwargs={"d_in": 4, "d_out": 2, "num_heads": 3})],
                         reference="heads", per_head_d_out=True)
    found.append(eval_twice_case("wrapper", "MultiHeadAttentionWrapper", seed, num_heads=2, separate_heads=True))
    split = [call_case("split_heads", "three_heads", "split_heads", seed, {"x": (2, 5, 12)}, [{"value": 3}]),
             call_case("split_heads", "four_heads", "split_heads", seed, {"x": (1, 3, 8)}, [{"value": 4}])]
    for case in split:
        case.params.update(reference="split_heads", num_heads=case.args[1]["value"])
    found += split
    found += with_params([call_case("combine_heads", "three_heads", "combine_heads", seed, {"x": (2, 3, 5, 4)}),
                          call_case("combine_heads", "two_heads", "combine_heads", seed, {"x": (1, 2, 6, 3)})],
                         reference="combine_heads")
    found += with_params([
        module_case("multi_head_attention", "square", "MultiHeadAttention", seed, batch=2, num_tokens=6, d_in=8,
                    d_out=8, out_proj=True, kwargs={"d_in": 8, "d_out": 8, "context_length": 6, "dropout": 0.0,
                                                    "num_heads": 2}),
        module_case("multi_head_attention", "d_in_ne_d_out", "MultiHeadAttention", seed, batch=2, num_tokens=5,
                    d_in=6, d_out=12, out_proj=True,
                    kwargs={"d_in": 6, "d_out": 12, "context_length": 8, "dropout": 0.0, "num_heads": 3}),
        module_case("multi_head_attention", "with_bias", "MultiHeadAttention", seed, batch=1, num_tokens=4,
                    d_in=5, d_out=6, out_proj=True, qkv_bias=True,
                    kwargs={"d_in": 5, "d_out": 6, "context_length": 4, "dropout": 0.0, "num_heads": 3}),
    ], reference="mha", mask_buffer=True)
    found += [
        dropout_case("multi_head_attention", "MultiHeadAttention", seed, num_heads=2),
        dropout_placement_case("multi_head_attention", "MultiHeadAttention", seed, num_heads=2),
        Case("multi_head_attention", "indivisible_d_out", "raises", "MultiHeadAttention",
             kwargs={"d_in": 6, "d_out": 10, "context_length": 4, "dropout": 0.0, "num_heads": 3}, check="raises",
             params={"exception": "ValueError"}),
    ]
    found += with_params([lengths_case("multi_head_attention", "MultiHeadAttention", seed, d_in=6, d_out=8,
                                       out_proj=True, kwargs={"d_in": 6, "d_out": 8, "num_heads": 2}),
                          batch_case("multi_head_attention", "MultiHeadAttention", seed, d_in=5, d_out=6,
                                     out_proj=True, kwargs={"d_in": 5, "d_out": 6, "num_heads": 3})],
                         reference="mha")
    found.append(eval_twice_case("multi_head_attention", "MultiHeadAttention", seed, num_heads=2, out_proj=True))
    return found


ASSIGNMENT = Assignment(
    "ps3",
    "Multi-head attention",
    ("book/03_many_heads", "book/04_splitting_heads", "book/05_concatenating_heads", "book/06_final_projection"),
    (
        Task("wrapper", 3, ("MultiHeadAttentionWrapper",),
             "MultiHeadAttentionWrapper(d_in, d_out, context_length, dropout, num_heads, qkv_bias=False), "
             "d_out per head, output width num_heads * d_out; heads in self.heads (nn.ModuleList of the "
             "student's CausalAttention, pasted from ps2 into the ungraded cell causal_attention_from_ps2)",
             checks=(Check("equivalence", 2, ("d_in_ne_d_out", "short_input", "with_bias", "lengths_and_modes",
                                              "batch_independence"), bugs=OUTPUT_BUGS),
                     Check("dropout", 1, ("dropout_placement", "eval_twice"), bugs=DROPOUT_BUGS))),
        Task("split_heads", 2, ("split_heads",),
             "split_heads(x, num_heads): (b, T, d_out) -> (b, num_heads, T, head_dim)"),
        Task("combine_heads", 2, ("combine_heads",),
             "combine_heads(x): (b, num_heads, T, head_dim) -> (b, T, num_heads * head_dim)"),
        Task("multi_head_attention", 5, ("MultiHeadAttention",),
             "MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias=False) with "
             "W_query, W_key, W_value, out_proj; ValueError when d_out % num_heads != 0",
             checks=(Check("equivalence", 2, ("square", "d_in_ne_d_out", "with_bias", "lengths_and_modes",
                                              "batch_independence"), bugs=OUTPUT_BUGS),
                     Check("mask_buffer", 1, ("square", "d_in_ne_d_out", "with_bias"), bugs=("mask_buffer",),
                           only_its_bugs=True),
                     Check("dropout", 1, ("dropout_train", "dropout_placement", "eval_twice"), bugs=DROPOUT_BUGS),
                     Check("divisibility", 1, ("indivisible_d_out",), bugs=("divisibility",)))),
    ),
    cases=cases,
)
