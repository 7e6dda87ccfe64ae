"""Scores that student code cannot fake (issue 6).

The cheat corpus (tests/cheats/, one file per attempt) goes through the real ``python -m grader grade`` together
with honest students, in one run: each cheat must score 0 on what it attacks and/or raise the flag it should,
every task it does not attack keeps the honest score, and honest submissions keep exactly their scores. Where a
cheat fools the notebook's own tests (run inside the student's kernel), the test also checks that they did pass:
the attack works on in-kernel tests, and the verified score ignores them.

The other tests need no kernel: junk in the probe folder scores 0 without crashing the grader, results are bound
to the seed, and the static scan flags what it should and nothing in honest notebooks.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import numpy as np
import pytest

from grader.assignments import ASSIGNMENTS
from grader.verify import course_cell_sources, integrity_flags, plan_probes, verify_outputs
from grader.verify.reference import expected

REPO = Path(__file__).resolve().parents[1]


def make_cases(assignment: str, seed: int) -> list:
    return ASSIGNMENTS[assignment].probe_cases(seed, REPO / "solutions" / assignment / f"{assignment}.ipynb")


CHEATS = Path(__file__).with_name("cheats")
PS1 = ASSIGNMENTS["ps1"]
FULL = {task.name: float(task.points) for task in PS1.tasks}


@dataclass
class Cheat:
    name: str
    assignment: str = "ps1"  # the corpus is graded in the ps1 run; others join their assignment's honest run
    cells: list[tuple[str, str]] = field(default_factory=list)  # (where, code)
    zero: set[str] = field(default_factory=set)
    any: set[str] = field(default_factory=set)  # tasks whose score depends on the machine (not checked)
    flags: list[str] = field(default_factory=list)
    tests_pass: set[str] = field(default_factory=set)


def parse_cheat(path: Path) -> Cheat:
    cheat = Cheat(path.stem)
    where, lines = None, []
    for line in path.read_text().splitlines() + ["# %% <eof>"]:
        if line.startswith("# %%"):
            if where:
                cheat.cells.append((where, "\n".join(lines).strip("\n")))
            where, lines = line[4:].strip(), []
            continue
        if where is None:
            key, _, value = line.lstrip("# ").partition(":")
            if key == "assignment":
                cheat.assignment = value.strip()
            elif key == "expect-zero":
                cheat.zero |= {v.strip() for v in value.split(",")}
            elif key == "expect-any":
                cheat.any |= {v.strip() for v in value.split(",")}
            elif key == "expect-flag":
                cheat.flags.append(value.strip())
            elif key == "expect-tests-pass":
                cheat.tests_pass |= {v.strip() for v in value.split(",")}
        else:
            lines.append(line)
    every = {task.name for task in ASSIGNMENTS[cheat.assignment].tasks}
    cheat.zero = every if "all" in cheat.zero else cheat.zero
    cheat.any = every if "all" in cheat.any else cheat.any
    return cheat


CHEAT_FILES = [parse_cheat(p) for p in sorted(CHEATS.glob("[0-9][0-9]_*.py"))]
CORPUS = [cheat for cheat in CHEAT_FILES if cheat.assignment == "ps1"]
OTHER_CHEATS = {a: [c for c in CHEAT_FILES if c.assignment == a] for a in ASSIGNMENTS if a != "ps1"}


def strip_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines()
                     if line.strip() not in {"### BEGIN SOLUTION", "### END SOLUTION"})


def honest_notebook(assignment: str = "ps1") -> nbformat.NotebookNode:
    """The released notebook with every task cell filled in with the instructor's solution code (an honest
    student who got everything right)."""
    release = nbformat.read(REPO / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)
    solution = {c.get("id"): c.source for c in nbformat.read(
        REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4).cells}
    for cell in release.cells:
        if (cell.metadata.get("nbgrader") or {}).get("solution"):
            cell.source = strip_markers(solution[cell.id])
    return release


def with_cheat(cheat: Cheat) -> nbformat.NotebookNode:
    nb = honest_notebook(cheat.assignment)
    for where, code in cheat.cells:
        kind, _, target = where.partition(":")
        new = nbformat.v4.new_code_cell(code)
        ids = [c.get("id") for c in nb.cells]
        if kind == "task":
            nb.cells[ids.index(target)].source = code
        elif kind == "after":
            nb.cells.insert(ids.index(f"test_{target}") + 1, new)
        elif kind == "start":
            nb.cells.insert(ids.index("setup") + 1, new)
        elif kind == "end":
            nb.cells.append(new)
        else:
            raise ValueError(f"{cheat.name}: unknown cell place {where!r}")
    return nb


ALTERNATIVE = {  # honest, correct, written differently from the solution: einsum and one fused projection
    "attention_scores": "def attention_scores(queries, keys):\n"
                        "    return torch.einsum('...qd,...kd->...qk', queries, keys)\n",
    "scaled_dot_product": "def scaled_dot_product(queries, keys, values):\n"
                          "    scores = attention_scores(queries, keys) * keys.shape[-1] ** -0.5\n"
                          "    weights = (scores - scores.amax(-1, keepdim=True)).exp()\n"
                          "    weights = weights / weights.sum(-1, keepdim=True)\n"
                          "    return torch.einsum('...qk,...kd->...qd', weights, values), weights\n",
    "self_attention": "class SelfAttention(nn.Module):\n"
                      "    def __init__(self, d_in, d_out, qkv_bias=False):\n"
                      "        super().__init__()\n"
                      "        self.W_qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)\n\n"
                      "    def forward(self, x):\n"
                      "        queries, keys, values = self.W_qkv(x).chunk(3, dim=-1)\n"
                      "        return scaled_dot_product(queries, keys, values)[0]\n",
}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[dict, dict]:
    """One real grading run of the whole corpus plus honest students: (grades by student, tasks by student)."""
    root = tmp_path_factory.mktemp("cheating")
    submissions, out = root / "submissions", root / "out"
    if os.environ.get("MHA_CHEAT_OUT"):  # while working on these tests: grade into (and reuse) this folder
        root = Path(os.environ["MHA_CHEAT_OUT"])
        submissions, out = root / "submissions", root / "out"
        if (out / "grades.csv").exists():
            return _read_results(out)
    notebooks = {cheat.name: with_cheat(cheat) for cheat in CORPUS}
    notebooks["honest"] = honest_notebook()
    notebooks["blank"] = nbformat.read(REPO / "exercises" / "ps1" / "ps1.ipynb", as_version=4)
    alternative = honest_notebook()
    for cell in alternative.cells:
        if cell.get("id") in ALTERNATIVE:
            cell.source = ALTERNATIVE[cell.id]
    notebooks["honest_alternative"] = alternative
    for student, nb in notebooks.items():
        (submissions / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, submissions / student / "ps1.ipynb")
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "ps1", str(submissions), "--out", str(out),
                           "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=1500,
                          env=dict(os.environ, PYTHONHASHSEED="0"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    grades, tasks = _read_results(out)
    assert set(grades) == set(notebooks), f"missing rows: {set(notebooks) - set(grades)}"
    return grades, tasks


def _read_results(out: Path) -> tuple[dict, dict]:
    grades = {row["student_id"]: row for row in read_csv(out / "grades.csv")}
    tasks: dict[str, dict] = {}
    for row in read_csv(out / "tasks.csv"):
        tasks.setdefault(row["student_id"], {})[row["task"]] = row
    return grades, tasks


def test_corpus_has_the_issue_cheats_and_every_cheat_expects_something():
    assert len(CHEAT_FILES) >= 10
    names = {cheat.name for cheat in CORPUS}
    assert {"01_always_equal", "02_run_cell_drops_asserts", "03_nbgrader_execution"} <= names
    for cheat in CHEAT_FILES:
        tasks = {task.name for task in ASSIGNMENTS[cheat.assignment].tasks}
        assert cheat.cells, f"{cheat.name} changes nothing"
        assert cheat.zero or cheat.flags, f"{cheat.name} expects neither a zero nor a flag"
        assert cheat.zero <= tasks and cheat.tests_pass <= tasks and cheat.any <= tasks, cheat.name


@pytest.mark.slow
def test_honest_submissions_keep_their_scores(graded):
    grades, tasks = graded
    for student in ("honest", "honest_alternative"):
        assert grades[student]["status"] == "graded", grades[student]
        assert {t: float(r["score"]) for t, r in tasks[student].items()} == FULL, tasks[student]
        assert grades[student]["flags"] == "", f"{student} was flagged: {grades[student]['flags']}"
    assert float(grades["blank"]["score"]) == 0.0 and grades["blank"]["flags"] == ""


@pytest.mark.slow
@pytest.mark.parametrize("cheat", CORPUS, ids=lambda c: c.name)
def test_cheat_ends_as_designed(graded, cheat):
    grades, tasks = graded
    check_cheat(cheat, grades[cheat.name], tasks[cheat.name], FULL)


def check_cheat(cheat: Cheat, row: dict, task_rows: dict, full: dict[str, float]) -> None:
    scores = {t: float(r["score"]) for t, r in task_rows.items()}
    for task, points in full.items():
        if task in cheat.any:
            continue
        wanted = 0.0 if task in cheat.zero else points
        assert scores[task] == wanted, f"{task}: scored {scores[task]}, expected {wanted}: " \
                                       f"{task_rows[task]['message']}"
    for pattern in cheat.flags:
        assert re.search(pattern, row["flags"]), f"no flag matching {pattern!r} in {row['flags']!r}"
    for task in cheat.tests_pass:
        # The attack fooled the notebook's own test cell; only the verification stage caught it.
        assert "(notebook tests: passed)" in task_rows[task]["message"], task_rows[task]


# ------------------------------------------------------------------------------------------ no kernel needed
def write_perfect_probe(assignment: str, seed: int, probe: Path) -> None:
    """What a correct kernel writes for ``seed``: outputs equal to the reference, files as the protocol says."""
    for case in make_cases(assignment, seed):
        folder = probe / case.task
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"ok": True}
        if case.check == "reference":
            for index, array in enumerate(expected(case)):
                np.save(folder / f"{case.name}.out{index}.npy", np.asarray(array).astype(
                    bool if array.dtype == bool else np.float32), allow_pickle=False)
        if case.check == "dropout_pattern":
            # Row t of a correct training-mode output: each visible entry dropped (0) or 1/(t+1) scaled by 2.
            rows = np.tril(np.ones((8, 8))) / np.arange(1, 9)[:, None]
            kept = np.arange(64).reshape(8, 8) % 3 > 0
            np.save(folder / f"{case.name}.out0.npy", (rows * 2 * kept)[None].astype(np.float32))
        if case.check == "dropout_placement":
            # Dropout on the weights with all-ones values: one value per row within each head's block,
            # (kept keys) x 2 / (t + 1); here row t keeps all but one of its t + 1 keys (row 0 keeps its one).
            visible = np.arange(1, 9)
            kept = visible - (visible > 1)
            np.save(folder / f"{case.name}.out0.npy",
                    np.repeat((kept * 2 / visible)[:, None], 8, axis=1)[None].astype(np.float32))
        if case.check == "calls":
            # A correct module: every call equals the reference for its own input.
            from grader.verify.reference import call_cases

            for index, call in enumerate(call_cases(case)):   # the first call's output, then each later call's
                np.save(folder / f"{case.name}.{'out0' if index == 0 else f'call{index}'}.npy",
                        expected(call)[0].astype(np.float32))
            meta["calls"] = [{"ok": True} for _ in case.calls]
        if case.check == "eval_twice":
            # Dropout off in eval mode: both calls give the reference (all ones on these inputs).
            for index in range(1 + len(case.calls)):
                np.save(folder / f"{case.name}.{'out0' if index == 0 else f'call{index}'}.npy",
                        expected(case)[0].astype(np.float32))
            meta["calls"] = [{"ok": True} for _ in case.calls]
        if case.check == "raises":
            meta.update(raised="ValueError", raised_bases=["ValueError", "Exception"])
        if case.driver == "module":
            meta.update(buffers=["mask"], state_dict=["mask"], parameters=case.params["parameters"])
        (folder / f"{case.name}.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("assignment", ["ps1", "ps2", "ps3"])
def test_results_are_bound_to_the_seed(tmp_path, assignment):
    write_perfect_probe(assignment, 11, tmp_path)
    maximum = ASSIGNMENTS[assignment].max_score
    right = verify_outputs(ASSIGNMENTS[assignment], None, 11, tmp_path)
    assert sum(score for score, _, _ in right.values()) == maximum, right
    # The same files judged against another seed's inputs: every number is now wrong.
    other = verify_outputs(ASSIGNMENTS[assignment], None, 12, tmp_path)
    seeded = [t for t in other if t != "causal_mask"]  # the only task whose input is not random
    # Some cases take no seeded input: training-mode dropout (the identity, zeros and ones, see grader.verify.cases)
    # and the ValueError for an indivisible d_out. Under credit by check a task keeps the points of a check made
    # only of such cases, and nothing else.
    unseeded = {c.name for c in make_cases(assignment, 11)
                if c.driver == "raises" or c.check in ("dropout_pattern", "dropout_placement", "eval_twice")}
    # The mask-buffer check is judged on the module's structure (its buffers, recorded by the probe before the
    # weights are set), not on the seeded numbers, so that a module with another bug keeps it (issue 22).
    fixed_inputs = {t.name: sum(c.points for c in t.checks if set(c.cases) <= unseeded or c.name == "mask_buffer")
                    for t in ASSIGNMENTS[assignment].tasks}
    assert all(other[t][0] == fixed_inputs[t] for t in seeded), other


def test_junk_in_the_probe_folder_scores_zero_without_crashing(tmp_path):
    probe = tmp_path / "_probe"
    (probe / "attention_scores").mkdir(parents=True)
    junk = probe / "attention_scores"
    (junk / "square.json").write_text(json.dumps({"ok": True}))
    np.save(junk / "square.out0.npy", np.array([object()], dtype=object), allow_pickle=True)  # a pickle
    (junk / "batched_rectangular.json").write_text("[" * 100000)  # deep nesting
    os.symlink("/etc/passwd", probe / "scaled_dot_product")  # a folder that is a link
    (probe / "self_attention").mkdir()
    os.mkfifo(probe / "self_attention" / "d_in_ne_d_out.json")  # would block a naive reader
    (probe / "self_attention" / "square_with_bias.json").write_text(json.dumps({"ok": True}))
    np.save(probe / "self_attention" / "square_with_bias.out0.npy", np.full((3, 4, 6), np.nan))
    results = verify_outputs(ASSIGNMENTS["ps1"], None, 5, probe)
    assert set(results) == set(FULL)
    for task, (score, maximum, message) in results.items():
        assert score == 0.0 and maximum == FULL[task] and message, (task, message)
    assert all(verify_outputs(ASSIGNMENTS["ps1"], None, 5, tmp_path / "nowhere")[t][0] == 0.0 for t in FULL)


def test_probe_cells_do_not_import_the_grader_nor_carry_expected_numbers():
    import base64

    cells = plan_probes(ASSIGNMENTS["ps3"], REPO / "solutions" / "ps3" / "ps3.ipynb", 99)
    assert len(cells) == 1 + len(ASSIGNMENTS["ps3"].tasks)
    text = "\n".join(cells)
    # The one import of the grader package: ps5's CUDA test doubles, inside the timing driver only.
    imports = re.findall(r"^\s*(?:import grader|from grader\S*) .*$", text, flags=re.M)
    assert {line.split("#")[0].strip() for line in imports} <= {"from grader import diagnose_perf"}, imports
    for case in make_cases("ps3", 99):
        if case.check == "reference":
            answer = np.ascontiguousarray(expected(case)[0].astype(np.float32)).tobytes()
            assert base64.b64encode(answer).decode()[:40] not in text, case.name


def _notebook_of(source: str) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    return nb


@pytest.mark.parametrize("assignment", sorted(ASSIGNMENTS))
def test_honest_solutions_raise_no_flag(assignment):
    source = REPO / "solutions" / assignment / f"{assignment}.ipynb"
    assert integrity_flags(ASSIGNMENTS[assignment], honest_notebook(assignment), course_cell_sources(source)) == []


def _answer_probe(tmp_path: Path, task: str, answer) -> Path:
    (tmp_path / task).mkdir(parents=True)
    (tmp_path / task / "answer.json").write_text(json.dumps({"ok": True, "answer": answer}))
    return tmp_path


def _keys(assignment: str) -> dict:
    return json.loads((REPO / "solutions" / assignment / "answer_key.json").read_text())


def test_diagnoses_earn_partial_credit_like_the_notebook(tmp_path):
    source = REPO / "solutions" / "ps4" / "ps4.ipynb"
    keys = _keys("ps4")["diagnoses"]
    key, labels = {name: entry[0] for name, entry in keys["key"].items()}, keys["labels"]
    assert len(key) == 8 and set(key.values()) <= set(labels)
    names = sorted(key)
    wrong_label = {name: next(label for label in labels if label != key[name]) for name in names}
    six_right = {**key, names[0]: wrong_label[names[0]], names[1]: wrong_label[names[1]]}
    score = lambda answer, folder: verify_outputs(ASSIGNMENTS["ps4"], source, 1,
                                                  _answer_probe(folder, "diagnoses", answer))["diagnoses"][0]
    assert score(key, tmp_path / "a") == 4.0
    assert score(six_right, tmp_path / "b") == 3.0
    assert score(wrong_label, tmp_path / "c") == 0.0  # none right: the notebook's test fails too
    assert score({**key, names[0]: "made up"}, tmp_path / "d") == 0.0  # a label outside BUG_LABELS
    assert score({n: key[n] for n in names[1:]}, tmp_path / "e") == 0.0  # a module left out
    assert score([["MysteryA", key["MysteryA"]]], tmp_path / "f") == 0.0


def test_answer_keys_are_data_and_the_hidden_tests_are_written_from_them(tmp_path):
    """The grader reads answer_key.json; the source notebook's hidden tests are written from the same file."""
    def test_source(assignment: str, task: str) -> str:
        nb = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
        return next(cell.source for cell in nb.cells if cell.get("id") == f"test_{task}")

    diagnoses_test = test_source("ps4", "diagnoses")
    for name, (label, _) in _keys("ps4")["diagnoses"]["key"].items():
        assert f'"{name}": ("{label}"' in diagnoses_test
    source = REPO / "solutions" / "ps5" / "ps5.ipynb"
    letter = _keys("ps5")["anomaly"]["answer"]
    assert f'anomaly_answer == "{letter}"' in test_source("ps5", "anomaly")
    other = next(x for x in "ABCD" if x != letter)
    ps5 = ASSIGNMENTS["ps5"]
    assert verify_outputs(ps5, source, 1, _answer_probe(tmp_path / "a", "anomaly", letter))["anomaly"][0] == 2.0
    assert verify_outputs(ps5, source, 1, _answer_probe(tmp_path / "b", "anomaly", other))["anomaly"][0] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ["ps2", "ps3", "ps4", "ps5"])
