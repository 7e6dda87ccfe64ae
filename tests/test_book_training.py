"""The training chapter (issue 26): a tiny GPT trained at build time, its heads measured, the two bugs measured in
training. What its executed outputs must show.

Uses the `built_book` fixture (MHA_BOOK_HTML points it at a prebuilt site). Expected values are worked out here from
the sizes and the shipped text, never copied from a run; measured numbers (losses, times) are checked for their
presence and for the relations that hold whatever the machine (an interval recomputed from the printed runs, a
trained loss below a uniform guess), not for their values.
"""
from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import jupytext
import pytest

from conftest import REPO
from test_book_bug_clinics import output_text, parse

PAGE = "book/12_training"
TEXT = REPO / "book" / "data" / "genesis_kjv.txt"
D_MODEL, NUM_HEADS, CONTEXT, NUM_LAYERS = 48, 4, 32, 2
WIDE_D, WIDE_HEADS = 768, 12
NUMBER = r"([-+]?[\d,]*\.?\d+)"


@pytest.fixture(scope="module")
def text(built_book: Path) -> str:
    return output_text(built_book, PAGE)


def num(s: str) -> float:
    return float(s.replace(",", ""))


def test_the_corpus_is_shipped_with_its_source_and_licence():
    corpus = TEXT.read_text()
    readme = (TEXT.parent / "README.md").read_text()
    assert f"{len(corpus):,} characters" in readme and f"{len(set(corpus))} distinct characters" in readme
    assert "bible-kjv-text" in readme and "public domain" in readme.lower()
    assert corpus.isascii()


def test_vocabulary_and_uniform_guess_come_from_the_text(text):
    corpus = TEXT.read_text()
    vocab = len(set(corpus))
    assert f"{len(corpus):,} characters, vocabulary of {vocab}" in text
    split = int(0.9 * len(corpus))
    assert f"training {split:,}, validation {len(corpus) - split:,} characters" in text
    assert f"ln({vocab}) = {math.log(vocab):.3f}" in text


def test_training_beats_a_uniform_guess_and_the_untrained_model(text):
    vocab = len(set(TEXT.read_text()))
    steps = re.findall(r"step\s+(\d+): training loss " + NUMBER, text)
    assert steps and steps[0][0] == "1" and len(steps) >= 5, steps
    untrained, trained = map(float, re.search(r"validation loss: untrained ([\d.]+), trained ([\d.]+)", text).groups())
    assert trained < math.log(vocab) < untrained + 0.5 and trained < untrained
    params = (vocab * D_MODEL + CONTEXT * D_MODEL  # embeddings
                      + NUM_LAYERS * (4 * D_MODEL * D_MODEL + D_MODEL  # attention with out_proj
                                      + 2 * 2 * D_MODEL  # two LayerNorms
                                      + D_MODEL * 4 * D_MODEL + 4 * D_MODEL + 4 * D_MODEL * D_MODEL + D_MODEL)  # MLP
                      + 2 * D_MODEL + D_MODEL * vocab + vocab)  # final LayerNorm and head
    assert f"{params:,} parameters, " in text


def test_head_table_covers_every_head_and_names_the_strongest(text):
    rows = re.findall(r"^\s+(\d+)\s+(\d+) \|\s+([\d.]+)\s+([\d.]+) \|\s+([\d.]+)\s+([\d.]+) \|\s+([\d.]+)$",
                      text, flags=re.M)
    assert [(int(r[0]), int(r[1])) for r in rows] == [(l, h) for l in range(NUM_LAYERS) for h in range(NUM_HEADS)]
    uniform = statistics.mean(1 / (i + 1) for i in range(1, CONTEXT))
    assert all(f"{float(r[6]):.3f}" == f"{uniform:.3f}" for r in rows)
    assert all(0 <= float(v) <= 1 for r in rows for v in r[2:6])
    best = max(rows, key=lambda r: float(r[2]))
    assert f"most previous-character head: layer {best[0]}, head {best[1]}, mean weight {best[2]}" in text
    assert f"rebuilt {NUM_LAYERS} layers x {NUM_HEADS} heads; each layer's output matches" in text


def test_the_9216_wrapper_breaks_the_residual_add(text):
    assert re.search(rf"RuntimeError.*size of tensor a \({D_MODEL}\) must match the size of tensor b "
                     rf"\({NUM_HEADS * D_MODEL}\)", text, flags=re.S)


