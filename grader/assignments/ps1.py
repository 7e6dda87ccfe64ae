"""ps1, one head and scaled dot-product attention (chapter 1): tasks, probe cases."""
from __future__ import annotations

from grader.assignments.spec import Assignment, Task
from grader.verify.cases import call_case, module_case, with_params


def cases(seed: int, source_nb=None, keys=None) -> list:
    """Raw scores and SDPA on square and batched rectangular inputs; SelfAttention at d_in != d_out and with
    biases (a weight built with d_in where d_out belongs only shows when the two differ)."""
    return [
        *with_params([
            call_case("attention_scores", "square", "attention_scores", seed, {"queries": (5, 4), "keys": (5, 4)}),
            call_case("attention_scores", "batched_rectangular", "attention_scores", seed,
                      {"queries": (2, 3, 4), "keys": (2, 6, 4)}),
        ], reference="scores"),
        *with_params([
            call_case("scaled_dot_product", "square", "scaled_dot_product", seed,
                      {"queries": (5, 8), "keys": (5, 8), "values": (5, 8)}, returns=2),
            call_case("scaled_dot_product", "batched_rectangular", "scaled_dot_product", seed,
                      {"queries": (2, 3, 16), "keys": (2, 6, 16), "values": (2, 6, 5)}, returns=2),
        ], reference="sdpa"),
        *with_params([
            module_case("self_attention", "d_in_ne_d_out", "SelfAttention", seed, batch=2, num_tokens=6, d_in=5,
                        d_out=8, kwargs={"d_in": 5, "d_out": 8}),
            module_case("self_attention", "square_with_bias", "SelfAttention", seed, batch=3, num_tokens=4, d_in=6,
                        d_out=6, kwargs={"d_in": 6, "d_out": 6}, qkv_bias=True),
        ], reference="heads"),
    ]


ASSIGNMENT = Assignment(
    "ps1",
    "One head and scaled dot-product attention",
    ("book/01_one_head",),
    (
        Task("attention_scores", 2, ("attention_scores",),
             "attention_scores(queries, keys): unscaled dot products, shape (..., T_q, T_k)"),
        Task("scaled_dot_product", 3, ("scaled_dot_product",),
             "scaled_dot_product(queries, keys, values) -> (context, weights), scores / sqrt(d_k)"),
        Task("self_attention", 5, ("SelfAttention",),
             "SelfAttention(d_in, d_out, qkv_bias=False) with W_query, W_key, W_value"),
    ),
    cases=cases,
)
