# Cheat: find the instructor's solution notebook next to the installed grader package and run its code.
# The sandbox hides solutions/ where the OS allows it (then the fallback scores 0); where it cannot, copied code
# gives right numbers that no check of numbers can tell from the student's own: the flags are the guarantee.
# expect-any: all
# expect-flag: names a path outside the notebook's folder
# expect-flag: runs code built at run time \(exec\)
# %% task:attention_scores
import json
import pathlib

import grader

for _root in [pathlib.Path(grader.__file__).resolve().parents[1], pathlib.Path("../../..")]:
    try:
        _cells = json.loads((_root / "solutions" / "ps1" / "ps1.ipynb").read_text())["cells"]
    except OSError:
        continue
    for _cell in _cells:
        if "def attention_scores" in "".join(_cell["source"]):
            exec("".join(_cell["source"]))
    break
else:
    def attention_scores(queries, keys):
        return queries @ keys.transpose(-2, -1) * 0
