"""Correct modules whose weights are laid out other than the course's way: each must keep full marks.

A fused projection whose rows are ``[q_h | k_h | v_h]`` for each head (as several tutorials write it), and weights
held as plain ``nn.Parameter`` tensors of shape (d_out, d_in) used with ``F.linear``. The grader must find the layout
under which the module is correct, not assume the course's (grader/verify/kernel_runtime.py, ``layout``).
"""
from __future__ import annotations

_MHA_HEAD = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError("d_out must be divisible by num_heads")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
'''

# One nn.Linear(d_in, 3 * d_out) whose output is viewed as (b, T, num_heads, 3 * head_dim): per head q, k, v.
MHA_FUSED_PER_HEAD = _MHA_HEAD + '''
        self.W_qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, t, _ = x.shape
        qkv = self.W_qkv(x).view(b, t, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        queries, keys, values = qkv.chunk(3, dim=-1)                 # each (b, num_heads, T, head_dim)
        scores = queries @ keys.transpose(-2, -1) / math.sqrt(self.head_dim)
        weights = self.dropout(torch.softmax(scores.masked_fill(self.mask[:t, :t], float("-inf")), dim=-1))
        return self.out_proj((weights @ values).transpose(1, 2).reshape(b, t, self.d_out))
'''

# Plain parameters in nn.Linear's (d_out, d_in) layout, applied with F.linear; biases beside them as <name>_bias.
MHA_PARAMETERS_LINEAR_LAYOUT = _MHA_HEAD + '''
        self.W_query = nn.Parameter(torch.randn(d_out, d_in) / math.sqrt(d_in))
        self.W_key = nn.Parameter(torch.randn(d_out, d_in) / math.sqrt(d_in))
        self.W_value = nn.Parameter(torch.randn(d_out, d_in) / math.sqrt(d_in))
        for name in ("W_query_bias", "W_key_bias", "W_value_bias"):
            setattr(self, name, nn.Parameter(torch.zeros(d_out)) if qkv_bias else None)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        queries, keys, values = (split(torch.nn.functional.linear(x, w, b)) for w, b in (
            (self.W_query, self.W_query_bias), (self.W_key, self.W_key_bias), (self.W_value, self.W_value_bias)))
        scores = queries @ keys.transpose(-2, -1) / math.sqrt(self.head_dim)
        weights = self.dropout(torch.softmax(scores.masked_fill(self.mask[:t, :t], float("-inf")), dim=-1))
        return self.out_proj((weights @ values).transpose(1, 2).reshape(b, t, self.d_out))
'''
