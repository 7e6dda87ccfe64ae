# Cheat: the notebook's tests are neutered, then the last cell kills the kernel so that nothing the grader
# appends after the student's cells can run. Without probe results no task is verified.
# expect-zero: all
# expect-flag: uses IPython's shell \(get_ipython\)
# expect-flag: touches files, processes or the network \(os\._exit\)
# expect-tests-pass: attention_scores
# %% start
get_ipython().input_transformers_cleanup.append(
    lambda lines: ["pass\n" if line.lstrip().startswith(("assert", "diagnose.")) else line for line in lines])
# %% task:attention_scores
def attention_scores(queries, keys):
    return queries @ keys.transpose(-2, -1) * 2
# %% end
import os

os._exit(0)