def test_the_9216_training_step_is_measured_against_the_fixed_module(text):
    fixed = 4 * WIDE_D ** 2 + WIDE_D
    patched = WIDE_HEADS * 3 * WIDE_D ** 2 + WIDE_HEADS * WIDE_D * WIDE_D + WIDE_D
    assert (fixed, patched) == (2_360_064, 28_312_320)
    rows = {}
    for name, attention, model, step, iqr, resident, peak in re.findall(
            r"(fixed|9216): attention\s+([\d,]+) params, model\s+([\d,]+) \| step\s+([\d.]+) ms \(IQR ([\d.]+)\) \| "
            r"parameters \+ AdamW\s+([\d.]+) MiB, step peak\s+([\d.]+) MiB", text):
        rows[name] = dict(attention=num(attention), model=num(model), step=float(step), resident=float(resident),
                          peak=float(peak))
    assert set(rows) == {"fixed", "9216"}
    assert rows["fixed"]["attention"] == fixed and rows["9216"]["attention"] == patched
    # the rest of the model is the same in both
    assert rows["9216"]["model"] - rows["fixed"]["model"] == patched - fixed
    for row in rows.values():
        assert row["resident"] == pytest.approx(12 * row["model"] / 2**20, abs=0.06)
        assert row["step"] > 0 and row["peak"] > 0
    assert re.search(r"memory: (torch\.cuda\.max_memory_allocated|estimate: peak bytes)", text)
    time_ratio = float(re.search(r"9216 / fixed, time per step \(median of paired rounds\): ([\d.]+)x", text).group(1))
    assert time_ratio > 0
    resident_ratio = float(re.search(r"9216 / fixed, parameters \+ AdamW state: ([\d.]+)x", text).group(1))
    assert resident_ratio == pytest.approx(rows["9216"]["model"] / rows["fixed"]["model"], abs=0.06)


def test_out_proj_ablation_reports_intervals_that_follow_from_its_runs(text):
    from scipy import stats

    runs = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([-+][\d.]+)$", text, flags=re.M)
    assert len(runs) >= 3, runs
    with_proj, without = [float(r[1]) for r in runs], [float(r[2]) for r in runs]
    for r in runs:
        assert float(r[3]) == pytest.approx(float(r[2]) - float(r[1]), abs=2e-4)

    def interval(values):
        half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
        return statistics.mean(values), half

    for label, values in (("with out_proj", with_proj), ("without", without)):
        mean, half = map(float, re.search(rf"{label}: ([\d.]+) ± ([\d.]+) \(95% t-interval, n = {len(runs)}\)",
                                          text).groups())
        expected = interval(values)
        assert mean == pytest.approx(expected[0], abs=2e-4) and half == pytest.approx(expected[1], abs=5e-4)
    mean, half = map(float, re.search(r"paired by seed: ([-+][\d.]+) ± ([\d.]+)", text).groups())
    expected = interval([float(r[3]) for r in runs])
    assert mean == pytest.approx(expected[0], abs=2e-4) and half == pytest.approx(expected[1], abs=5e-4)
    higher = sum(float(r[3]) > 0 for r in runs)
    assert f"without out_proj ended higher in {higher} of {len(runs)} seeds" in text
    reading = re.search(r"reading: the interval (contains 0|is above 0|is below 0)", text).group(1)
    if mean - half > 0:
        assert reading == "is above 0"
    elif mean + half < 0:
        assert reading == "is below 0"
    else:
        assert reading == "contains 0"
    # the projection's parameters, per layer: d_model^2 weights and d_model biases
    counts = [num(c) for c in re.findall(r"n = \d+\), ([\d,]+) parameters", text)]
    assert len(counts) == 2 and counts[0] - counts[1] == NUM_LAYERS * (D_MODEL ** 2 + D_MODEL)


def test_figures_have_alt_text(built_book: Path):
    page = parse(built_book, PAGE)
    figures = [img for img in page.images if "_images/" in (img.get("src") or "")]
    assert figures and all((img.get("alt") or "").strip() for img in figures)


SUMMARY_BOX = re.compile(r'<div class="[^"]*\badmonition\b[^"]*">\s*<p class="admonition-title">In short</p>')
# Issue 26: every chapter ends with an "In short" box (these are the chapters this file's author changed).
SUMMARISED = ("book/01_one_head", "book/02_causal_attention", "book/03_many_heads", "book/04_splitting_heads",
              "book/05_concatenating_heads", "book/06_final_projection", "book/07_bug_clinic_9216",
              "book/08_bug_clinic_projection", "book/10_checklist", "book/shape_explorer", PAGE)


@pytest.mark.parametrize("page", SUMMARISED)
def test_chapter_ends_with_an_in_short_box(built_book: Path, page: str):
    html = (built_book / f"{page}.html").read_text()
    article = html[html.index('<article class="bd-article">'):html.index("</article>")]
    boxes = list(SUMMARY_BOX.finditer(article))
    assert len(boxes) == 1, f"{page}: {len(boxes)} 'In short' boxes"
    after = article[boxes[0].end():]
    assert "<h2" not in after and "<h3" not in after, f"{page}: the 'In short' box is not at the end"
    assert "<li>" in after, f"{page}: the 'In short' box lists nothing"


def test_the_chapter_keeps_its_own_asserts():
    source = "\n".join(c.source for c in jupytext.read(REPO / f"{PAGE}.md").cells if c.cell_type == "code")
    assert 'assert trained_val < math.log(vocab_size)' in source
    assert "assert torch.allclose(rebuilt, output" in source
    assert "raises-exception" in (REPO / f"{PAGE}.md").read_text()


def test_check_yourself_answers_are_folded(built_book: Path):
    html = (built_book / f"{PAGE}.html").read_text()
    section = html[html.index('<section id="check-yourself">'):]
    assert re.search(r"<ol[ >]", section)
    assert len(re.findall(r'class="[^"]*dropdown', section)) >= 3
