"""ps6 (masks in the wild, chapter 11) through the real ``python -m grader grade``, and its references on their own.

What is proved here:
- the references and checks ps6's verification relies on agree with PyTorch, and each catalogued mask bug's
  reference reproduces what that bug's code computes (fast, no kernel);
- one grade run of a small class: the solution gets full marks, the untouched student notebook 0; each planted bug
  (polarity flipped, padding applied to the queries, a -inf fill, K/V heads tiled with ``repeat``, a test too weak
  to fail the buggy module, a wrong diagnosis) loses the points of the right task or check, and the task's message
  in tasks.csv says the bug's catalogue name; other correct ways of writing each task (additive float masks,
  ``torch.where``, ``expand`` + ``reshape``, another test) keep full marks;
- the answer key is not in the student notebook.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grader.assignments import ASSIGNMENTS
from grader.bench_grading import honest_copy, release_copy
from grader.bugs import BUGS, CATALOGUE
from grader.verify import reference, reference_masks
from grader.verify.cases_masks import conversion_case, gqa_case, padded_module_case
from grader.verify.checks_masks import MASK_CHECKS
from grader.verify.extra import ExtraFailure

REPO = Path(__file__).resolve().parents[1]
PS6 = ASSIGNMENTS["ps6"]
SOURCE = REPO / "solutions" / "ps6" / "ps6.ipynb"
RELEASE = REPO / "exercises" / "ps6" / "ps6.ipynb"


# ------------------------------------------------------------------------ references and checks (fast)
def _module_from_case(case, hidden_of, fill, zero_padded=True):
    """The case's weights in a float64 module written out as the course writes it, with a chosen mask and fill."""
    a = {k: torch.from_numpy(v).double() if v.dtype != bool else torch.from_numpy(v) for k, v in case.arrays.items()}
    heads = case.params["num_heads"]
    padding = a["key_padding_mask"]

    def forward(x):
        b, num_tokens, _ = x.shape
        q, k, v = (F.linear(x, a[n], a.get(n + "_bias")).view(b, num_tokens, heads, -1).transpose(1, 2)
                   for n in ("W_query", "W_key", "W_value"))
        scores = (q @ k.transpose(2, 3) / math.sqrt(q.shape[-1])).masked_fill(hidden_of(padding, num_tokens), fill)
        context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, num_tokens, -1)
        out = F.linear(context, a["out_proj"], a["out_proj_bias"])
        return out.masked_fill(padding[..., None], 0.0) if zero_padded else out
    return forward, a["x"]


def _future(num_tokens):
    return torch.ones(num_tokens, num_tokens, dtype=torch.bool).triu(1)


ALSO_FITS = {"mask_neg_inf": {"padding_renormalised"}}
CORRECT = lambda pad, n: _future(n) | pad[:, None, None, :]          # noqa: E731
POLARITY = lambda pad, n: _future(n) | ~pad[:, None, None, :]        # noqa: E731
ON_QUERIES = lambda pad, n: _future(n) | pad[:, None, :, None]       # noqa: E731


def _outputs(forward, x, case):
    with torch.no_grad():
        out = forward(x).numpy()
    if not case.params.get("grad_of"):
        return [out]
    x = x.clone().requires_grad_(True)
    (forward(x) * torch.from_numpy(case.arrays["loss_weights"]).double()).sum().backward()
    return [out, x.grad.numpy()]


def _named(case, outputs) -> set[str]:
    close = lambda got, want: np.allclose(got, want, atol=1e-6, equal_nan=True)  # noqa: E731
    return {next(b.code for b in CATALOGUE if name.startswith(b.name))
            for name, produced in reference.hypotheses(case)
            if all(close(g, w) for g, w in zip(outputs, produced) if w is not None)}


