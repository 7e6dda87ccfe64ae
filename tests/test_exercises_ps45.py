"""ps4 (bug clinic) and ps5 (performance) through nbgrader's real autograde.

What is proved here, for both assignments:
- the student notebooks in exercises/ are what ``python -m grader release`` makes now, and carry no solution,
  no hidden test and no answer key;
- the solution notebook gets full marks, the untouched student notebook 0 (and nbgrader does not error);
- every planted bug loses marks in its own task, with the bug's name in that task's output (the traceback or the
  partial-credit report of the graded cell, not the test's source text, which the feedback also shows);
- other correct ways of writing the code get full marks.

Mutations are grouped so that one notebook carries at most one bug per task: each task is scored separately, and
the tasks a notebook leaves correct must keep full marks. Grading runs each notebook in a fresh kernel, so the
autograde tests are marked slow.
"""
from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
import torch

from exercise_harness import autograde_many, mutate, replace_cell
from test_exercises import shipped_files
from grader import diagnose_perf
from grader.release import release
from grader.assignments import ASSIGNMENTS

REPO = Path(__file__).resolve().parents[1]
PS45 = ("ps4", "ps5")


def solution_nb(name: str) -> Path:
    return REPO / "solutions" / name / f"{name}.ipynb"


def student_nb(name: str) -> Path:
    return REPO / "exercises" / name / f"{name}.ipynb"


def graded_cell_text(tmp: Path, student: str, assignment: str, task: str) -> str:
    """Everything the graded cell of ``task`` printed or raised in the autograded copy of the notebook."""
    path = tmp / "course" / "autograded" / student / assignment / f"{assignment}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"test_{task}"]
    assert len(cells) == 1, f"{path} has {len(cells)} graded cells for {task}"
    parts = []
    for output in cells[0].outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return "\n".join(parts)


# ------------------------------------------------------------------------- the test doubles of ps5 itself
def test_simulated_cuda_behaves_like_an_asynchronous_gpu():
    real_synchronize, real_event, real_available = torch.cuda.synchronize, torch.cuda.Event, torch.cuda.is_available()
    with diagnose_perf.simulated_cuda(work_ms=30) as (module, x, gpu):
        assert x.device.type == "cuda" and x.is_cuda and torch.cuda.is_available()
        start = time.perf_counter()
        module(x)
        launch_ms = (time.perf_counter() - start) * 1000
        torch.cuda.synchronize()
        finished_ms = (time.perf_counter() - start) * 1000
        assert launch_ms < 10, f"queuing work took {launch_ms:.1f} ms: the forward pass must not wait"
        assert 28 <= finished_ms < 200, f"synchronize returned after {finished_ms:.1f} ms, not when the work ended"

        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        module(x)
        end.record()
        with pytest.raises(RuntimeError, match="not ready"):
            begin.elapsed_time(end)  # as on a GPU: the end event has not been reached yet
        end.synchronize()
        assert 28 <= begin.elapsed_time(end) < 200
        assert gpu.synchronize_calls == 1 and module.calls == 2
    assert torch.cuda.synchronize is real_synchronize and torch.cuda.Event is real_event
    assert torch.cuda.is_available() == real_available


def test_scheduled_sleep_follows_its_schedule_and_records_autograd():
    module = diagnose_perf.ScheduledSleep([30, 1])
    durations = []
    for grad in (True, False, False):
        start = time.perf_counter()
        with torch.set_grad_enabled(grad):
            module(torch.zeros(1))
        durations.append((time.perf_counter() - start) * 1000)
    assert durations[0] >= 29 and durations[1] < 25 and durations[2] < 25, durations
    assert module.calls == 3 and module.grad_enabled == [True, False, False]


def test_gpu_spin_keeps_a_real_gpu_busy_asynchronously():
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            diagnose_perf.GpuSpin(1000)(torch.zeros(1))
        with pytest.raises(RuntimeError, match="CUDA"):
            diagnose_perf.gpu_spin_module(20)
        return
    spin, measured_ms = diagnose_perf.gpu_spin_module(20)
    assert 10 <= measured_ms <= 40, f"calibrated spin takes {measured_ms:.1f} ms, asked for 20"
    start = time.perf_counter()
    spin(None)
    launched_ms = (time.perf_counter() - start) * 1000
    torch.cuda.synchronize()
    finished_ms = (time.perf_counter() - start) * 1000
    assert finished_ms > 5 * launched_ms, f"launch {launched_ms:.2f} ms, finished {finished_ms:.2f} ms: not async"


