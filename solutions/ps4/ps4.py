# %% [markdown] id="intro"
# # Problem set 4: bug clinic
#
# Chapters 7 and 8 took apart two real bugs: the wrapper whose output was `[8, 1024, 9216]` instead of
# `[8, 1024, 768]`, and the module with no final projection. Both survived in a widely read notebook because
# nothing *crashed*. Here you practise finding such bugs from their symptoms, write the test that would have caught
# the sneakiest ones, and fix the two historical modules.
#
# | Task | Points | You define |
# |---|---|---|
# | (a) diagnose eight mystery modules | {{ points.diagnoses }} | `diagnoses` |
# | (b) a parity test for bugs that hide when d_in == d_out | {{ points.parity_test }} | `passes_parity_test(mha_cls)` |
# | (c) fix the 9216 wrapper | {{ points.fixed_wrapper }} | `FixedMultiHeadAttentionWrapper` |
# | (d) fix the module without a final projection | {{ points.fixed_projection }} | `FixedMultiHeadAttention` |
#
# Replace each `raise NotImplementedError()` with your code and run the test cell under it. The visible tests are
# a first check; more tests run when the notebook is graded. Before handing in, run
# `python -m grader check ps4.ipynb` in a terminal. Everything runs on a GPU if the kernel has one, on the CPU
# otherwise.

# %% nbgrader="given" id="setup"
import math

import torch
from torch import nn

from grader import diagnose

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("running on", device)


# %% [markdown] id="mystery_intro"
# ## (a) Eight mystery modules
#
# Every class below has the chapter's constructor, `(d_in, d_out, context_length, dropout, num_heads,
# qkv_bias=False)`, and claims to be causal multi-head attention returning `(batch, num_tokens, d_out)`. Most carry
# exactly one bug from the course; a module may also be correct. None of them crashes at the sizes you might try
# first. Read the code, then *run experiments*: output shapes for several sizes, parameter counts, attention rows
# that should sum to 1, a future token that must not change the past, sizes with `d_in != d_out`, and comparisons with
# `nn.MultiheadAttention` holding the same weights. The checks in `grader.diagnose` (for example
# `diagnose.check_attention_module(module, d_in, num_heads)`, which needs the course's attribute names) do several of
# these for you.

# %% nbgrader="given" id="mystery_1"
class MysteryA(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)
        weights = torch.softmax(scores / self.head_dim**0.5, dim=-1)
        weights = weights.masked_fill(self.mask[:num_tokens, :num_tokens], 0.0)
        weights = self.dropout(weights)
        context = (weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, -1)
        return self.out_proj(context)


class MysteryB(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Parameter(torch.empty(d_out, d_in))
        self.W_key = nn.Parameter(torch.empty(d_out, d_in))
        self.W_value = nn.Parameter(torch.empty(d_out, d_in))
        for weight in (self.W_query, self.W_key, self.W_value):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's default initialisation
        self.qkv_bias = nn.Parameter(torch.zeros(3, d_out)) if qkv_bias else None
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        queries = torch.einsum("bti,io->bto", x, self.W_query)
        keys = torch.einsum("bti,io->bto", x, self.W_key)
        values = torch.einsum("bti,io->bto", x, self.W_value)
        if self.qkv_bias is not None:
            queries, keys, values = queries + self.qkv_bias[0], keys + self.qkv_bias[1], values + self.qkv_bias[2]
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim)
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim)
        scores = torch.einsum("bqhd,bkhd->bhqk", queries, keys) / self.head_dim**0.5
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        context = torch.einsum("bhqk,bkhd->bqhd", weights, values).reshape(b, num_tokens, -1)
        return self.out_proj(context)