@pytest.mark.parametrize("layout", ["left", "right", "scattered"])
def test_padded_reference_is_the_course_module_and_names_only_the_planted_bug(layout):
    case = padded_module_case("t", layout, "M", 5, batch=3, num_tokens=6, d_in=5, d_out=8, num_heads=2,
                              layout=layout, lengths=None if layout == "scattered" else [6, 2, 0],
                              qkv_bias=True, gradient=True)
    finite = torch.finfo(torch.float64).min
    correct, x = _module_from_case(case, CORRECT, finite)
    want = reference.expected(case)
    got = _outputs(correct, x, case)
    assert all(np.allclose(g, w, atol=1e-10) for g, w in zip(got, want))
    assert np.isfinite(want[1]).all()
    for bug, hidden_of, fill in (("mask_polarity", POLARITY, finite), ("padding_on_queries", ON_QUERIES, finite),
                                 ("mask_neg_inf", CORRECT, float("-inf"))):
        forward, _ = _module_from_case(case, hidden_of, fill)
        outputs = _outputs(forward, x, case)
        differs = not all(np.allclose(o, w, atol=1e-6, equal_nan=True) for o, w in zip(outputs, want))
        if bug == "padding_on_queries" and layout == "right":
            assert not differs      # padded keys sit after every real token: the causal mask hides them already
            continue
        if bug == "mask_neg_inf" and layout != "left":
            continue                # no query without a visible key: -inf does no harm here
        assert differs, bug
        # A -inf fill and padding renormalised after the softmax put NaN in the same places (0/0 on a row with
        # nothing to see): no input tells them apart, so both are named.
        assert bug in _named(case, outputs) and _named(case, outputs) <= {bug} | ALSO_FITS.get(bug, set()), bug


def test_padded_reference_zeroes_a_sequence_that_is_all_padding():
    case = padded_module_case("t", "empty", "M", 1, batch=2, num_tokens=4, d_in=4, d_out=4, num_heads=1,
                              layout="left", lengths=[4, 0])
    out = reference.expected(case)[0]
    assert np.isfinite(out).all() and np.all(out[1] == 0) and np.any(out[0] != 0)


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (6, 3), (6, 2), (4, 1), (3, 3)])
def test_gqa_reference_and_the_repeat_bug(heads, kv_heads):
    case = gqa_case("t", "g", "G", 2, batch=2, num_tokens=5, d_in=7, d_out=2 * heads, num_heads=heads,
                    num_kv_heads=kv_heads, qkv_bias=True)
    a = {k: torch.from_numpy(v).double() for k, v in case.arrays.items()}
    x, group = a["x"], heads // kv_heads

    def written_out(share):
        q, k, v = (F.linear(x, a[n], a[n + "_bias"]).view(2, 5, -1, 2).transpose(1, 2)
                   for n in ("W_query", "W_key", "W_value"))
        scores = (q @ share(k).transpose(2, 3) / math.sqrt(2)).masked_fill(_future(5), float("-inf"))
        context = torch.softmax(scores, dim=-1) @ share(v)
        return F.linear(context.transpose(1, 2).reshape(2, 5, -1), a["out_proj"], a["out_proj_bias"]).numpy()

    want = reference.expected(case)[0]
    assert np.allclose(written_out(lambda t: t.repeat_interleave(group, dim=1)), want, atol=1e-10)
    tiled = written_out(lambda t: t.repeat(1, group, 1, 1))
    if 1 < kv_heads < heads:
        assert not np.allclose(tiled, want, atol=1e-4)
        assert _named(case, [tiled]) == {"kv_repeat"}
    else:   # one K/V head, or as many as query heads: both orders are the same
        assert np.allclose(tiled, want, atol=1e-10)
    assert case.params["parameters"] == sum(v.size for v in case.arrays.values()) - x.numel()


def test_hidden_under_reads_each_api_as_pytorch_documents_it():
    rng = np.random.default_rng(0)
    hidden = rng.random((3, 5)) < 0.5
    hidden[:, 0] = False
    assert np.array_equal(reference_masks.hidden_under("mha", hidden), hidden)     # True = may not attend
    assert np.array_equal(reference_masks.hidden_under("sdpa", ~hidden), hidden)   # True = may attend
    for fill in (-np.inf, np.finfo(np.float32).min):
        additive = np.where(hidden, fill, 0.0).astype(np.float32)
        assert np.array_equal(reference_masks.hidden_under("additive", additive), hidden)