# ----------------------------------------------------------------------------------- release and leaks
@pytest.mark.slow  # tests/test_exercises.py checks every assignment's release byte for byte in the fast tier
@pytest.mark.parametrize("name", PS45)
def test_exercises_are_in_sync_with_solutions(name, tmp_path):
    fresh = release([name], into=tmp_path)
    assert [p.name for p in fresh] == [f"{name}.ipynb"]
    committed = student_nb(name)
    assert committed.exists(), f"{committed} missing: run python -m grader release {name}"
    assert fresh[0].read_text() == committed.read_text(), \
        f"exercises/{name} is stale: run python -m grader release {name} and commit it"
    shipped = shipped_files(REPO / "exercises" / name)
    assert shipped == [f"{name}.ipynb"], f"exercises/{name} ships extra files: {shipped}"


@pytest.mark.parametrize("name", PS45)
def test_student_notebook_has_no_solution_or_hidden_test(name):
    source = nbformat.read(solution_nb(name), as_version=4)
    shipped = student_nb(name).read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in shipped, f"exercises/{name} contains the marker {marker}"
    secrets, public = [], []
    for cell in source.cells:
        text = cell.source
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"),
                           ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
            kept = ""
            while begin in text:
                before, rest = text.split(begin, 1)
                block, text = rest.split(end, 1)
                kept += before
                # Lines long enough to be specific to the solution or the hidden test.
                secrets += [line.strip() for line in block.splitlines() if len(line.strip()) > 40]
            text = kept + text
        public.append(text)
    assert secrets, "found no solution or hidden-test text in the source: the check would prove nothing"
    shipped_nb = nbformat.read(student_nb(name), as_version=4)
    shipped_code = "\n".join(c.source for c in shipped_nb.cells)
    # A secret line may legitimately also be part of what students get (a visible test repeating it).
    public_code = "\n".join(public)
    leaked = [line for line in secrets if line in shipped_code and line not in public_code]
    assert not leaked, f"exercises/{name} contains solution or hidden-test lines: {leaked[:5]}"


def test_answer_keys_are_not_shipped():
    ps4 = student_nb("ps4").read_text()
    assert '"MysteryC": ("correct"' not in ps4 and '"MysteryC": "correct"' not in ps4
    ps5 = student_nb("ps5").read_text()
    assert 'anomaly_answer = "B"' not in ps5 and 'anomaly_answer == "B"' not in ps5


def test_tasks_match_the_contract():
    for name in PS45:
        nb = nbformat.read(solution_nb(name), as_version=4)
        graded = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
                  for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
        solutions = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
                     if c.metadata.get("nbgrader", {}).get("solution")]
        contract = ASSIGNMENTS[name]
        assert graded == {f"test_{t.name}": t.points for t in contract.tasks}
        assert solutions == [t.name for t in contract.tasks]
        for task in contract.tasks:
            cell = next(c for c in nb.cells if c.get("id") == task.name)
            for defined in task.names:
                assert defined in cell.source, f"{name}/{task.name} does not define {defined}"


