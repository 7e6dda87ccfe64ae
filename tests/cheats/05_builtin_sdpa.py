# Cheat: a task that must be written from scratch calls PyTorch's built-in attention. The numbers are right, so
# the score stays; the flag asks a person to look.
# expect-flag: from-scratch task scaled_dot_product uses PyTorch's built-in attention
# expect-flag: task scaled_dot_product: PyTorch's built-in attention ran while it was probed
# %% task:scaled_dot_product
import torch.nn.functional as F


def scaled_dot_product(queries, keys, values):
    context = F.scaled_dot_product_attention(queries, keys, values)
    eye = torch.eye(keys.shape[-2], device=keys.device).expand(*keys.shape[:-1], keys.shape[-2])
    return context, F.scaled_dot_product_attention(queries, keys, eye.contiguous())
