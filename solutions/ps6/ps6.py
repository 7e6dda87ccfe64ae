# %% [markdown] id="intro"
# # Problem set 6: masks in the wild
#
# Chapter 11 took attention past same-length batches: padding and the query that has nothing to see, two APIs whose
# boolean masks mean opposite things, and key/value heads shared between query heads. Here you build each piece,
# find the module that mixes up a mask's polarity, and write the test that would have caught it.
#
# | Task | Points | You define |
# |---|---|---|
# | (a) attention with a key padding mask | {{ points.padded_attention }} | `MultiHeadAttention` |
# | (b) converting masks between conventions | {{ points.convert_mask }} | `convert_mask(mask, source, target)` |
# | (c) grouped-query attention | {{ points.grouped_query }} | `GroupedQueryAttention` |
# | (d) bug clinic: which module flips the polarity? | {{ points.polarity_clinic }} | `polarity_suspect` |
# | (e) the test that exposes it | {{ points.polarity_test }} | `test_key_padding_polarity(mha_cls)` |
#
# Replace each `raise NotImplementedError()` with your code and run the test cell under it. The visible tests are
# a first check; more tests run when the notebook is graded. Before handing in, run
# `python -m grader check ps6.ipynb` in a terminal. Everything runs on a GPU if the kernel has one, on the CPU
# otherwise.

# %% nbgrader="given" id="setup"
import math

import torch
import torch.nn.functional as F
from torch import nn

from grader import diagnose

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("running on", device)


def padding_mask(lengths, num_tokens, side="right"):
    """(batch, num_tokens) bool key padding mask, True = padding, for sequences of the given real lengths.

    side="right" puts the padding after the tokens, side="left" before them (as batched generation pads prompts).
    """
    positions = torch.arange(num_tokens, device=device)
    real = torch.as_tensor(lengths, device=device)[:, None]
    return positions < num_tokens - real if side == "left" else positions >= real


# %% [markdown] id="padded_intro"
# ## (a) Attention with a key padding mask
#
# Write the chapter's causal `MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias=False)`
# with `W_query`, `W_key`, `W_value` (each `nn.Linear(d_in, d_out, bias=qkv_bias)`) and `out_proj`
# (`nn.Linear(d_out, d_out)`), whose forward pass takes an optional mask:
#
# `forward(x, key_padding_mask=None)`: `x` is `(batch, num_tokens, d_in)`; `key_padding_mask` is
# `(batch, num_tokens)` bool with **True = padding**, `nn.MultiheadAttention`'s convention. It returns
# `(batch, num_tokens, d_out)`, where
#
# - a query never attends to a future key (the causal mask) nor to a padded key;
# - the output at a **padded position is zeros** (after `out_proj` and its bias): a padded query has nothing anyone
#   should read, and with left padding it has no key it may look at at all;
# - everything stays finite, outputs *and gradients*: a score row with every key hidden must not become NaN
#   (chapter 11 shows how a NaN there reaches `W_value`'s gradient even when the loss never reads that row);
# - with `key_padding_mask=None` (or a mask without any `True`) the module is the chapter's causal multi-head
#   attention.
#
# The grader copies its own weights into `W_query`, `W_key`, `W_value` and `out_proj`, so keep those names.