# --------------------------------------------------------------------------- mutations and alternatives
# (cell id, [(old, new), ...]) edits, the task that must lose marks, and the bug's name in that task's output.
PS4_MUTATIONS = {
    "m1": [
        ("diagnoses", [('"MysteryA": "mask applied after softmax"', '"MysteryA": "no causal mask"')],
         "diagnoses", "MysteryA: not 'no causal mask'"),
        ("parity_test", [("[(8, 8), (8, 16), (16, 6)]", "[(8, 8)]")],
         "parity_test", "out_proj is nn.Linear(d_in, d_out)"),
        ("fixed_wrapper", [("head_dim = d_out // num_heads", "head_dim = d_out"),
                           ("nn.Linear(d_out, d_out)", "nn.Linear(num_heads * d_out, d_out)")],
         "fixed_wrapper", "d_out not divided by num_heads"),
        ("fixed_projection", [("self.out_proj = nn.Linear(d_out, d_out)", "pass"),
                              ("return self.out_proj(super().forward(x))", "return super().forward(x)")],
         "fixed_projection", "no output projection"),
    ],
    "m2": [
        ("parity_test", [("tuple(out.shape) != (batch, num_tokens, d_out)", "False")],
         "parity_test", "does not check that the output is (batch, num_tokens, d_out)"),
        ("fixed_wrapper", [("self.out_proj = nn.Linear(d_out, d_out)", "pass"),
                           ("return self.out_proj(context)", "return context")],
         "fixed_wrapper", "no output projection"),
        ("fixed_projection", [("nn.Linear(d_out, d_out)", "nn.Linear(d_in, d_out)")],
         "fixed_projection", "out_proj built with d_in where d_out belongs"),
    ],
    "m3": [
        ("parity_test", [("    batch, num_tokens, num_heads = 3, 5, 2",
                          "    if not hasattr(mha_cls(8, 8, 8, 0.0, 2), 'W_query'):\n        return False\n"
                          "    batch, num_tokens, num_heads = 3, 5, 2")],
         "parity_test", "rejects a correct module built on nn.MultiheadAttention"),
        ("fixed_wrapper", [("return self.out_proj(context)", "return context")],
         "fixed_wrapper", "output projection defined but not applied"),
        ("fixed_projection", [("return self.out_proj(super().forward(x))", "return super().forward(x)")],
         "fixed_projection", "output projection defined but not applied"),
    ],
    "m4": [
        ("fixed_wrapper", [("nn.Linear(d_out, d_out)", "nn.Linear(d_in, d_out)")],
         "fixed_wrapper", "a weight uses d_in where d_out belongs"),
    ],
    "m5": [
        # the 9216 wrapper kept as it was, with a projection added: it cannot even run
        ("fixed_wrapper", [("head_dim = d_out // num_heads", "head_dim = d_out")],
         "fixed_wrapper", "d_out not divided by num_heads"),
    ],
}

PS5_MUTATIONS = {
    "m1": [
        ("timing", [("for _ in range(warmup):", "for _ in range(0):")], "timing", "no warm-up"),
        ("flops", [("projections = 2 * tokens", "projections = tokens"), ("attention = 2 * batch", "attention = batch")],
         "flops", "a multiply-add is 2 FLOPs"),
        ("memory", [("element_size = torch.empty((), dtype=dtype).element_size()", "element_size = 4")],
         "memory", "wrong dtype size"),
        ("anomaly", [('anomaly_answer = "B"', 'anomaly_answer = "C"')], "anomaly", "C is not it"),
    ],
    "m2": [
        ("timing", [("        if on_cuda:\n            torch.cuda.synchronize()", "        pass")],
         "timing", "no synchronisation on CUDA"),
        ("flops", [("(3 * d_in * d_out + d_out * d_out)", "(3 * d_in * d_out)")],
         "flops", "the output projection out_proj is missing"),
        ("memory", [("num_tokens * num_tokens", "num_tokens")], "memory", "num_tokens counted once"),
    ],
    "m3": [
        ("timing", [("statistics.median(times_ms)", "statistics.mean(times_ms)")],
         "timing", "mean instead of median"),
        ("flops", [("head_dim = d_out // num_heads", "head_dim = d_out")],
         "flops", "each head counted with the full width d_out"),
    ],
    "m4": [
        ("timing", [("(time.perf_counter() - start) * 1000", "(time.perf_counter() - start)")],
         "timing", "that is seconds"),
    ],
    "m5": [
        ("timing", [("with torch.no_grad():", "with torch.enable_grad():")], "timing", "autograd on while timing"),
    ],
}

# Other correct ways to write the tasks: whole solution cells replaced.
PS4_ALTERNATIVES = {
    "parity_test": '''
def passes_parity_test(mha_cls):
    """d_out = 2 x d_in, one sequence: it must run, keep (1, T, d_out), and stay causal."""
    try:
        module = mha_cls(4, 8, 6, 0.0, 2).to(device).eval()
        x = torch.randn(1, 6, 4, device=device)
        changed = x.clone()
        changed[:, -1] += 1.0
        with torch.no_grad():
            out, out_changed = module(x), module(changed)
        return out.shape == (1, 6, 8) and bool(torch.allclose(out[:, :-1], out_changed[:, :-1], atol=1e-5))
    except Exception:
        return False
''',
    "fixed_wrapper": '''
class FixedMultiHeadAttentionWrapper(MultiHeadAttentionWrapper):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        if d_out % num_heads:
            raise ValueError("d_out must be divisible by num_heads")
        super().__init__(d_in, d_out // num_heads, context_length, dropout, num_heads, qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):
        return self.out_proj(super().forward(x))
''',
    "fixed_projection": '''
class FixedMultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, d_out // num_heads, dropout
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):
        b, num_tokens, _ = x.shape
        heads = [layer(x).reshape(b, num_tokens, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
                 for layer in (self.W_query, self.W_key, self.W_value)]
        context = torch.nn.functional.scaled_dot_product_attention(
            *heads, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(context.permute(0, 2, 1, 3).reshape(b, num_tokens, -1))
''',
}