def test_honest_students_of_every_assignment_keep_their_scores(tmp_path, assignment):
    """ps1 is graded with the corpus; here an honest full solution and an untouched notebook of each other
    assignment go through the real grader: full marks and 0, every task verified, no flag."""
    submissions = tmp_path / "submissions"
    students = {"honest": honest_notebook(assignment), "blank": nbformat.read(
        REPO / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)}
    students.update({cheat.name: with_cheat(cheat) for cheat in OTHER_CHEATS[assignment]})
    for student, nb in students.items():
        (submissions / student).mkdir(parents=True)
        nbformat.write(nb, submissions / student / f"{assignment}.ipynb")
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", assignment, str(submissions), "--out",
                           str(tmp_path / "out"), "--jobs", "2"], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    grades, tasks = _read_results(tmp_path / "out")
    maximum = ASSIGNMENTS[assignment].max_score
    assert float(grades["honest"]["score"]) == maximum, tasks["honest"]
    assert float(grades["blank"]["score"]) == 0.0, tasks["blank"]
    for student in ("honest", "blank"):
        assert grades[student]["flags"] == "", grades[student]["flags"]
        for task, row in tasks[student].items():
            # What verification found: "verified ..." / "verification ...", or, for the blank notebook, the probe's
            # finding that the task is not written ("not attempted: ...", "... not defined when the probe ran").
            said = row["message"]
            assert "verif" in said or (student == "blank" and ("not attempted: " in said
                                                               or "not defined when the probe ran" in said)), \
                f"{task} of {student} was not verified: {said}"
    full = {task.name: float(task.points) for task in ASSIGNMENTS[assignment].tasks}
    for cheat in OTHER_CHEATS[assignment]:
        check_cheat(cheat, grades[cheat.name], tasks[cheat.name], full)


