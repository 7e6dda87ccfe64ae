"""Chapter 11, masks in the wild (issue 16): what its executed cells must show, and the asserts it must make.

Uses the `built_book` fixture (MHA_BOOK_HTML points it at a prebuilt site). Only the text of executed outputs
counts for the numbers; the expected values are worked out here from the sizes, not copied from a run. The build
fails on any cell error outside a cell tagged raises-exception, so the chapter's own asserts held when it was built;
the last tests check that those asserts are still in its source.
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

from conftest import REPO
from test_book_bug_clinics import SECTION_NUMBER, last_section, output_text, parse

PAGE = "book/11_masks_in_the_wild"                       # padding and mask polarity
PAGE_B = "book/11b_cross_attention_and_kv_cache"         # cross-attention, the KV cache, grouped-query attention
MiB = 2**20
GPT2_LAYERS, GPT2_HEADS, GPT2_HEAD_DIM, GPT2_CONTEXT, GPT2_WIDTH = 12, 12, 64, 1024, 768


@pytest.fixture(scope="module")
def text(built_book: Path) -> str:
    return output_text(built_book, PAGE)


@pytest.fixture(scope="module")
def html(built_book: Path) -> str:
    return (built_book / f"{PAGE}.html").read_text()


@pytest.fixture(scope="module")
def text_b(built_book: Path) -> str:
    return output_text(built_book, PAGE_B)


@pytest.fixture(scope="module")
def html_b(built_book: Path) -> str:
    return (built_book / f"{PAGE_B}.html").read_text()


def tensor_rows(block: str) -> list[list[int]]:
    """The rows of a printed integer tensor, e.g. 'tensor([[0, 1], [1, 0]], dtype=torch.int32)'."""
    return [[int(v) for v in row.split(",")] for row in re.findall(r"\[([\d,\s]+)\]", block)]


@pytest.mark.parametrize("page", [PAGE, PAGE_B])
def test_outputs_print_no_warning(built_book: Path, page: str):
    text = output_text(built_book, page)
    assert not re.search(r"\w+Warning:", text), re.search(r".*\w+Warning:.*", text).group(0)


def test_figures_have_alt_text(built_book: Path):
    figures = [img for img in parse(built_book, PAGE).images if "_images/" in (img.get("src") or "")]
    assert len(figures) >= 2, "expected the padding-mask and the who-moves-whom figures"
    assert all((img.get("alt") or "").strip() for img in figures)


def test_padding_rows_with_nothing_to_see_are_nan_with_minus_inf(text):
    lengths, num_tokens = (5, 3, 2), 5
    left_padding = [[int(pos < num_tokens - length) for pos in range(num_tokens)] for length in lengths]
    block = re.search(r"output rows that are NaN:\s*(tensor\(.*?\))", text, flags=re.S)
    assert block and tensor_rows(block.group(1)) == left_padding
    empty = re.search(r"queries whose every key is hidden:\s*(tensor\(.*?\))", text, flags=re.S)
    assert empty and tensor_rows(empty.group(1)) == left_padding


def test_nan_spreads_and_a_finite_fill_stops_it(text):
    assert "loss by multiplying with 0: nan" in text
    assert float(re.search(r"loss by selecting real rows: ([\d.]+)", text).group(1)) >= 0
    assert "NaN in the gradient of {'W_query': False, 'W_key': False, 'W_value': True}" in text
    assert "finite outputs, finite gradients; rows with nothing to see are uniform: 0.2" in text
    assert "finfo.min + finfo.min = -inf" in text
    assert "every real position equals its sequence run alone, without padding: True" in text
    assert "real positions agree with nn.MultiheadAttention: True" in text
    assert re.search(r"our padded positions:\s+\[0\.0, 0\.0, 0\.0, 0\.0\]", text)


def test_both_polarities_are_quoted_from_the_docstrings_and_the_docs_are_linked(text, html):
    assert re.search(r"SDPA, attn_mask:\s+.*True.*should take part in attention", text)
    assert re.search(r"MHA, key_padding_mask:\s+.*True.*will be ignored", text)
    assert re.search(r"MHA, attn_mask:\s+.*True.*not allowed to attend", text)
    assert re.search(r"SDPA, a note:\s+.*attn_mask.*inverse of .*MultiheadAttention", text)
    assert "SDPA: True = take part; nn.MultiheadAttention: True = may not attend (both asserted)" in text
    for doc in ("torch.nn.functional.scaled_dot_product_attention.html", "torch.nn.MultiheadAttention.html"):
        assert re.search(rf'href="https://docs\.pytorch\.org/docs/stable/generated/{re.escape(doc)}"', html), doc
    assert "Reports in public code:" in html


def test_the_polarity_clinic_cites_the_public_reports(html):
    """Like chapter 7 cites #67: the reports of the mix-up are linked, and no placeholder is left."""
    for link in ("https://github.com/rasbt/LLMs-from-scratch/issues/1061",
                 "https://github.com/pytorch/pytorch/issues/170400",
                 "https://github.com/pytorch/pytorch/pull/170415"):
        assert f'href="{link}"' in html, link
    assert "{REPORTS}" not in html