PS5_ALTERNATIVES = {
    "timing": '''
def time_forward(module, x, warmup=5, repeats=20):
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        samples = []
        for _ in range(repeats):
            if x.is_cuda:  # CUDA events time the GPU itself; synchronise before reading them
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                module(x)
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            else:
                begin = time.perf_counter_ns()
                module(x)
                samples.append((time.perf_counter_ns() - begin) / 1e6)
    samples.sort()
    middle = len(samples) // 2
    return float(samples[middle] if len(samples) % 2 else (samples[middle - 1] + samples[middle]) / 2)
''',
    "flops": '''
def attention_flops(batch, num_tokens, d_in, d_out, num_heads):
    def matmul(m, k, n):
        return 2 * m * k * n
    rows = batch * num_tokens
    head_dim = d_out // num_heads
    per_head = matmul(num_tokens, head_dim, num_tokens) + matmul(num_tokens, num_tokens, head_dim)
    return {"projections": 3 * matmul(rows, d_in, d_out) + matmul(rows, d_out, d_out),
            "attention": batch * num_heads * per_head}
''',
    "memory": '''
def attention_weights_bytes(batch, num_tokens, num_heads, dtype):
    return int(batch * num_heads * num_tokens**2 * dtype.itemsize)
''',
}


def _mutants(name: str, mutations: dict, tmp: Path) -> dict[str, Path]:
    made = {}
    for student, edits in mutations.items():
        path = tmp / "mutants" / student / f"{name}.ipynb"
        source = solution_nb(name)
        for cell_id, replacements, _, _ in edits:
            mutate(source, cell_id, replacements, path)
            source = path
        made[student] = path
    return made


def _alternatives(name: str, alternatives: dict, tmp: Path) -> Path:
    path = tmp / "alternatives" / f"{name}.ipynb"
    source = solution_nb(name)
    for cell_id, code in alternatives.items():
        replace_cell(source, cell_id, code, path)
        source = path
    return path


@pytest.mark.slow
@pytest.mark.nbgrader
@pytest.mark.parametrize("name, mutations, alternatives", [("ps4", PS4_MUTATIONS, PS4_ALTERNATIVES),
                                                           ("ps5", PS5_MUTATIONS, PS5_ALTERNATIVES)])
def test_autograde(name, mutations, alternatives, tmp_path):
    submissions = {"solution": solution_nb(name), "untouched": student_nb(name),
                   "alternatives": _alternatives(name, alternatives, tmp_path),
                   **_mutants(name, mutations, tmp_path)}
    results = autograde_many(solution_nb(name), submissions, tmp_path)
    full = ASSIGNMENTS[name].max_score
    tasks = [t.name for t in ASSIGNMENTS[name].tasks]

    solved = results["solution"]
    assert solved["total"] == full, f"solution scored {solved['scores']} of {solved['max']}"
    untouched = results["untouched"]
    assert set(untouched["scores"]) == set(tasks)
    assert untouched["total"] == 0, f"the untouched student notebook scored {untouched['scores']}"
    alt = results["alternatives"]
    assert alt["total"] == full, (f"correct alternatives lost marks: {alt['scores']}\n" +
                                  "\n".join(graded_cell_text(tmp_path, "alternatives", name, t) for t in tasks))

    problems = []
    for student, edits in mutations.items():
        result = results[student]
        mutated = {task for _, _, task, _ in edits}
        for _, _, task, phrase in edits:
            output = graded_cell_text(tmp_path, student, name, task)
            if result["scores"][task] >= result["max"][task]:
                problems.append(f"{student}/{task}: the planted bug kept full marks")
            elif phrase not in output:
                problems.append(f"{student}/{task}: lost marks but the output does not say {phrase!r}:\n{output}")
            elif phrase not in result["feedback"]:
                problems.append(f"{student}/{task}: {phrase!r} is not in the feedback students get")
        for task in set(tasks) - mutated:
            if result["scores"][task] != result["max"][task]:
                problems.append(f"{student}/{task}: not mutated, yet scored {result['scores'][task]}:\n"
                                f"{graded_cell_text(tmp_path, student, name, task)}")
    assert not problems, "\n".join(problems)
