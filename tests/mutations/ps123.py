"""The bugs the ps1-ps3 tests must catch, each planted by text replacement in one solution cell.

Every ``Mutation`` names the cell (its grade_id), the replacements (each must match exactly once), the tasks that
must lose marks, and the phrase the failure must show (a value of ``grader.diagnose.BUGS``): a bug that is caught
but not named does not count.
"""
from __future__ import annotations

from dataclasses import dataclass

from grader.diagnose import BUGS


@dataclass(frozen=True)
class Mutation:
    id: str
    assignment: str
    cell: str
    replacements: tuple[tuple[str, str], ...]
    loses: tuple[str, ...]
    diagnosis: str


# The cells each cell's tests also run through (a bug there shows up in those tests too); packed notebooks never
# combine two edits whose cells meet here.
DEPENDS: dict[str, dict[str, set[str]]] = {
    "ps1": {"scaled_dot_product": {"attention_scores"}, "self_attention": {"attention_scores", "scaled_dot_product"}},
    "ps2": {},
    "ps3": {"wrapper": {"causal_attention_from_ps2"}},
}

_MHA_Q = "queries = self.W_query(x).view("
_MHA_K = "keys = self.W_key(x).view("
_MHA_V = "values = self.W_value(x).view("

MUTATIONS = [
    # ---- ps1
    Mutation("scale_multiplied_sdpa", "ps1", "scaled_dot_product",
             (("/ math.sqrt(d_k)", "* math.sqrt(d_k)"),), ("scaled_dot_product",), BUGS["scale_multiplied"]),
    Mutation("softmax_dim_sdpa", "ps1", "scaled_dot_product",
             (("dim=-1)", "dim=-2)"),), ("scaled_dot_product",), BUGS["softmax_dim"]),
    Mutation("weights_transposed_self_attention", "ps1", "self_attention",
             (("queries = self.W_query(x)", "queries = x @ self.W_query.weight"),
              ("keys = self.W_key(x)", "keys = x @ self.W_key.weight"),
              ("values = self.W_value(x)", "values = x @ self.W_value.weight")),
             ("self_attention",), BUGS["d_in_d_out"]),
    # ---- ps2
    Mutation("mask_after_softmax", "ps2", "masked_softmax",
             (('torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)',
               "torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)"),), ("masked_softmax",),
             BUGS["mask_after_softmax"]),
    Mutation("softmax_dim_masked", "ps2", "masked_softmax",
             (("dim=-1)", "dim=-2)"),), ("masked_softmax",), BUGS["softmax_dim"]),
    Mutation("no_mask", "ps2", "causal_attention",
             (("        scores = scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)\n", ""),),
             ("causal_attention",), BUGS["future"]),
    Mutation("mask_after_softmax_module", "ps2", "causal_attention",
             (("        scores = scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)\n", ""),
              ("weights = self.dropout(weights)",
               "weights = weights.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], 0.0)\n"
               "        weights = self.dropout(weights)")),
             ("causal_attention",), BUGS["mask_after_softmax"]),
    Mutation("mask_not_buffer", "ps2", "causal_attention",
             (('self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))',
               "self.mask = torch.triu(torch.ones(context_length, context_length), diagonal=1)"),),
             ("causal_attention",), BUGS["mask_buffer"]),
    Mutation("dropout_on_scores", "ps2", "causal_attention",
             (("weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)\n        weights = self.dropout(weights)",
               "scores = self.dropout(scores)\n        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)"),),
             ("causal_attention",), BUGS["dropout_scores"]),
    Mutation("dropout_in_eval", "ps2", "causal_attention",
             (("weights = self.dropout(weights)",
               "weights = nn.functional.dropout(weights, self.dropout.p, training=True)"),),
             ("causal_attention",), BUGS["dropout_eval"]),
    # ---- ps3
    Mutation("wrapper_shared_heads", "ps3", "wrapper",
             (("[CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)]",
               "[CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)] * num_heads"),),
             ("wrapper",), BUGS["shared_heads"]),
    Mutation("split_view_no_transpose", "ps3", "split_heads",
             (("x.view(batch, num_tokens, num_heads, d_out // num_heads).transpose(1, 2)",
               "x.view(batch, num_heads, num_tokens, d_out // num_heads)"),), ("split_heads",),
             BUGS["view_no_transpose"]),
    Mutation("combine_view_no_transpose", "ps3", "combine_heads",
             (("x.transpose(1, 2).contiguous().view(", "x.contiguous().view("),), ("combine_heads",),
             BUGS["view_no_transpose"]),
    Mutation("combine_missing_contiguous", "ps3", "combine_heads",
             ((".contiguous().view(", ".view("),), ("combine_heads",), BUGS["contiguous"]),
    Mutation("d_out_not_divided", "ps3", "multi_head_attention",
             (("self.d_out = d_out\n", "self.d_out = d_out * num_heads\n"),
              ("self.head_dim = d_out // num_heads", "self.head_dim = d_out"),
              ("self.W_query = nn.Linear(d_in, d_out,", "self.W_query = nn.Linear(d_in, d_out * num_heads,"),
              ("self.W_key = nn.Linear(d_in, d_out,", "self.W_key = nn.Linear(d_in, d_out * num_heads,"),
              ("self.W_value = nn.Linear(d_in, d_out,", "self.W_value = nn.Linear(d_in, d_out * num_heads,"),
              ("self.out_proj = nn.Linear(d_out, d_out)",
               "self.out_proj = nn.Linear(d_out * num_heads, d_out * num_heads)")),
             ("multi_head_attention",), BUGS["width"]),
    Mutation("no_out_proj", "ps3", "multi_head_attention",
             (("        self.out_proj = nn.Linear(d_out, d_out)\n", ""),
              ("return self.out_proj(context)", "return context")),
             ("multi_head_attention",), BUGS["no_out_proj"]),
    Mutation("out_proj_not_applied", "ps3", "multi_head_attention",
             (("return self.out_proj(context)", "return context"),), ("multi_head_attention",),
             BUGS["out_proj_unused"]),
    Mutation("out_proj_with_d_in", "ps3", "multi_head_attention",
             (("self.out_proj = nn.Linear(d_out, d_out)", "self.out_proj = nn.Linear(d_in, d_out)"),),
             ("multi_head_attention",), BUGS["out_proj_d_in"]),
    Mutation("scale_multiplied_mha", "ps3", "multi_head_attention",
             (("scores / keys.shape[-1] ** 0.5", "scores * keys.shape[-1] ** 0.5"),), ("multi_head_attention",),
             BUGS["scale_multiplied"]),
    # Scaling by the model width instead of the head width (karpathy/ng-video-lecture PR #6).
    Mutation("scale_by_d_out", "ps3", "multi_head_attention",
             (("scores / keys.shape[-1] ** 0.5", "scores / self.d_out ** 0.5"),), ("multi_head_attention",),
             BUGS["scale_width"]),
    Mutation("weights_transposed_mha", "ps3", "multi_head_attention",
             ((_MHA_Q, "queries = (x @ self.W_query.weight).view("),
              (_MHA_K, "keys = (x @ self.W_key.weight).view("),
              (_MHA_V, "values = (x @ self.W_value.weight).view(")),
             ("multi_head_attention",), BUGS["d_in_d_out"]),
    Mutation("mha_view_no_transpose_back", "ps3", "multi_head_attention",
             (("context = (weights @ values).transpose(1, 2)", "context = weights @ values"),),
             ("multi_head_attention",), BUGS["view_no_transpose"]),
    Mutation("mha_missing_contiguous", "ps3", "multi_head_attention",
             (("context.contiguous().view(", "context.view("),), ("multi_head_attention",), BUGS["contiguous"]),
    Mutation("mha_dropout_on_scores", "ps3", "multi_head_attention",
             (("weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)\n        weights = self.dropout(weights)",
               "scores = self.dropout(scores)\n        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)"),),
             ("multi_head_attention",), BUGS["dropout_scores"]),
    Mutation("mha_mask_not_buffer", "ps3", "multi_head_attention",
             (('self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))',
               "self.mask = torch.triu(torch.ones(context_length, context_length), diagonal=1)"),),
             ("multi_head_attention",), BUGS["mask_buffer"]),
]