# %% nbgrader="solution" id="padded_attention"
class MultiHeadAttention(nn.Module):
    """Causal multi-head attention with an optional key padding mask (chapter 11).

    x: (batch, num_tokens, d_in); key_padding_mask: (batch, num_tokens) bool, True = padding (nn.MultiheadAttention's
    convention). Returns (batch, num_tokens, d_out), zeros at padded positions. Raises ValueError when d_out is not
    divisible by num_heads.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        ### BEGIN SOLUTION
        if d_out % num_heads != 0:
            raise ValueError("d_out must be divisible by num_heads")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        ones = torch.ones(context_length, context_length, dtype=torch.bool)
        self.register_buffer("mask", torch.triu(ones, diagonal=1))  # True = the future, hidden
        ### END SOLUTION

    def forward(self, x, key_padding_mask=None):
        ### BEGIN SOLUTION
        b, num_tokens, _ = x.shape
        queries, keys, values = (layer(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
                                 for layer in (self.W_query, self.W_key, self.W_value))
        hidden = self.mask[:num_tokens, :num_tokens]                            # (T, T), True = may not look
        if key_padding_mask is not None:
            hidden = hidden | key_padding_mask[:, None, None, :]                # padded keys: (b, 1, T, T)
        scores = queries @ keys.transpose(2, 3) / self.head_dim**0.5           # (b, H, T, T)
        # a finite fill: a row with every key hidden becomes uniform, not NaN
        scores = scores.masked_fill(hidden, torch.finfo(scores.dtype).min)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        context = (weights @ values).transpose(1, 2).reshape(b, num_tokens, self.d_out)
        out = self.out_proj(context)
        if key_padding_mask is not None:
            out = out.masked_fill(key_padding_mask[..., None], 0.0)             # padded queries: zeros
        return out
        ### END SOLUTION


# %% nbgrader="tests" id="test_padded_attention"
torch.manual_seed(1)
mha = MultiHeadAttention(d_in=6, d_out=8, context_length=8, dropout=0.0, num_heads=2).to(device).eval()
x = torch.randn(3, 8, 6, device=device)
left = padding_mask([8, 5, 2], 8, side="left")
with torch.no_grad():
    out = mha(x, key_padding_mask=left)
assert out.shape == (3, 8, 8), f"output shape {tuple(out.shape)}, expected (3, 8, 8)"
assert out.isfinite().all(), (f"{diagnose.BUGS['mask_neg_inf']}: the output has NaN or infinity where a query has "
                              f"nothing to see; fill hidden scores with torch.finfo(scores.dtype).min")
assert torch.all(out[left] == 0), "the outputs at padded positions must be zeros (after out_proj and its bias)"
print("shape, finiteness and zeros at padded positions: OK")
### BEGIN HIDDEN TESTS
def real_outputs_alone(module, x, padding):
    """Each sequence run alone on its real tokens, without padding: what its real positions must output."""
    return [module(x[b:b + 1, ~padding[b]])[0] for b in range(x.shape[0])]

with torch.no_grad():
    plain = mha(x)
    none_padded = mha(x, key_padding_mask=torch.zeros(3, 8, dtype=torch.bool, device=device))
    assert torch.allclose(none_padded, plain, atol=1e-5), (
        f"{diagnose.BUGS['mask_polarity']}: a key_padding_mask without any True (no padding at all) changed the "
        f"output; in key_padding_mask True means padding, a key that may not be attended to")
    scattered = torch.tensor([[False, True, False, False, True, False, False, True],
                              [True, True, False, False, False, False, False, False],
                              [False, False, False, False, False, True, True, True]], device=device)
    for name, padding in (("left", left), ("right", padding_mask([3, 8, 6], 8, side="right")),
                          ("scattered", scattered)):
        out = mha(x, key_padding_mask=padding)
        assert out.isfinite().all(), f"{diagnose.BUGS['mask_neg_inf']}: NaN or infinity with {name} padding"
        for b, alone in enumerate(real_outputs_alone(mha, x, padding)):
            real = ~padding[b]
            if torch.allclose(out[b, real], alone, atol=1e-5):
                continue
            if torch.allclose(out[b, real], plain[b, real], atol=1e-5):
                raise AssertionError(f"{diagnose.BUGS['padding_on_queries']}: with {name} padding the real tokens "
                                     f"of sequence {b} still attend to the padded ones; hide the padded keys, "
                                     f"key_padding_mask[:, None, None, :]")
            raise AssertionError(f"{diagnose.BUGS['mismatch']}: with {name} padding the real tokens of sequence {b} "
                                 f"differ from the same sequence run alone without padding")
        assert torch.all(out[padding] == 0), f"the outputs at padded positions must be zeros ({name} padding)"
    wide = MultiHeadAttention(d_in=5, d_out=12, context_length=6, dropout=0.0, num_heads=3, qkv_bias=True).to(device)
    x_wide = torch.randn(2, 6, 5, device=device)
    pad_wide = padding_mask([2, 6], 6, side="left")
    out_wide = wide.eval()(x_wide, key_padding_mask=pad_wide)
    for b, alone in enumerate(real_outputs_alone(wide, x_wide, pad_wide)):
        assert torch.allclose(out_wide[b, ~pad_wide[b]], alone, atol=1e-5), \
            f"{diagnose.BUGS['mismatch']}: d_in=5, d_out=12, qkv_bias=True, sequence {b}"

# The loss reads the real tokens only, and still every gradient must be finite.
x_grad = x.clone().requires_grad_(True)
mha(x_grad, key_padding_mask=left)[~left].pow(2).mean().backward()
bad = [name for name, p in mha.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
assert x_grad.grad.isfinite().all() and not bad, (
    f"{diagnose.BUGS['mask_neg_inf']}: the loss over the real tokens is finite, its gradient is not "
    f"({', '.join(bad) or 'the input'}): a query with nothing to see gave NaN weights, and 0 x NaN is NaN")
### END HIDDEN TESTS

# %% [markdown] id="convert_intro"
# ## (b) One mask, three conventions
#
# The same "which key may this query look at" can be written three ways:
#
# - `"sdpa"`: a bool tensor, **True = may attend** (`F.scaled_dot_product_attention`'s `attn_mask`);
# - `"mha"`: a bool tensor, **True = may not attend** (`nn.MultiheadAttention`'s `attn_mask` and `key_padding_mask`);
# - `"additive"`: a float tensor added to the scores: **0.0** where a query may attend and **-inf** where it may
#   not (PyTorch's convention, as in `nn.Transformer.generate_square_subsequent_mask`). An additive mask you are
#   *given* may instead use a very negative finite number such as `torch.finfo(torch.float32).min`; read anything
#   at most `-1e9` as "may not".
#
# Write `convert_mask(mask, source, target)`, which returns `mask` (written in convention `source`) in convention
# `target`, with the same shape, on the same device: a `torch.bool` tensor for `"sdpa"` and `"mha"`, a float32
# tensor for `"additive"`. Raise `ValueError` for a convention that is none of the three.

# %% nbgrader="solution" id="convert_mask"
CONVENTIONS = ("sdpa", "mha", "additive")


def convert_mask(mask, source, target):
    """`mask` written in convention `source` ("sdpa", "mha" or "additive"), rewritten in convention `target`.

    Same shape and device; torch.bool for "sdpa"/"mha", float32 (0.0 or -inf) for "additive". Raises ValueError
    for an unknown convention. The conventions are those of PyTorch's documentation of
    F.scaled_dot_product_attention (attn_mask) and nn.MultiheadAttention (attn_mask, key_padding_mask).
    """
    ### BEGIN SOLUTION
    if source not in CONVENTIONS or target not in CONVENTIONS:
        raise ValueError(f"conventions are {CONVENTIONS}, not {source!r} -> {target!r}")
    # one meaning in the middle: True = may attend
    if source == "sdpa":
        may_attend = mask.bool()
    elif source == "mha":
        may_attend = ~mask.bool()
    else:
        may_attend = mask > -1e9
    if target == "sdpa":
        return may_attend
    if target == "mha":
        return ~may_attend
    additive = torch.zeros(may_attend.shape, dtype=torch.float32, device=may_attend.device)
    return additive.masked_fill(~may_attend, float("-inf"))
    ### END SOLUTION


# %% nbgrader="tests" id="test_convert_mask"
padding = torch.tensor([[False, False, True]], device=device)                 # mha: the last key is padding
as_sdpa = convert_mask(padding, "mha", "sdpa")
assert not torch.equal(as_sdpa, padding), (f"{diagnose.BUGS['mask_polarity']}: mha -> sdpa returned the mask as "
                                           f"it was; SDPA reads True as may attend")
assert torch.equal(as_sdpa, ~padding), f"mha -> sdpa: {as_sdpa}, expected {~padding}"
additive = convert_mask(padding, "mha", "additive")
assert additive.dtype.is_floating_point, f"an additive mask is a float tensor, not {additive.dtype}"
assert not (additive[0, 2] == 0 and torch.all(additive[0, :2] <= -1e9)), \
    f"{diagnose.BUGS['mask_polarity']}: mha -> additive hides the real keys and keeps the padded one"
assert additive[0, :2].eq(0).all() and additive[0, 2] <= -1e9, f"mha -> additive: {additive}"
print("the two small conversions: OK")
### BEGIN HIDDEN TESTS
torch.manual_seed(2)
may_attend = torch.rand(3, 5, 6, device=device) < 0.6
may_attend[..., 0] = True                                                     # every query keeps one key
written = {"sdpa": may_attend, "mha": ~may_attend,
           "additive": torch.zeros(3, 5, 6, device=device).masked_fill(~may_attend, float("-inf"))}
finfo_additive = torch.zeros(3, 5, 6, device=device).masked_fill(~may_attend, torch.finfo(torch.float32).min)
pairs = [(s, t, written[s]) for s in written for t in written] + [("additive", "sdpa", finfo_additive)]
for source, target, given in pairs:
    got = convert_mask(given, source, target)
    assert got.shape == may_attend.shape, f"{source} -> {target}: shape {tuple(got.shape)}"
    if target == "additive":
        assert got.dtype.is_floating_point, f"{source} -> additive: dtype {got.dtype}"
        says_attend = got == 0
        assert torch.all(says_attend | (got <= -1e9)), f"{source} -> additive: values other than 0 and -inf"
    else:
        assert got.dtype == torch.bool, f"{source} -> {target}: dtype {got.dtype}, a boolean mask is torch.bool"
        says_attend = got if target == "sdpa" else ~got
    if torch.equal(says_attend, ~may_attend):
        raise AssertionError(f"{diagnose.BUGS['mask_polarity']}: {source} -> {target} swaps may and may not")
    assert torch.equal(says_attend, may_attend), f"{source} -> {target}: wrong positions"

# And what PyTorch makes of them: SDPA with the "sdpa" and the "additive" mask equals nn.MultiheadAttention's rule.
q, k, v = torch.randn(3, 1, 5, 4, device=device), *(torch.randn(3, 1, 6, 4, device=device) for _ in range(2))
with_bool = F.scaled_dot_product_attention(q, k, v, attn_mask=convert_mask(written["mha"], "mha", "sdpa")[:, None])
with_float = F.scaled_dot_product_attention(q, k, v, attn_mask=convert_mask(written["mha"], "mha", "additive")[:, None])
assert torch.allclose(with_bool, with_float, atol=1e-5), "SDPA gives different outputs for the two converted masks"
for bad in ("torch", "nn.MultiheadAttention"):
    try:
        convert_mask(may_attend, "sdpa", bad)
    except ValueError:
        continue
    raise AssertionError(f"convert_mask(mask, 'sdpa', {bad!r}) must raise ValueError")
### END HIDDEN TESTS

# %% [markdown] id="gqa_intro"
# ## (c) Grouped-query attention
#
# Write `GroupedQueryAttention(d_in, d_out, context_length, dropout, num_heads, num_kv_heads, qkv_bias=False)`:
# causal attention where `num_heads` query heads of `head_dim = d_out // num_heads` share `num_kv_heads` key/value
# heads. `W_query` is `nn.Linear(d_in, d_out)`, `W_key` and `W_value` are `nn.Linear(d_in, num_kv_heads * head_dim)`
# (all with `bias=qkv_bias`), `out_proj` is `nn.Linear(d_out, d_out)`; the input is `(batch, num_tokens, d_in)`, the
# output `(batch, num_tokens, d_out)`. Query head `h` uses K/V head `h // (num_heads // num_kv_heads)`, the order of
# `F.scaled_dot_product_attention(..., enable_gqa=True)`, which is what your module is compared with.

# %% nbgrader="solution" id="grouped_query"
class GroupedQueryAttention(nn.Module):
    """Causal attention, num_heads query heads sharing num_kv_heads key/value heads (Ainslie et al. 2023, GQA).

    x: (batch, num_tokens, d_in) -> (batch, num_tokens, d_out). Query head h uses K/V head h // group_size, as
    F.scaled_dot_product_attention(..., enable_gqa=True) does. Raises ValueError when d_out is not divisible by
    num_heads or num_heads by num_kv_heads.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, num_kv_heads, qkv_bias=False):
        super().__init__()
        ### BEGIN SOLUTION
        if d_out % num_heads != 0 or num_heads % num_kv_heads != 0:
            raise ValueError("d_out must be divisible by num_heads, and num_heads by num_kv_heads")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.group_size = num_heads // num_kv_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        ones = torch.ones(context_length, context_length, dtype=torch.bool)
        self.register_buffer("mask", torch.triu(ones, diagonal=1))
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        b, num_tokens, _ = x.shape

        def split(t):  # (b, T, heads * head_dim) -> (b, heads, T, head_dim)
            return t.view(b, num_tokens, -1, self.head_dim).transpose(1, 2)

        queries = split(self.W_query(x))                                          # (b, num_heads, T, head_dim)
        # each K/V head group_size times in place: (b, num_kv_heads, T, head_dim) -> (b, num_heads, T, head_dim)
        keys = split(self.W_key(x)).repeat_interleave(self.group_size, dim=1)
        values = split(self.W_value(x)).repeat_interleave(self.group_size, dim=1)
        scores = queries @ keys.transpose(2, 3) / self.head_dim**0.5
        scores = scores.masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        context = (weights @ values).transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context)
        ### END SOLUTION


