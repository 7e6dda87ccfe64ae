# Cheat: an input transformer that recognises the grader's probe cells and turns them into nothing, so that no
# probe result exists (hoping the grader then falls back to the notebook's own tests).
# expect-zero: all
# expect-flag: adds an IPython input transformer
# %% start
def _skip_grader_cells(lines):
    return ["pass\n"] if any("_probe" in line for line in lines) else lines


get_ipython().input_transformers_cleanup.append(_skip_grader_cells)