def test_clinic_diagnostics_at_gpt2_small_size(text):
    names = ("reference (masked_fill)", "buggy (SDPA, mask as is)", "fixed (SDPA, ~mask)")
    header = re.search(r"^\s+" + r"\s+".join(re.escape(n) for n in names) + r"\s*$", text, flags=re.M)
    assert header, "no diagnostics table"
    table = text[header.end():]

    def row(label: str) -> list[str]:
        match = re.search(rf"^{re.escape(label)}\s+(.+)$", table, flags=re.M)
        assert match, f"no row {label!r}"
        return re.findall(r"\([^)]*\)|\S+", match.group(1))

    shape = f"(8, {GPT2_CONTEXT}, {GPT2_WIDTH})"
    assert row("output shape (meta, batch 8)") == [shape] * 3
    assert row("parameters") == [f"{4 * GPT2_WIDTH**2 + GPT2_WIDTH:,}"] * 3
    assert row("equals the reference") == ["True", "False", "True"]
    moved = [float(v) for v in row("earlier outputs moved by the last token")]
    assert moved[0] < 1e-6 and moved[1] > 1e-3 and moved[2] < 1e-6
    differences = [float(v) for v in row("max |difference| (positions 0..T-2)")]
    assert differences[1] > 1e-3 and differences[2] < 1e-4
    ratio = re.search(r"buggy / fixed, median of the per-round ratios = ([\d.]+)x", text)
    assert ratio and float(ratio.group(1)) > 0   # reported, never asserted: time is not a diagnostic here
    assert re.search(r"buggy module, last position: finite (True|False)", text)


def test_cross_attention_shapes_and_parameters(text_b):
    text = text_b
    b, t_q, t_kv, d_model, kdim, vdim = 2, 5, 7, 16, 12, 10
    assert f"output: {(b, t_q, d_model)} | attention weights (averaged over heads): {(b, t_q, t_kv)}" in text
    params = d_model * (d_model + kdim + vdim) + d_model**2 + d_model
    assert f"equal to nn.MultiheadAttention(kdim={kdim}, vdim={vdim}); parameters {params:,}" in text
    # The self-attention reshape applied to the memory fails loudly (the cell tagged raises-exception).
    assert f"shape '[{b}, {t_q}, 4, 4]' is invalid for input of size {b * t_kv * d_model}" in text


