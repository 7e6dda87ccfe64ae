# Cheat: built-in attention reached through a name assembled at run time, so that no line of the source spells
# it. The static scan sees the computed lookup; the probe's tripwire sees the call.
# expect-flag: task self_attention: PyTorch's built-in attention ran while it was probed
# expect-flag: looks up an attribute by a computed name
# %% task:self_attention
import importlib

_functional = importlib.import_module("torch.nn." + "functional")
_attend = getattr(_functional, "_".join(["scaled", "dot", "product", "attention"]))


class SelfAttention(nn.Module):
    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        return getattr(_functional, "_".join(["scaled", "dot", "product", "attention"]))(
            self.W_query(x), self.W_key(x), self.W_value(x))
