# %% [markdown] id="intro"
# # Problem set 3: multi-head attention
#
# Goes with the book's chapters *Many heads side by side*, *Splitting heads*, *Concatenating heads* and *The final
# projection*. First the simple way (several heads side by side), then the efficient way (one projection, split into
# heads, combined, projected). Write each piece in the cell marked `YOUR CODE HERE`, then run the test cell under it;
# a failing test names the bug it sees. Code must work on whatever device its inputs are on.
#
# Points: MultiHeadAttentionWrapper {{ points.wrapper }}, split_heads {{ points.split_heads }}, combine_heads {{
# points.combine_heads }}, MultiHeadAttention {{ points.multi_head_attention }}.

# %% nbgrader="given" id="setup"
import math

import torch
from torch import nn

from grader import diagnose

# Everything runs on the GPU when there is one, on the CPU otherwise.
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(123)
print("running on", device)


# %% [markdown] id="md-from-ps2"
# ## 0. Your `CausalAttention`
#
# The wrapper below is built from the causal head of problem set 2. Paste your class into the next cell; it earns no points itself, but the wrapper's tests run through it.

# %% nbgrader="solution" id="causal_attention_from_ps2"
# Paste your CausalAttention class from problem set 2 here (not graded by itself; the wrapper is built from it).
### BEGIN SOLUTION
class CausalAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        num_tokens = x.shape[1]
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = queries @ keys.transpose(1, 2)
        scores = scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        weights = self.dropout(torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1))
        return weights @ values
### END SOLUTION


# %% [markdown] id="md-wrapper"
# ## 1. Heads side by side
#
# `num_heads` independent causal heads, their outputs concatenated along the last dimension. In this class `d_out` is the width of one head, so the output is `num_heads * d_out` wide: this is the class that printed `9216` when it was given the model width 768 as `d_out` with 12 heads.

