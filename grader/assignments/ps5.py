"""ps5, performance (chapter 9): tasks, probe cases, answer key.

``timing``: the student's timer measures test doubles whose sleep schedules come from the seed; ``flops`` and
``memory`` are checked against PyTorch's own counters (``FlopCounterMode`` and ``Tensor.nbytes`` on the ``meta``
device), never against a formula shipped with the course; ``anomaly`` (an answer task) against ``answer_key.json``.
"""
from __future__ import annotations

from grader.assignments.spec import Assignment, Task
from grader.verify.cases import Case, rng_for


def cases(seed: int, source_nb=None, keys: dict | None = None) -> list:
    rng = rng_for(seed, "timing", "schedules")
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
    found = [Case("timing", "schedules", "timing", "time_forward", kwargs={"scenarios": scenarios},
                  check="timing", params={"steady": steady})]
    configs = [[8, 1024, 768, 768, 12], [1, 7, 12, 12, 1]]
    for _ in range(3):
        heads = int(rng.integers(1, 9))
        configs.append([int(rng.integers(1, 5)), int(rng.integers(3, 40)), int(rng.integers(4, 50)),
                        heads * int(rng.integers(1, 9)), heads])
    found.append(Case("flops", "configs", "call_json", "attention_flops", kwargs={"calls": configs},
                      check="flops"))
    dtypes = ["float32", "float16", "bfloat16", "float64"]
    calls = [[8, 1024, 12, "float32"], [8, 1024, 12, "float16"]]
    for dtype in dtypes:
        calls.append([int(rng.integers(1, 5)), int(rng.integers(2, 33)), int(rng.integers(1, 9)), dtype])
    found.append(Case("memory", "configs", "call_json", "attention_weights_bytes", kwargs={"calls": calls},
                      check="memory"))
    if keys and "anomaly" in keys:
        key = keys["anomaly"]
        found.append(Case("anomaly", "answer", "answer", "anomaly_answer", check="answer",
                          params={"answer": {"kind": "choice", "answer": key["answer"],
                                             "choices": list(key["choices"]), "hint": key.get("hint", "")}}))
    return found


ASSIGNMENT = Assignment(
    "ps5",
    "Performance",
    ("book/09_performance_lab",),
    (
        Task("timing", 3, ("time_forward",),
             "time_forward(module, x, warmup=5, repeats=20) -> median milliseconds; warm-up, CUDA sync",
             from_scratch=False),
        Task("flops", 2, ("attention_flops",),
             "attention_flops(batch, num_tokens, d_in, d_out, num_heads) -> {'projections', 'attention'}",
             from_scratch=False),
        Task("memory", 2, ("attention_weights_bytes",),
             "attention_weights_bytes(batch, num_tokens, num_heads, dtype) -> bytes of the weights tensor",
             from_scratch=False),
        Task("anomaly", 2, ("anomaly_answer",),
             "anomaly_answer: the letter of the explanation of a timing anomaly", kind="answer",
             from_scratch=False),
    ),
    cases=cases,
    keyed_tasks=("anomaly",),
)
