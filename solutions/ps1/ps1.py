# %% [markdown] id="intro"
# # Problem set 1: one head and scaled dot-product attention
#
# Goes with the book's chapter *One attention head*. Write each function or class in the cell marked
# `YOUR CODE HERE`, then run the test cell under it. A failing test names the bug it sees. Tensors may live on the
# GPU: write code that works for whatever device its inputs are on.
#
# Points: attention_scores {{ points.attention_scores }}, scaled_dot_product {{
# points.scaled_dot_product }}, SelfAttention {{ points.self_attention }}.

# %% nbgrader="given" id="setup"
import math

import torch
from torch import nn

from grader import diagnose

# Everything runs on the GPU when there is one, on the CPU otherwise.
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(123)
print("running on", device)


# %% [markdown] id="md-scores"
# ## 1. Attention scores
#
# The score of query *i* for key *j* is their dot product. Return all of them at once, for any leading (batch, head) dimensions.

# %% nbgrader="solution" id="attention_scores"
def attention_scores(queries, keys):
    """Dot product of every query with every key.

    queries: (..., T_q, d_k), keys: (..., T_k, d_k) -> scores: (..., T_q, T_k), not scaled.
    """
    ### BEGIN SOLUTION
    return queries @ keys.transpose(-2, -1)
    ### END SOLUTION


# %% nbgrader="tests" id="test_attention_scores"
# Small enough to check every entry by eye: row i holds query i dotted with each key.
queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
keys = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]])
expected = torch.tensor([[1.0, 3.0, 0.5], [2.0, 4.0, 0.5]])
assert torch.equal(attention_scores(queries, keys), expected), attention_scores(queries, keys)

# Batched: any leading dimensions, T_q != T_k, on the course device.
q = torch.randn(2, 4, 5, 8, device=device)
k = torch.randn(2, 4, 7, 8, device=device)
diagnose.check_shape(attention_scores(q, k), (2, 4, 5, 7), what="scores")
### BEGIN HIDDEN TESTS
reference = torch.einsum("bhqd,bhkd->bhqk", q, k)
assert torch.allclose(attention_scores(q, k), reference, atol=1e-5), "scores differ from the dot products"
# No scaling yet: doubling a query doubles its scores.
assert torch.allclose(attention_scores(2 * q, k), 2 * reference, atol=1e-4), "attention_scores must not scale"
single_q, single_k = torch.randn(3, 6, device=device), torch.randn(9, 6, device=device)
assert torch.allclose(attention_scores(single_q, single_k), single_q @ single_k.t(), atol=1e-5)
### END HIDDEN TESTS

# %% [markdown] id="md-sdpa"
# ## 2. Scaled dot-product attention
#
# Divide the scores by $\sqrt{d_k}$ (the key width) so that they do not grow with it, turn each row into weights with a softmax over the keys, and mix the values with those weights. Return `(context, weights)`.

# %% nbgrader="solution" id="scaled_dot_product"
def scaled_dot_product(queries, keys, values):
    """Scaled dot-product attention.

    queries (..., T_q, d_k), keys (..., T_k, d_k), values (..., T_k, d_v)
    -> (context (..., T_q, d_v), weights (..., T_q, T_k)), weights = softmax(scores / sqrt(d_k)) over the keys.
    """
    ### BEGIN SOLUTION
    d_k = keys.shape[-1]
    weights = torch.softmax(attention_scores(queries, keys) / math.sqrt(d_k), dim=-1)
    return weights @ values, weights
    ### END SOLUTION


# %% nbgrader="tests" id="test_scaled_dot_product"
# Two identical keys must get identical weights, and every row of weights is a probability distribution.
queries = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
keys = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
values = torch.tensor([[1.0], [2.0], [3.0]])
context, weights = scaled_dot_product(queries, keys, values)
assert torch.isclose(weights[0, 0], weights[0, 1]), weights
diagnose.check_attention_weights(weights, scores=queries @ keys.T / math.sqrt(keys.shape[-1]))
assert torch.allclose(context, weights @ values), "context must be the weighted sum of the values"

# Against PyTorch's F.scaled_dot_product_attention (names the bug when it finds one).
diagnose.check_scaled_dot_product(scaled_dot_product)
### BEGIN HIDDEN TESTS
# Scale by sqrt(d_k) of the keys, not a constant: check at several widths with hand-made scores.
for d_k in (1, 4, 16):
    q = torch.zeros(1, d_k, device=device)
    q[0, 0] = 1.0
    k = torch.zeros(2, d_k, device=device)
    k[0, 0] = math.sqrt(d_k) * math.log(3.0)  # scaled score log 3 vs 0 -> weights 3/4 and 1/4
    _, w = scaled_dot_product(q, k, torch.randn(2, 3, device=device))
    assert torch.allclose(w, torch.tensor([[0.75, 0.25]], device=device), atol=1e-5), (d_k, w)
diagnose.check_batch_independence(lambda x: scaled_dot_product(x, x, x)[0], torch.randn(3, 5, 4, device=device))
### END HIDDEN TESTS

# %% [markdown] id="md-self-attention"
# ## 3. `SelfAttention`
#
# The same computation, with queries, keys and values produced from the input by three `nn.Linear(d_in, d_out)` layers named `W_query`, `W_key` and `W_value`. The tests copy your weights into PyTorch's own attention and compare, with `d_in == d_out` and with `d_in != d_out`.

# %% nbgrader="solution" id="self_attention"
class SelfAttention(nn.Module):
    """One attention head with trainable projections W_query, W_key, W_value (nn.Linear d_in -> d_out).

    x: (batch, num_tokens, d_in) -> (batch, num_tokens, d_out). Every token attends to every token.
    """

    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        ### BEGIN SOLUTION
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        queries = self.W_query(x)
        keys = self.W_key(x)
        values = self.W_value(x)
        context, _ = scaled_dot_product(queries, keys, values)
        return context
        ### END SOLUTION


# %% nbgrader="tests" id="test_self_attention"
torch.manual_seed(123)
attention = SelfAttention(d_in=3, d_out=2).to(device)
x = torch.randn(2, 6, 3, device=device)
diagnose.check_shape(diagnose.call(attention, x), (2, 6, 2))
assert sum(p.numel() for p in attention.parameters()) == 3 * 3 * 2, "three d_in x d_out projections, no bias"

# Equal to PyTorch's attention computed with your W_query, W_key, W_value (d_in == d_out here).
diagnose.check_attention_module(SelfAttention(4, 4), d_in=4, causal=False)
### BEGIN HIDDEN TESTS
# Bugs that hide when d_in == d_out: d_out = 2 x d_in and d_out < d_in.
diagnose.check_d_in_not_d_out(lambda d_in, d_out: SelfAttention(d_in, d_out), 3, 6, causal=False)
diagnose.check_d_in_not_d_out(lambda d_in, d_out: SelfAttention(d_in, d_out), 8, 5, causal=False)
biased = SelfAttention(4, 6, qkv_bias=True)
assert sum(p.numel() for p in biased.parameters()) == 3 * (4 * 6 + 6), "qkv_bias=True adds a bias to each"
diagnose.check_attention_module(biased, d_in=4, causal=False)
attention = SelfAttention(5, 5).to(device)
diagnose.check_batch_independence(attention, torch.randn(3, 4, 5, device=device))
### END HIDDEN TESTS
