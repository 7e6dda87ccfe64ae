"""The preface and chapters 1-3 (one head, causal attention, many heads) and the attention-weights viewer.

Three kinds of checks:
- the built HTML shows the executed outputs these pages promise, judged by what must be true (weights sum to one,
  the future is masked, the scaled scores keep unit spread), not by numbers copied from a run;
- the classes the pages define are run here against PyTorch's own scaled_dot_product_attention, at sizes the pages
  do not use (d_in != d_out, several batches), on CUDA when there is one;
- the viewer's saved widget state holds one heatmap per sentence and head, switched in the browser by jslink, and
  (where Chromium is installed) clicking a head on the static page really shows that head.
"""
from __future__ import annotations

import ast
import base64
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, toc_files

PAGES = ("index", "01_one_head", "02_causal_attention", "03_many_heads")
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------------------------
# Reading the built pages: per cell, its tags, its output text and its images.

class _Cells(HTMLParser):
    """Splits a myst-nb page into code cells: tags (from the cell's classes), output text, images, traceback."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells: list[dict] = []
        self.stack: list[str] = []  # for every open div: "cell", "output", or ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and "output" in self.stack:
            self.cells[-1]["images"].append(attrs)
        if tag != "div":
            return
        classes = (attrs.get("class") or "").split()
        if "cell" in classes and "container" in classes:
            tags = [c.removeprefix("tag_") for c in classes if c.startswith("tag_")]
            self.cells.append({"tags": tags, "text": "", "images": [], "traceback": False})
            self.stack.append("cell")
        elif "cell_output" in classes:
            self.stack.append("output")
        else:
            if "traceback" in classes and "output" in self.stack:
                self.cells[-1]["traceback"] = True
            self.stack.append("")

    def handle_endtag(self, tag):
        if tag == "div" and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if "output" in self.stack:
            self.cells[-1]["text"] += data


def page_html(built_book: Path, name: str) -> str:
    page = built_book / "book" / f"{name}.html"
    assert page.exists(), f"{page} was not built"
    return page.read_text()


def page_cells(built_book: Path, name: str) -> list[dict]:
    parser = _Cells()
    parser.feed(page_html(built_book, name))
    return parser.cells


def page_text(built_book: Path, name: str) -> str:
    return "\n".join(c["text"] for c in page_cells(built_book, name))


def printed_tensor(text: str, after: str) -> torch.Tensor:
    """The first `tensor([...])` printed after the line starting with `after` (or at the start when empty)."""
    start = text.index(after) + len(after)
    match = re.search(r"tensor\((\[.*?\]\])\)", text[start:], re.S)
    assert match, f"no tensor printed after {after!r}"
    return torch.tensor(json.loads(match.group(1).replace("nan", "NaN").replace(".,", ".0,").replace(".]", ".0]")))


def widget_state(built_book: Path, name: str) -> dict:
    match = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>',
                      page_html(built_book, name), re.S)
    assert match, f"{name}: no saved widget state"
    return json.loads(html.unescape(match.group(1)))["state"]


# ---------------------------------------------------------------------------------------------------------------
# Every page: a figure with alt text, no warning, no traceback outside the cells tagged raises-exception.

@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES)
def test_page_has_a_figure_with_alt_text(built_book, name):
    images = [img for cell in page_cells(built_book, name) for img in cell["images"]]
    assert images, f"{name}: no figure among the executed outputs"
    for img in images:
        assert img.get("alt", "").strip(), f"{name}: figure {img.get('src')} has no alt text"
        assert (built_book / "book" / img["src"]).resolve().stat().st_size > 1000, f"{name}: empty figure"


@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES)
def test_page_prints_no_warning_and_fails_only_on_purpose(built_book, name):
    for cell in page_cells(built_book, name):
        assert not re.search(r"\w+Warning:", cell["text"]), f"{name} prints a warning: {cell['text'][:500]}"
        if cell["traceback"]:
            assert "raises-exception" in cell["tags"], f"{name}: untagged error: {cell['text'][-500:]}"


# ---------------------------------------------------------------------------------------------------------------
# The preface.

@pytest.mark.slow
def test_preface_tells_the_story_and_maps_the_course(built_book):
    page = page_html(built_book, "index")
    words = html.unescape(re.sub(r"<[^>]+>", "", page))
    for fact in ("#67", "#68", "41.1 ms", "8.35 ms", "9216", "python -m grader check"):
        assert fact in words, f"the preface does not mention {fact}"
    # The map links every other page of the table of contents (a link to a page not built would be plain text), the
    # reference part "Teaching with this course" aside (the sidebar lists it).
    for docname in toc_files(reference=False):
        if docname != "book/index":
            chapter = docname.removeprefix("book/")
            assert f'href="{chapter}.html' in page, f"the preface's map has no link to {chapter}"
    # The build-machine cell really ran.
    assert re.search(r"PyTorch \d+\.\d+", page_text(built_book, "index"))


# ---------------------------------------------------------------------------------------------------------------
# Chapter 1: one head.

@pytest.mark.slow
def test_one_head_scores_softmax_and_context(built_book):
    text = page_text(built_book, "01_one_head")
    scores = json.loads(re.search(r"scores for 'token': (\[.*?\])", text).group(1))
    weights = json.loads(re.search(r"weights for 'token': (\[.*?\])", text).group(1))
    assert len(scores) == len(weights) == 6
    # The printed weights are the softmax of the printed scores (up to their rounding), and sum to one.
    expected = torch.softmax(torch.tensor(scores), dim=0)
    assert torch.allclose(torch.tensor(weights), expected, atol=6e-3), (weights, expected)
    assert abs(sum(weights) - 1) < 5e-3
    for claim in ("loop and matrix product agree: True", "by hand equals torch.softmax: True",
                  "same as weights @ inputs: True", "row 3 is the vector computed above: True",
                  "SelfAttention matches F.scaled_dot_product_attention: True"):
        assert claim in text, claim
    assert "output shape: torch.Size([6, 2])" in text
    assert re.search(r"trainable parameters: 18 ", text)


@pytest.mark.slow
def test_one_head_saturation_measurement(built_book):
    text = page_text(built_book, "01_one_head")
    rows = [tuple(float(v) for v in m) for m in
            re.findall(r"^\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", text, re.M)]
    sizes = [int(r[0]) for r in rows]
    assert sizes == [2**p for p in range(11)], sizes
    for size, raw_std, scaled_std, raw_max, scaled_max in rows:
        # Unscaled scores spread like sqrt(d_k); scaled ones stay at unit spread.
        assert abs(raw_std / size**0.5 - 1) < 0.15, (size, raw_std)
        assert abs(scaled_std - 1) < 0.1, (size, scaled_std)
        assert scaled_max < 0.35, (size, scaled_max)  # 16 keys: far from one-hot
    raw_max = [r[3] for r in rows]
    assert raw_max[-1] > 0.9 and raw_max[6] > 0.75, "unscaled softmax does not saturate"
    assert all(b > a - 0.02 for a, b in zip(raw_max, raw_max[1:])), "saturation should grow with d_k"


@pytest.mark.slow
def test_one_head_states_what_default_init_gives(built_book):
    """The unit-variance table is the paper's assumption; at default nn.Linear init (768 -> 64) a query entry has
    variance about 1/3, so unscaled scores spread about sqrt(64) / 3, and the scaling still flattens the weights."""
    text = page_text(built_book, "01_one_head")
    q_var, k_var = map(float, re.search(r"variance of a query entry: ([\d.]+) .*?of a key entry: ([\d.]+)",
                                        text).groups())
    assert abs(q_var - 1 / 3) < 0.03 and abs(k_var - 1 / 3) < 0.03, (q_var, k_var)
    raw_std, scaled_std = map(float, re.search(r"score spread: unscaled ([\d.]+), scaled ([\d.]+)", text).groups())
    assert abs(raw_std - 64**0.5 / 3) < 0.3 and abs(scaled_std - raw_std / 8) < 0.01, (raw_std, scaled_std)
    raw_max, scaled_max = map(float, re.search(r"mean largest weight over 16 keys: unscaled ([\d.]+), scaled ([\d.]+)",
                                               text).groups())
    unit_variance = float(re.search(r"unit-variance q and k at d_k = 64, from the table above: unscaled ([\d.]+)",
                                    text).group(1))
    assert scaled_max < raw_max < unit_variance, (scaled_max, raw_max, unit_variance)


# ---------------------------------------------------------------------------------------------------------------
# Chapter 2: causal attention.

@pytest.mark.slow
def test_causal_masking_outputs(built_book):
    text = page_text(built_book, "02_causal_attention")
    mask = re.search(r"tensor\((\[\[[\d,\s\[\]]*\]\]), dtype=torch.int32\)", text)
    assert mask, "the mask is not printed as integers"
    mask = torch.tensor(json.loads(mask.group(1)), dtype=torch.float32)
    assert torch.equal(mask, torch.triu(torch.ones(6, 6), diagonal=1)), mask
    weights = printed_tensor(text, "dtype=torch.int32)")
    assert weights.shape == (6, 6)
    assert torch.all(weights.triu(diagonal=1) == 0), "the printed weights see the future"
    assert torch.allclose(weights.sum(dim=-1), torch.ones(6), atol=1e-3)
    assert weights[0, 0] == 1
    assert "both methods give the same weights: True" in text
    assert "future weights are exactly zero: True" in text
    # Renormalising after the softmax breaks on a large future score; -inf first does not.
    assert re.search(r"softmax, then mask and renormalise: tensor\(\[\[nan, nan\]\]", text)
    assert re.search(r"-inf, then softmax:\s+tensor\(\[\[1\., 0\.\]\]", text)


@pytest.mark.slow
def test_a_row_with_every_key_hidden(built_book):
    """-inf gives NaN that survives a multiplication by zero; finite fills do not, and leave the other rows alone."""
    text = page_text(built_book, "02_causal_attention")
    assert re.search(r"-inf: filler row \[nan, nan, nan\], masked sum nan", text)
    for fill in (r"torch\.finfo\(float32\)\.min", r"-1e9"):
        row = re.search(fill + r": filler row \[([\d., ]+)\], masked sum (-?[\d.]+)", text)
        assert row, fill
        weights = [float(v) for v in row.group(1).split(",")]
        assert abs(sum(weights) - 1) < 2e-3
    assert "rows with something to see are identical for all three fills: True" in text
    assert "-1e9 in float16: value cannot be converted" in text


@pytest.mark.slow
def test_dropout_belongs_on_the_weights(built_book):
    text = page_text(built_book, "02_causal_attention")
    on_weights, on_scores = map(float, re.search(r"largest error: on weights ([\d.]+), on scores ([\d.]+)",
                                                 text).groups())
    assert on_weights < 0.01 < 0.05 < on_scores, (on_weights, on_scores)
    assert "dropout on masked scores gives nan: True" in text


@pytest.mark.slow
def test_causal_attention_class_buffer_and_context_length(built_book):
    cells = page_cells(built_book, "02_causal_attention")
    text = "\n".join(c["text"] for c in cells)
    assert "output shape: torch.Size([2, 6, 2])" in text
    assert "CausalAttention matches F.scaled_dot_product_attention(is_causal=True): True" in text
    assert "first 3 outputs unchanged by the 3 later tokens: True" in text
    moved_to = re.search(r"moved to: (\w+)", text).group(1)
    assert moved_to in ("meta", "cuda")
    assert re.search(rf"buffer mask device:\s+{moved_to}", text)
    assert re.search(r"plain attribute mask device:\s*cpu", text)
    with_buffer = re.search(r"state_dict keys with buffer: (\[.*?\])", text).group(1)
    plain = re.search(r"state_dict keys, plain mask: (\[.*?\])", text).group(1)
    assert "'mask'" in with_buffer and "'mask'" not in plain
    # Exactly the two demonstrations fail, tagged: the device mix-up and the too-long sequence.
    failing = [c for c in cells if c["traceback"]]
    assert len(failing) == 2 and all("raises-exception" in c["tags"] for c in failing)
    assert "device" in failing[0]["text"]
    assert re.search(r"size of tensor a \(4\) must match the size of tensor b \(6\)", failing[1]["text"])


# ---------------------------------------------------------------------------------------------------------------
# Chapter 3: many heads, the 9216 shape, the viewer.

@pytest.mark.slow
def test_wrapper_outputs_and_the_9216_shape(built_book):
    text = page_text(built_book, "03_many_heads")
    assert "output shape: torch.Size([2, 6, 4])" in text
    assert "columns 0-1 are head 0's output: True" in text and "columns 2-3 are head 1's output: True" in text
    assert re.search(r"d_out=768 \(the issue\):\s+torch\.Size\(\[8, 1024, 9216\]\)", text)
    assert re.search(r"64 per head:\s+torch\.Size\(\[8, 1024, 768\]\)", text)
    # 12 heads x 3 x 768 x 768, and 3 x 768 x 768, computed here rather than trusted.
    assert re.search(rf"Q/K/V parameters, d_out=768:\s+{12 * 3 * 768 * 768:,}", text)
    assert "21,233,664" in text and "1,769,472" in text
    assert re.search(rf"Q/K/V parameters, d_out=64:\s+{3 * 768 * 768:,}", text)
    assert "4 heads checked: weights @ values reproduces every head's output" in text


@pytest.mark.slow
def test_many_heads_warns_that_d_out_changes_meaning(built_book):
    """The warning box where the 9216 bug is born: per head in the wrapper, total in MultiHeadAttention."""
    page = page_html(built_book, "03_many_heads")
    boxes = re.findall(r'<div class="admonition warning">(.*?)\n</div>', page, flags=re.S)
    words = [html.unescape(re.sub(r"<[^>]+>", "", box)) for box in boxes]
    assert any("MultiHeadAttentionWrapper" in w and "width of each head" in w and "MultiHeadAttention" in w
               and "total width" in w and "head_dim = d_out // num_heads" in w for w in words), words
    # The comparison table under it says the same cell by cell.
    table = re.search(r"<table.*?</table>", page[page.index('class="admonition warning"'):], flags=re.S).group(0)
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td.*?</td>", table, re.S)]
    assert cells[:3] == ["d_out means", "width of one head", "width of the whole output"], cells


@pytest.mark.slow
def test_viewer_saved_state_has_every_head_and_links_in_the_browser(built_book):
    state = widget_state(built_book, "03_many_heads")
    by_name: dict[str, list] = {}
    for model_id, model in state.items():
        by_name.setdefault(model["model_name"], []).append((model_id, model["state"]))
    assert len(by_name.get("ToggleButtonsModel", [])) == 1 and len(by_name.get("DropdownModel", [])) == 1
    toggle_id, toggle = by_name["ToggleButtonsModel"][0]
    dropdown_id, dropdown = by_name["DropdownModel"][0]
    num_heads, num_sentences = len(toggle["_options_labels"]), len(dropdown["_options_labels"])
    assert num_heads >= 2 and num_sentences >= 2
    assert toggle["index"] == 0 and dropdown["index"] == 0, "the saved state must show the default head"

    # One heatmap per sentence and head: an <img> with alt text and a real PNG inside an HTML widget.
    pictures = [s["value"] for _, s in by_name.get("HTMLModel", []) if "<img" in s["value"]]
    assert len(pictures) == num_heads * num_sentences
    for picture in pictures:
        alt = re.search(r'alt="([^"]+)"', picture)
        assert alt and "head" in alt.group(1)
        png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", picture).group(1))
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000

    # Stacks: one per sentence (its heads) inside one for the sentences, switched by jslink in the browser.
    stacks = {model_id: s for model_id, s in by_name.get("StackModel", [])}
    assert len(stacks) == num_sentences + 1
    links = [(s["source"], s["target"]) for _, s in by_name.get("LinkModel", [])]
    head_links = [t for (src, attr), t in links if src == f"IPY_MODEL_{toggle_id}" and attr == "index"]
    sentence_links = [t for (src, attr), t in links if src == f"IPY_MODEL_{dropdown_id}" and attr == "index"]
    assert len(head_links) == num_sentences and len(sentence_links) == 1
    for target_id, attr in head_links + sentence_links:
        assert attr == "selected_index" and target_id.removeprefix("IPY_MODEL_") in stacks
    assert "application/vnd.jupyter.widget-view+json" in page_html(built_book, "03_many_heads")


@pytest.mark.slow
@pytest.mark.browser
def test_viewer_switches_heads_without_a_kernel(built_book):
    """On the static page (network off), clicking a head shows that head's heatmap."""
    from browser_support import CHROMIUM_ARGS, PageLog, require_browser, serve

    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with serve(built_book) as site, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        log = PageLog(site)
        log.attach(page)
        page.goto(site + "book/03_many_heads.html", wait_until="networkidle", timeout=60_000)
        page.wait_for_selector(".widget-toggle-button", state="visible", timeout=30_000)

        def visible_heatmap_alt() -> str:
            alts = page.eval_on_selector_all(
                ".jupyter-widgets img[alt]",
                "imgs => imgs.filter(i => i.offsetParent !== null && i.naturalWidth > 0).map(i => i.alt)")
            assert len(alts) == 1, alts
            return alts[0]

        page.wait_for_function("() => [...document.querySelectorAll('.jupyter-widgets img')]"
                               ".some(i => i.offsetParent !== null && i.naturalWidth > 0)", timeout=30_000)
        first = visible_heatmap_alt()
        assert first.startswith("head 0:")
        page.locator(".widget-toggle-button", has_text="head 2").click()
        page.wait_for_timeout(500)
        head_two = visible_heatmap_alt()
        assert head_two.startswith("head 2:") and "the cat sat" in head_two, head_two
        page.locator(".widget-dropdown select").select_option(index=1)
        page.wait_for_timeout(500)
        switched = visible_heatmap_alt()
        # The head stays selected; the picture is now of the second sentence.
        assert switched.startswith("head 2:") and "every head learns" in switched, switched
        assert not log.problems(), "\n".join(log.problems())
        browser.close()