def _judge_conversion(case, result: np.ndarray, tmp: Path):
    np.save(tmp / f"{case.name}.out0.npy", result)
    MASK_CHECKS["mask_conversion"](case, tmp, {"ok": True})


def test_conversion_check_accepts_either_fill_and_names_only_the_flipped_mask(tmp_path):
    case = conversion_case("t", "c", "convert_mask", 4, shape=(2, 3, 5), source="mha", target="additive")
    hidden = case.arrays["mask"]
    _judge_conversion(case, np.where(hidden, -np.inf, 0.0).astype(np.float32), tmp_path)
    _judge_conversion(case, np.where(hidden, np.finfo(np.float32).min, 0.0).astype(np.float32), tmp_path)
    with pytest.raises(ExtraFailure, match=f"^{BUGS['mask_polarity']}"):
        _judge_conversion(case, np.where(hidden, 0.0, -np.inf).astype(np.float32), tmp_path)
    with pytest.raises(ExtraFailure, match="0.0 where attention is allowed"):
        _judge_conversion(case, np.where(hidden, -1.0, 0.0).astype(np.float32), tmp_path)
    to_sdpa = conversion_case("t", "d", "convert_mask", 4, shape=(4, 4), source="mha", target="sdpa")
    with pytest.raises(ExtraFailure, match=f"^{BUGS['mask_polarity']}"):
        _judge_conversion(to_sdpa, to_sdpa.arrays["mask"], tmp_path)          # returned as it was
    wrong = ~to_sdpa.arrays["mask"]
    wrong[0, 0] = ~wrong[0, 0]
    with pytest.raises(ExtraFailure) as err:
        _judge_conversion(to_sdpa, wrong, tmp_path)
    assert "not one of the known bugs" in str(err.value) and BUGS["mask_polarity"] not in str(err.value)
    with pytest.raises(ExtraFailure, match="torch.bool"):
        _judge_conversion(to_sdpa, (~to_sdpa.arrays["mask"]).astype(np.float32), tmp_path)


@pytest.mark.parametrize("bug, hidden_of, fill, keeps", [
    ("mask_polarity", POLARITY, torch.finfo(torch.float64).min, {"padding": False, "no_mask": True, "finite": True}),
    ("padding_on_queries", ON_QUERIES, torch.finfo(torch.float64).min,
     {"padding": False, "no_mask": True, "finite": True}),
    ("mask_neg_inf", CORRECT, float("-inf"), {"padding": True, "no_mask": True, "finite": False}),
], ids=["polarity", "on_queries", "neg_inf"])
def test_verification_alone_charges_the_check_that_owns_the_bug(tmp_path, bug, hidden_of, fill, keeps):
    """The probe files a module with the bug would write, judged outside any kernel: the bug's check loses its
    points with the bug's name, and a failure elsewhere that the bug explains costs no other check."""
    from grader.verify import verify_outputs

    seed = 8
    folder = tmp_path / "padded_attention"
    folder.mkdir()
    for case in PS6.probe_cases(seed, SOURCE):
        if case.task != "padded_attention":
            continue
        if "key_padding_mask" in case.arrays:
            forward, x = _module_from_case(case, hidden_of, fill)
            outputs = _outputs(forward, x, case)
        else:
            outputs = reference.expected(case)
        for index, array in enumerate(outputs):
            np.save(folder / f"{case.name}.out{index}.npy", array.astype(np.float32))
        meta = {"ok": True, "parameters": case.params["parameters"], "buffers": ["mask"], "state_dict": ["mask"]}
        (folder / f"{case.name}.json").write_text(json.dumps(meta))
    result = verify_outputs(PS6, SOURCE, seed, tmp_path)["padded_attention"]
    assert {name: passed for name, (_, passed, _) in result.checks.items()} == keeps, result[2]
    assert result[0] == sum(c.points for c in PS6.task("padded_attention").checks if keeps[c.name])
    assert BUGS[bug] in result[2] and bug in _named_codes(result[2]) <= {bug} | ALSO_FITS.get(bug, set()), result[2]


