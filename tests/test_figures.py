"""The data-flow pictures (book/figures/): committed SVGs are what make_figures.py makes, they are self-contained,
and every chapter shows its picture with alt text that names the shapes. Fast: no book build, no browser."""
from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO

FIGURES_DIR = REPO / "book" / "figures"
SVG = "{http://www.w3.org/2000/svg}"

# figure -> (chapter that shows it, course terms its alt text must name)
CHAPTER_FIGURES = {
    "one_head.svg": ("01_one_head", ("num_tokens", "d_in", "d_out", "W_query", "softmax", "weights @ values")),
    "causal_mask.svg": ("02_causal_attention", ("batch", "num_tokens", "context_length", "masked_fill", "softmax")),
    "heads_side_by_side.svg": ("03_many_heads", ("batch", "num_tokens", "d_in", "d_out", "num_heads * d_out",
                                                 "torch.cat")),
    "split_heads.svg": ("04_splitting_heads", ("batch", "num_tokens", "d_out", "num_heads", "head_dim", "view",
                                               "transpose(1, 2)")),
    "concatenate_heads.svg": ("05_concatenating_heads", ("num_heads", "num_tokens", "head_dim", "contiguous()",
                                                         "view(batch, num_tokens, d_out)")),
    "final_projection.svg": ("06_final_projection", ("d_out", "head_dim", "out_proj", "W_o", "bias")),
}


def load_maker():
    spec = importlib.util.spec_from_file_location("make_figures", FIGURES_DIR / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return load_maker().render_all()


def test_every_figure_is_listed_here(rendered):
    assert set(rendered) == set(CHAPTER_FIGURES)


@pytest.mark.parametrize("name", sorted(CHAPTER_FIGURES))
def test_committed_svg_is_what_the_script_makes(rendered, name):
    committed = (FIGURES_DIR / name).read_text(encoding="utf-8")
    assert committed == rendered[name], (
        f"book/figures/{name} differs from what make_figures.py makes: run `python book/figures/make_figures.py` "
        "and commit the result")


@pytest.mark.parametrize("name", sorted(CHAPTER_FIGURES))
def test_svg_is_self_contained_and_labelled(rendered, name):
    text = rendered[name]
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title").text.strip() and len(root.find(f"{SVG}desc").text) > 100
    # Offline: no link, stylesheet, web font or image from anywhere else.
    for element in root.iter():
        for attribute, value in element.attrib.items():
            assert "http" not in value or attribute == "xmlns", (name, element.tag, attribute, value)
            assert not attribute.endswith("href"), (name, element.tag, attribute)
    assert "@import" not in text and "@font-face" not in text
    families = set(re.findall(r'font-family="([^"]+)"', text))
    assert families and all(f.startswith("DejaVu Sans") for f in families), families
    # Every shape drawn is written in the course's terms: no raw tuple of numbers stands in for one.
    labels = [t.text or "" for t in root.iter(f"{SVG}text")]
    shapes = [label for label in labels if label.startswith("(")]
    assert shapes, f"{name} labels no shape"
    assert all(not re.search(r"\(\d", label) for label in shapes), shapes


@pytest.mark.parametrize("name", sorted(CHAPTER_FIGURES))
def test_chapter_shows_its_figure_with_alt_text(name):
    chapter, terms = CHAPTER_FIGURES[name]
    source = (REPO / "book" / f"{chapter}.md").read_text()
    match = re.search(r"^:::\{figure\} figures/" + re.escape(name) + r"\n((?::\w+:.*\n)+)", source, re.M)
    assert match, f"book/{chapter}.md does not show figures/{name}"
    options = dict(re.findall(r"^:(\w+): (.*)$", match.group(1), re.M))
    alt = options.get("alt", "")
    assert len(alt) > 200, f"{chapter}: the alt text of {name} does not describe the flow"
    missing = [term for term in terms if term not in alt]
    assert not missing, f"{chapter}: the alt text of {name} does not name {missing}"


def test_make_figures_writes_where_it_is_told(tmp_path):
    maker = load_maker()
    maker.main(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CHAPTER_FIGURES)
    assert (tmp_path / "one_head.svg").read_text(encoding="utf-8") == maker.render_all()["one_head.svg"]
