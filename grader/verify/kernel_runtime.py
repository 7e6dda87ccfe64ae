# Probe runtime: this file's TEXT is the first probe cell, run inside the student's sandboxed kernel after the
# student's own cells. The grader's process never imports it. It builds nothing but one object, `_mha_probe`,
# so that the student's namespace stays as the student left it.
#
# Trust: everything here can be seen and subverted by code the student ran earlier (an IPython hook, a patched
# numpy). That is fine: the kernel only *reports* numbers; the grader recomputes what they must be from inputs
# drawn with a seed the student never saw, so a subverted probe can only write wrong numbers, which score 0.


def _mha_probe_build():
    import base64
    import json
    import os
    import shutil
    import types

    import numpy as np
    import torch
    import torch.nn.functional as F

    root = os.path.abspath("_probe")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    builtin_calls = {}

    def reset():
        # Files planted before the probes (by student code) must not survive into the grader's reading.
        if os.path.islink(root) or os.path.isfile(root):
            os.remove(root)
        elif os.path.isdir(root):
            shutil.rmtree(root)
        os.makedirs(root)

    def tripwire(owner, attr, label):
        # Counts calls of PyTorch's built-in attention made while a probe case runs (a review flag, never a score).
        original = getattr(owner, attr, None)
        if original is None:
            return

        def wired(*args, **kwargs):
            builtin_calls[label] = builtin_calls.get(label, 0) + 1
            return original(*args, **kwargs)

        setattr(owner, attr, wired)

    def describe(exc):
        if isinstance(exc, NotImplementedError) and not str(exc):
            return "NotImplementedError (not written yet)"
        return f"{type(exc).__name__}: {exc}"[:300].rstrip(": ")

    def decode(spec):
        raw = base64.b64decode(spec["b64"])
        return np.frombuffer(raw, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"]).copy()

    def to_numpy(value, what):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what} is a {type(value).__name__}, not a torch.Tensor")
        # Unbound Tensor methods: a subclass cannot redefine how its numbers are read out.
        value = torch.Tensor.detach(value)
        if value.dtype in (torch.bfloat16, torch.float16):
            value = torch.Tensor.float(value)
        return np.ascontiguousarray(torch.Tensor.numpy(torch.Tensor.cpu(value)))

    def save(folder, name, value, what):
        array = to_numpy(value, what)
        np.save(os.path.join(folder, name + ".npy"), array, allow_pickle=False)
        return {"shape": list(array.shape), "dtype": str(value.dtype)}

    def find_owner(module, head):
        if head < 0:
            return module
        heads = getattr(module, "heads", None)  # the chapter's nn.ModuleList, else any sub-module with Q/K/V
        owners = list(heads) if isinstance(heads, torch.nn.ModuleList) else [
            m for name, m in module.named_modules()
            if name and any(hasattr(m, n) for n in ("W_query",) + fused_names)]
        if head >= len(owners):
            raise AttributeError(f"expected a head (a sub-module with W_query) number {head}, found {len(owners)}")
        return owners[head]

    fused_names = ("W_qkv", "qkv")  # one nn.Linear(d_in, 3 * d_out) (or a plain tensor) holding Q, K and V
    fallback_names = {"out_proj": ("proj",)}
    # How a case reads the module's weights. Correct code lays them out in more than one way, so a case whose
    # module shows an ambiguous layout runs again under the other one (see run_case) and the grader judges the
    # module by the layout under which it is correct. "fused": the rows of a fused projection, "qkv_first"
    # ([all q | all k | all v]) or "per_head" ([q_h | k_h | v_h] for each head h); "tensor": a weight held as a
    # plain tensor, "matrix" (x @ W, W (d_in, d_out)) or "linear" (F.linear(x, W), W (d_out, d_in)).
    layout = {"fused": "qkv_first", "tensor": "matrix", "num_heads": 1}
    seen = {"fused": False, "square_tensor": False}

    def fused_rows(attr, total):
        """Indices of attr's rows (Q, K or V) in a fused weight with ``total`` rows, under the current layout."""
        d_out, part = total // 3, ("W_query", "W_key", "W_value").index(attr)
        heads = layout["num_heads"] if layout["fused"] == "per_head" else 1
        head_dim = d_out // heads
        return torch.tensor([h * 3 * head_dim + part * head_dim + i for h in range(heads) for i in range(head_dim)])

    def weight_of(owner, attr):
        """(weight, bias or None, rows or None, kind) of owner.attr: ``rows`` picks attr's rows out of a fused
        projection; ``kind`` "linear" is nn.Linear's (out, in), "tensor" a plain tensor (layout["tensor"])."""
        target = getattr(owner, attr, None)
        for other in fallback_names.get(attr, ()):
            target = target if target is not None else getattr(owner, other, None)
        if target is None and attr in ("W_query", "W_key", "W_value"):
            fused = next((getattr(owner, n) for n in fused_names if hasattr(owner, n)), None)
            weight = getattr(fused, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.shape[0] % 3 == 0:
                seen["fused"] = True
                bias = getattr(fused, "bias", None)
                return weight, (bias if isinstance(bias, torch.Tensor) else None), \
                    fused_rows(attr, weight.shape[0]), "linear"
        if target is None:
            raise AttributeError(f"{type(owner).__name__} has no attribute {attr!r}")
        if isinstance(target, torch.nn.Module) and isinstance(getattr(target, "weight", None), torch.Tensor):
            bias = getattr(target, "bias", None)
            return target.weight, (bias if isinstance(bias, torch.Tensor) else None), None, "linear"
        if isinstance(target, torch.Tensor):   # its bias, if any, beside it as <attr>_bias
            bias = getattr(owner, attr + "_bias", None)
            return target, (bias if isinstance(bias, torch.Tensor) else None), None, "tensor"
        raise TypeError(f"{attr} is a {type(target).__name__}, not an nn.Linear or a weight tensor")

    def tensor_is_linear(tensor, weight_shape):
        """Whether a plain tensor holds its weight as (d_out, d_in): its shape says so when it is not square,
        else layout["tensor"] (the case runs under both)."""
        shape, (rows, cols) = tuple(tensor.shape), tuple(weight_shape)
        if rows != cols:
            return shape == (rows, cols)
        seen["square_tensor"] = True
        return layout["tensor"] == "linear"

    def set_weight(owner, attr, weight, bias):
        tensor, layer_bias, rows, kind = weight_of(owner, attr)
        linear = kind == "linear" or tensor_is_linear(tensor, weight.shape)
        value = torch.from_numpy(weight if linear else weight.T.copy())
        target_shape = (len(rows), tensor.shape[1]) if rows is not None else tuple(tensor.shape)
        if tuple(target_shape) != tuple(value.shape):
            raise ValueError(f"{attr} has shape {tuple(target_shape)}, expected {tuple(value.shape)}")
        with torch.no_grad():
            if rows is None:
                tensor.copy_(value)
            else:
                tensor[rows] = value.to(tensor.dtype)
            if layer_bias is not None:
                part = layer_bias if rows is None else layer_bias[rows]
                if bias is None:
                    value_bias = torch.zeros_like(part)  # a bias the case does not give is zero for the grader too
                elif tuple(part.shape) == tuple(bias.shape):
                    value_bias = torch.from_numpy(bias).to(part.dtype)
                else:
                    raise ValueError(f"{attr}.bias has shape {tuple(part.shape)}, expected {bias.shape}")
                if rows is None:
                    layer_bias.copy_(value_bias)
                else:
                    layer_bias[rows] = value_bias
            elif bias is not None:
                raise ValueError(f"{attr} has no bias, but this case needs one (qkv_bias=True, or out_proj)")
        return linear

    def read_weight(owner, attr, linear):
        tensor, _, rows, _ = weight_of(owner, attr)
        tensor = torch.Tensor.detach(tensor).cpu().float()
        tensor = tensor if rows is None else tensor[rows]
        return (tensor if linear else tensor.T).contiguous()

    def drive_call(case, namespace, folder, arrays, meta):
        fn = namespace[case["callee"]]
        args = [torch.from_numpy(arrays[a["array"]]).to(device) if "array" in a else a["value"]
                for a in case["args"]]
        with torch.no_grad():
            result = fn(*args)
        if case["returns"] == 1:
            return {"outputs": [save(folder, case["name"] + ".out0", result, "the result")]}
        if not isinstance(result, (tuple, list)) or len(result) != case["returns"]:
            raise TypeError(f"expected a tuple of {case['returns']} tensors, got {type(result).__name__}")
        return {"outputs": [save(folder, f"{case['name']}.out{i}", item, f"result [{i}]")
                            for i, item in enumerate(result)]}

    def drive_module(case, namespace, folder, arrays, meta):
        # Fills `meta` as it goes: what it learnt before an error (the weights' shapes) names the bug.
        module = namespace[case["callee"]](**case["kwargs"])
        # The buffers before the weights: a module that fails on a weight (no out_proj) is still judged on its mask.
        meta["buffers"] = [name for name, _ in module.named_buffers()]
        meta["state_dict"] = list(module.state_dict().keys())
        meta["weight_shapes"], linear = {}, {}
        for head, attr, key, bias_key in case["weights"]:
            owner = find_owner(module, head)
            try:
                tensor, _, rows, kind = weight_of(owner, attr)  # shapes in nn.Linear's (out, in) convention
                shape = [len(rows), tensor.shape[1]] if rows is not None else list(tensor.shape)
                as_linear = kind == "linear" or tensor_is_linear(tensor, arrays[key].shape)
                meta["weight_shapes"][f"{head}.{attr}"] = shape if as_linear else shape[::-1]
            except Exception as exc:  # recorded for the diagnosis, then raised by set_weight below
                meta["weight_shapes"][f"{head}.{attr}"] = f"{type(exc).__name__}: {exc}"
            linear[(head, attr)] = set_weight(owner, attr, arrays[key], arrays.get(bias_key) if bias_key else None)
        meta["parameters"] = int(sum(p.numel() for p in module.parameters()))
        module = module.to(device)
        module.train(case["train"])
        x = torch.from_numpy(arrays[case["input"]]).to(device)
        # Forward arguments beyond x (a key_padding_mask), and optionally d(sum(output * g))/dx as a second result.
        extra = {name: torch.from_numpy(arrays[key]).to(device)
                 for name, key in (case.get("forward_arrays") or {}).items()}
        torch.manual_seed(0)  # the same random stream as the grader's references replay (dropout placement)
        with torch.no_grad():
            output = module(x, **extra)
        meta["outputs"] = [save(folder, case["name"] + ".out0", output, "the forward output")]
        if case.get("grad_of"):
            x = x.clone().requires_grad_(True)
            with torch.enable_grad():
                (module(x, **extra) * torch.from_numpy(arrays[case["grad_of"]]).to(device)).sum().backward()
            meta["outputs"].append(save(folder, case["name"] + ".out1", x.grad, "the gradient"))
        # Later calls on the same instance (other lengths, .train()/.eval(), a changed batch): each one's output
        # (files .callN, beside .out0 and a gradient's .out1) or error is kept apart, so that behaviour depending
        # on earlier calls shows call by call.
        meta["calls"] = []
        for index, later in enumerate(case.get("calls") or [], start=1):
            try:
                module.train(later["train"])
                with torch.no_grad():
                    output = module(torch.from_numpy(arrays[later["input"]]).to(device))
                save(folder, f"{case['name']}.call{index}", output, "the forward output")
                meta["calls"].append({"ok": True})
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                meta["calls"].append({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
        for head, attr, key, _ in case["weights"]:  # the weights the module holds after its forward
            save(folder, f"{case['name']}.used.{head}.{attr}",
                 read_weight(find_owner(module, head), attr, linear[(head, attr)]), attr)
        return meta

    def drive_raises(case, namespace, folder, arrays, meta):
        build = namespace[case["callee"]]   # not defined: the case fails as not attempted, not as "raised KeyError"
        try:
            build(**case["kwargs"])
        except Exception as exc:
            return {"raised": type(exc).__name__, "raised_bases": [c.__name__ for c in type(exc).__mro__],
                    "error_text": str(exc)[:300]}
        return {"raised": None}

    def drive_answer(case, namespace, folder, arrays, meta):
        # JSON of plain data only: anything else (an object with a custom __eq__) cannot be dumped and scores 0.
        return {"answer": json.loads(json.dumps(namespace[case["callee"]], allow_nan=False))}

    def drive_parity(case, namespace, folder, arrays, meta):
        # The candidate classes are instructor code (renamed, without docstrings), defined apart from the
        # student's names; the student's test only sees the classes.
        import math

        classes = {"torch": torch, "nn": torch.nn, "F": F, "math": math, "__name__": "parity_candidates"}
        exec(case["kwargs"]["source"], classes)
        verdicts = {}
        for name in case["kwargs"]["classes"]:
            torch.manual_seed(0)
            try:
                verdict = namespace[case["callee"]](classes[name])
                verdicts[name] = {"type": type(verdict).__name__,
                                  "value": verdict if type(verdict) is bool else None}
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                verdicts[name] = {"error": describe(exc)}
        builtin_calls.clear()  # the candidates are instructor code; some are built on nn.MultiheadAttention
        return {"verdicts": verdicts}

    def drive_call_json(case, namespace, folder, arrays, meta):
        fn, results = namespace[case["callee"]], []
        for args in case["kwargs"]["calls"]:
            args = [getattr(torch, a) if isinstance(a, str) else a for a in args]  # dtype names
            try:
                value = fn(*args)
                plain = {k: float(v) for k, v in value.items()} if isinstance(value, dict) else (
                    value if isinstance(value, int) else float(value))
                results.append({"value": plain, "type": type(value).__name__,
                                "is_int": isinstance(value, int) and not isinstance(value, bool)})
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                results.append({"error": describe(exc)})
        return {"results": results}

    def drive_timing(case, namespace, folder, arrays, meta):
        import time

        class Sleeper(torch.nn.Module):
            # Sleeps its schedule's next duration per call (the last one repeats) and notes what it saw.
            def __init__(self, schedule):
                super().__init__()
                self.schedule, self.calls, self.grad = list(schedule), 0, []

            def forward(self, x):
                ms = self.schedule[min(self.calls, len(self.schedule) - 1)]
                self.calls += 1
                self.grad.append(torch.is_grad_enabled())
                time.sleep(ms / 1000.0)
                return x

        timer, results = namespace[case["callee"]], []
        for scenario in case["kwargs"]["scenarios"]:
            result = {"name": scenario["name"]}
            results.append(result)
            try:
                if scenario.get("cuda") == "real":
                    if not torch.cuda.is_available():
                        result["skipped"] = True
                        continue
                    from grader import diagnose_perf  # the course's GPU test double (a spin kernel)

                    module, result["work_ms"] = diagnose_perf.gpu_spin_module(scenario["work_ms"])
                    value = timer(module, torch.zeros(4, device="cuda"), scenario["warmup"], scenario["repeats"])
                elif scenario.get("cuda") == "simulated":
                    from grader import diagnose_perf  # an asynchronous device simulated on the CPU

                    result["work_ms"] = scenario["work_ms"]
                    with diagnose_perf.simulated_cuda(work_ms=scenario["work_ms"]) as (queued, x_on_cuda, _):
                        value = timer(queued, x_on_cuda, scenario["warmup"], scenario["repeats"])
                else:
                    module = Sleeper(scenario["schedule"])
                    x = torch.zeros(4, requires_grad=bool(scenario.get("requires_grad")))
                    value = timer(module, x, scenario["warmup"], scenario["repeats"])
                    result["calls"] = module.calls
                    result["grad_in_timed_calls"] = any(module.grad[scenario["warmup"]:])
                result["type"] = type(value).__name__
                result["is_float"] = isinstance(value, float)
                result["value"] = float(value)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                result["error"] = describe(exc)
        return {"scenarios": results}

    drivers = {"call": drive_call, "module": drive_module, "raises": drive_raises, "answer": drive_answer,
               "parity": drive_parity, "call_json": drive_call_json, "timing": drive_timing}

    def write_json(path, payload):
        with open(path, "w") as handle:
            json.dump(payload, handle, default=str)

    def run_case(case, namespace, folder, settings):
        """Run one case under the weight layout ``settings`` (see ``layout``) and write its JSON; returns the
        KeyboardInterrupt that stopped it, or None."""
        builtin_calls.clear()
        layout.update(settings)
        seen.update(fused=False, square_tensor=False)
        interrupted, meta = None, {}
        try:
            torch.manual_seed(0)
            arrays = {key: decode(spec) for key, spec in case["arrays"].items()}
            meta.update(drivers[case["driver"]](case, namespace, folder, arrays, meta))
            meta["ok"] = True
        except KeyboardInterrupt as exc:  # the pipeline's time limit: record it, then let it stop the cell
            meta.update(ok=False, error="interrupted: the case ran past the time limit")
            interrupted = exc
        except BaseException as exc:  # one failing case must not hide the others
            name = case["callee"]
            missing = isinstance(exc, KeyError) and exc.args == (name,)
            text = f"{name} is not defined" if missing else f"{type(exc).__name__}: {exc}".rstrip(": ")
            if isinstance(exc, NotImplementedError):
                text = f"{name} is not written yet (it raises NotImplementedError)"
            meta.update(ok=False, error=text[:1500])
        meta["builtin_attention_calls"] = dict(builtin_calls)
        meta["device"] = str(device)
        if seen["fused"] or seen["square_tensor"]:
            meta["layouts"] = dict(seen)
        write_json(os.path.join(folder, case["name"] + ".json"), meta)
        return interrupted

    def run_task(task, cases_json, namespace):
        cases = json.loads(cases_json)
        folder = os.path.join(root, task)
        os.makedirs(folder, exist_ok=True)
        for case in cases:
            heads = int((case.get("kwargs") or {}).get("num_heads") or 1)
            interrupted = run_case(case, namespace, folder, {"fused": "qkv_first", "tensor": "matrix",
                                                             "num_heads": heads})
            # The other correct layouts this module's weights allow, each as a case of its own ("<name>@<layout>").
            others = []
            if interrupted is None and seen["fused"] and heads > 1:
                others.append(("per_head", {"fused": "per_head"}))
            if interrupted is None and seen["square_tensor"]:
                others.append(("linear", {"tensor": "linear"}))
            for label, settings in others:
                interrupted = run_case({**case, "name": f"{case['name']}@{label}"}, namespace, folder,
                                       {"fused": "qkv_first", "tensor": "matrix", "num_heads": heads, **settings})
                if interrupted is not None:
                    break
            if interrupted is not None:
                raise interrupted

    reset()
    # Full float32 precision for the probes, whatever the student set for speed (TF32 matmuls on a GPU are off
    # by ~1e-3, more than the tolerance the grader compares with).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    tripwire(F, "scaled_dot_product_attention", "F.scaled_dot_product_attention")
    tripwire(F, "multi_head_attention_forward", "F.multi_head_attention_forward")
    tripwire(torch.nn.MultiheadAttention, "forward", "nn.MultiheadAttention")
    return types.SimpleNamespace(run_task=run_task, root=root)


_mha_probe = _mha_probe_build()