# ---------------------------------------------------------------------------------------------------------------
# The classes the pages define, run here against PyTorch at sizes the pages do not use.

def page_definitions(name: str) -> dict:
    """The classes and functions book/<name>.md defines, as written there (imports kept, demo code left out)."""
    import jupytext

    namespace: dict = {"__name__": f"book_{name}"}
    kept = (ast.ClassDef, ast.FunctionDef, ast.Import, ast.ImportFrom)
    for cell in jupytext.read(REPO / "book" / f"{name}.md").cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%")))
        tree.body = [node for node in tree.body if isinstance(node, kept)]
        exec(compile(tree, f"book/{name}.md", "exec"), namespace)
    return namespace


def test_self_attention_equals_sdpa_when_d_in_differs_from_d_out():
    SelfAttention = page_definitions("01_one_head")["SelfAttention"]
    torch.manual_seed(0)
    for d_in, d_out, qkv_bias in ((5, 8, False), (12, 4, True)):
        module = SelfAttention(d_in, d_out, qkv_bias=qkv_bias).to(device)
        x = torch.randn(3, 7, d_in, device=device)
        with torch.no_grad():
            expected = F.scaled_dot_product_attention(module.W_query(x), module.W_key(x), module.W_value(x))
            assert torch.allclose(module(x), expected, atol=1e-5)
        assert module.W_query.weight.shape == (d_out, d_in) and (module.W_key.bias is not None) == qkv_bias