def test_kv_cache_shape_equivalence_and_memory(text_b):
    text = text_b
    assert f"cache per layer: keys (1, {GPT2_HEADS}, 10, {GPT2_HEAD_DIM}) values (1, {GPT2_HEADS}, 10, " \
           f"{GPT2_HEAD_DIM})" in text
    diff = re.search(r"last token, cached vs full causal attention: max \|difference\| ([\d.e+-]+)", text)
    assert diff and float(diff.group(1)) < 1e-5
    assert "is_causal=True with 1 query and 10 cached keys returns the first token's value" in text
    for dtype, size in (("float32", 4), ("float16", 2)):
        per_token = 2 * GPT2_LAYERS * GPT2_HEADS * GPT2_HEAD_DIM * size
        line = f"torch.{dtype}: {per_token:,} bytes per token, {per_token * GPT2_CONTEXT / MiB:.1f} MiB per " \
               f"sequence of {GPT2_CONTEXT}, {8 * per_token * GPT2_CONTEXT / MiB:.1f} MiB for a batch of 8"
        assert line in text, line


def test_grouped_query_attention_equivalence_and_the_repeat_trap(text_b):
    text = text_b
    assert "repeat_interleave: [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]" in text
    assert "repeat:            [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]" in text
    verdicts = dict(re.findall(r"^\s*(\w+) equals SDPA\(enable_gqa=True\) with 12 / 4 / 1 K/V heads: (\[.*?\])$",
                               text, flags=re.M))
    assert verdicts == {"GroupedQueryAttention": "[True, True, True]", "SharedWithRepeat": "[True, False, True]",
                        "SharedWithExpand": "[True, True, True]"}, verdicts


def test_grouped_query_savings_table(text_b):
    text = text_b
    full_params = 4 * GPT2_WIDTH**2 + GPT2_WIDTH
    full_cache = 2 * GPT2_LAYERS * GPT2_HEADS * GPT2_CONTEXT * GPT2_HEAD_DIM * 2
    rows = {int(kv): (int(p.replace(",", "")), float(mib))
            for kv, p, mib in re.findall(r"^\s+(\d+)\s+([\d,]+) \(\s*\d+%\)\s+([\d.]+) MiB \(\s*\d+%\)$", text,
                                         flags=re.M)}
    assert sorted(rows) == [1, 2, 3, 4, 6, 12], rows
    for kv, (params, mib) in rows.items():
        assert params == 2 * GPT2_WIDTH**2 + 2 * GPT2_WIDTH * kv * GPT2_HEAD_DIM + GPT2_WIDTH
        assert mib == round(full_cache * kv / GPT2_HEADS / MiB, 1)
    assert rows[12][0] == full_params


@pytest.mark.parametrize("page, questions", [(PAGE, 3), (PAGE_B, 2)])
def test_each_page_ends_with_in_short_and_check_yourself(built_book: Path, page: str, questions: int):
    html = (built_book / f"{page}.html").read_text()
    final = last_section(html)
    assert re.match(rf'<section id="check-yourself">\s*<h2>(?:{SECTION_NUMBER})?Check yourself', final), final[:120]
    assert re.search(r"<ol[ >]", final)
    assert len(re.findall(r'class="[^"]*dropdown', final)) >= questions
    assert 'href="exercises.html"' in final
    before = html[:html.index('<section id="check-yourself">')]
    assert "In short" in before[-6000:], f"{page}: no 'In short' box just before Check yourself"


def test_the_polarity_clinic_says_the_bug_showed_only_later_tokens(html):
    """The inverted mask hid the past and the token itself: each query saw only the tokens after it."""
    assert "could see only the tokens after it" in html


def test_the_second_page_has_a_figure_with_alt_text(built_book: Path):
    figures = [img for img in parse(built_book, PAGE_B).images if "_images/" in (img.get("src") or "")]
    assert figures and all(len((img.get("alt") or "").strip()) > 200 for img in figures)
    alt = figures[0].get("alt")
    assert all(term in alt for term in ("cross-attention", "KV cache", "grouped-query", "repeat_interleave")), alt


# --- The chapter's own asserts (they ran when the build executed the page) ------------------------------------

