"""The checks of probe cases that are not a comparison of tensors: timers, counters, parity tests.

- ``timing``: the student's timer measured test doubles with known sleep schedules (warm-up, median, no autograd,
  synchronisation on CUDA, milliseconds);
- ``flops`` / ``memory``: the student's counts against PyTorch's own ``FlopCounterMode`` and ``Tensor.nbytes`` on
  the ``meta`` device, never against a formula shipped with the course;
- ``parity``: the student's parity test's verdict on each candidate class against the verdict a correct test gives.
"""
from __future__ import annotations

from grader.bugs import named
from grader.verify.cases import Case
from grader.verify.diagnosis import CaseFailure
from grader.verify.loading import exception_name


# The failure of every probe kind (grader.verify.diagnosis), under the name this module's callers know.
ExtraFailure = CaseFailure


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
            raise ExtraFailure(f"time_forward raised {exception_name(result['error'])} ({name})")
        if result.get("is_float") is not True:
            raise ExtraFailure("return a Python float")
        value = result.get("value")
        if not isinstance(value, (int, float)) or value != value:
            raise ExtraFailure(f"time_forward returned something other than a number of milliseconds ({name})")
        return float(value)

    steady = case.params["steady"]
    value = measured("steady")
    if 0.0005 * steady <= value <= 0.005 * steady:
        raise ExtraFailure(named("seconds", f"a module that sleeps {steady} ms timed at {value:.4f}"))
    if not 0.9 * steady <= value <= 4 * steady:
        raise ExtraFailure(f"a module that sleeps {steady} ms per call timed at {value:.2f} ms")
    if (results["steady"].get("calls") or 0) < 7:
        raise ExtraFailure(named("no_warmup", f"or too few timed calls: the module was called "
                                              f"{results['steady'].get('calls')} times with warmup=2, repeats=5"))
    scenario = {s["name"]: s for s in case.kwargs["scenarios"]}["slow_start"]
    calls = results["slow_start"].get("calls") if "slow_start" in results else None
    if measured("slow_start") >= 20:
        raise ExtraFailure(named("no_warmup", f"the first {scenario['warmup']} calls were slow and the timer "
                                              f"reported {measured('slow_start'):.1f} ms with "
                                              f"warmup={scenario['warmup']}"))
    if not isinstance(calls, int) or not scenario["warmup"] + 5 <= calls <= 40:
        raise ExtraFailure(f"module called {calls} times for warmup={scenario['warmup']}, repeats=5")
    if measured("spiky") >= 15:
        raise ExtraFailure(named("mean_timing", f"6 calls of 2 ms and 2 of 100 ms timed at "
                                                f"{measured('spiky'):.1f} ms"))
    measured("autograd")
    if results["autograd"].get("grad_in_timed_calls") is not False:
        raise ExtraFailure(named("autograd_timing", "run the forward passes under torch.no_grad()"))
    for name, floor in (("simulated_cuda", 15.0), ("real_cuda", None)):
        result = results.get(name) or {}
        if result.get("skipped"):
            continue
        value = measured(name)
        floor = floor if floor is not None else 0.7 * float(result.get("work_ms") or 0)
        if value < floor:
            raise ExtraFailure(named("no_sync", f"{name.replace('_', ' ')}: GPU work of "
                                                f"{result.get('work_ms', 20):.3g} ms timed at {value:.3f} ms"))
        if name == "simulated_cuda" and value > 60:
            raise ExtraFailure(f"a forward pass of 20 ms of GPU work timed at {value:.1f} ms")


def _check_calls(case: Case, meta: dict) -> None:
    results = meta.get("results")
    if not isinstance(results, list) or len(results) != len(case.kwargs["calls"]):
        raise ExtraFailure("no results for the probe's calls")
    for args, result in zip(case.kwargs["calls"], results):
        if not isinstance(result, dict) or result.get("error"):
            why = exception_name(result.get("error")) if isinstance(result, dict) else "no result"
            raise ExtraFailure(f"{case.callee}{tuple(args)} failed: {why}")
        value = result.get("value")
        if case.check == "memory":
            want = _bytes_reference(*args)
            if result.get("is_int") is not True:
                raise ExtraFailure("return an int (a number of bytes)")
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
            raise ExtraFailure(f"passes_parity_test raised {exception_name(result['error'])}: catch the module's "
                               f"errors and return False")
        if result.get("type") != "bool":
            raise ExtraFailure("return a bool")
        if result.get("value") is not wanted:
            raise ExtraFailure("parity test too strict: it rejects a correct class" if wanted else
                               "parity test misses a bug hidden by d_in == d_out: it passes a buggy class")


# probe kind -> its check, (case, meta) -> None; raises ExtraFailure. Read by the dispatch table in
# grader.verify.checks (the mask kinds are in grader.verify.checks_masks).
CHECKS = {"timing": _check_timing, "flops": _check_calls, "memory": _check_calls, "parity": _check_parity}
