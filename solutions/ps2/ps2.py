# %% [markdown] id="intro"
# # Problem set 2: causal attention
#
# Goes with the book's chapter *Causal attention*. A language model predicts the next token, so a token may only
# look at itself and the tokens before it. Write each function or class in the cell marked `YOUR CODE HERE`, then
# run the test cell under it; a failing test names the bug it sees. Code must work on whatever device its inputs
# are on (the tests use the GPU when there is one).
#
# Points: causal_mask {{ points.causal_mask }}, masked_softmax {{ points.masked_softmax }}, CausalAttention {{
# points.causal_attention }}.

# %% nbgrader="given" id="setup"
import math

import torch
from torch import nn

from grader import diagnose

# Everything runs on the GPU when there is one, on the CPU otherwise.
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(123)
print("running on", device)


# %% [markdown] id="md-mask"
# ## 1. The causal mask
#
# A bool matrix that is True above the diagonal: the keys a query must not see.

# %% nbgrader="solution" id="causal_mask"
def causal_mask(num_tokens):
    """Bool (num_tokens, num_tokens): True where query i must NOT see key j, that is where j > i."""
    ### BEGIN SOLUTION
    return torch.ones(num_tokens, num_tokens, dtype=torch.bool).triu(diagonal=1)
    ### END SOLUTION


# %% nbgrader="tests" id="test_causal_mask"
mask = causal_mask(3)
assert mask.dtype == torch.bool, f"a bool mask, got {mask.dtype}"
expected = torch.tensor([[False, True, True],
                         [False, False, True],
                         [False, False, False]])
assert torch.equal(mask.cpu(), expected), f"token i sees keys 0..i (itself included); got\n{mask}"
### BEGIN HIDDEN TESTS
for num_tokens in (1, 2, 7):
    mask = causal_mask(num_tokens).cpu()
    assert mask.shape == (num_tokens, num_tokens) and mask.dtype == torch.bool
    for i in range(num_tokens):
        for j in range(num_tokens):
            assert bool(mask[i, j]) == (j > i), f"causal_mask({num_tokens})[{i}, {j}] should be {j > i}"
### END HIDDEN TESTS

# %% [markdown] id="md-softmax"
# ## 2. Masked softmax
#
# Hide the masked scores *before* the softmax (a score of $-\infty$ becomes a weight of exactly 0), so each row is still a probability distribution over the keys the query may see.

# %% nbgrader="solution" id="masked_softmax"
def masked_softmax(scores, mask):
    """Softmax over the last dimension (the keys) after hiding the keys where ``mask`` is True.

    scores: (..., T, T), mask: bool (T, T) broadcastable to scores. Hidden keys get weight exactly 0 and every row
    still sums to 1.
    """
    ### BEGIN SOLUTION
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    ### END SOLUTION


# %% nbgrader="tests" id="test_masked_softmax"
scores = torch.tensor([[1.0, 2.0, 3.0],
                       [1.0, 2.0, 3.0],
                       [1.0, 2.0, 3.0]], device=device)
weights = masked_softmax(scores, causal_mask(3).to(device))
diagnose.check_attention_weights(weights, causal=True, scores=scores)
# Row 0 sees only key 0; row 1 splits between keys 0 and 1 like softmax([1, 2]).
assert torch.allclose(weights[0], torch.tensor([1.0, 0.0, 0.0], device=device)), weights
assert torch.allclose(weights[1, :2], torch.softmax(torch.tensor([1.0, 2.0], device=device), 0)), weights
### BEGIN HIDDEN TESTS
# Against F.scaled_dot_product_attention(is_causal=True) on batched, multi-head scores.
queries = torch.randn(2, 3, 5, 4, device=device)
keys = torch.randn(2, 3, 5, 4, device=device)
scores = queries @ keys.transpose(-2, -1) / 2.0
weights = masked_softmax(scores, causal_mask(5).to(device))
diagnose.check_attention_weights(weights, causal=True, scores=scores)
_, reference = diagnose.sdpa_reference(queries, keys, keys, causal=True)
assert torch.allclose(weights, reference, atol=1e-5), "weights differ from PyTorch's causal attention weights"
# Large scores must not overflow: rows still sum to 1 and hidden keys still get 0.
scores = 1e4 * torch.randn(4, 4, device=device)
weights = masked_softmax(scores, causal_mask(4).to(device))
diagnose.check_attention_weights(weights, causal=True, scores=scores)
### END HIDDEN TESTS

# %% [markdown] id="md-causal"
# ## 3. `CausalAttention`
#
# The head of problem set 1 with the mask and dropout. Register the mask with `self.register_buffer("mask", ...)` so that it follows `.to(device)` and is saved in `state_dict`; slice it to the actual number of tokens; apply dropout to the attention weights (it is off in `eval()` mode). The hidden tests compare with PyTorch's causal attention holding your weights, for `d_in != d_out` too.

# %% nbgrader="solution" id="causal_attention"
class CausalAttention(nn.Module):
    """One causal head: W_query, W_key, W_value (nn.Linear d_in -> d_out), dropout on the attention weights,
    and the mask registered as a buffer named ``mask`` of shape (context_length, context_length).

    x: (batch, num_tokens, d_in) with num_tokens <= context_length -> (batch, num_tokens, d_out).
    """

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        ### BEGIN SOLUTION
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # A buffer moves with .to(device) and is saved in state_dict, but is never trained.
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        num_tokens = x.shape[1]
        queries = self.W_query(x)
        keys = self.W_key(x)
        values = self.W_value(x)
        scores = queries @ keys.transpose(1, 2)
        scores = scores.masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        weights = self.dropout(weights)
        return weights @ values
        ### END SOLUTION


# %% nbgrader="tests" id="test_causal_attention"
torch.manual_seed(123)
attention = CausalAttention(d_in=3, d_out=2, context_length=8, dropout=0.0).to(device)
x = torch.randn(2, 6, 3, device=device)  # 6 tokens < context_length 8
diagnose.check_shape(diagnose.call(attention, x), (2, 6, 2))
# Changing the last token may change only the last position.
diagnose.check_no_future_leakage(attention, x)
diagnose.check_mask_buffer(CausalAttention(3, 2, context_length=8, dropout=0.0), context_length=8)
### BEGIN HIDDEN TESTS
# Equal to PyTorch's causal attention with the module's weights, also with d_in != d_out and a bias.
diagnose.check_attention_module(CausalAttention(4, 4, 8, 0.0), d_in=4, causal=True)
make = lambda d_in, d_out: CausalAttention(d_in, d_out, 8, 0.0)
diagnose.check_d_in_not_d_out(make, 3, 6, causal=True)
diagnose.check_attention_module(CausalAttention(5, 3, 8, 0.0, qkv_bias=True), d_in=5, causal=True)
# Dropout: off in eval mode, on in training mode, applied to the weights.
diagnose.check_dropout(CausalAttention(4, 4, 8, dropout=0.5), d_in=4)
# The buffer is in state_dict and a saved module loads into a fresh one.
original = CausalAttention(3, 2, 8, 0.0)
restored = CausalAttention(3, 2, 8, 0.0)
restored.load_state_dict(original.state_dict())
assert torch.equal(restored.mask.bool(), original.mask.bool())
diagnose.check_batch_independence(attention.eval(), torch.randn(3, 5, 3, device=device))
# GPT-2 small sizes on the meta device: shapes for free, and the mask moves with the module.
big = CausalAttention(768, 64, 1024, 0.1).to("meta")
diagnose.check_shape(big(torch.empty(8, 1024, 768, device="meta")), (8, 1024, 64))
### END HIDDEN TESTS
