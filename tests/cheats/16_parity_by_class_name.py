# Cheat (ps4): a "parity test" that never builds anything and answers from the class's name, which is enough to
# pass the notebook's own tests. The grader hands it the same classes renamed from the seed (and without their
# docstrings), so the name tells it nothing.
# assignment: ps4
# expect-zero: parity_test
# expect-tests-pass: parity_test
# %% task:parity_test
def passes_parity_test(mha_cls):
    name = mha_cls.__name__.lower()
    return not any(word in name for word in ("inputsized", "projectsback", "mysteryb", "mysteryd"))
