"""The graded tasks of every assignment: the contract between the notebooks, the grader and the tests.

Each task is one nbgrader solution cell (grade_id == task name) followed by one autograded test cell
(grade_id == "test_" + task name) worth ``points``. ``names`` are what the student defines in the notebook and what
the verification stage asks the sandboxed kernel to run. Nothing here is a solution or an answer key: answer keys
live with the instructor's source in solutions/.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Task:
    name: str
    points: int
    names: tuple[str, ...]
    summary: str
    kind: str = "code"  # "code": behaviour is verified; "answer": a value compared with the instructor's key
    from_scratch: bool = True  # built-in attention (F.scaled_dot_product_attention, nn.MultiheadAttention) flagged


@dataclass(frozen=True)
class Assignment:
    name: str
    title: str
    chapters: tuple[str, ...]
    tasks: tuple[Task, ...] = field(default_factory=tuple)

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def max_score(self) -> int:
        return sum(t.points for t in self.tasks)

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no task {name!r}")


ASSIGNMENTS: dict[str, Assignment] = {
    a.name: a
    for a in [
        Assignment(
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
        ),
        Assignment(
            "ps2",
            "Causal attention",
            ("book/02_causal_attention",),
            (
                Task("causal_mask", 2, ("causal_mask",),
                     "causal_mask(num_tokens): bool (T, T), True where a query must not see the key (j > i)"),
                Task("masked_softmax", 3, ("masked_softmax",),
                     "masked_softmax(scores, mask): -inf where mask is True, then softmax over the last dim"),
                Task("causal_attention", 5, ("CausalAttention",),
                     "CausalAttention(d_in, d_out, context_length, dropout, qkv_bias=False), mask buffer 'mask'"),
            ),
        ),
        Assignment(
            "ps3",
            "Multi-head attention",
            ("book/03_many_heads", "book/04_splitting_heads", "book/05_concatenating_heads",
             "book/06_final_projection"),
            (
                Task("wrapper", 3, ("MultiHeadAttentionWrapper",),
                     "MultiHeadAttentionWrapper(d_in, d_out, context_length, dropout, num_heads, qkv_bias=False), "
                     "d_out per head, output width num_heads * d_out; heads in self.heads (nn.ModuleList of the "
                     "student's CausalAttention, pasted from ps2 into the ungraded cell causal_attention_from_ps2)"),
                Task("split_heads", 2, ("split_heads",),
                     "split_heads(x, num_heads): (b, T, d_out) -> (b, num_heads, T, head_dim)"),
                Task("combine_heads", 2, ("combine_heads",),
                     "combine_heads(x): (b, num_heads, T, head_dim) -> (b, T, num_heads * head_dim)"),
                Task("multi_head_attention", 5, ("MultiHeadAttention",),
                     "MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias=False) with "
                     "W_query, W_key, W_value, out_proj; ValueError when d_out % num_heads != 0"),
            ),
        ),
        Assignment(
            "ps4",
            "Bug clinic",
            ("book/07_bug_clinic_9216", "book/08_bug_clinic_projection"),
            (
                Task("diagnoses", 4, ("diagnoses",),
                     "diagnoses: dict mystery module name -> one label of BUG_LABELS", kind="answer"),
                Task("parity_test", 3, ("passes_parity_test",),
                     "passes_parity_test(mha_cls) -> bool: True for a correct class, False for one whose bug "
                     "hides when d_in == d_out",
                     # A parity test may well compare against nn.MultiheadAttention: that is not a shortcut.
                     from_scratch=False),
                Task("fixed_wrapper", 3, ("FixedMultiHeadAttentionWrapper",),
                     "the 9216 wrapper fixed: d_out total, d_out // num_heads per head, out_proj after the concat"),
                Task("fixed_projection", 3, ("FixedMultiHeadAttention",),
                     "the module without a final projection, fixed: equals nn.MultiheadAttention"),
            ),
        ),
        Assignment(
            "ps5",
            "Performance",
            ("book/09_performance_lab",),
            (
                Task("timing", 3, ("time_forward",),
                     "time_forward(module, x, warmup=5, repeats=20) -> median milliseconds; warm-up, CUDA sync",
                     from_scratch=False),
                Task("flops", 2, ("attention_flops",),
                     "attention_flops(batch, num_tokens, d_in, d_out, num_heads) -> {'projections', 'attention'}",
                     from_scratch=False),
                Task("memory", 2, ("attention_weights_bytes",),
                     "attention_weights_bytes(batch, num_tokens, num_heads, dtype) -> bytes of the weights tensor",
                     from_scratch=False),
                Task("anomaly", 2, ("anomaly_answer",),
                     "anomaly_answer: the letter of the explanation of a timing anomaly", kind="answer",
                     from_scratch=False),
            ),
        ),
    ]
}