# %% nbgrader="given" id="mystery_2"
class MysteryC(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        qkv = self.qkv(x).view(b, num_tokens, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4)
        scores = queries @ keys.transpose(-2, -1) / self.head_dim**0.5
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        context = (weights @ values).transpose(1, 2).reshape(b, num_tokens, -1)
        return self.out_proj(context)


class MysteryD(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_in, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        context = (weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, -1)
        return self.out_proj(context)


# %% nbgrader="given" id="mystery_3"
class MysteryE(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_out
        self.W_query = nn.Linear(d_in, num_heads * d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, num_heads * d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, num_heads * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(num_heads * d_out, num_heads * d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        context = (weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, -1)
        return self.out_proj(context)


class MysteryF(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores / self.head_dim**-0.5, dim=-1))
        context = (weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, -1)
        return self.out_proj(context)


# %% nbgrader="given" id="mystery_4"
class MysteryG(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        head_dim = d_out // num_heads
        self.W_query = nn.ModuleList(nn.Linear(d_in, head_dim, bias=qkv_bias) for _ in range(num_heads))
        self.W_key = nn.ModuleList(nn.Linear(d_in, head_dim, bias=qkv_bias) for _ in range(num_heads))
        self.W_value = nn.ModuleList(nn.Linear(d_in, head_dim, bias=qkv_bias) for _ in range(num_heads))
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        num_tokens = x.shape[1]
        mask = self.mask[:num_tokens, :num_tokens]
        contexts = []
        for W_q, W_k, W_v in zip(self.W_query, self.W_key, self.W_value):
            queries, keys, values = W_q(x), W_k(x), W_v(x)
            scores = queries @ keys.transpose(1, 2) / keys.shape[-1]**0.5
            weights = self.dropout(torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1))
            contexts.append(weights @ values)
        return torch.cat(contexts, dim=-1)


class MysteryH(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        context = (weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, -1)
        return context


# %% nbgrader="given" id="labels"
MYSTERY_MODULES = {cls.__name__: cls for cls in
                   (MysteryA, MysteryB, MysteryC, MysteryD, MysteryE, MysteryF, MysteryG, MysteryH)}

BUG_LABELS = [
{%- for label in keys.diagnoses.labels %}
    {{ label | py }},
{%- endfor %}
]

# %% id="experiments"
# Your experiments (not graded). A start:
module = MysteryA(d_in=12, d_out=12, context_length=8, dropout=0.0, num_heads=3).to(device).eval()
x = torch.randn(2, 6, 12, device=device)
print(module(x).shape, sum(p.numel() for p in module.parameters()))

# %% [markdown] id="diagnoses_intro"
# Fill in `diagnoses`: one entry per mystery module, its class name mapped to exactly one label from
# `BUG_LABELS`. Each correct label earns half a point.

# %% nbgrader="solution" id="diagnoses"
### BEGIN SOLUTION
diagnoses = {
    "MysteryA": "mask applied after softmax",
    "MysteryB": "weights transposed",
    "MysteryC": "correct",
    "MysteryD": "output projection built with d_in",
    "MysteryE": "d_out not divided by num_heads",
    "MysteryF": "scores multiplied instead of divided by sqrt(d_k)",
    "MysteryG": "no output projection",
    "MysteryH": "output projection defined but not applied in forward",
}
### END SOLUTION

# %% nbgrader="tests" id="test_diagnoses"
assert isinstance(diagnoses, dict), f"diagnoses must be a dict, not {type(diagnoses).__name__}"
missing = sorted(set(MYSTERY_MODULES) - set(diagnoses))
assert not missing, f"no diagnosis for {missing}"
unknown = {name: label for name, label in diagnoses.items() if label not in BUG_LABELS}
assert not unknown, f"labels not in BUG_LABELS: {unknown}"
### BEGIN HIDDEN TESTS
answer_key = {
{%- for name, (label, hint) in keys.diagnoses.key.items() %}
    {{ name | py }}: ({{ label | py }}, {{ hint | py }}),
{%- endfor %}
}
wrong = [name for name, (label, _) in answer_key.items() if diagnoses.get(name) != label]
for name in wrong:
    print(f"{name}: not '{diagnoses.get(name)}'. Hint: {answer_key[name][1]}.")
assert len(wrong) < len(answer_key), "no mystery module diagnosed correctly"
4 * (len(answer_key) - len(wrong)) / len(answer_key)
### END HIDDEN TESTS

# %% [markdown] id="parity_intro"
# ## (b) The test that catches bugs hiding behind d_in == d_out
#
# Two later bugs in the historical notebook passed every check: an output projection built as
# `nn.Linear(d_in, d_out)` instead of `nn.Linear(d_out, d_out)`, and an einsum implementation whose weights were
# stored transposed. Both are invisible when `d_in == d_out`, which is how the benchmark (768 in, 768 out) and most
# quick checks build the module. The fix came with a *parity test* at `d_in != d_out`.
#
# Write `passes_parity_test(mha_cls)`: build `mha_cls` with the chapter's constructor and return `True` when it works
# as multi-head attention must, whatever `d_in` and `d_out` are; return `False` for a class whose bug hides when
# `d_in == d_out`. Return a `bool`; never let an error escape. The classes you will be given may be written any way
# (one fused projection, einsum, a loop over heads, `nn.MultiheadAttention` inside), so rely only on the constructor
# and the forward pass, not on attribute names or parameter counts.

# %% nbgrader="solution" id="parity_test"
def passes_parity_test(mha_cls):
    """True when mha_cls works at d_in != d_out as it does at d_in == d_out."""
    ### BEGIN SOLUTION
    batch, num_tokens, num_heads = 3, 5, 2
    # d_in == d_out first (a baseline), then d_out = 2 x d_in as in the historical fix, then d_out < d_in
    for d_in, d_out in [(8, 8), (8, 16), (16, 6)]:
        try:
            module = mha_cls(d_in, d_out, context_length=num_tokens + 3, dropout=0.0, num_heads=num_heads)
            module = module.to(device).eval()
            x = torch.randn(batch, num_tokens, d_in, device=device)
            with torch.no_grad():
                out = module(x)
        except Exception:  # a shape error here IS the bug the test exists to expose
            return False
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, num_tokens, d_out):
            return False
        if not torch.isfinite(out).all():
            return False
    return True
    ### END SOLUTION


# %% nbgrader="tests" id="test_parity_test"
class TorchMultiHeadAttention(nn.Module):
    """Correct causal multi-head attention built on nn.MultiheadAttention (which wants d_in == d_out, hence the
    extra bias-free map from d_in to d_out in front of it)."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.to_width = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)
        self.attention = nn.MultiheadAttention(d_out, num_heads, dropout=dropout, bias=qkv_bias, batch_first=True)
        self.register_buffer("mask", torch.ones(context_length, context_length, dtype=torch.bool).triu(1))

    def forward(self, x):
        num_tokens = x.shape[1]
        x = self.to_width(x)
        context, _ = self.attention(x, x, x, attn_mask=self.mask[:num_tokens, :num_tokens], need_weights=False)
        return context


class HeadsWithInputSizedProjection(nn.Module):
    """Heads in a loop, then an output projection built with d_in: the bug of May 2024, hidden when d_in == d_out."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.attention = TorchMultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        self.out_proj = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.out_proj(self.attention(x))


verdict = passes_parity_test(TorchMultiHeadAttention)
assert verdict is True or verdict is False, f"return a bool, not {verdict!r}"
assert verdict, "your test rejects a correct module built on nn.MultiheadAttention"
assert passes_parity_test(HeadsWithInputSizedProjection) is False, \
    "your test passes a module whose out_proj is nn.Linear(d_in, d_out): it never builds one with d_in != d_out"
### BEGIN HIDDEN TESTS
class ChapterMultiHeadAttention(nn.Module):
    """The chapter's module, written with reshape/permute."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.ones(context_length, context_length).triu(1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        split = lambda t: t.reshape(b, num_tokens, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        queries, keys, values = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = (queries @ keys.transpose(-2, -1)).masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        return self.out_proj((weights @ values).permute(0, 2, 1, 3).reshape(b, num_tokens, -1))


class EinsumMultiHeadAttention(nn.Module):
    """Correct einsum version: weights stored (d_in, d_out) and contracted over d_in."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W = nn.Parameter(torch.randn(3, d_in, d_out) / d_in**0.5)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.ones(context_length, context_length).triu(1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        q, k, v = torch.einsum("bti,pio->pbto", x, self.W).view(3, b, num_tokens, self.num_heads, self.head_dim)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.head_dim**0.5
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(scores.softmax(dim=-1))
        return self.out_proj(torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, num_tokens, -1))


class LoopOfHeads(nn.Module):
    """The fixed wrapper's layout: one causal head per slice of d_out, concatenated, then out_proj."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList(TorchMultiHeadAttention(d_in, d_out // num_heads, context_length, dropout, 1,
                                                           qkv_bias) for _ in range(num_heads))
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):
        return self.out_proj(torch.cat([head(x) for head in self.heads], dim=-1))


class ProjectsBackToInputWidth(ChapterMultiHeadAttention):
    """out_proj maps d_out -> d_in: right shape only while d_in == d_out, and no error otherwise."""

    def __init__(self, d_in, d_out, *args, **kwargs):
        super().__init__(d_in, d_out, *args, **kwargs)
        self.out_proj = nn.Linear(d_out, d_in)


correct_classes = {
{%- for description, cls in keys.parity_test.correct_classes.items() %}
    {{ description | py }}: {{ cls }},
{%- endfor %}
}
camouflaged_bugs = {
{%- for description, (cls, reason) in keys.parity_test.camouflaged_bugs.items() %}
    {{ description | py }}: ({{ cls }}, {{ reason | py }}),
{%- endfor %}
}


def verdict_on(cls, description):
    try:
        verdict = passes_parity_test(cls)
    except Exception as err:
        raise AssertionError(f"passes_parity_test raised {type(err).__name__}: {err} on {description}; catch the "
                             f"module's errors and return False") from None
    assert verdict is True or verdict is False, f"return a bool, not {verdict!r}"
    return verdict


for description, cls in correct_classes.items():
    assert verdict_on(cls, description), (f"parity test too strict: it rejects a correct class ({description}); "
                                          f"rely only on the constructor and the forward pass")
for description, (cls, reason) in camouflaged_bugs.items():
    assert not verdict_on(cls, description), (f"parity test misses a bug hidden by d_in == d_out: it passes a "
                                              f"class whose {description}; {reason}")
### END HIDDEN TESTS

# %% [markdown] id="wrapper_intro"
# ## (c) Fix the 9216 wrapper
#
# Below are the chapter's single causal head and the wrapper as the historical notebook built it: `d_out` is the
# width of *one* head, so 12 heads built with `d_out=768` concatenate to 12 x 768 = 9216 features, and nothing
# mixes the heads afterwards. The next cell builds it at the benchmark's size on the `meta` device, which computes
# shapes without storing any data.

# %% nbgrader="given" id="given_wrapper"
class CausalAttention(nn.Module):
    """One causal attention head (chapter 2)."""

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        num_tokens = x.shape[1]
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = queries @ keys.transpose(1, 2)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores / keys.shape[-1]**0.5, dim=-1))
        return weights @ values


class MultiHeadAttentionWrapper(nn.Module):
    """The wrapper as the benchmark built it before the fix: d_out per head, no output projection."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)])

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)


# %% nbgrader="given" id="given_wrapper_demo"
with torch.device("meta"):
    historical = MultiHeadAttentionWrapper(d_in=768, d_out=768, context_length=1024, dropout=0.0, num_heads=12)
    print("output:", tuple(historical(torch.empty(8, 1024, 768)).shape))
print(f"parameters: {sum(p.numel() for p in historical.parameters()):,}")


# %% [markdown] id="wrapper_task"
# Write `FixedMultiHeadAttentionWrapper` with the same constructor, where `d_out` is now the **total** width:
# each of the `num_heads` heads gets `d_out // num_heads` features (raise a `ValueError` when `d_out` is not
# divisible by `num_heads`), and an output projection `self.out_proj = nn.Linear(d_out, d_out)` is applied after
# the concatenation. Keep the heads in `self.heads`, as `CausalAttention` modules (the tests copy their weights into
# `nn.MultiheadAttention` and compare). At 768 wide with 12 heads the fix has 2,360,064 parameters.

# %% nbgrader="solution" id="fixed_wrapper"
class FixedMultiHeadAttentionWrapper(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        ### BEGIN SOLUTION
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        head_dim = d_out // num_heads  # d_out is the total width now; each head gets its share
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, head_dim, context_length, dropout, qkv_bias) for _ in range(num_heads)])
        self.out_proj = nn.Linear(d_out, d_out)  # mixes the heads' features, as every other variant does
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        context = torch.cat([head(x) for head in self.heads], dim=-1)  # (b, num_tokens, d_out)
        return self.out_proj(context)
        ### END SOLUTION


