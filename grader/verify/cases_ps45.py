"""Probe cases of ps4 (bug clinic) and ps5 (performance), and the checks that only they need.

- ps4 ``parity_test``: the student's ``passes_parity_test`` judges classes taken from the instructor's source
  notebook (the hidden test's correct and camouflaged classes, with the mystery modules they use), renamed from the
  seed and stripped of docstrings, so an answer keyed on class names or docs cannot work. The verdicts the grader
  expects come from which list of the hidden test a class is in.
- ps4 ``fixed_wrapper`` / ``fixed_projection``: the same seeded module checks as ps3, with heads for the wrapper.
- ps5 ``timing``: the student's timer measures test doubles whose sleep schedules come from the seed; ``flops``
  and ``memory`` are checked against PyTorch's own counters (``FlopCounterMode`` and ``Tensor.nbytes`` on the
  ``meta`` device), never against a formula shipped with the course.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np

from grader.verify.cases import Case, _module_case, _rng


class ExtraFailure(Exception):
    """A ps4/ps5 case did not match; the text says how."""


# ------------------------------------------------------------------------------------------------ ps4 parity
def _parity_classes(source_nb: Path, seed: int) -> tuple[str, dict[str, bool]] | None:
    """(class definitions renamed from the seed, {new name: verdict a correct test gives}) or None."""
    cells = json.loads(Path(source_nb).read_text())["cells"]
    definitions: dict[str, ast.ClassDef] = {}
    expected: dict[str, bool] = {}
    for cell in cells:
        meta = (cell.get("metadata") or {}).get("nbgrader") or {}
        if cell.get("cell_type") != "code" or meta.get("solution"):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                definitions[node.name] = node
        if meta.get("grade_id") != "test_parity_test":
            continue
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)):
                continue
            target = node.targets[0].id if isinstance(node.targets[0], ast.Name) else ""
            for value in node.value.values:
                first = value.elts[0] if isinstance(value, ast.Tuple) else value
                if isinstance(first, ast.Name) and target in ("correct_classes", "camouflaged_bugs"):
                    expected[first.id] = target == "correct_classes"
    if not expected or not set(expected) <= set(definitions):
        return None
    needed, order = set(), list(definitions)
    stack = list(expected)
    while stack:  # a class needs the classes its body or bases name
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack += [n.id for n in ast.walk(definitions[name]) if isinstance(n, ast.Name) and n.id in definitions]
    rng = _rng(seed, "parity_test", "names")
    numbers = rng.permutation(9000)[: len(needed)] + 1000
    renamed = {old: f"Candidate{num}" for old, num in zip(sorted(needed), numbers)}

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node):
            return ast.copy_location(ast.Name(renamed.get(node.id, node.id), node.ctx), node)

        def visit_ClassDef(self, node):
            self.generic_visit(node)
            node.name = renamed.get(node.name, node.name)
            return node

    pieces = []
    for name in order:
        if name not in needed:
            continue
        node = Rename().visit(ast.parse(ast.unparse(definitions[name])).body[0])
        for holder in [node] + [n for n in ast.walk(node) if isinstance(n, ast.FunctionDef)]:
            body = holder.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                holder.body = body[1:] or [ast.Pass()]  # docstrings name the bug
        pieces.append(ast.unparse(node))
    verdicts = {renamed[name]: verdict for name, verdict in expected.items()}
    return "\n\n".join(pieces), dict(sorted(verdicts.items()))


def _ps4(source_nb: Path | None, seed: int) -> list[Case]:
    cases = []
    if source_nb is not None:
        try:
            found = _parity_classes(source_nb, seed)
        except (OSError, ValueError, KeyError):
            found = None
        if found:
            source, verdicts = found
            cases.append(Case("parity_test", "classes", "parity", "passes_parity_test", check="parity",
                              kwargs={"source": source, "classes": list(verdicts)},
                              params={"verdicts": verdicts}))
    wrapper = "FixedMultiHeadAttentionWrapper"
    cases += [
        _module_case("fixed_wrapper", "d_in_ne_d_out", wrapper, seed, batch=2, num_tokens=6, d_in=8, d_out=4,
                     heads=3, out_proj=True,
                     kwargs={"d_in": 8, "d_out": 12, "context_length": 8, "dropout": 0.0, "num_heads": 3}),
        _module_case("fixed_wrapper", "square_with_bias", wrapper, seed, batch=1, num_tokens=5, d_in=8, d_out=2,
                     heads=4, out_proj=True, qkv_bias=True,
                     kwargs={"d_in": 8, "d_out": 8, "context_length": 5, "dropout": 0.0, "num_heads": 4}),
        Case("fixed_wrapper", "indivisible_d_out", "raises", wrapper, check="raises",
             kwargs={"d_in": 8, "d_out": 10, "context_length": 8, "dropout": 0.0, "num_heads": 4},
             params={"exception": "ValueError"}),
    ]
    for name, d_in, d_out, heads, bias in (("square", 12, 12, 3, False), ("d_in_ne_d_out", 8, 12, 3, False),
                                           ("wide_input_with_bias", 20, 6, 2, True)):
        cases.append(_module_case("fixed_projection", name, "FixedMultiHeadAttention", seed, batch=2, num_tokens=5,
                                  d_in=d_in, d_out=d_out, out_proj=True, qkv_bias=bias,
                                  kwargs={"d_in": d_in, "d_out": d_out, "context_length": 7, "dropout": 0.0,
                                          "num_heads": heads}))
    return cases


# ------------------------------------------------------------------------------------------------------ ps5
def _ps5(seed: int) -> list[Case]:
    rng = _rng(seed, "timing", "schedules")
    steady = int(rng.integers(6, 15))
    slow, warmup = int(rng.integers(50, 71)), int(rng.integers(3, 7))
    timed = [2.0] * 8
    for spike in rng.choice(8, size=2, replace=False):
        timed[int(spike)] = 100.0
    scenarios = [
        {"name": "steady", "schedule": [steady], "warmup": 2, "repeats": 5},
        {"name": "slow_start", "schedule": [slow] * warmup + [2], "warmup": warmup, "repeats": 5},
        {"name": "spiky", "schedule": [2.0, 2.0] + timed + [2.0], "warmup": 2, "repeats": 8},
        {"name": "autograd", "schedule": [1], "warmup": 2, "repeats": 3, "requires_grad": True},
        {"name": "simulated_cuda", "cuda": "simulated", "work_ms": 20, "warmup": 2, "repeats": 5},
        {"name": "real_cuda", "cuda": "real", "work_ms": 20, "warmup": 2, "repeats": 5},
    ]
    cases = [Case("timing", "schedules", "timing", "time_forward", kwargs={"scenarios": scenarios},
                  check="timing", params={"steady": steady})]
    configs = [[8, 1024, 768, 768, 12], [1, 7, 12, 12, 1]]
    for _ in range(3):
        heads = int(rng.integers(1, 9))
        configs.append([int(rng.integers(1, 5)), int(rng.integers(3, 40)), int(rng.integers(4, 50)),
                        heads * int(rng.integers(1, 9)), heads])
    cases.append(Case("flops", "configs", "call_json", "attention_flops", kwargs={"calls": configs},
                      check="flops"))
    dtypes = ["float32", "float16", "bfloat16", "float64"]
    calls = [[8, 1024, 12, "float32"], [8, 1024, 12, "float16"]]
    for dtype in dtypes:
        calls.append([int(rng.integers(1, 5)), int(rng.integers(2, 33)), int(rng.integers(1, 9)), dtype])
    cases.append(Case("memory", "configs", "call_json", "attention_weights_bytes", kwargs={"calls": calls},
                      check="memory"))
    return cases


def extra_cases(assignment: str, source_nb: Path | None, seed: int) -> list[Case]:
    if assignment == "ps4":
        return _ps4(source_nb, seed)
    if assignment == "ps5":
        return _ps5(seed)
    return []


# ---------------------------------------------------------------------------------------------------- checks
def _flops_reference(batch, num_tokens, d_in, d_out, num_heads) -> dict[str, float]:
    """PyTorch's own FLOP counter on the meta device: four projections, then dense attention for every head."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        x, wide = torch.empty(batch, num_tokens, d_in), torch.empty(batch, num_tokens, d_out)
        with FlopCounterMode(display=False) as projections:
            for _ in range(3):
                F.linear(x, torch.empty(d_out, d_in))
            F.linear(wide, torch.empty(d_out, d_out))
        heads = torch.empty(batch, num_heads, num_tokens, d_out // num_heads)
        with FlopCounterMode(display=False) as attention:
            F.scaled_dot_product_attention(heads, heads, heads)
    return {"projections": float(projections.get_total_flops()), "attention": float(attention.get_total_flops())}


def _bytes_reference(batch, num_tokens, num_heads, dtype: str) -> int:
    import torch

    return torch.empty(batch, num_heads, num_tokens, num_tokens, dtype=getattr(torch, dtype), device="meta").nbytes


def _check_timing(case: Case, meta: dict) -> None:
    results = {r.get("name"): r for r in meta.get("scenarios") or [] if isinstance(r, dict)}

    def measured(name: str) -> float:
        result = results.get(name) or {}
        if result.get("error"):
            raise ExtraFailure(f"time_forward failed ({name}): {str(result['error'])[:200]}")
        if result.get("is_float") is not True:
            raise ExtraFailure(f"return a Python float, not {str(result.get('type'))[:30]}")
        value = result.get("value")
        if not isinstance(value, (int, float)) or value != value:
            raise ExtraFailure(f"time_forward returned {value!r} ({name})")
        return float(value)

    steady = case.params["steady"]
    value = measured("steady")
    if 0.0005 * steady <= value <= 0.005 * steady:
        raise ExtraFailure(f"a module that sleeps {steady} ms timed at {value:.4f}: that is seconds, not ms")
    if not 0.9 * steady <= value <= 4 * steady:
        raise ExtraFailure(f"a module that sleeps {steady} ms per call timed at {value:.2f} ms")
    if (results["steady"].get("calls") or 0) < 7:
        raise ExtraFailure(f"module called {results['steady'].get('calls')} times with warmup=2, repeats=5: "
                           f"no warm-up, or too few timed calls")
    scenario = {s["name"]: s for s in case.kwargs["scenarios"]}["slow_start"]
    calls = results["slow_start"].get("calls") if "slow_start" in results else None
    if measured("slow_start") >= 20:
        raise ExtraFailure(f"no warm-up: the first {scenario['warmup']} calls were slow and the timer reported "
                           f"{measured('slow_start'):.1f} ms with warmup={scenario['warmup']}")
    if not isinstance(calls, int) or not scenario["warmup"] + 5 <= calls <= 40:
        raise ExtraFailure(f"module called {calls} times for warmup={scenario['warmup']}, repeats=5")
    if measured("spiky") >= 15:
        raise ExtraFailure(f"mean instead of median: 6 calls of 2 ms and 2 of 100 ms timed at "
                           f"{measured('spiky'):.1f} ms")
    measured("autograd")
    if results["autograd"].get("grad_in_timed_calls") is not False:
        raise ExtraFailure("autograd on while timing: run the forward passes under torch.no_grad()")
    for name, floor in (("simulated_cuda", 15.0), ("real_cuda", None)):
        result = results.get(name) or {}
        if result.get("skipped"):
            continue
        value = measured(name)
        floor = floor if floor is not None else 0.7 * float(result.get("work_ms") or 0)
        if value < floor:
            raise ExtraFailure(f"no synchronisation on CUDA ({name.replace('_', ' ')}): GPU work of "
                               f"{result.get('work_ms', 20):.3g} ms timed at {value:.3f} ms")
        if name == "simulated_cuda" and value > 60:
            raise ExtraFailure(f"a forward pass of 20 ms of GPU work timed at {value:.1f} ms")


def _check_calls(case: Case, meta: dict) -> None:
    results = meta.get("results")
    if not isinstance(results, list) or len(results) != len(case.kwargs["calls"]):
        raise ExtraFailure("no results for the probe's calls")
    for args, result in zip(case.kwargs["calls"], results):
        if not isinstance(result, dict) or result.get("error"):
            raise ExtraFailure(f"{case.callee}{tuple(args)} failed: {str((result or {}).get('error'))[:200]}")
        value = result.get("value")
        if case.check == "memory":
            want = _bytes_reference(*args)
            if result.get("is_int") is not True:
                raise ExtraFailure(f"return an int (a number of bytes), not {result.get('type')}")
            if value != want:
                raise ExtraFailure(f"{case.callee}{tuple(args)} = {value}, expected {want} (the bytes of a "
                                   f"tensor of that shape and dtype)")
            continue
        want = _flops_reference(*args)
        if not isinstance(value, dict):
            raise ExtraFailure("return a dict with the keys 'projections' and 'attention'")
        for key, number in want.items():
            got = value.get(key)
            if not isinstance(got, (int, float)) or abs(float(got) / number - 1) >= 1e-2:
                raise ExtraFailure(f"{case.callee}{tuple(args)}['{key}'] = {got}, "
                                   f"{(float(got) / number) if isinstance(got, (int, float)) else 'not a number'} "
                                   f"x PyTorch's FLOP counter")


def _check_parity(case: Case, meta: dict) -> None:
    verdicts = meta.get("verdicts")
    if not isinstance(verdicts, dict):
        raise ExtraFailure("no verdicts from passes_parity_test")
    for number, (name, wanted) in enumerate(case.params["verdicts"].items()):
        result = verdicts.get(name)
        if not isinstance(result, dict):
            raise ExtraFailure(f"no verdict for candidate class {number}")
        if result.get("error"):
            raise ExtraFailure(f"passes_parity_test raised {str(result['error'])[:160]}: catch the module's "
                               f"errors and return False")
        if result.get("type") != "bool":
            raise ExtraFailure(f"return a bool, not {str(result.get('type'))[:30]}")
        if result.get("value") is not wanted:
            raise ExtraFailure("parity test too strict: it rejects a correct class" if wanted else
                               "parity test misses a bug hidden by d_in == d_out: it passes a buggy class")


def check_extra(case: Case, folder: Path, meta: dict) -> None:
    {"timing": _check_timing, "flops": _check_calls, "memory": _check_calls,
     "parity": _check_parity}[case.check](case, meta)
