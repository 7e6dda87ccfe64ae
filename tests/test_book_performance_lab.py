"""Chapter 9, the performance lab, as built: what its executed cells must show.

Uses the `built_book` fixture (the whole book built from scratch; MHA_BOOK_HTML points it at a prebuilt site).
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import REPO

PAGE = "book/09_performance_lab.html"
LABELS = ["Wrapper, fixed (PR #68)", "Chapter MultiHeadAttention", "Fused QKV", "Einsum", "Block-causal (fused QKV)",
          "F.scaled_dot_product_attention", "nn.MultiheadAttention, need_weights=True",
          "nn.MultiheadAttention, need_weights=False", "Wrapper as before PR #68 (the 9216 bug)"]


def outputs(page_html: str) -> str:
    """The text of every executed cell's output, tags stripped."""
    blocks = re.findall(r'<div class="cell_output docutils container">(.*?)</div>\s*</div>\s*</div>', page_html,
                        flags=re.S)
    assert blocks, "the page has no executed outputs"
    return "\n".join(html.unescape(re.sub(r"<[^>]+>", "", b)) for b in blocks)


@pytest.fixture(scope="module")
def page(built_book: Path) -> str:
    path = built_book / PAGE
    assert path.exists(), f"{PAGE} was not built"
    return path.read_text()


@pytest.fixture(scope="module")
def text(page: str) -> str:
    return outputs(page)


def test_figures_have_alt_text(page):
    alts = re.findall(r'<img[^>]*\salt="([^"]*)"', page)
    assert len(alts) >= 2 and all(a.strip() for a in alts), alts


def test_every_contender_agrees_before_the_race(text):
    diffs = dict(re.findall(r"^(.+?)\s+max \|difference\| from SDPA: ([0-9.e+-]+)$", text, flags=re.M))
    assert set(diffs) == set(LABELS) - {LABELS[-1]}, diffs
    assert all(float(d) < 1e-4 for d in diffs.values()), diffs


def test_work_at_full_size_is_computed(text):
    assert re.search(r"full size: projections\s+38\.65 GFLOP, attention\s+25\.77 GFLOP", text)
    assert "FlopCounterMode, full size, Chapter MultiHeadAttention: 64.4 GFLOP" in text
    counted = re.search(r"FlopCounterMode, full size, Wrapper as before PR #68 \(the 9216 bug\): ([0-9.]+) GFLOP",
                        text)
    assert counted and float(counted.group(1)) > 9 * 64.4


ROW = r"^{label}\s+([0-9.]+)\s+([0-9.]+)-([0-9.]+)\s+([0-9.]+)\s+\[([0-9.]+), ([0-9.]+)\]"


def phase_rows(section: str, phase: str) -> dict[str, tuple[float, ...]]:
    """label -> (median, q1, q3, ratio, low, high) of one phase's table in `section`."""
    start = re.search(rf"^{re.escape(phase)}: ms per call \(median, quartiles\) over (\d+) rounds", section, re.M)
    assert start, f"no {phase} table"
    table = section[start.end():].split("\n\n")[0]
    rows = {}
    for label in LABELS:
        row = re.search(ROW.format(label=re.escape(label)), table, flags=re.M)
        assert row, f"no {phase} row for {label}"
        rows[label] = tuple(map(float, row.groups()))
    return rows


def test_race_table_prints_device_dtype_version_and_all_rows(text):
    header = re.search(r"^(cpu|cuda) \| float32 \| torch (\S+) \|.*median of (\d+) rounds", text, flags=re.M)
    assert header and header.group(2) == torch.__version__
    race = text[header.start():]  # the first tables after the header are this build's race
    for phase in ("forward", "forward+backward"):
        for label, (median, q1, q3, ratio, low, high) in phase_rows(race, phase).items():
            # quartiles around the median, the interval around the ratio: real order statistics, not +/- a spread
            assert q1 <= median <= q3 and low <= ratio <= high and median > 0, (phase, label)
        sdpa = phase_rows(race, phase)["F.scaled_dot_product_attention"]
        assert sdpa[3:] == (1.0, 1.0, 1.0)
    coverage = re.search(r"time / SDPA's time in the same round \(median, ([0-9.]+)% interval\)", race)
    assert coverage and float(coverage.group(1)) >= 90
    assert re.search(r"the 9216-style wrapper does [0-9.]+x the work of the fixed one", text)
    assert re.search(r"the 9216-style wrapper / the fixed wrapper: forward [0-9.]+x \[[0-9.]+, [0-9.]+\]", text)


