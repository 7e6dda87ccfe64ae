"""ps6, masks in the wild (chapter 11): tasks, probe cases, answer keys.

- ``padded_attention``: the chapter's causal ``MultiHeadAttention`` with a ``key_padding_mask`` (True = padding),
  against ``nn.MultiheadAttention`` with padded outputs zeroed; its gradient against SDPA under autograd (a -inf
  fill shows there even when the padded outputs are zeroed). Credit by check: padding (the right keys hidden),
  no_mask (the plain causal module), finite (no NaN from a row with nothing to see, in outputs or gradients).
- ``convert_mask``: conversions between SDPA's boolean mask, ``nn.MultiheadAttention``'s and an additive float
  mask, judged by what PyTorch's own operators make of the input mask.
- ``grouped_query``: ``GroupedQueryAttention`` against ``F.scaled_dot_product_attention(..., enable_gqa=True)`` for
  several (query heads, K/V heads) pairs.
- ``polarity_clinic`` (an answer task): which mystery module mixes up the polarity, against ``answer_key.json``.
- ``polarity_test``: the student's test function, run outside the notebook's own cells on classes taken from the
  source notebook (renamed from the seed, their attributes, buffers and helper methods too, docstrings
  stripped): it must pass the correct ones and fail the one with
  the polarity bug.
"""
from __future__ import annotations

from pathlib import Path

from grader.assignments.ps4 import parity_classes
from grader.assignments.spec import Assignment, Check, Task
from grader.bugs import named
from grader.verify.cases import Case, module_case, rng_for, with_params
from grader.verify.cases_masks import conversion_case, gqa_case, padded_module_case, verdicts_case

MODULE = "MultiHeadAttention"


def _padded_cases(seed: int) -> list[Case]:
    rng = rng_for(seed, "padded_attention", "lengths")
    short, middle = int(rng.integers(1, 4)), int(rng.integers(2, 5))   # right padding always pads
    found = [
        # a full sequence, a short one and one that is padding from start to end: rows with nothing to see
        padded_module_case("padded_attention", "left_padding", MODULE, seed, batch=3, num_tokens=6, d_in=8, d_out=8,
                           num_heads=2, layout="left", lengths=[6, short, 0]),
        padded_module_case("padded_attention", "right_padding", MODULE, seed, batch=2, num_tokens=5, d_in=6,
                           d_out=12, num_heads=3, layout="right", lengths=[middle, 5], qkv_bias=True),
        padded_module_case("padded_attention", "scattered_padding", MODULE, seed, batch=3, num_tokens=7, d_in=10,
                           d_out=8, num_heads=4, layout="scattered"),
        padded_module_case("padded_attention", "gradients", MODULE, seed, batch=3, num_tokens=5, d_in=6, d_out=8,
                           num_heads=2, layout="left", lengths=[5, short, 0], gradient=True),
    ]
    found += with_params([module_case("padded_attention", "no_padding", MODULE, seed, batch=2, num_tokens=5,
                                      d_in=8, d_out=12, out_proj=True,
                                      kwargs={"d_in": 8, "d_out": 12, "context_length": 7, "dropout": 0.0,
                                              "num_heads": 3})], reference="mha")
    return found


def _conversion_cases(seed: int) -> list[Case]:
    plans = [("mha_to_sdpa", (6, 6), "mha", "sdpa", "-inf"), ("sdpa_to_mha", (3, 7), "sdpa", "mha", "-inf"),
             ("mha_to_additive", (2, 1, 5, 5), "mha", "additive", "-inf"),
             ("sdpa_to_additive", (4, 6), "sdpa", "additive", "-inf"),
             ("additive_to_sdpa", (5, 5), "additive", "sdpa", "-inf"),
             ("additive_finfo_to_mha", (2, 4, 6), "additive", "mha", "finfo"),
             ("sdpa_to_sdpa", (3, 4), "sdpa", "sdpa", "-inf")]
    return [conversion_case("convert_mask", name, "convert_mask", seed, shape=shape, source=source, target=target,
                            fill=fill) for name, shape, source, target, fill in plans]