# %% nbgrader="tests" id="test_fixed_wrapper"
def wrapper_reference(wrapper, x, num_heads):
    """nn.MultiheadAttention holding the wrapper's weights: head h's Q/K/V rows stacked in head order."""
    qkv = []
    for name in ("W_query", "W_key", "W_value"):
        layers = [getattr(head, name) for head in wrapper.heads]
        bias = torch.cat([layer.bias for layer in layers]) if layers[0].bias is not None else None
        qkv.append((torch.cat([layer.weight for layer in layers]), bias))
    return diagnose.mha_reference(x, qkv, (wrapper.out_proj.weight, wrapper.out_proj.bias), num_heads, causal=True)


def check_fixed_wrapper(d_in, d_out, num_heads, qkv_bias=False, num_tokens=6):
    wrapper = FixedMultiHeadAttentionWrapper(d_in, d_out, 8, 0.0, num_heads, qkv_bias).to(device).eval()
    heads = getattr(wrapper, "heads", None)
    assert isinstance(heads, nn.ModuleList) and len(heads) == num_heads, \
        f"keep the {num_heads} heads in self.heads (an nn.ModuleList of CausalAttention)"
    x = torch.randn(2, num_tokens, d_in, device=device)
    with torch.no_grad():
        concat_width = sum(head(x).shape[-1] for head in heads)
        if concat_width == num_heads * d_out:
            raise AssertionError(f"{diagnose.BUGS['width']}: the heads concatenate to {num_heads} x {d_out} = "
                                 f"{concat_width} features; each head must get d_out // num_heads")
        out = wrapper(x)
    diagnose.check_shape(out, (2, num_tokens, d_out), num_heads)
    diagnose.check_parameter_count(wrapper, d_in, d_out, num_heads, qkv_bias)
    assert isinstance(getattr(wrapper, "out_proj", None), nn.Linear), "keep the output projection in self.out_proj"
    expected = wrapper_reference(wrapper, x, num_heads)
    if not torch.allclose(out, expected, atol=1e-4, rtol=1e-3):
        concat = torch.cat([head(x) for head in wrapper.heads], dim=-1)
        assert not torch.allclose(out, concat, atol=1e-4, rtol=1e-3), \
            f"{diagnose.BUGS['out_proj_unused']}: the output is the plain concatenation of the heads"
        raise AssertionError(f"{diagnose.BUGS['mismatch']}: max difference {(out - expected).abs().max():.3g} "
                             f"from nn.MultiheadAttention holding your weights (d_in={d_in}, d_out={d_out})")