@pytest.mark.parametrize("source, pattern", [
    ("import torch.nn.functional as F\ndef attention_scores(q, k):\n    return F.scaled_dot_product_attention(q, k, k)",
     r"from-scratch task attention_scores uses PyTorch's built-in attention"),
    ("from torch.nn import MultiheadAttention as M\nclass SelfAttention(M): pass",
     r"from-scratch task self_attention uses .*MultiheadAttention"),
    ("get_ipython().events.register('pre_run_cell', print)", r"uses IPython's shell"),
    ("import os\nflag = os.getenv('NBGRADER_EXECUTION')", r"reads the environment"),
    ("x = open('/etc/hosts').read()", r"names a path outside"),
    ("import glob\nfiles = glob.glob('*')", r"touches files"),
    ("np.testing.assert_allclose = print", r"patches numpy\.testing\.assert_allclose"),
    ("setattr(torch, 'equal', lambda *a: True)", r"patches torch with setattr"),
    ("def attention_scores(q, k):\n    return q @ k.T\n!ls ../../solutions", r"runs a shell command"),
    ("def attention_scores(q, k) return F.scaled_dot_product_attention(q, k, k)", r"built-in attention"),
])
def test_static_scan_flags(source, pattern):
    flags = integrity_flags(PS1, _notebook_of(source))
    assert any(re.search(pattern, flag) for flag in flags), flags


