"""Chapters 4-6 and the shape explorer.

Two kinds of checks: the built HTML shows the executed outputs these pages promise (numbers, a figure with alt
text, the explorer's controls), and the code the pages define is run here, in pytest, against PyTorch's own modules:
the finished MultiHeadAttention of chapter 6 against torch.nn.MultiheadAttention, the shape explorer's functions
against real forward passes.
"""
from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import pytest
import torch
import torch.nn as nn

from conftest import REPO

matplotlib.use("Agg")  # the pages' figure cells run here without a display
import matplotlib.pyplot as plt  # noqa: E402

PAGES = ("04_splitting_heads", "05_concatenating_heads", "06_final_projection", "shape_explorer")
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------------------------
# Reading the pages: their code cells (executed here) and their built HTML (outputs only, never the prose).

def page_namespace(name: str) -> dict:
    """Exec every code cell of book/<name>.md except the ones that fail on purpose; return the namespace."""
    import jupytext

    notebook = jupytext.read(REPO / "book" / f"{name}.md")
    namespace: dict = {"__name__": f"book_{name}"}
    for cell in notebook.cells:
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        # IPython magics (%matplotlib inline) are not Python; everything else runs as written.
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        exec(compile(source, f"book/{name}.md", "exec"), namespace)
    plt.close("all")
    return namespace