def test_answer_key_is_not_shipped_and_the_student_notebook_is_current(tmp_path):
    from grader.release import release

    shipped = RELEASE.read_text()
    assert "polarity_suspect = \"MysteryB\"" not in shipped and "== \"MysteryB\"" not in shipped
    assert "BEGIN HIDDEN TESTS" not in shipped and "BEGIN SOLUTION" not in shipped
    fresh = release(["ps6"], into=tmp_path)
    assert fresh[0].read_text() == shipped, "exercises/ps6 is stale: run python -m grader release ps6"


# --------------------------------------------------------------------------- one grade run: a small class
# (cell, [(old, new)]): each is replaced exactly once in the solution cell (the task of the same name).
PLANTED = {
    "flipped": {
        "padded_attention": [("hidden = hidden | key_padding_mask[:, None, None, :]",
                              "hidden = hidden | ~key_padding_mask[:, None, None, :]")],
        "convert_mask": [("may_attend = ~mask.bool()", "may_attend = mask.bool()")],
        "grouped_query": [("keys = split(self.W_key(x)).repeat_interleave(self.group_size, dim=1)",
                           "keys = split(self.W_key(x)).repeat(1, self.group_size, 1, 1)"),
                          ("values = split(self.W_value(x)).repeat_interleave(self.group_size, dim=1)",
                           "values = split(self.W_value(x)).repeat(1, self.group_size, 1, 1)")],
        "polarity_clinic": [('polarity_suspect = "MysteryB"', 'polarity_suspect = "MysteryC"')],
        "polarity_test": [("assert torch.allclose(out[b, real], alone, atol=1e-5)",
                           "assert out[b, real].shape == alone.shape")],
    },
    "on_queries": {
        "padded_attention": [("hidden = hidden | key_padding_mask[:, None, None, :]",
                              "hidden = hidden | key_padding_mask[:, None, :, None]")],
    },
    "neg_inf": {
        "padded_attention": [("torch.finfo(scores.dtype).min", "-torch.inf")],
    },
    "neg_inf_nan_outputs": {   # and the padded outputs left as they are: NaN where a query has nothing to see
        "padded_attention": [("torch.finfo(scores.dtype).min", "-torch.inf"),
                             ("out = out.masked_fill(key_padding_mask[..., None], 0.0)", "pass")],
    },
}

# student -> task -> (points it keeps, a phrase its message must hold, the catalogue codes it may name)
EXPECTED = {
    "flipped": {"padded_attention": (2, BUGS["mask_polarity"], {"mask_polarity"}),
                "convert_mask": (0, BUGS["mask_polarity"], {"mask_polarity"}),
                "grouped_query": (0, BUGS["kv_repeat"], {"kv_repeat"}),
                "polarity_clinic": (0, "MysteryC is not", set()),
                "polarity_test": (0, "passes a module it must fail", {"mask_polarity"})},
    "on_queries": {"padded_attention": (2, BUGS["padding_on_queries"], {"padding_on_queries"})},
    "neg_inf": {"padded_attention": (4, BUGS["mask_neg_inf"], {"mask_neg_inf", "padding_renormalised"})},
    # Two bugs: the -inf fill (NaN, check finite) and padded outputs never zeroed, which right padding shows without
    # any NaN (check padding): both checks lose their points.
    "neg_inf_nan_outputs": {"padded_attention": (1, BUGS["mask_neg_inf"],
                                                 {"mask_neg_inf", "padding_renormalised", "padded_not_zeroed"})},
}