ASSERTS = {
    "the NaN rows are exactly the empty rows": "assert torch.equal(nan_rows, empty_rows)",
    "the NaN loss and the NaN W_value gradient": 'assert masked_sum.isnan() and selected.isfinite() and grad_nan["W_value"]',
    "finite fills change only the empty rows": "assert torch.equal(weights_min[~empty_rows], weights_inf[~empty_rows])",
    "two finite fills overflow": "assert two_fills == -torch.inf",
    "padding invariance": "assert torch.allclose(padded_out[b, num_tokens - length:], out_alone[0]",
    "nn.MultiheadAttention agrees on real positions": "assert torch.allclose(ours[is_real], theirs[is_real]",
    "SDPA: True = take part":
        "assert torch.allclose(F.scaled_dot_product_attention(q, k, v, attn_mask=~future), causal_reference",
    "MHA attn_mask: True = may not": "assert torch.allclose(mha_1head(x3, x3, x3, attn_mask=future)[0], expected,",
    "MHA key_padding_mask: True = may not":
        "assert torch.allclose(mha_1head(x3, x3, x3, key_padding_mask=pad)[0], expected_padded",
    "same shapes": 'assert buggy["output shape (meta, batch 8)"] == fixed["output shape (meta, batch 8)"]',
    "same parameters": 'assert buggy["parameters"] == fixed["parameters"] == 4 * 768**2 + 768 == 2_360_064',
    "equivalence catches it": 'assert not buggy["equals the reference"] and fixed["equals the reference"]',
    "the probe catches it": 'assert buggy["earlier outputs moved by the last token"] > 1e-3',
    "the fix is causal": 'assert fixed["earlier outputs moved by the last token"] < 1e-6',
    "cross-attention shapes": "assert ours.shape == (b, T_q, d_model) and weights.shape == (b, T_q, T_kv)",
    "cross-attention equals nn.MultiheadAttention": "assert torch.allclose(ours, theirs, atol=1e-5)",
    "the cache gives full causal attention": "assert torch.allclose(incremental, full, atol=1e-5)",
    "is_causal is top-left aligned": "assert torch.allclose(top_left, values[:, :, :1]",
    "cache bytes": "assert per_sequence == 2 * num_layers * num_heads * context_length * head_dim * dtype.itemsize",
    "GQA equals SDPA(enable_gqa=True)": 'assert all(matches["GroupedQueryAttention", kv] and matches["SharedWithExpand", kv]',
    "repeat gives the wrong grouping": 'assert not matches["SharedWithRepeat", 4]',
    "GQA parameters": "assert params == 2 * 768 * 768 + 2 * 768 * kv_heads * 64 + 768",
}


@pytest.fixture(scope="module")
def code_cells():
    """The code cells of both pages (the second runs the first page's MultiHeadAttention cell)."""
    cells = []
    for page in (PAGE, PAGE_B):
        notebook = jupytext.read(REPO / f"{page}.md")
        cells += [cell for cell in notebook.cells if cell.cell_type == "code"]
    return cells


@pytest.mark.parametrize("claim", ASSERTS)
def test_chapter_asserts_its_claims(code_cells, claim: str):
    fragment = ASSERTS[claim]
    holders = [cell for cell in code_cells if fragment in cell.source]
    assert holders, f"the chapter no longer asserts: {claim}"
    for cell in holders:  # an assert in a cell allowed to fail would prove nothing
        assert "raises-exception" not in cell.metadata.get("tags", []), claim


def test_only_the_cross_attention_reshape_may_fail(code_cells):
    failing = [cell.source for cell in code_cells if "raises-exception" in cell.metadata.get("tags", [])]
    assert len(failing) == 1 and "keys_as_in_self_attention" in failing[0], failing


@pytest.mark.parametrize("page", [PAGE, PAGE_B])
def test_set_up_cell_is_hidden(page: str):
    first = next(c for c in jupytext.read(REPO / f"{page}.md").cells if c.cell_type == "code")
    assert "import torch" in first.source and "hide-input" in first.metadata.get("tags", [])