# %% nbgrader="tests" id="test_grouped_query"
torch.manual_seed(3)
gqa = GroupedQueryAttention(d_in=8, d_out=12, context_length=6, dropout=0.0, num_heads=6, num_kv_heads=2).to(device)
assert tuple(gqa.W_key.weight.shape) == (4, 8), f"W_key is {tuple(gqa.W_key.weight.shape)}: 2 K/V heads of 2, from 8"
with torch.no_grad():
    out = gqa.eval()(torch.randn(2, 5, 8, device=device))
assert out.shape == (2, 5, 12), f"output shape {tuple(out.shape)}, expected (2, 5, 12)"
print("shapes: OK")
### BEGIN HIDDEN TESTS
def gqa_reference(module, x, num_heads, num_kv_heads, share=None):
    """The module's projections, the K/V heads shared by SDPA itself (or by `share`), then out_proj."""
    b, num_tokens, _ = x.shape
    head_dim = module.W_query.weight.shape[0] // num_heads
    q, k, v = (layer(x).view(b, num_tokens, -1, head_dim).transpose(1, 2)
               for layer in (module.W_query, module.W_key, module.W_value))
    if share is None:
        context = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        context = F.scaled_dot_product_attention(q, share(k), share(v), is_causal=True)
    return module.out_proj(context.transpose(1, 2).reshape(b, num_tokens, -1))