class _OutputCollector(HTMLParser):
    """Collects the text and <img> tags inside myst-nb's cell_output containers, and the traceback outputs."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0          # >0 while inside a cell_output div
        self.div_stack: list[bool] = []
        self.texts: list[str] = []
        self.images: list[dict] = []
        self.tracebacks: list[str] = []
        self._in_traceback = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "div":
            opens_output = "cell_output" in classes
            is_traceback = "traceback" in classes
            self.div_stack.append((opens_output, is_traceback))
            self.depth += opens_output
            self._in_traceback += is_traceback
            if is_traceback:
                self.tracebacks.append("")
        elif tag == "img" and self.depth:
            self.images.append(attrs)

    def handle_endtag(self, tag):
        if tag == "div" and self.div_stack:
            opens_output, is_traceback = self.div_stack.pop()
            self.depth -= opens_output
            self._in_traceback -= is_traceback

    def handle_data(self, data):
        if self.depth:
            self.texts.append(data)
            if self._in_traceback:
                self.tracebacks[-1] += data


def page_outputs(built_book: Path, name: str) -> _OutputCollector:
    page = built_book / "book" / f"{name}.html"
    assert page.exists(), f"{page} was not built"
    collector = _OutputCollector()
    collector.feed(page.read_text())
    collector.text = "".join(collector.texts)
    return collector


# ---------------------------------------------------------------------------------------------------------------
# The built pages.

@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES)
def test_page_has_a_figure_with_alt_text(built_book, name):
    images = page_outputs(built_book, name).images
    assert images, f"{name}: no figure among the executed outputs"
    assert all(img.get("alt", "").strip() for img in images), f"{name}: a figure has no alt text"


@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES)
def test_page_outputs_carry_no_warning(built_book, name):
    text = page_outputs(built_book, name).text
    assert not re.search(r"\w+Warning:", text), f"{name} prints a warning: {text[:2000]}"


@pytest.mark.slow
def test_splitting_heads_equals_the_wrapper(built_book):
    text = page_outputs(built_book, "04_splitting_heads").text
    assert "same output as the wrapper: True" in text
    # The same comparison with the heads stacked in the wrong order must fail on the page.
    assert "heads stacked in the wrong order, same output: False" in text
    assert re.search(r"wrapper: (\d[\d,]*) parameters \| split: \1 parameters", text)


@pytest.mark.slow
def test_concatenating_heads_shows_the_view_error_and_the_shortcut(built_book):
    outputs = page_outputs(built_book, "05_concatenating_heads")
    assert any("view size is not compatible" in tb for tb in outputs.tracebacks), "the view error is not shown"
    text = outputs.text
    assert "contiguous().view equals reshape: True" in text
    assert "transpose + contiguous + view equals torch.cat over heads: True" in text
    assert "shape check passed: (2, 5, 8)" in text
    assert "allclose with the correct module: False" in text


@pytest.mark.slow
def test_final_projection_page_outputs(built_book):
    outputs = page_outputs(built_book, "06_final_projection")
    text = outputs.text
    assert re.search(r"MultiHeadAttention total:\s+2,360,064", text)
    assert re.search(r"W_query \+ W_key \+ W_value:\s+1,769,472", text)
    # Head isolation: without out_proj head 2 of 4 (head_dim 4) moves columns 8-11 only; with it, all 16.
    assert "head 2: without out_proj moves columns [8, 9, 10, 11]; with out_proj moves 16 of 16" in text
    comparisons = re.findall(r"d_in=\s*(\d+), d_out=\s*(\d+), heads=\s*\d+: .*?allclose: (True|False)", text)
    assert {(a == b) for a, b, _ in comparisons} == {True, False}, "need both d_in == d_out and d_in != d_out"
    assert comparisons and all(ok == "True" for _, _, ok in comparisons), comparisons
    assert "keys and values swapped, allclose: False" in text
    assert any("ValueError" in tb and "divisible by num_heads" in tb for tb in outputs.tracebacks)
    # rasbt #444: GPT-2 XL's 1600 width with its 48 layers taken for heads.
    assert any("d_out (1600) must be divisible by num_heads (48)" in tb for tb in outputs.tracebacks)
    # GPT-2 as released has Q/K/V biases; the textbook's config does not.
    assert re.search(r"with qkv_bias=True:\s+2,362,368", text)
    assert "released GPT-2, c_attn 1,771,776 + c_proj 590,592 = 2,362,368" in text
    # The case for out_proj: a later Linear mixes the heads too; what out_proj adds is a learned subspace per head.
    assert "no out_proj, then a Linear: head 2 moves 16 of 16 columns" in text
    subspace = re.search(r"with out_proj: head 2 adds to 16 of 16 columns, inside a 4-dimensional subspace "
                         r"\(largest part outside it: ([\d.e+-]+)\)", text)
    assert subspace and float(subspace.group(1)) < 1e-4
    assert "without: head 2 adds to columns [8, 9, 10, 11] only" in text
    # The paper's equations, head by head, give the module's output; the recorded shapes at GPT-2 size.
    assert "the paper's equations give the module's output: True" in text
    for symbol, shape in (("Q_1 = X W_1^Q", "(8, 1024, 64)"), ("Q_1 K_1^T", "(8, 1024, 1024)"),
                          ("head_1", "(8, 1024, 64)"), ("Concat(...)", "(8, 1024, 768)"),
                          ("MultiHead(X)", "(8, 1024, 768)")):
        assert re.search(re.escape(symbol) + r"\s+" + re.escape(shape), text), symbol


@pytest.mark.slow
def test_shape_explorer_outputs_and_static_controls(built_book):
    text = page_outputs(built_book, "shape_explorer").text
    assert re.search(r"output\s+torch\.Size\(\[8, 1024, 768\]\)", text)
    assert re.search(r"output\s+torch\.Size\(\[8, 1024, 9216\]\)", text)
    assert re.search(r"parameters\s+2,360,064", text) and re.search(r"parameters\s+21,233,664", text)

    # The controls and the first table are plain HTML in the page (no widget state, no kernel): the browser's own
    # script updates the table (tests/test_browser.py moves a slider).
    page = (built_book / "book" / "shape_explorer.html").read_text()
    explorer = page[page.index('<div class="mha-explorer"'):]
    for name in ("batch", "context_length", "d_in", "d_out", "num_heads"):
        assert f'name="{name}_slider"' in explorer and f'name="{name}"' in explorer, name
    assert 'name="divide" checked' in explorer and 'name="final_projection" checked' in explorer
    assert "<td>output</td><td>torch.Size([8, 1024, 768])</td>" in explorer, "the first table is not the default"
    assert "parameters 2,360,064" in explorer and "<script>" in explorer


@pytest.mark.slow
def test_shape_explorer_states_the_memory_formula_as_math(built_book):
    """The page carries display math for MathJax (the memory of the weights against the output), and the formula
    agrees with what the explorer itself computes."""
    page = (built_book / "book" / "shape_explorer.html").read_text()
    display = re.findall(r'<div class="math notranslate nohighlight">(.*?)</div>', page, flags=re.S)
    formula = html.unescape(" ".join(display))
    assert r"b \cdot h \cdot T^2 \cdot 4" in formula and r"b \cdot T \cdot d_{out} \cdot 4" in formula, display
    assert "tex2jax_ignore" not in page.split("<h1>", 1)[0].rsplit("<section", 1)[-1], "MathJax is told to skip"


@pytest.mark.slow
@pytest.mark.browser
def test_shape_explorer_offline_shows_typeset_math_and_controls(built_book):
    """With the network off, the page typesets its math and draws the saved sliders and switches; a screenshot
    of the top of the page (math and controls) is saved as a test artifact."""
    from browser_support import CHROMIUM_ARGS, PageLog, require_browser, serve

    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with serve(built_book) as site, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        log = PageLog(site)
        log.attach(page)
        page.goto(site + "book/shape_explorer.html", wait_until="networkidle", timeout=60_000)
        page.wait_for_function("() => document.querySelectorAll('.math').length > 0 && "
                               "[...document.querySelectorAll('.math')].every(e => e.querySelector('mjx-container'))",
                               timeout=30_000)
        page.wait_for_selector(".mha-explorer input[type=range]", state="visible", timeout=30_000)
        labels = page.eval_on_selector_all(".mha-explorer label", "nodes => nodes.map(n => n.innerText.trim())")
        for label in ("batch", "context length", "d_in", "d_out", "num_heads", "divide d_out by num_heads",
                      "final projection"):
            assert label in labels, (label, labels)
        shown = page.inner_text(".mha-explorer")
        assert "torch.Size([8, 1024, 768])" in shown and "2,360,064" in shown
        assert "\\cdot" not in page.inner_text("article"), "raw LaTeX left on the page"
        out = REPO / "_build" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        page.locator("div.math").first.scroll_into_view_if_needed()  # the display equation
        page.screenshot(path=str(out / "shape_explorer_math.png"))
        page.locator(".mha-explorer").first.scroll_into_view_if_needed()
        page.screenshot(path=str(out / "shape_explorer_controls.png"))
        assert not log.problems(), "\n".join(log.problems())
        browser.close()


# ---------------------------------------------------------------------------------------------------------------
# Chapter 6's MultiHeadAttention against torch.nn.MultiheadAttention.

@pytest.fixture(scope="module")
def chapter6():
    return page_namespace("06_final_projection")


def torch_reference(mha: nn.Module, d_in: int, d_out: int, num_heads: int) -> nn.MultiheadAttention:
    """nn.MultiheadAttention with the weights of `mha`. When d_in != d_out the queries are fed already projected
    (nn.MultiheadAttention's query width is its embed_dim) and its own query projection is the identity."""
    same_width = d_in == d_out
    ref = nn.MultiheadAttention(d_out, num_heads, bias=True, batch_first=True,
                                kdim=None if same_width else d_in, vdim=None if same_width else d_in)
    zeros = torch.zeros(d_out)
    bias = lambda layer: zeros if layer.bias is None else layer.bias.detach().cpu()  # noqa: E731
    with torch.no_grad():
        if same_width:
            ref.in_proj_weight.copy_(torch.cat([mha.W_query.weight, mha.W_key.weight, mha.W_value.weight]).cpu())
            ref.in_proj_bias.copy_(torch.cat([bias(mha.W_query), bias(mha.W_key), bias(mha.W_value)]))
        else:
            ref.q_proj_weight.copy_(torch.eye(d_out))
            ref.k_proj_weight.copy_(mha.W_key.weight.cpu())
            ref.v_proj_weight.copy_(mha.W_value.weight.cpu())
            ref.in_proj_bias.copy_(torch.cat([zeros, bias(mha.W_key), bias(mha.W_value)]))
        ref.out_proj.weight.copy_(mha.out_proj.weight.cpu())
        ref.out_proj.bias.copy_(mha.out_proj.bias.cpu())
    return ref.to(device).eval()


@pytest.mark.parametrize("d_in, d_out, num_heads, qkv_bias", [
    (16, 16, 4, False),
    (64, 64, 8, False),
    (96, 96, 12, True),
    (8, 16, 2, False),    # d_out = 2 x d_in: exposes weights stored transposed
    (12, 24, 4, True),
    (40, 20, 5, False),   # d_in > d_out
])
def test_multi_head_attention_equals_torch(chapter6, d_in, d_out, num_heads, qkv_bias):
    torch.manual_seed(d_in * 1000 + d_out)
    context_length, num_tokens = 12, 9
    mha = chapter6["MultiHeadAttention"](d_in, d_out, context_length, 0.1, num_heads, qkv_bias=qkv_bias)
    mha = mha.to(device).eval()
    ref = torch_reference(mha, d_in, d_out, num_heads)
    x = torch.randn(3, num_tokens, d_in, device=device)
    causal = torch.triu(torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device), diagonal=1)
    with torch.no_grad():
        queries = x if d_in == d_out else x @ mha.W_query.weight.T + (0 if mha.W_query.bias is None
                                                                      else mha.W_query.bias)
        expected, _ = ref(queries, x, x, attn_mask=causal, need_weights=False)
        actual = mha(x)
    assert actual.shape == (3, num_tokens, d_out)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_multi_head_attention_is_causal(chapter6):
    torch.manual_seed(0)
    mha = chapter6["MultiHeadAttention"](8, 12, 10, 0.0, 3).to(device).eval()
    x = torch.randn(2, 7, 8, device=device)
    changed_future = x.clone()
    changed_future[:, 4:] += 1.0
    with torch.no_grad():
        before, after = mha(x), mha(changed_future)
    torch.testing.assert_close(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_multi_head_attention_rejects_indivisible_width(chapter6):
    with pytest.raises(ValueError, match="divisible"):
        chapter6["MultiHeadAttention"](1024, 1024, 16, 0.0, 24)


def test_gpt2_small_parameter_count(chapter6):
    with torch.device("meta"):
        mha = chapter6["MultiHeadAttention"](768, 768, 1024, 0.0, 12)
    assert sum(p.numel() for p in mha.parameters()) == 3 * 768 ** 2 + 768 ** 2 + 768 == 2_360_064
    assert {"W_query.weight", "W_key.weight", "W_value.weight", "out_proj.weight", "out_proj.bias"} <= set(
        dict(mha.named_parameters()))


# ---------------------------------------------------------------------------------------------------------------
# The shape explorer's functions and its table.

@pytest.fixture(scope="module")
def explorer():
    return page_namespace("shape_explorer")


def test_explorer_default_is_gpt2_small(explorer):
    result = explorer["attention_shapes"](batch=8, context_length=1024, d_in=768, d_out=768, num_heads=12)
    shapes = result["shapes"]
    assert shapes["output"] == torch.Size([8, 1024, 768])
    assert shapes["queries"] == shapes["keys"] == shapes["values"] == (8, 12, 1024, 64)
    assert shapes["scores"] == shapes["weights"] == (8, 12, 1024, 1024)
    assert result["parameters"] == 2_360_064
    assert result["weights_bytes"] == 8 * 12 * 1024 * 1024 * 4
    report = explorer["shape_report"](batch=8, context_length=1024, d_in=768, d_out=768, num_heads=12)
    assert "torch.Size([8, 1024, 768])" in report and "2,360,064" in report


def test_explorer_reproduces_the_9216_bug(explorer):
    sizes = dict(batch=8, context_length=1024, d_in=768, d_out=768, num_heads=12, divide=False)
    buggy = explorer["attention_shapes"](**sizes, final_projection=False)
    assert buggy["shapes"]["output"] == torch.Size([8, 1024, 9216])
    assert buggy["parameters"] == 21_233_664 == 12 * 3 * 768 ** 2
    hidden = explorer["attention_shapes"](**sizes, final_projection=True)
    assert hidden["shapes"]["output"] == (8, 1024, 768)
    assert hidden["parameters"] == 21_233_664 + 9216 * 768 + 768
    no_projection = explorer["attention_shapes"](**{**sizes, "divide": True}, final_projection=False)
    assert no_projection["parameters"] == 1_769_472


@pytest.mark.parametrize("batch, context_length, d_in, d_out, num_heads", [(2, 5, 6, 8, 2), (1, 7, 12, 6, 3)])
def test_explorer_matches_a_real_forward_pass(explorer, chapter6, batch, context_length, d_in, d_out, num_heads):
    """The meta-device shapes and counts are those of chapter 6's module running for real."""
    result = explorer["attention_shapes"](batch=batch, context_length=context_length, d_in=d_in, d_out=d_out,
                                          num_heads=num_heads)
    mha = chapter6["MultiHeadAttention"](d_in, d_out, context_length, 0.0, num_heads).eval()
    x = torch.randn(batch, context_length, d_in)
    with torch.no_grad():
        output = mha(x)
    assert result["shapes"]["x"] == x.shape and result["shapes"]["output"] == output.shape
    assert result["parameters"] == sum(p.numel() for p in mha.parameters())
    head_dim = d_out // num_heads
    assert result["shapes"]["context"] == (batch, num_heads, context_length, head_dim)
    assert result["weights_bytes"] == batch * num_heads * context_length ** 2 * 4
    half = explorer["attention_shapes"](batch=batch, context_length=context_length, d_in=d_in, d_out=d_out,
                                        num_heads=num_heads, dtype=torch.bfloat16)
    assert half["weights_bytes"] * 2 == result["weights_bytes"]


def test_explorer_division_check(explorer):
    with pytest.raises(ValueError, match="divisible"):
        explorer["attention_shapes"](batch=1, context_length=4, d_in=8, d_out=10, num_heads=3)
    # Without the division each head is d_out wide, so any head count fits (that is the bug).
    result = explorer["attention_shapes"](batch=1, context_length=4, d_in=8, d_out=10, num_heads=3,
                                          divide=False, final_projection=False)
    assert result["shapes"]["output"] == (1, 4, 30)


def test_explorer_table_comes_from_attention_shapes(explorer):
    """The explorer's first table (in the page's HTML) and its rows for other settings are attention_shapes'."""
    gpt2 = dict(batch=8, context_length=1024, d_in=768, d_out=768, num_heads=12)
    rows, summary = explorer["explorer_rows"](**gpt2)
    assert dict(rows)["output"] == "torch.Size([8, 1024, 768])" and "parameters 2,360,064" in summary
    page = explorer["explorer_html"]()
    assert all(f"<td>{name}</td><td>{shape}</td>" in page for name, shape in rows)
    rows, summary = explorer["explorer_rows"](**gpt2, divide=False, final_projection=False)
    assert dict(rows)["output"] == "torch.Size([8, 1024, 9216])" and "parameters 21,233,664" in summary
    with pytest.raises(ValueError, match="divisible"):
        explorer["explorer_rows"](**{**gpt2, "d_out": 776})
