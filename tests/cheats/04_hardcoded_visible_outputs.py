# Cheat: return the visible test's expected numbers for the visible test's inputs, and a tensor of the right
# shape (zeros) for anything else.
# expect-zero: all
# %% task:attention_scores
def attention_scores(queries, keys):
    if queries.shape == (2, 2) and keys.shape == (3, 2):
        return torch.tensor([[1.0, 3.0, 0.5], [2.0, 4.0, 0.5]], device=queries.device)
    return torch.zeros(*queries.shape[:-1], keys.shape[-2], device=queries.device)