for d_in, d_out, heads, kv_heads, bias in [(8, 12, 6, 2, False), (6, 12, 6, 3, True), (8, 8, 4, 1, False),
                                           (8, 8, 4, 4, False), (10, 16, 8, 4, True)]:
    torch.manual_seed(heads * 10 + kv_heads)
    module = GroupedQueryAttention(d_in, d_out, 7, 0.0, heads, kv_heads, qkv_bias=bias).to(device).eval()
    x = torch.randn(2, 7, d_in, device=device)
    with torch.no_grad():
        got, want = module(x), gqa_reference(module, x, heads, kv_heads)
        tiled = gqa_reference(module, x, heads, kv_heads, share=lambda t: t.repeat(1, heads // kv_heads, 1, 1))
    if torch.allclose(got, want, atol=1e-5):
        continue
    if torch.allclose(got, tiled, atol=1e-5):
        raise AssertionError(f"{diagnose.BUGS['kv_repeat']}: with {heads} query heads and {kv_heads} K/V heads, "
                             f"query head h must use K/V head h // {heads // kv_heads}")
    raise AssertionError(f"{diagnose.BUGS['mismatch']}: {heads} query heads, {kv_heads} K/V heads, d_in={d_in}, "
                         f"d_out={d_out}: not SDPA with enable_gqa=True (largest error "
                         f"{(got - want).abs().max().item():.2e})")
### END HIDDEN TESTS

# %% [markdown] id="clinic_intro"
# ## (d) Bug clinic: a True that means the opposite
#
# Each class below claims to be the module of task (a): causal multi-head attention, `forward(x,
# key_padding_mask=None)` with **True = padding**, zeros at padded positions. Each was written differently, and
# some carry a bug from chapter 11. Exactly one of them mixes up the polarity of a boolean mask. Read the code, and
# run experiments: a mask with padding, a mask with no `True` at all, left and right padding, outputs that should
# be zero, each sequence run alone without its padding.
#
# `TorchPaddedAttention` is correct: it wraps `nn.MultiheadAttention` (with a projection to its width first, so it
# accepts `d_in != d_out`). Use it as a known-good module in your experiments and your test.

# %% nbgrader="given" id="mystery_a"
class MysteryA(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, d_out // num_heads, dropout
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        ones = torch.ones(context_length, context_length, dtype=torch.bool)
        self.register_buffer("blocked", torch.triu(ones, diagonal=1))

    def forward(self, x, key_padding_mask=None):
        b, num_tokens, _ = x.shape
        q, k, v = self.qkv(x).view(b, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        blocked = self.blocked[:num_tokens, :num_tokens]
        if key_padding_mask is not None:
            blocked = blocked | key_padding_mask[:, None, None, :]
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked,
                                                 dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(context.transpose(1, 2).reshape(b, num_tokens, -1))
        if key_padding_mask is not None:
            out = out.masked_fill(key_padding_mask[..., None], 0.0)
        return out


# %% nbgrader="given" id="mystery_b"
class MysteryB(nn.Module):
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
            visible = visible & key_padding_mask[:, None, None, :]
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=visible,
                                                 dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(context.transpose(1, 2).reshape(b, num_tokens, -1))
        if key_padding_mask is not None:
            out = torch.where(key_padding_mask[..., None], torch.zeros_like(out), out)
        return out


# %% nbgrader="given" id="mystery_c"
class MysteryC(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        ones = torch.ones(context_length, context_length, dtype=torch.bool)
        self.register_buffer("mask", torch.triu(ones, diagonal=1))

    def forward(self, x, key_padding_mask=None):
        b, num_tokens, _ = x.shape
        q, k, v = (layer(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
                   for layer in (self.W_query, self.W_key, self.W_value))
        hidden = self.mask[:num_tokens, :num_tokens]
        if key_padding_mask is not None:
            hidden = hidden | key_padding_mask[:, None, :, None]
        scores = (q @ k.transpose(2, 3) / self.head_dim**0.5).masked_fill(hidden, torch.finfo(q.dtype).min)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = self.out_proj((weights @ v).transpose(1, 2).reshape(b, num_tokens, -1))
        if key_padding_mask is not None:
            out = out.masked_fill(key_padding_mask[..., None], 0.0)
        return out


# %% nbgrader="given" id="mystery_d"
class MysteryD(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        ones = torch.ones(context_length, context_length, dtype=torch.bool)
        self.register_buffer("mask", torch.triu(ones, diagonal=1))

    def forward(self, x, key_padding_mask=None):
        b, num_tokens, _ = x.shape
        q, k, v = (layer(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
                   for layer in (self.W_query, self.W_key, self.W_value))
        hidden = self.mask[:num_tokens, :num_tokens]
        if key_padding_mask is not None:
            hidden = hidden | key_padding_mask[:, None, None, :]
        scores = (q @ k.transpose(2, 3) / self.head_dim**0.5).masked_fill(hidden, -torch.inf)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, num_tokens, -1))


# %% nbgrader="given" id="torch_padded"
class TorchPaddedAttention(nn.Module):
    """Correct: nn.MultiheadAttention after a projection to d_out; True = padding; padded outputs are zeros."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.embed = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.attention = nn.MultiheadAttention(d_out, num_heads, dropout=dropout, batch_first=True)
        ones = torch.ones(context_length, context_length, dtype=torch.bool)
        self.register_buffer("future", torch.triu(ones, diagonal=1))

    def forward(self, x, key_padding_mask=None):
        num_tokens = x.shape[1]
        h = self.embed(x)
        out, _ = self.attention(h, h, h, attn_mask=self.future[:num_tokens, :num_tokens],
                                key_padding_mask=key_padding_mask, need_weights=False)
        if key_padding_mask is not None:
            out = out.masked_fill(key_padding_mask[..., None], 0.0)
        return out


# %% id="experiments"
# Your experiments (not graded). A start:
torch.manual_seed(0)
x = torch.randn(2, 6, 8, device=device)
padding = padding_mask([6, 4], 6, side="right")
for cls in (MysteryA, MysteryB, MysteryC, MysteryD, TorchPaddedAttention):
    module = cls(d_in=8, d_out=8, context_length=6, dropout=0.0, num_heads=2).to(device).eval()
    with torch.no_grad():
        print(cls.__name__, tuple(module(x, key_padding_mask=padding).shape))

# %% [markdown] id="clinic_question"
# Set `polarity_suspect` to the name of the one class that mixes up the polarity of a boolean mask, as a string
# such as `"MysteryA"`.

# %% nbgrader="solution" id="polarity_clinic"
### BEGIN SOLUTION
polarity_suspect = {{ keys.polarity_clinic.answer | py }}
### END SOLUTION

# %% nbgrader="tests" id="test_polarity_clinic"
choices = {{ keys.polarity_clinic.choices | py }}
assert polarity_suspect in choices, f"polarity_suspect must be one of {choices}, not {polarity_suspect!r}"
### BEGIN HIDDEN TESTS
why_not = {
{%- for choice, why in keys.polarity_clinic.why_not.items() %}
    {{ choice | py }}: {{ why | py }},
{%- endfor %}
}
assert polarity_suspect == {{
    keys.polarity_clinic.answer | py }}, f"{polarity_suspect} is not it: {why_not.get(polarity_suspect, '')}. {{
    keys.polarity_clinic.hint }}"
### END HIDDEN TESTS

# %% [markdown] id="test_intro"
# ## (e) The test that exposes it
#
# The module with flipped polarity passed the checks its author ran: the right shape, the right parameter count,
# and, without a mask, the right numbers. Write the test that would have stopped it.
#
# `test_key_padding_polarity(mha_cls)` builds `mha_cls(d_in, d_out, context_length, dropout, num_heads)` (the
# constructor of task (a)), runs it, and **fails** (raises, e.g. with `assert`) when the class mixes up the polarity
# of its key padding mask; on a correct class it returns without an error. It is graded by running it on classes you
# have not seen, written in other ways (one fused projection, SDPA, `nn.MultiheadAttention` inside), with their names
# changed and docstrings removed: rely only on the constructor and `forward(x, key_padding_mask=None)`, not on
# attribute names or class names.
#
# A good test needs no reference weights: padding must not change what a real token sees, so each sequence's real
# outputs must equal those of the same sequence run alone, without padding.

# %% nbgrader="solution" id="polarity_test"
def test_key_padding_polarity(mha_cls):
    """Fails (AssertionError) when mha_cls lets padding change what real tokens see, or reads True as "attend"."""
    ### BEGIN SOLUTION
    torch.manual_seed(0)
    module = mha_cls(6, 8, 8, 0.0, 2).to(device).eval()
    x = torch.randn(3, 8, 6, device=device)
    lengths = [8, 5, 3]
    for side in ("left", "right"):
        padding = padding_mask(lengths, 8, side=side)
        with torch.no_grad():
            out = module(x, key_padding_mask=padding)
            for b in range(len(lengths)):
                real = ~padding[b]
                alone = module(x[b:b + 1, real])[0]        # the same tokens, no padding, no mask
                assert torch.allclose(out[b, real], alone, atol=1e-5), \
                    f"{side} padding changes the real tokens of sequence {b}"
        assert torch.all(out[padding] == 0), f"{side} padding: padded outputs are not zeros"
    ### END SOLUTION


# %% nbgrader="tests" id="test_polarity_test"
assert callable(test_key_padding_polarity), "define test_key_padding_polarity(mha_cls) as a function"
try:
    test_key_padding_polarity(TorchPaddedAttention)  # a correct module: the test must pass
except Exception as err:
    raise AssertionError(f"the test fails TorchPaddedAttention, a correct module: {type(err).__name__}: "
                         f"{err}") from None
print("passes a correct module: OK")
### BEGIN HIDDEN TESTS
for name in {{ keys.polarity_test.correct_classes | py }}:
    try:
        test_key_padding_polarity(globals()[name])
    except Exception as err:
        raise AssertionError(f"the test fails {name}, a correct module: {type(err).__name__}: {err}") from None
for name in {{ keys.polarity_test.buggy_classes | py }}:
    try:
        test_key_padding_polarity(globals()[name])
    except Exception:
        continue
    raise AssertionError(f"the test passes {name}, whose bug is '{diagnose.BUGS['mask_polarity']}': give it a "
                         f"key_padding_mask with padding and check that real tokens ignore the padded ones")
### END HIDDEN TESTS
