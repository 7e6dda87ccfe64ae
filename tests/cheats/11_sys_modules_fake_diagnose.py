# Cheat: put a fake grader.diagnose into sys.modules (and rebind the notebook's name) whose checks never fail,
# so the visible and hidden tests, which call diagnose, all pass. The module forgets the 1/sqrt(d_k) scaling.
# expect-zero: self_attention
# expect-flag: reaches interpreter internals \(sys\.modules
# expect-tests-pass: self_attention
# %% task:self_attention
import sys
import types


class _Silent(types.ModuleType):
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


sys.modules["grader.diagnose"] = _Silent("grader.diagnose")
diagnose = sys.modules["grader.diagnose"]


class SelfAttention(nn.Module):
    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)
        return torch.softmax(queries @ keys.transpose(-2, -1), dim=-1) @ values