def test_rankings_only_where_intervals_separate(text):
    for phase in ("forward", "forward+backward"):
        start = text.index(f"{phase}, fastest first")
        lines = text[start:].split("\n")[1:len(LABELS) + 1]
        assert lines[0].strip() in LABELS
        ranked = [lines[0].strip()]
        for line in lines[1:]:
            step = re.match(r"^([<≈>]) (.+?)\s+x([0-9.]+) \[([0-9.]+), ([0-9.]+)\]$", line)
            assert step, line
            sign, label, ratio, low, high = step.groups()
            assert float(low) <= float(ratio) <= float(high)
            # '<' is claimed exactly when the paired interval lies above 1, '>' when it lies below 1, '≈' when it
            # holds 1 (the page prints two decimals, so an end just beside 1 reads 1.00)
            expected = {"<": float(low) >= 1, ">": float(high) <= 1, "≈": float(low) <= 1 <= float(high)}
            assert expected[sign], line
            ranked.append(label)
        assert sorted(ranked) == sorted(LABELS), ranked


def test_interval_rule_is_the_sign_test_interval():
    """The page's median_interval, run here: exact binomial coverage, and it refuses too few rounds."""
    import math
    import statistics

    source = (REPO / "book" / "09_performance_lab.md").read_text()
    cell = re.search(r"(CONFIDENCE = 0\.90\n.*?)\n\ndef ratio_estimate", source, re.S).group(1)
    namespace = {"math": math, "statistics": statistics}
    exec(cell, namespace)
    median_interval = namespace["median_interval"]
    assert median_interval([5, 1, 4, 2, 3]) == (1, 5, 1 - 2 / 32)
    low, high, coverage = median_interval(list(range(1, 21)))
    assert (low, high) == (6, 15) and abs(coverage - (1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2 ** 20)) < 1e-12
    with pytest.raises(ValueError, match="cannot give"):
        median_interval([1, 2, 3, 4])


def test_naive_and_synchronised_timings_are_both_shown(text):
    assert re.search(r"naive time\.time\(\): [0-9.]+ ms\s+benchmark\.Timer: median [0-9.]+ ms, IQR [0-9.]+ ms", text)


def test_memory_is_reported_with_its_method(text):
    for label in LABELS:
        assert re.search(rf"^{re.escape(label)}\s+forward\s+[0-9.]+ MiB\s+forward\+backward\s+[0-9.]+ MiB", text,
                         flags=re.M), label
    assert re.search(r"^method: (torch\.cuda\.max_memory_allocated|estimate: )", text, flags=re.M)


def test_historical_anchors_are_quoted_and_labelled(text):
    assert "A100, PyTorch 2.6 (quoted)" in text
    assert "41.1 ms before the fix, 8.35 ms after: 4.9x" in text
    # Both sets of the notebook's numbers, %timeit and its CUDA-event timer, side by side.
    assert re.search(r"^Chapter MultiHeadAttention\s+3\.08\s+3\.15\s", text, flags=re.M)