# %% nbgrader="solution" id="wrapper"
class MultiHeadAttentionWrapper(nn.Module):
    """num_heads CausalAttention heads side by side, kept in ``self.heads`` (an nn.ModuleList).

    Here d_out is the width of ONE head: x (batch, num_tokens, d_in) -> (batch, num_tokens, num_heads * d_out).
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        ### BEGIN SOLUTION
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        return torch.cat([head(x) for head in self.heads], dim=-1)
        ### END SOLUTION


# %% nbgrader="tests" id="test_wrapper"
# Each block of d_out columns is one head's causal attention, in order. This check runs first: it names the
# usual wrapper bugs (d_out divided by num_heads, one head module repeated) before a bare shape check could.
diagnose.check_wrapper(MultiHeadAttentionWrapper(4, 3, 8, 0.0, num_heads=2), d_in=4, d_out=3, num_heads=2)
torch.manual_seed(123)
wrapper = MultiHeadAttentionWrapper(d_in=3, d_out=2, context_length=8, dropout=0.0, num_heads=2).to(device)
x = torch.randn(2, 6, 3, device=device)
diagnose.check_shape(diagnose.call(wrapper, x), (2, 6, 2 * 2), what="wrapper output")
### BEGIN HIDDEN TESTS
diagnose.check_wrapper(MultiHeadAttentionWrapper(5, 2, 8, 0.0, num_heads=3), d_in=5, d_out=2, num_heads=3)
# GPT-2 small on the meta device: d_out is per head, so 768 // 12 = 64 per head gives 768 columns,
# and passing the model width as d_out gives the historical 12 x 768 = 9216.
big = MultiHeadAttentionWrapper(768, 64, 1024, 0.0, num_heads=12).to("meta")
diagnose.check_shape(big(torch.empty(8, 1024, 768, device="meta")), (8, 1024, 768))
wide = MultiHeadAttentionWrapper(768, 768, 1024, 0.0, num_heads=12).to("meta")
diagnose.check_shape(wide(torch.empty(8, 1024, 768, device="meta")), (8, 1024, 9216))
### END HIDDEN TESTS

# %% [markdown] id="md-split"
# ## 2. Splitting heads
#
# One projection to `d_out` columns serves every head: head *h* owns a block of `head_dim` columns. Reshape to expose the heads, then move the head dimension in front of the tokens.

# %% nbgrader="solution" id="split_heads"
def split_heads(x, num_heads):
    """(batch, num_tokens, d_out) -> (batch, num_heads, num_tokens, head_dim), head_dim = d_out // num_heads.

    Head h gets columns h * head_dim ... (h + 1) * head_dim - 1 of every token.
    """
    ### BEGIN SOLUTION
    batch, num_tokens, d_out = x.shape
    return x.view(batch, num_tokens, num_heads, d_out // num_heads).transpose(1, 2)
    ### END SOLUTION


# %% nbgrader="tests" id="test_split_heads"
x = torch.arange(2 * 3 * 4, dtype=torch.float32, device=device).view(1, 3, 8)  # 3 tokens, d_out 8
diagnose.check_split_heads(split_heads)
heads = split_heads(x, num_heads=2)
diagnose.check_shape(heads, (1, 2, 3, 4), what="split_heads output")
assert torch.equal(heads[0, 1, 2], x[0, 2, 4:8]), "head 1 of token 2 is columns 4..7 of token 2"
### BEGIN HIDDEN TESTS
x = torch.randn(3, 5, 12, device=device)
for num_heads in (1, 3, 4, 12):
    heads = split_heads(x, num_heads)
    head_dim = 12 // num_heads
    diagnose.check_shape(heads, (3, num_heads, 5, head_dim), what="split_heads output")
    for h in range(num_heads):
        assert torch.equal(heads[:, h], x[..., h * head_dim:(h + 1) * head_dim]), (num_heads, h)
### END HIDDEN TESTS

# %% [markdown] id="md-combine"
# ## 3. Combining heads
#
# The inverse of `split_heads`: tokens back in front of heads, then the heads' columns side by side. A transposed tensor is not contiguous in memory, which `view` cares about.

# %% nbgrader="solution" id="combine_heads"
def combine_heads(x):
    """(batch, num_heads, num_tokens, head_dim) -> (batch, num_tokens, num_heads * head_dim): undoes split_heads."""
    ### BEGIN SOLUTION
    batch, num_heads, num_tokens, head_dim = x.shape
    return x.transpose(1, 2).contiguous().view(batch, num_tokens, num_heads * head_dim)
    ### END SOLUTION


# %% nbgrader="tests" id="test_combine_heads"
heads = torch.arange(2 * 3 * 4, dtype=torch.float32, device=device).view(1, 2, 3, 4)  # 2 heads, 3 tokens
diagnose.check_combine_heads(combine_heads)
combined = combine_heads(heads)
diagnose.check_shape(combined, (1, 3, 8), what="combine_heads output")
assert torch.equal(combined[0, 2, 4:8], heads[0, 1, 2]), "token 2, columns 4..7 come from head 1"
### BEGIN HIDDEN TESTS
heads = torch.randn(3, 4, 5, 2, device=device)
combined = combine_heads(heads)
diagnose.check_shape(combined, (3, 5, 8), what="combine_heads output")
for h in range(4):
    assert torch.equal(combined[..., 2 * h:2 * h + 2], heads[:, h]), h
# Works on a tensor that is itself a transposed view (as attention produces it).
transposed = torch.randn(3, 5, 4, 2, device=device).transpose(1, 2)
assert torch.equal(combine_heads(transposed)[..., 0:2], transposed[:, 0])
### END HIDDEN TESTS

# %% [markdown] id="md-mha"
# ## 4. `MultiHeadAttention`
#
# Put it together, with the final output projection `out_proj` that mixes the heads. The tests copy your weights into `torch.nn.MultiheadAttention` and compare, with `d_in == d_out` and `d_in != d_out`, and check dropout, the mask buffer and the error for `d_out % num_heads != 0`.

# %% nbgrader="solution" id="multi_head_attention"
class MultiHeadAttention(nn.Module):
    """Causal multi-head attention with one projection each for queries, keys and values and a final out_proj.

    W_query, W_key, W_value: nn.Linear(d_in, d_out); out_proj: nn.Linear(d_out, d_out); mask: a buffer.
    Each of the num_heads heads works on head_dim = d_out // num_heads columns; d_out must be divisible by
    num_heads (raise ValueError otherwise). x (batch, num_tokens, d_in) -> (batch, num_tokens, d_out).
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        ### BEGIN SOLUTION
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        batch, num_tokens, _ = x.shape
        # (b, T, d_out) -> (b, num_heads, T, head_dim)
        queries = self.W_query(x).view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(batch, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        scores = queries @ keys.transpose(2, 3)  # (b, num_heads, T, T)
        scores = scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        weights = self.dropout(weights)
        context = (weights @ values).transpose(1, 2)  # (b, T, num_heads, head_dim)
        context = context.contiguous().view(batch, num_tokens, self.d_out)
        return self.out_proj(context)
        ### END SOLUTION


# %% nbgrader="tests" id="test_multi_head_attention"
torch.manual_seed(123)
mha = MultiHeadAttention(d_in=4, d_out=8, context_length=8, dropout=0.0, num_heads=2).to(device)
x = torch.randn(2, 6, 4, device=device)
diagnose.check_shape(diagnose.call(mha, x), (2, 6, 8), num_heads=2)
# GPT-2 small on the meta device (no memory, no time): shape and the 2,360,064 parameters.
gpt2 = MultiHeadAttention(768, 768, 1024, 0.0, num_heads=12, qkv_bias=False).to("meta")
diagnose.check_shape(diagnose.call(gpt2, torch.empty(8, 1024, 768, device="meta")), (8, 1024, 768), num_heads=12)
diagnose.check_parameter_count(gpt2, d_in=768, d_out=768, num_heads=12)
# Equal to torch.nn.MultiheadAttention holding your weights.
diagnose.check_attention_module(MultiHeadAttention(8, 8, 8, 0.0, num_heads=2), d_in=8, num_heads=2)
diagnose.check_divisibility_error(lambda d_out, num_heads: MultiHeadAttention(4, d_out, 8, 0.0, num_heads))
### BEGIN HIDDEN TESTS
make = lambda d_in, d_out: MultiHeadAttention(d_in, d_out, 8, 0.0, num_heads=2)
diagnose.check_d_in_not_d_out(make, 6, 12, num_heads=2)
diagnose.check_d_in_not_d_out(make, 12, 8, num_heads=2)
diagnose.check_parameter_count(MultiHeadAttention(6, 12, 8, 0.0, 3), d_in=6, d_out=12, num_heads=3)
diagnose.check_attention_module(MultiHeadAttention(12, 12, 8, 0.0, num_heads=4), d_in=12, num_heads=4)
diagnose.check_attention_module(MultiHeadAttention(5, 6, 8, 0.0, num_heads=3, qkv_bias=True), d_in=5,
                                num_heads=3)
diagnose.check_no_future_leakage(mha.eval(), torch.randn(2, 8, 4, device=device))
diagnose.check_batch_independence(mha.eval(), torch.randn(3, 5, 4, device=device))
diagnose.check_dropout(MultiHeadAttention(8, 8, 8, dropout=0.5, num_heads=2), d_in=8)
diagnose.check_mask_buffer(MultiHeadAttention(4, 8, 8, 0.0, num_heads=2), context_length=8)
### END HIDDEN TESTS