def _gqa_cases(seed: int) -> list[Case]:
    plans = [("grouped_4_2", 8, 8, 4, 2, False), ("grouped_6_3_d_in_ne_d_out", 10, 12, 6, 3, True),
             ("grouped_6_2", 12, 12, 6, 2, False), ("multi_query_4_1", 8, 8, 4, 1, False),
             ("multi_head_3_3", 6, 6, 3, 3, False)]
    return [gqa_case("grouped_query", name, "GroupedQueryAttention", seed, batch=2, num_tokens=6, d_in=d_in,
                     d_out=d_out, num_heads=heads, num_kv_heads=kv_heads, qkv_bias=bias)
            for name, d_in, d_out, heads, kv_heads, bias in plans]


# A correct module written as the polarity bug's module is (separate projections, a lower-triangular "may attend"
# buffer, SDPA, torch.where): with it among the candidates, a test can only tell the buggy one apart by what it
# does, never by its layout (how many submodules, which buffers, their shapes).
_POLARITY_TWIN = '''
class PolarityTwin(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, d_out // num_heads, dropout
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        ones = torch.ones(context_length, context_length, dtype=torch.bool)
        self.register_buffer("visible", torch.tril(ones))

    def forward(self, x, key_padding_mask=None):
        b, num_tokens, _ = x.shape
        q, k, v = (layer(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
                   for layer in (self.W_query, self.W_key, self.W_value))
        visible = self.visible[:num_tokens, :num_tokens]
        if key_padding_mask is not None:
            visible = visible & ~key_padding_mask[:, None, None, :]
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=visible,
                                                 dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(context.transpose(1, 2).reshape(b, num_tokens, -1))
        if key_padding_mask is not None:
            out = torch.where(key_padding_mask[..., None], torch.zeros_like(out), out)
        return out
'''


def cases(seed: int, source_nb: Path | None = None, keys: dict | None = None) -> list:
    keys = keys or {}
    found = _padded_cases(seed) + _conversion_cases(seed) + _gqa_cases(seed)
    if "polarity_clinic" in keys:
        key = keys["polarity_clinic"]
        found.append(Case("polarity_clinic", "answer", "answer", "polarity_suspect", check="answer",
                          params={"answer": {"kind": "choice", "answer": key["answer"],
                                             "choices": list(key["choices"]), "hint": key.get("hint", "")}}))
    if source_nb is not None and "polarity_test" in keys:
        key = keys["polarity_test"]
        verdicts = {name: True for name in key["correct_classes"]}
        verdicts.update({name: False for name in key["buggy_classes"]})
        verdicts["PolarityTwin"] = True
        source, renamed = parity_classes(source_nb, verdicts, seed, members=True, extra=_POLARITY_TWIN)
        found.append(verdicts_case("polarity_test", "test_key_padding_polarity", source, renamed,
                                   missed=f"it does not expose the bug '{named('mask_polarity')}': give the module "
                                          f"a key_padding_mask with padding and check that real tokens ignore the "
                                          f"padded ones"))
    return found


ASSIGNMENT = Assignment(
    "ps6",
    "Masks in the wild",
    ("book/11_masks_in_the_wild", "book/11b_cross_attention_and_kv_cache"),
    (
        Task("padded_attention", 5, (MODULE,),
             "MultiHeadAttention.forward(x, key_padding_mask=None): causal, True = padding, padded outputs zero",
             from_scratch=False,
             checks=(Check("padding", 3, ("left_padding", "right_padding", "scattered_padding"),
                           bugs=("mask_polarity", "padding_on_queries", "padded_not_zeroed", "mask_after_softmax")),
                     Check("no_mask", 1, ("no_padding",)),
                     Check("finite", 1, ("gradients",), bugs=("mask_neg_inf", "padding_renormalised")))),
        Task("convert_mask", 3, ("convert_mask",),
             "convert_mask(mask, source, target) between 'sdpa', 'mha' and 'additive' masks", from_scratch=False),
        Task("grouped_query", 3, ("GroupedQueryAttention",),
             "GroupedQueryAttention(..., num_heads, num_kv_heads): equals SDPA with enable_gqa=True"),
        Task("polarity_clinic", 2, ("polarity_suspect",),
             "polarity_suspect: the mystery module that mixes up the mask's polarity", kind="answer",
             from_scratch=False),
        Task("polarity_test", 3, ("test_key_padding_polarity",),
             "test_key_padding_polarity(mha_cls): passes a correct padded module, fails one with flipped polarity",
             from_scratch=False),
    ),
    cases=cases,
    keyed_tasks=("polarity_clinic", "polarity_test"),
)