torch.manual_seed(0)
check_fixed_wrapper(d_in=12, d_out=12, num_heads=3)
### BEGIN HIDDEN TESTS
check_fixed_wrapper(d_in=16, d_out=16, num_heads=4, qkv_bias=True)
try:
    check_fixed_wrapper(d_in=8, d_out=12, num_heads=3)
    check_fixed_wrapper(d_in=20, d_out=8, num_heads=2, num_tokens=8)
except RuntimeError as err:
    raise AssertionError(f"{diagnose.BUGS['d_in_d_out']}: right at d_in == d_out, but failed at d_in != d_out: "
                         f"{str(err).splitlines()[0]}") from None
diagnose.check_divisibility_error(lambda d_out, num_heads: FixedMultiHeadAttentionWrapper(8, d_out, 8, 0.0, num_heads))
with torch.device("meta"):
    full_size = FixedMultiHeadAttentionWrapper(768, 768, 1024, 0.0, 12)
    assert tuple(full_size(torch.empty(8, 1024, 768)).shape) == (8, 1024, 768), "not [8, 1024, 768] at full size"
diagnose.check_parameter_count(full_size, 768, 768, 12)
### END HIDDEN TESTS

# %% [markdown] id="projection_intro"
# ## (d) Fix the module without a final projection
#
# The vectorised module below splits the heads and merges them correctly, but returns the merged heads as they
# are: nothing mixes the features of different heads, and it has only three quarters of the parameters the chapter's
# `MultiHeadAttention` has.