ALTERNATIVES = {
    "padded_attention": '''
class MultiHeadAttention(nn.Module):
    """An additive float mask (filled once, never two fills added), SDPA, and torch.where for padded outputs."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim, self.p = num_heads, d_out // num_heads, dropout
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        lowest = torch.finfo(torch.float32).min
        self.register_buffer("causal_bias", torch.full((context_length, context_length), lowest).triu(1))

    def forward(self, x, key_padding_mask=None):
        b, num_tokens, _ = x.shape
        q, k, v = (layer(x).reshape(b, num_tokens, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
                   for layer in (self.W_query, self.W_key, self.W_value))
        bias = self.causal_bias[:num_tokens, :num_tokens].expand(b, 1, num_tokens, num_tokens)
        if key_padding_mask is not None:
            bias = bias.masked_fill(key_padding_mask[:, None, None, :], torch.finfo(torch.float32).min)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.p if self.training else 0.0)
        out = self.out_proj(context.permute(0, 2, 1, 3).reshape(b, num_tokens, -1))
        if key_padding_mask is not None:
            out = torch.where(key_padding_mask[..., None], torch.zeros_like(out), out)
        return out
''',
    "convert_mask": '''
def convert_mask(mask, source, target):
    known = ("sdpa", "mha", "additive")
    if source not in known or target not in known:
        raise ValueError(f"unknown convention: {source!r} or {target!r}")
    if source == "additive":
        blocked = mask <= -1e9
    else:
        blocked = mask if source == "mha" else mask.logical_not()
    if target == "additive":
        return torch.where(blocked, torch.tensor(float("-inf"), device=mask.device),
                           torch.tensor(0.0, device=mask.device))
    return blocked if target == "mha" else blocked.logical_not()
''',
    "grouped_query": '''
class GroupedQueryAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, num_kv_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.ones(context_length, context_length).triu(1).bool())

    def share(self, t):  # expand + reshape: the order of repeat_interleave, no copy before the reshape
        b, kv_heads, num_tokens, head_dim = t.shape
        group = self.num_heads // kv_heads
        return t[:, :, None].expand(b, kv_heads, group, num_tokens, head_dim).reshape(b, -1, num_tokens, head_dim)

    def forward(self, x):
        b, num_tokens, _ = x.shape
        q = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = (self.share(layer(x).view(b, num_tokens, self.num_kv_heads, self.head_dim).transpose(1, 2))
                for layer in (self.W_key, self.W_value))
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
        weights = self.dropout(scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf")).softmax(-1))
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, num_tokens, -1))
''',
    "polarity_test": '''
def test_key_padding_polarity(mha_cls):
    """What sits in a padded position must not reach a real token, and an all-False mask must change nothing."""
    module = mha_cls(4, 6, 6, 0.0, 3).to(device).eval()
    x = torch.randn(2, 6, 4, device=device)
    padding = torch.tensor([[True, False, False, True, False, True], [False] * 6], device=device)
    noisy = x.clone()
    noisy[padding] = 10 * torch.randn_like(noisy[padding])
    with torch.no_grad():
        clean, changed, plain = module(x, key_padding_mask=padding), module(noisy, key_padding_mask=padding), module(x)
    assert torch.allclose(clean[~padding], changed[~padding], atol=1e-5), "padded content reached real tokens"
    assert torch.allclose(clean[1], plain[1], atol=1e-5), "a mask without padding changed the output"
''',
}

# A second set: the chapter's own fix (SDPA with the boolean mask inverted) and SDPA sharing the K/V heads itself.
ALTERNATIVES_SDPA = {
    "padded_attention": '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.head_dim, self.p = num_heads, d_out // num_heads, dropout
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.register_buffer("may_attend", torch.ones(context_length, context_length, dtype=torch.bool).tril())

    def forward(self, x, key_padding_mask=None):
        b, num_tokens, _ = x.shape
        q, k, v = (layer(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
                   for layer in (self.W_query, self.W_key, self.W_value))
        may_attend = self.may_attend[:num_tokens, :num_tokens]
        if key_padding_mask is not None:
            may_attend = may_attend & ~key_padding_mask[:, None, None, :]    # SDPA: True = take part
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=may_attend,
                                                 dropout_p=self.p if self.training else 0.0)
        out = self.out_proj(context.transpose(1, 2).flatten(2))
        if key_padding_mask is not None:
            out = out * (~key_padding_mask)[..., None].to(out.dtype)
        return out
''',
    "grouped_query": '''
class GroupedQueryAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, num_kv_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim, self.p = num_heads, num_kv_heads, d_out // num_heads, dropout
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x):
        b, num_tokens, _ = x.shape
        q = self.W_query(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        k, v = (layer(x).unflatten(-1, (self.num_kv_heads, self.head_dim)).transpose(1, 2)
                for layer in (self.W_key, self.W_value))
        context = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True,
                                                 dropout_p=self.p if self.training else 0.0)
        return self.out_proj(context.transpose(1, 2).flatten(2))
