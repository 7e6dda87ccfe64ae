"""Correct implementations written differently from the solutions: each must get full marks.

Tests must judge behaviour, so an einsum, a fused QKV projection, reshape/permute, a loop over heads, a bool
``tril`` mask or ``unflatten``/``flatten`` must score exactly like the instructor's version.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Alternative:
    id: str
    assignment: str
    cell: str
    code: str


_MHA_HEAD = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError("d_out must be divisible by num_heads")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
'''

MHA_EINSUM = _MHA_HEAD + '''
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.tril(torch.ones(context_length, context_length, dtype=torch.bool)))

    def _project(self, layer, x):
        out = torch.einsum("btd,od->bto", x, layer.weight)
        return out if layer.bias is None else out + layer.bias

    def forward(self, x):
        b, t, _ = x.shape
        q = self._project(self.W_query, x).view(b, t, self.num_heads, self.head_dim)
        k = self._project(self.W_key, x).view(b, t, self.num_heads, self.head_dim)
        v = self._project(self.W_value, x).view(b, t, self.num_heads, self.head_dim)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
        scores = torch.where(self.mask[:t, :t], scores, torch.full_like(scores, float("-inf")))
        weights = self.dropout(scores.softmax(dim=-1))
        context = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, self.d_out)
        return self.out_proj(context)
'''

MHA_FUSED_QKV = _MHA_HEAD + '''
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        queries, keys, values = qkv[0], qkv[1], qkv[2]
        scores = queries @ keys.transpose(-2, -1) / self.head_dim ** 0.5
        scores = scores.masked_fill(self.mask[:t, :t].bool(), float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out_proj((weights @ values).transpose(1, 2).reshape(b, t, self.d_out))
'''

MHA_RESHAPE_PERMUTE = _MHA_HEAD + '''
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.attn_dropout = nn.Dropout(dropout)
        self.register_buffer("mask", ~torch.ones(context_length, context_length, dtype=torch.bool).tril())

    def forward(self, x):
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        queries, keys, values = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = torch.matmul(queries, keys.permute(0, 1, 3, 2)) * self.head_dim ** -0.5
        weights = torch.softmax(scores.masked_fill(self.mask[:t, :t], -torch.inf), dim=-1)
        context = torch.matmul(self.attn_dropout(weights), values)
        return self.out_proj(context.permute(0, 2, 1, 3).reshape(b, t, self.d_out))
'''

MHA_LOOP_OVER_HEADS = _MHA_HEAD + '''
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1).bool())

    def forward(self, x):
        t = x.shape[1]
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        outputs = []
        for h in range(self.num_heads):
            cols = slice(h * self.head_dim, (h + 1) * self.head_dim)
            scores = queries[..., cols] @ keys[..., cols].transpose(1, 2) / math.sqrt(self.head_dim)
            weights = torch.softmax(scores.masked_fill(self.mask[:t, :t], float("-inf")), dim=-1)
            outputs.append(self.dropout(weights) @ values[..., cols])
        return self.out_proj(torch.cat(outputs, dim=-1))
'''

SPLIT_UNFLATTEN = '''
def split_heads(x, num_heads):
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)
'''

COMBINE_FLATTEN = '''
def combine_heads(x):
    return x.transpose(1, 2).flatten(start_dim=2)
'''

SELF_ATTENTION_EINSUM = '''
class SelfAttention(nn.Module):
    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        weights = torch.einsum("...qd,...kd->...qk", q, k).div(k.shape[-1] ** 0.5).softmax(-1)
        return torch.einsum("...qk,...kd->...qd", weights, v)
'''

CAUSAL_BOOL_TRIL = '''
class CausalAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.attn_drop = nn.Dropout(dropout)
        self.register_buffer("mask", torch.tril(torch.ones(context_length, context_length, dtype=torch.bool)))

    def forward(self, x):
        t = x.size(1)
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(k.size(-1))
        scores = scores.masked_fill(~self.mask[:t, :t], float("-inf"))
        return torch.bmm(self.attn_drop(F.softmax(scores, dim=-1)), v)

import torch.nn.functional as F
'''

ALTERNATIVES = [
    Alternative("self_attention_einsum", "ps1", "self_attention", SELF_ATTENTION_EINSUM),
    Alternative("causal_bool_tril", "ps2", "causal_attention", CAUSAL_BOOL_TRIL),
    Alternative("mha_einsum", "ps3", "multi_head_attention", MHA_EINSUM),
    Alternative("mha_fused_qkv", "ps3", "multi_head_attention", MHA_FUSED_QKV),
    Alternative("mha_reshape_permute", "ps3", "multi_head_attention", MHA_RESHAPE_PERMUTE),
    Alternative("mha_loop_over_heads", "ps3", "multi_head_attention", MHA_LOOP_OVER_HEADS),
    Alternative("split_unflatten", "ps3", "split_heads", SPLIT_UNFLATTEN),
    Alternative("combine_flatten", "ps3", "combine_heads", COMBINE_FLATTEN),
]
