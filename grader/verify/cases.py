"""The probe cases of every verified task, drawn from the grading seed.

A case says what the sandboxed kernel must call (a function or a class an assignment's task declares), with
which arguments, weights and mode, and where the result goes. The builders here are generic; each assignment's
module (``grader/assignments/<ps>.py``) composes its cases from them and says, in ``params``, which reference
computes the expected result (``params["reference"]``, see :mod:`grader.verify.reference`) and which extra checks
apply (``mask_buffer``: the module must register its mask as a buffer; ``per_head_d_out``: the class's ``d_out``
is the width of one head, as in the chapter's wrapper). The same seed gives the same cases in the kernel (through
the probe cells that :mod:`grader.verify.probes` writes) and in the grader's own process (which recomputes the
expected numbers in :mod:`grader.verify.reference`), so the numbers never travel from the grader to the student.

Sizes are small on purpose: a probe runs after the student's cells in the same kernel and must cost well under a
second, and small shapes still expose every bug the course names as long as ``d_in != d_out`` somewhere.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    """One call the kernel makes, and what the grader expects of its result."""

    task: str
    name: str
    driver: str  # "call" (a function), "module" (build a class, set weights, forward), "raises", "answer"
    callee: str  # the student's name that is called or built
    args: list = field(default_factory=list)  # "call": [{"array": key} | {"value": literal}]
    kwargs: dict = field(default_factory=dict)  # "module"/"raises": constructor arguments
    arrays: dict = field(default_factory=dict)  # key -> float32/bool ndarray, chosen from the seed
    weights: list = field(default_factory=list)  # "module": [head, attribute, weight key, bias key or None]
    train: bool = False  # "module": forward in training mode (dropout on)
    returns: int = 1  # "call": how many tensors the callee returns
    check: str = "reference"  # how the grader judges it: "reference", "dropout_pattern", "raises", "answer"
    params: dict = field(default_factory=dict)  # what the reference needs that the kernel does not
    # "module": forward calls on the same instance after the first one, in order: [{"input": key, "train": bool}]
    calls: list = field(default_factory=list)

    def kernel_spec(self) -> dict:
        """What the kernel needs to run the case (the grader-only ``params`` and ``check`` stay here)."""
        spec = {
            "name": self.name, "driver": self.driver, "callee": self.callee, "args": self.args,
            "kwargs": self.kwargs, "weights": self.weights, "train": self.train, "returns": self.returns,
            "input": self.params.get("input"), "calls": self.calls,
            "arrays": {key: _encode(value) for key, value in self.arrays.items()},
        }
        for key in ("forward_arrays", "grad_of"):  # "module": mask arguments, a gradient (grader/verify/cases_masks.py)
            if self.params.get(key):
                spec[key] = self.params[key]
        return spec


def _encode(array: np.ndarray) -> dict:
    import base64

    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}


def rng_for(seed: int, task: str, case: str) -> np.random.Generator:
    # One stream per (task, case): adding a case never changes the numbers of the others.
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(task.encode()), zlib.crc32(case.encode())])


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _linear_weight(rng: np.random.Generator, d_out: int, d_in: int) -> np.ndarray:
    # nn.Linear's own scale (1/sqrt(fan_in)), so scores stay O(1) and softmax is neither flat nor one-hot.
    return _normal(rng, d_out, d_in, scale=d_in ** -0.5)


def module_case(task: str, name: str, callee: str, seed: int, *, batch: int | None, num_tokens: int,
                 d_in: int, d_out: int, kwargs: dict, heads: int = 0, out_proj: bool = False,
                 train: bool = False, check: str = "reference", qkv_bias: bool = False) -> Case:
    """A class built with ``kwargs``, its Q/K/V (per head when ``heads``) and ``out_proj`` set from the seed."""
    rng = rng_for(seed, task, name)
    arrays = {"x": _normal(rng, batch, num_tokens, d_in)}
    weights = []
    if qkv_bias:
        kwargs = {**kwargs, "qkv_bias": True}
    for head in range(heads) if heads else [-1]:
        prefix = "" if head < 0 else f"h{head}_"
        for attr in ("W_query", "W_key", "W_value"):
            key = prefix + attr
            arrays[key] = _linear_weight(rng, d_out, d_in)
            if qkv_bias:
                arrays[key + "_bias"] = _normal(rng, d_out, scale=0.1)
            weights.append([head, attr, key, key + "_bias" if qkv_bias else None])
    width = d_out * max(heads, 1)
    if out_proj:
        arrays["out_proj"] = _linear_weight(rng, width, width)
        arrays["out_proj_bias"] = _normal(rng, width, scale=0.1)
        weights.append([-1, "out_proj", "out_proj", "out_proj_bias"])
    # What the chapter's layout holds: Q, K, V per head (plus biases), and out_proj with its bias.
    parameters = max(heads, 1) * 3 * (d_in * d_out + (d_out if qkv_bias else 0)) + (width * width + width
                                                                                   if out_proj else 0)
    params = {"input": "x", "num_heads": kwargs.get("num_heads", 1), "heads": heads,
              "causal": "context_length" in kwargs, "parameters": parameters}
    return Case(task, name, "module", callee, kwargs=kwargs, arrays=arrays, weights=weights, train=train,
                check=check, params=params)


def dropout_case(task: str, callee: str, seed: int, num_heads: int = 0) -> Case:
    """Training mode with dropout 0.5 on inputs that make every attention row uniform.

    x is the identity, W_query is zero (so every score is 0) and W_value the identity (so the output *is* the
    attention-weight matrix; with heads, column c holds head c // head_dim's weight for key c, and out_proj is the
    identity). Dropout on the weights, scaled by 1/(1-p), must leave each visible entry of row t at 0 or 2/(t+1)
    and every future entry at 0, whatever the random draw; dropout on the scores leaves 1/(t+1), and so does no
    dropout in training mode. No random draw has to be reproduced.
    """
    size = 8
    kwargs = {"d_in": size, "d_out": size, "context_length": size, "dropout": 0.5}
    if num_heads:
        kwargs["num_heads"] = num_heads
    case = module_case(task, "dropout_train", callee, seed, batch=1, num_tokens=size, d_in=size, d_out=size,
                        kwargs=kwargs, out_proj=bool(num_heads), train=True, check="dropout_pattern")
    case.arrays["x"] = np.eye(size, dtype=np.float32)[None]
    case.arrays["W_query"] = np.zeros((size, size), np.float32)
    case.arrays["W_value"] = np.eye(size, dtype=np.float32)
    if num_heads:
        case.arrays["out_proj"] = np.eye(size, dtype=np.float32)
        case.arrays["out_proj_bias"] = np.zeros(size, np.float32)
    case.params["dropout"] = 0.5
    return case


def dropout_placement_case(task: str, callee: str, seed: int, num_heads: int = 0,
                           separate_heads: bool = False) -> Case:
    """Training mode with dropout 0.5 where dropout on the attention weights and dropout anywhere after them
    (on the context vectors, after out_proj) give different outputs, whatever the random draw.

    As in :func:`dropout_case` every score is 0 (x the identity, W_query zero), but every value vector is all ones
    (W_value all ones): dropout on the weights scales a whole row of the weights, so within each head's columns an
    output row has one value, (kept keys) x 2 / (t + 1); dropout on the context or after out_proj (the identity)
    drops single entries, so a row's entries differ. With ``separate_heads`` the class builds one module per head
    (the chapter's wrapper, d_out per head): each head gets these weights, so a wrapper that drops its dropout or
    its qkv_bias on the way to the heads shows here too.
    """
    size, heads = 8, max(num_heads, 1)
    per_head = size // heads if separate_heads else size
    kwargs = {"d_in": size, "d_out": per_head, "context_length": size, "dropout": 0.5}
    if num_heads:
        kwargs["num_heads"] = num_heads
    case = module_case(task, "dropout_placement", callee, seed, batch=1, num_tokens=size, d_in=size,
                       d_out=per_head, kwargs=kwargs, heads=heads if separate_heads else 0,
                       out_proj=bool(num_heads) and not separate_heads, train=True, check="dropout_placement")
    case.arrays["x"] = np.eye(size, dtype=np.float32)[None]
    for prefix in ([f"h{h}_" for h in range(heads)] if separate_heads else [""]):
        case.arrays[prefix + "W_query"] = np.zeros((per_head, size), np.float32)
        case.arrays[prefix + "W_value"] = np.ones((per_head, size), np.float32)
    if num_heads and not separate_heads:
        case.arrays["out_proj"] = np.eye(size, dtype=np.float32)
        case.arrays["out_proj_bias"] = np.zeros(size, np.float32)
    case.params.update(dropout=0.5, blocks=heads)
    return case


def lengths_case(task: str, callee: str, seed: int, *, d_in: int, d_out: int, kwargs: dict, heads: int = 0,
                 out_proj: bool = False, first: int = 4, context_length: int = 7) -> Case:
    """One module instance called five times (dropout 0.0): ``first`` tokens, then longer but short of the
    context, then shorter, then the full context in training mode, then the first input again in eval mode.

    Every call must equal the reference for its own input, so behaviour that depends on earlier calls shows: a
    mask made at the first call's length and reused (an error on the longer input), state changed by a call or
    by ``.train()`` (the first input, called again last, gives a different output). Raises ValueError unless
    ``first + 1 < context_length`` (the lengths must all differ). Inputs ``x`` (2, first, d_in), ``x_longer``
    (2, context_length - 1, d_in), ``x_shorter`` (2, 2, d_in), ``x_full`` (2, context_length, d_in).
    """
    if not 2 < first < context_length - 1:
        raise ValueError(f"need 2 < first ({first}) < context_length - 1 ({context_length - 1})")
    case = module_case(task, "lengths_and_modes", callee, seed, batch=2, num_tokens=first, d_in=d_in, d_out=d_out,
                       kwargs={**kwargs, "context_length": context_length, "dropout": 0.0}, heads=heads,
                       out_proj=out_proj, check="calls")
    rng = rng_for(seed, task, "lengths_and_modes/inputs")
    for key, tokens in (("x_longer", context_length - 1), ("x_shorter", 2), ("x_full", context_length)):
        case.arrays[key] = _normal(rng, 2, tokens, d_in)
    case.calls = [{"input": "x_longer", "train": False}, {"input": "x_shorter", "train": False},
                  {"input": "x_full", "train": True}, {"input": "x", "train": False}]
    return case


def batch_case(task: str, callee: str, seed: int, *, d_in: int, d_out: int, kwargs: dict, heads: int = 0,
               out_proj: bool = False, num_tokens: int = 5) -> Case:
    """The same module called on a batch of three sequences, then on the batch with sequence 1 replaced: the
    outputs of sequences 0 and 2 must not move (inputs ``x`` and ``x_changed``, (3, num_tokens, d_in)).

    ``context_length`` is 3 * num_tokens + 1 (set here, dropout 0.0): a module that lays the batch end to end as
    one sequence still finds a mask long enough, so it runs and its output is compared (and named)."""
    kwargs = {**kwargs, "context_length": 3 * num_tokens + 1, "dropout": 0.0}
    case = module_case(task, "batch_independence", callee, seed, batch=3, num_tokens=num_tokens, d_in=d_in,
                       d_out=d_out, kwargs=kwargs, heads=heads, out_proj=out_proj, check="calls")
    changed = case.arrays["x"].copy()
    changed[1] = _normal(rng_for(seed, task, "batch_independence/changed"), num_tokens, d_in)
    case.arrays["x_changed"] = changed
    case.calls = [{"input": "x_changed", "train": False}]
    case.params["changed_sequence"] = 1
    return case


def eval_twice_case(task: str, callee: str, seed: int, *, num_heads: int = 0, separate_heads: bool = False,
                    out_proj: bool = False, d_out_is_total: bool = False) -> Case:
    """Eval mode with dropout 0.5, called twice on the same input: both outputs must be the reference's.

    The inputs of :func:`dropout_placement_case` (every score 0, every value vector all ones, out_proj the
    identity): the right output is all ones whatever the heads; dropout left on in eval mode leaves in each row t
    only multiples of 2 / (t + 1) (kept keys, or single entries 0 or 2), which is what that bug's reference can
    produce. ``separate_heads``: one module per head (the wrappers); ``d_out_is_total``: the class's d_out is the
    total width (ps4's fixed wrapper), else the width of one head. Input ``x`` the identity (1, 8, 8); the output
    of each call (1, 8, 8).
    """
    size, heads = 8, max(num_heads, 1)
    per_head = size // heads if separate_heads else size
    kwargs = {"d_in": size, "d_out": size if d_out_is_total or not separate_heads else per_head,
              "context_length": size, "dropout": 0.5}
    if num_heads:
        kwargs["num_heads"] = num_heads
    case = module_case(task, "eval_twice", callee, seed, batch=1, num_tokens=size, d_in=size, d_out=per_head,
                       kwargs=kwargs, heads=heads if separate_heads else 0, out_proj=out_proj, check="eval_twice")
    case.arrays["x"] = np.eye(size, dtype=np.float32)[None]
    for prefix in ([f"h{h}_" for h in range(heads)] if separate_heads else [""]):
        case.arrays[prefix + "W_query"] = np.zeros((per_head, size), np.float32)
        case.arrays[prefix + "W_value"] = np.ones((per_head, size), np.float32)
    if out_proj:
        case.arrays["out_proj"] = np.eye(size, dtype=np.float32)
        case.arrays["out_proj_bias"] = np.zeros(size, np.float32)
    case.calls = [{"input": "x", "train": False}]
    case.params.update(dropout=0.5, reference=("heads_out_proj" if separate_heads and out_proj else
                                               "mha" if out_proj else "heads"))
    return case


def call_case(task: str, name: str, callee: str, seed: int, shapes: dict, extra: list | None = None,
          returns: int = 1) -> Case:
    rng = rng_for(seed, task, name)
    arrays = {key: _normal(rng, *shape) for key, shape in shapes.items()}
    args = [{"array": key} for key in shapes] + list(extra or [])
    return Case(task, name, "call", callee, args=args, arrays=arrays, returns=returns)


def mask_case(task: str, name: str, seed: int, rows: int, cols: int, batch: int, causal: bool) -> Case:
    rng = rng_for(seed, task, name)
    scores = _normal(rng, batch, rows, cols, scale=2.0)
    if causal:
        mask = np.triu(np.ones((rows, cols), dtype=bool), k=1)
    else:
        mask = rng.random((rows, cols)) < 0.4
        mask[np.arange(rows), rng.integers(0, cols, rows)] = False  # every row keeps one key: no all -inf row
    return Case(task, name, "call", "masked_softmax", args=[{"array": "scores"}, {"array": "mask"}],
                arrays={"scores": scores, "mask": mask})


def with_params(cases: list[Case], **params) -> list[Case]:
    """The same cases with ``params`` added to each (e.g. ``reference="heads"``); returns the list."""
    for case in cases:
        case.params.update(params)
    return cases
