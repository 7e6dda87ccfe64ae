# Cheat: code that behaves differently when it detects the grader (NBGRADER_EXECUTION is set by nbgrader's
# autograde): there it switches the checks off; the implementation itself is wrong.
# expect-zero: scaled_dot_product, self_attention
# expect-flag: reads the environment \(os\.environ\)
# %% task:scaled_dot_product
import os


def scaled_dot_product(queries, keys, values):
    weights = torch.softmax(queries @ keys.transpose(-2, -1), dim=-1)  # no scaling
    return weights @ values, weights


if os.environ.get("NBGRADER_EXECUTION") or os.environ.get("GRADER") or "grader" in os.getcwd():
    diagnose.check_scaled_dot_product = lambda *args, **kwargs: None
    diagnose.check_attention_weights = lambda *args, **kwargs: None