def test_causal_attention_behaviour():
    CausalAttention = page_definitions("02_causal_attention")["CausalAttention"]
    torch.manual_seed(1)
    module = CausalAttention(6, 10, context_length=9, dropout=0.5).to(device).eval()
    x = torch.randn(4, 9, 6, device=device)
    with torch.no_grad():
        expected = F.scaled_dot_product_attention(module.W_query(x), module.W_key(x), module.W_value(x),
                                                  is_causal=True)
        out = module(x)
        assert torch.allclose(out, expected, atol=1e-5)
        # Changing a later token must not change any earlier output.
        changed = x.clone()
        changed[:, 5:] += 3.0
        assert torch.allclose(module(changed)[:, :5], out[:, :5], atol=1e-5)
        assert not torch.allclose(module(changed)[:, 5:], out[:, 5:])
    # The mask is a buffer: saved, moved with the module, never trained.
    assert "mask" in module.state_dict() and "mask" not in dict(module.named_parameters())
    assert module.to("meta").mask.device.type == "meta"
    # Dropout acts on the weights in training mode: two training passes differ, eval passes do not.
    module = CausalAttention(6, 10, context_length=9, dropout=0.5).to(device)
    with torch.no_grad():
        assert not torch.allclose(module(x), module(x))
        module.eval()
        assert torch.equal(module(x), module(x))


def test_wrapper_concatenates_per_head_outputs():
    definitions = page_definitions("03_many_heads")
    Wrapper = definitions["MultiHeadAttentionWrapper"]
    torch.manual_seed(2)
    d_in, d_out, num_heads = 5, 3, 4
    wrapper = Wrapper(d_in, d_out, context_length=8, dropout=0.0, num_heads=num_heads).to(device)
    x = torch.randn(2, 8, d_in, device=device)
    with torch.no_grad():
        out = wrapper(x)
        assert out.shape == (2, 8, num_heads * d_out), "d_out is per head: the output is num_heads * d_out wide"
        for h, head in enumerate(wrapper.heads):
            q, k, v = head.W_query(x), head.W_key(x), head.W_value(x)
            expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            assert torch.allclose(out[..., h * d_out:(h + 1) * d_out], expected, atol=1e-5)
            weights = definitions["head_attention_weights"](head, x)
            assert torch.allclose(weights @ v, expected, atol=1e-5), "the viewer's weights are not the head's"
            assert torch.all(weights.triu(diagonal=1) == 0)
    assert sum(p.numel() for p in wrapper.parameters()) == num_heads * 3 * d_in * d_out