def test_static_scan_survives_junk_notebooks():
    junk = {"cells": [{"cell_type": "code", "source": [1, None]}, "not a cell", {"cell_type": "code"},
                      {"cell_type": "code", "source": "(" * 200000, "metadata": []},
                      {"cell_type": "code", "source": "x = " + "-" * 100000 + "1", "metadata": {"nbgrader": 3}}]}
    assert isinstance(integrity_flags(PS1, junk), list)
    assert integrity_flags(PS1, {"cells": "nope"}) == [] and integrity_flags(None, junk) == []


def test_parity_candidates_are_renamed_from_the_seed_and_carry_no_docstrings():
    """A passes_parity_test keyed on class names or docstrings cannot know which candidate is which."""
    source = REPO / "solutions" / "ps4" / "ps4.ipynb"
    cells = {seed: "\n".join(plan_probes(ASSIGNMENTS["ps4"], source, seed)) for seed in (1, 2)}
    originals = {"ChapterMultiHeadAttention", "EinsumMultiHeadAttention", "TorchMultiHeadAttention", "LoopOfHeads",
                 "HeadsWithInputSizedProjection", "ProjectsBackToInputWidth", "MysteryB", "MysteryC", "MysteryD"}
    for text in cells.values():
        assert "Candidate" in text and not any(name in text for name in originals)
        assert "hidden when d_in == d_out" not in text and "bug of May 2024" not in text
    names = [set(re.findall(r"Candidate\d+", text)) for text in cells.values()]
    assert names[0] != names[1]