def test_work_against_time_is_explained_by_the_flop_rate(text):
    rates = dict(re.findall(r"^(before the fix \(9216 wide\)|after the fix)\s+[\d.]+ GFLOP in\s+[\d.]+ ms =\s*([\d.]+) "
                            r"TFLOP/s", text, flags=re.M))
    assert rates == {"before the fix (9216 wide)": "16.0", "after the fix": "7.7"}, rates
    assert re.search(r"work 10\.2x / rate 2\.0\dx = time 4\.9x", text)
    # Splitting the width into more heads keeps the FLOPs; only the (b, h, T, T) tensor grows.
    splits = re.findall(r"^\s*(\d+) heads of\s+\d+: projections ([\d.]+) GFLOP, QK\^T and AV ([\d.]+) GFLOP, "
                        r"one float32 \(b, h, T, T\) tensor\s+([\d,]+) MiB", text, flags=re.M)
    assert [int(h) for h, *_ in splits] == [1, 4, 12, 48]
    assert len({(p, a) for _, p, a, _ in splits}) == 1
    assert [int(m.replace(",", "")) for *_, m in splits] == [32 * h for h in (1, 4, 12, 48)]


def test_sdpa_backends_and_the_mha_fast_path_are_shown(text):
    default = re.search(r"^default choice\s+float32: (\S+)", text, flags=re.M)
    assert default and "scaled_dot_product" in default.group(1)
    assert re.search(r"^FLASH_ATTENTION\s+float32: ", text, flags=re.M)
    paths = dict(re.findall(r"^(nn\.MultiheadAttention, need_weights=(?:True|False)\s+(?:eval, no_grad|train, autograd))"
                            r"\s+(.+)$", text, flags=re.M))
    paths = {" ".join(k.split()): v for k, v in paths.items()}
    fast = [v for k, v in paths.items() if k.endswith("eval, no_grad")]
    assert len(fast) == 2 and all(v == "_native_multi_head_attention" for v in fast), paths
    trained = {k: v for k, v in paths.items() if k.endswith("train, autograd")}
    assert len(set(trained.values())) == 2, "with autograd the two settings must run different code"
    assert "scaled_dot_product" in trained["nn.MultiheadAttention, need_weights=False train, autograd"]
    assert re.search(r"need_weights=True / need_weights=False \(forward: one native op both times\): "
                     r"forward [\d.]+x \[[\d.]+, [\d.]+\](, not separated from 1)?; forward\+backward [\d.]+x", text)


def test_results_section_renders_the_committed_json(text):
    results = json.loads((REPO / "benchmarks" / "results.json").read_text())
    att = results["attention"]
    assert f"run of {results['date']} | {att['device']}" in text
    assert f"torch {results['torch']}" in text and f"quick mode: {results['quick']}" in text
    best = att["summary"]["best_from_scratch_label"]
    assert f"best from-scratch ({best}) / nn.MultiheadAttention(need_weights=False): " \
           f"{att['summary']['best_from_scratch_vs_torch_mha']:.2f}x" in text
    committed = text[text.index(f"run of {results['date']}"):]
    for name, row in att["phases"]["forward"]["rows"].items():
        assert re.search(rf"^{re.escape(row['label'])}\s+{row['median_ms']:.2f} ", committed, flags=re.M), name


def test_check_yourself_and_exercise_link(page):
    assert "Check yourself" in page
    assert re.search(r'href="exercises\.html"[^>]*>.*?the graded exercise ps5', page, flags=re.S)


def test_the_anchor_sdpa_without_flash_is_rechecked_with_the_mask_fixed(text):
    """The quoted A100 row timed SDPA with an inverted mask (rasbt/LLMs-from-scratch #1061): the page runs the
    published mask and the corrected one against the causal module, and times the corrected one."""
    assert "SDPA without flash (inverted mask)" in text
    assert re.search(r"mask as published \(True on the future\): equals causal attention False", text)
    assert "mask corrected (True where a query may look): equals causal attention True" in text
    assert re.search(r"explicit causal mask / is_causal=True on this machine: x[\d.]+ \[[\d.]+, [\d.]+\]", text)


def test_no_grading_or_build_numbers_on_the_attention_page(text):
    """Ch. 9 is about attention: the grader's throughput and the book's build time are not on it."""
    assert not re.search(r"^grading: ", text, flags=re.M) and not re.search(r"^book build: ", text, flags=re.M)