''',
}


def _edited(nb: nbformat.NotebookNode, cell_id: str, replace) -> None:
    cell = next(c for c in nb.cells if c.get("id") == cell_id)
    if isinstance(replace, str):
        cell.source = replace.strip("\n")
        return
    for old, new in replace:
        assert cell.source.count(old) == 1, f"{cell_id}: {old!r} must occur once"
        cell.source = cell.source.replace(old, new)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One `python -m grader grade ps6` over the whole class; {student: {task: tasks.csv row}}."""
    root = tmp_path_factory.mktemp("ps6-class")
    source = nbformat.read(SOURCE, as_version=4)
    students = {"honest": honest_copy(source), "blank": release_copy(source)}
    for student, edits in PLANTED.items():
        nb = honest_copy(source)
        for cell_id, replacements in edits.items():
            _edited(nb, cell_id, replacements)
        students[student] = nb
    for student, alternatives in (("alternatives", ALTERNATIVES), ("alternatives_sdpa", ALTERNATIVES_SDPA)):
        students[student] = honest_copy(source)
        for cell_id, code in alternatives.items():
            _edited(students[student], cell_id, code)
    for student, nb in students.items():
        (root / "subs" / student).mkdir(parents=True)
        nbformat.write(nb, root / "subs" / student / "ps6.ipynb")
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "ps6", str(root / "subs"), "--out",
                           str(root / "out"), "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows: dict[str, dict[str, dict]] = {}
    with open(root / "out" / "tasks.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["student_id"], {})[row["task"]] = row
    with open(root / "out" / "grades.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["student_id"]]["(flags)"] = row["flags"]
    return rows


def _named_codes(message: str) -> set[str]:
    return {bug.code for bug in CATALOGUE if bug.name in message and bug.code != "mismatch"}


def _tasks(rows: dict) -> dict[str, dict]:
    return {task: row for task, row in rows.items() if task != "(flags)"}


@pytest.mark.slow
def test_solution_full_marks_and_blank_zero(graded):
    honest, blank = _tasks(graded["honest"]), _tasks(graded["blank"])
    assert {t: float(r["score"]) for t, r in honest.items()} == {t.name: float(t.points) for t in PS6.tasks}
    assert all("verified on" in r["message"] for r in honest.values()), honest
    assert {t: float(r["score"]) for t, r in blank.items()} == {t.name: 0.0 for t in PS6.tasks}
    # What verification found on the blank notebook: the task is not written (or was verified and failed).
    assert all("verif" in r["message"] or "not attempted: " in r["message"]
               or "not defined when the probe ran" in r["message"] for r in blank.values()), blank
    assert graded["honest"]["(flags)"] == graded["blank"]["(flags)"] == ""


@pytest.mark.slow
@pytest.mark.parametrize("student", ["alternatives", "alternatives_sdpa"])
def test_correct_alternatives_keep_full_marks(graded, student):
    lost = {t: r["message"] for t, r in _tasks(graded[student]).items()
            if float(r["score"]) != float(r["max_score"])}
    assert not lost, lost


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_a_planted_bug_loses_the_right_points_with_its_name(graded, student):
    rows = _tasks(graded[student])
    assert set(rows) == {t.name for t in PS6.tasks}
    for task, row in rows.items():
        if task not in EXPECTED[student]:
            assert float(row["score"]) == float(row["max_score"]), (student, task, row["message"])
            continue
        keeps, phrase, may_name = EXPECTED[student][task]
        message = row["message"]
        assert float(row["score"]) == keeps, (student, task, row["score"], message)
        assert phrase in message, (student, task, message)
        assert _named_codes(message) <= may_name, f"{student}/{task} names a bug that was not planted: {message}"
        assert "verified on" not in message


# ------------------------------------------------------------------ diagnoses from probe files (fast, no kernel)
@pytest.mark.parametrize("plan", ["grouped_4_2", "grouped_6_3_d_in_ne_d_out", "grouped_6_2", "multi_query_4_1"])
def test_full_size_kv_projections_are_described_not_named(tmp_path, plan):
    """A GQA module with one K/V head per query head (W_key, W_value d_out rows) is not any catalogued bug: its
    weight shapes are said as they are, never as 'd_in where d_out belongs' or 'd_out not divided by num_heads'."""
    from grader.verify.checks import CaseFailure, judge_case

    case = next(c for c in PS6.probe_cases(4, SOURCE) if c.task == "grouped_query" and c.name == plan)
    d_out, d_in = case.arrays["W_query"].shape
    shapes = {f"-1.{attr}": list(case.arrays[attr].shape) for attr in ("W_query", "out_proj")}
    shapes.update({f"-1.{attr}": [d_out, d_in] for attr in ("W_key", "W_value")})
    meta = {"ok": False, "error": "RuntimeError: The size of tensor a (4) must match", "weight_shapes": shapes}
    (tmp_path / f"{case.name}.json").write_text(json.dumps(meta))
    with pytest.raises(CaseFailure) as failure:
        judge_case(case, tmp_path)
    message = str(failure.value)
    assert _named_codes(message) == set(), message
    kv_rows = case.arrays["W_key"].shape[0]
    assert f"W_key is ({d_out}, {d_in}), expected ({kv_rows}, {d_in}): K/V heads not shared" in message, message


def test_a_test_function_that_is_not_defined_is_said_so(tmp_path):
    from grader.verify.checks import CaseFailure, judge_case

    case = next(c for c in PS6.probe_cases(4, SOURCE) if c.task == "polarity_test")
    verdicts = {name: {"error": "KeyError: 'test_key_padding_polarity'"} for name in case.params["verdicts"]}
    (tmp_path / f"{case.name}.json").write_text(json.dumps({"ok": True, "verdicts": verdicts}))
    with pytest.raises(CaseFailure) as failure:
        judge_case(case, tmp_path)
    assert "test_key_padding_polarity was not defined when the probe ran" in str(failure.value)
    assert "too strict" not in str(failure.value)


def _padding_variant(case, variant):
    """The course's module with the right mask and a finite fill, and one of three padding mistakes: ``keep`` (the
    padded outputs never zeroed), ``zero_context`` (zeroed before out_proj, leaving its bias) or ``renormalise``
    (the padding applied to the weights after the causal softmax, rows divided by their sums, outputs multiplied
    by 0 so the 0/0 stays)."""
    a = {k: torch.from_numpy(v).double() if v.dtype != bool else torch.from_numpy(v) for k, v in case.arrays.items()}
    heads, padding = case.params["num_heads"], a["key_padding_mask"]

    def forward(x):
        b, n, _ = x.shape
        q, k, v = (F.linear(x, a[name], a.get(name + "_bias")).view(b, n, heads, -1).transpose(1, 2)
                   for name in ("W_query", "W_key", "W_value"))
        hidden = _future(n) if variant == "renormalise" else CORRECT(padding, n)
        weights = torch.softmax((q @ k.transpose(2, 3) / math.sqrt(q.shape[-1])).masked_fill(
            hidden, torch.finfo(torch.float64).min), dim=-1)
        if variant == "renormalise":
            weights = weights.masked_fill(padding[:, None, None, :], 0.0)
            weights = weights / weights.sum(-1, keepdim=True)
        context = (weights @ v).transpose(1, 2).reshape(b, n, -1)
        if variant == "zero_context":
            context = context.masked_fill(padding[..., None], 0.0)
        out = F.linear(context, a["out_proj"], a["out_proj_bias"])
        return out * (~padding)[..., None] if variant == "renormalise" else out
    return forward, a["x"]


@pytest.mark.parametrize("variant, keeps, may_name, must_name", [
    ("keep", {"padding": False, "no_mask": True, "finite": True}, {"padded_not_zeroed"}, {"padded_not_zeroed"}),
    ("zero_context", {"padding": False, "no_mask": True, "finite": True}, {"padded_not_zeroed"},
     {"padded_not_zeroed"}),
    ("renormalise", {"padding": True, "no_mask": True, "finite": False}, {"mask_neg_inf", "padding_renormalised"},
     {"padding_renormalised"}),
])
def test_padding_mistakes_are_named_only_by_what_reproduces_them(tmp_path, variant, keeps, may_name, must_name):
    """Finite outputs never get the -inf/NaN name; a case that cannot tell two bugs apart (right padding: padding
    on the queries or outputs zeroed before out_proj) names both, and a case that can is the one the message
    quotes; padding renormalised after the softmax gives the same NaN as a -inf fill, so both are named."""
    from grader.verify import verify_outputs
    from grader.verify.checks import _name_the_bug

    seed = 8
    folder = tmp_path / "padded_attention"
    folder.mkdir()
    for case in PS6.probe_cases(seed, SOURCE):
        if case.task != "padded_attention":
            continue
        if "key_padding_mask" in case.arrays:
            forward, x = _padding_variant(case, variant)
            outputs = _outputs(forward, x, case)
            wrong = not all(np.allclose(o, w, atol=1e-6) for o, w in zip(outputs, reference.expected(case)))
            named = _name_the_bug(case, outputs) if wrong else ""    # right padding may hide the mistake
            if wrong and all(np.isfinite(o).all() for o in outputs):
                assert BUGS["mask_neg_inf"] not in named and "NaN" not in named, (case.name, named)
            if wrong:
                assert named and _named_codes(named) <= may_name | {"padding_on_queries"}, (case.name, named)
        else:
            outputs = reference.expected(case)
        for index, array in enumerate(outputs):
            np.save(folder / f"{case.name}.out{index}.npy", array.astype(np.float32))
        meta = {"ok": True, "parameters": case.params["parameters"], "buffers": ["mask"], "state_dict": ["mask"]}
        (folder / f"{case.name}.json").write_text(json.dumps(meta))
    result = verify_outputs(PS6, SOURCE, seed, tmp_path)["padded_attention"]
    assert {name: passed for name, (_, passed, _) in result.checks.items()} == keeps, result[2]
    assert must_name <= _named_codes(result[2]) <= may_name, result[2]


CHEATING_TESTS = {
    "buffer_name": '''