# %% nbgrader="given" id="given_no_projection"
class MultiHeadAttentionNoProjection(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError("d_out must be divisible by num_heads")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, num_tokens, _ = x.shape
        # (b, num_tokens, d_out) -> (b, num_heads, num_tokens, head_dim)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)  # (b, num_heads, num_tokens, num_tokens)
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        # (b, num_heads, num_tokens, head_dim) -> (b, num_tokens, d_out)
        return (weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)


# %% [markdown] id="projection_task"
# Write `FixedMultiHeadAttention` with the same constructor and the chapter's attribute names (`W_query`, `W_key`,
# `W_value`, `out_proj`): it must equal `torch.nn.MultiheadAttention` holding the same weights, with a causal mask,
# both when `d_in == d_out` and when they differ. You may subclass `MultiHeadAttentionNoProjection` or write the
# class out in full.

# %% nbgrader="solution" id="fixed_projection"
class FixedMultiHeadAttention(MultiHeadAttentionNoProjection):
    ### BEGIN SOLUTION
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # the heads' outputs arrive side by side; this mixes them

    def forward(self, x):
        return self.out_proj(super().forward(x))
    ### END SOLUTION


# %% nbgrader="tests" id="test_fixed_projection"
def make_fixed(d_in, d_out, num_heads=3, qkv_bias=False):
    return FixedMultiHeadAttention(d_in, d_out, context_length=8, dropout=0.0, num_heads=num_heads,
                                   qkv_bias=qkv_bias)


torch.manual_seed(0)
diagnose.check_parameter_count(make_fixed(12, 12), 12, 12, num_heads=3)
diagnose.check_attention_module(make_fixed(12, 12), 12, num_heads=3)
### BEGIN HIDDEN TESTS
diagnose.check_parameter_count(make_fixed(16, 16, 4, qkv_bias=True), 16, 16, num_heads=4, qkv_bias=True)
diagnose.check_attention_module(make_fixed(16, 16, 4, qkv_bias=True), 16, num_heads=4)
diagnose.check_d_in_not_d_out(lambda d_in, d_out: make_fixed(d_in, d_out), 8, 12, num_heads=3)
diagnose.check_d_in_not_d_out(lambda d_in, d_out: make_fixed(d_in, d_out, num_heads=2), 20, 6, num_heads=2)
diagnose.check_parameter_count(make_fixed(8, 12), 8, 12, num_heads=3)
diagnose.check_no_future_leakage(make_fixed(12, 12).to(device).eval(), torch.randn(2, 7, 12, device=device))
### END HIDDEN TESTS