def test_key_padding_polarity(mha_cls):
    assert "visible" not in dict(mha_cls(6, 8, 8, 0.0, 2).named_buffers())
''',
    "attribute_name": '''
def test_key_padding_polarity(mha_cls):
    assert not hasattr(mha_cls(6, 8, 8, 0.0, 2), "visible")
''',
    "layout": '''
def test_key_padding_polarity(mha_cls):
    assert len(list(mha_cls(6, 8, 8, 0.0, 2).children())) != 4
''',
}


@pytest.mark.parametrize("seed", [3, 11])
def test_the_polarity_candidates_tell_only_a_behavioural_test(seed):
    """The classes the probe hands the student's test differ from the notebook's in their members' names too, and
    a correct class laid out as the buggy one is among them: a test reading buffer or attribute names, or the
    module's layout, passes the buggy class or fails a correct one; behavioural tests still tell them apart."""
    case = next(c for c in PS6.probe_cases(seed, SOURCE) if c.task == "polarity_test")
    verdicts = case.params["verdicts"]
    assert len(verdicts) == 4 and sum(not v for v in verdicts.values()) == 1
    source = case.kwargs["source"]
    assert not any(member in source for member in ("'visible'", "'blocked'", "self.visible", "self.W_query",
                                                   "self.out_proj"))
    candidates = {"torch": torch, "nn": torch.nn, "F": F, "math": math}
    exec(source, candidates)

    def right_verdicts(test_source: str) -> bool:
        space = {"torch": torch, "nn": torch.nn, "F": F, "math": math, "device": "cpu"}
        exec(test_source, space)
        for name, must_pass in verdicts.items():
            torch.manual_seed(0)
            try:
                space["test_key_padding_polarity"](candidates[name])
                passed = True
            except Exception:
                passed = False
            if passed != must_pass:
                return False
        return True

    assert right_verdicts(ALTERNATIVES["polarity_test"])
    for name, cheat in CHEATING_TESTS.items():
        assert not right_verdicts(cheat), name
