"""Chapters 7, 8 and 10 (the two bug clinics and the checklist) show, in their executed outputs, what issue 3 asks.

Only the text of executed cell outputs counts: a number that appears in a code cell's source or in the prose does
not satisfy these tests, so a page cannot pass by quoting what it should have computed.

The last section checks what every chapter from 1 to 10 (except the performance lab, tested with its own page) and
the shape explorer must do alike: end with "Check yourself" and a link to the graded exercise that practises it,
hide the cells that are only plumbing, and compute full-size shapes on the meta device.
"""
from __future__ import annotations

import ast
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import REPO

CLINIC_9216 = "book/07_bug_clinic_9216"
CLINIC_PROJECTION = "book/08_bug_clinic_projection"
CHECKLIST = "book/10_checklist"
PAGES = (CLINIC_9216, CLINIC_PROJECTION, CHECKLIST)
MiB = 2**20


class _PageParser(HTMLParser):
    """Collects the text of every cell output block, and every <img> with its attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.outputs: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self._depth = 0          # div nesting depth inside the current output block; 0 when outside
        self._parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag != "div":
            return
        if self._depth:
            self._depth += 1
        elif "cell_output" in (dict(attrs).get("class") or "").split():
            self._depth, self._parts = 1, []

    def handle_endtag(self, tag):
        if tag == "div" and self._depth:
            self._depth -= 1
            if not self._depth:
                self.outputs.append("".join(self._parts))

    def handle_data(self, data):
        if self._depth:
            self._parts.append(data)


def parse(built_book: Path, page: str) -> _PageParser:
    path = built_book / f"{page}.html"
    assert path.exists(), f"{page} was not built"
    parser = _PageParser()
    parser.feed(path.read_text())
    return parser


def output_text(built_book: Path, page: str) -> str:
    outputs = parse(built_book, page).outputs
    assert outputs, f"{page} shows no executed output at all"
    return "\n".join(outputs)


def number_after(label: str, text: str) -> float:
    match = re.search(re.escape(label) + r"\s*([\d.,]+)", text)
    assert match, f"no number after {label!r} in the outputs"
    return float(match.group(1).replace(",", ""))


@pytest.mark.parametrize("page", PAGES)
def test_every_figure_has_alt_text(built_book: Path, page: str):
    figures = [img for img in parse(built_book, page).images if "_images/" in (img.get("src") or "")]
    assert figures, f"{page} has no executed figure"
    for img in figures:
        assert (img.get("alt") or "").strip(), f"{page}: figure {img.get('src')} has no alt text"


@pytest.mark.parametrize("page, assignment", [(CLINIC_9216, "ps4"), (CLINIC_PROJECTION, "ps4"), (CHECKLIST, "ps4")])
def test_page_ends_with_questions_and_the_exercise_link(built_book: Path, page: str, assignment: str):
    html = (built_book / f"{page}.html").read_text()
    assert "Check yourself" in html
    assert html.count("dropdown") >= 2, f"{page}: answers are not in collapsed dropdowns"
    assert re.search(r'href="exercises\.html[^"]*"[^>]*>.*?' + assignment, html, flags=re.S), \
        f"{page} does not link to the graded exercise {assignment}"


# --- Bug clinic I: 9216 vs 768 ---------------------------------------------------------------------------------

def test_clinic_9216_reproduces_the_historical_shapes_and_counts(built_book: Path):
    text = output_text(built_book, CLINIC_9216)
    assert "wrapper:            torch.Size([8, 1024, 9216])" in text
    assert "MultiHeadAttention: torch.Size([8, 1024, 768])" in text
    assert number_after("buggy wrapper, Q/K/V weights only:", text) == 12 * 3 * 768**2 == 21_233_664
    assert "21,233,664" in text and "2,360,064" in text
    assert number_after("correct MultiHeadAttention, everything:", text) == 4 * 768**2 + 768


def test_clinic_9216_memory_comes_from_the_tensor_sizes(built_book: Path):
    """The table's rows must match float32 sizes at batch 8, context 1024, 12 heads (768 vs 64 per head)."""
    text = output_text(built_book, CLINIC_9216)
    rows = {m.group(1).strip(): (float(m.group(2).replace(",", "")), float(m.group(3).replace(",", "")))
            for m in re.finditer(r"^([a-z ,]+?)\s{2,}([\d,]+\.\d)\s+([\d,]+\.\d)\s*$", text, flags=re.M)}
    tokens = 8 * 1024
    expected = {
        "parameters": (12 * 3 * 768**2 * 4 / MiB, (12 * 3 * 768 * 64 + 768**2 + 768) * 4 / MiB),
        "queries, keys, values": (12 * 3 * tokens * 768 * 4 / MiB, 12 * 3 * tokens * 64 * 4 / MiB),
        "attention weights": (12 * 8 * 1024**2 * 4 / MiB,) * 2,   # independent of the head width
        "output": (tokens * 9216 * 4 / MiB, tokens * 768 * 4 / MiB),
        "mask buffers": (12 * 1024**2 * 4 / MiB,) * 2,
    }
    for row, (buggy, fixed) in expected.items():
        assert row in rows, f"memory table has no row {row!r}: {sorted(rows)}"
        assert rows[row] == (pytest.approx(buggy, abs=0.051), pytest.approx(fixed, abs=0.051)), row
    for column in (0, 1):
        parts = sum(values[column] for row, values in rows.items() if row != "total")
        assert rows["total"][column] == pytest.approx(parts, abs=0.3), "the total is not the sum of the rows"


def test_clinic_9216_times_both_versions_and_the_fix_is_faster(built_book: Path):
    text = output_text(built_book, CLINIC_9216)
    device = re.search(r"device: (\w+)", text).group(1)
    size = re.search(r"size: batch (\d+), context (\d+), embed 768, 12 heads", text)
    assert size, "the timed size is not printed"
    # CPU builds time a smaller size (and say which); a GPU times the historical size.
    assert (int(size.group(1)), int(size.group(2))) == ((8, 1024) if device == "cuda" else (2, 256))
    for name in ("buggy wrapper", "fixed wrapper"):
        repeats = re.search(name + r": median .* (\d+) measurements", text)
        assert repeats and int(repeats.group(1)) >= 3, f"{name} is not timed repeatedly"
    buggy = number_after("buggy wrapper: median", text)
    fixed = number_after("fixed wrapper: median", text)
    assert buggy > 2 * fixed, f"the 9216 wrapper ({buggy} ms) is not clearly slower than the fix ({fixed} ms)"
    ratio = number_after("the buggy wrapper is", text)
    assert ratio == pytest.approx(buggy / fixed, rel=0.06)
    # The arithmetic behind the gap: about 10x the matrix-multiply work at full size.
    full = re.search(r"full size: buggy\s+([\d.]+) GFLOP, fixed\s+([\d.]+) GFLOP", text)
    assert full and float(full.group(1)) / float(full.group(2)) == pytest.approx(10.2, abs=0.1)
    html = (built_book / f"{CLINIC_9216}.html").read_text()
    assert "41.1 ms" in html and "8.35 ms" in html, "the historical A100 benchmark is not cited"


def test_clinic_9216_diagnosis_fails_the_bug_and_passes_the_fix(built_book: Path):
    text = output_text(built_book, CLINIC_9216)
    sections = {name: re.search(re.escape(name) + r"\n((?:  \[(?:ok|FAIL)\] .*\n?)+)", text)
                for name in ("buggy wrapper", "chapter MultiHeadAttention", "fixed wrapper")}
    for name, match in sections.items():
        assert match, f"no diagnosis printed for {name}"
    assert sections["buggy wrapper"].group(1).count("[FAIL]") == 4
    assert "[FAIL]" not in sections["chapter MultiHeadAttention"].group(1)
    assert "[FAIL]" not in sections["fixed wrapper"].group(1)
    assert sections["fixed wrapper"].group(1).count("[ok]") == 4
    assert "output shape: torch.Size([8, 1024, 768])" in text
    assert number_after("parameters:", text) == 2_360_064


# --- Bug clinic II: the missing projection and its siblings ----------------------------------------------------

def test_clinic_projection_diagnoses_by_count_keys_and_probe(built_book: Path):
    text = output_text(built_book, CLINIC_PROJECTION)
    assert "correct:       torch.Size([8, 1024, 768])" in text
    assert "no projection: torch.Size([8, 1024, 768])" in text, "the bug must keep the right shape"
    assert number_after("no projection:", text.split("correct MultiHeadAttention:", 1)[1]) == 3 * 768**2
    assert "1,769,472" in text and "2,360,064" in text
    assert re.search(r"no projection: \[.*\]\s+unmatched: \['out_proj\.weight', 'out_proj\.bias'\]", text)
    assert re.search(r"correct: \[.*\]\s+unmatched: \[\]", text)
    # The check loads into a real nn.MultiheadAttention: in_proj_bias is filled from the module, never assumed.
    assert re.search(r"qkv_bias=True: \[.*'W_query\.bias'.*\]\s+unmatched: \[\]", text)
    assert re.search(r"W_query bias only: \[.*\]\s+unmatched: \['in_proj_bias'\]", text)
    # Head isolation: without out_proj head 1 (of 4, head_dim 4) moves only its own columns 4-7.
    assert "no projection: columns moved by head 1 -> [4, 5, 6, 7]" in text
    assert f"correct MultiHeadAttention: columns moved by head 1 -> {list(range(16))}" in text


def test_clinic_projection_equivalence_test_passes_correct_and_fails_missing_projection(built_book: Path):
    text = output_text(built_book, CLINIC_PROJECTION)
    assert re.search(r"^correct:\s+PASS$", text, flags=re.M)
    assert re.search(r"^no projection:\s+FAIL: Tensor-likes are not close!", text, flags=re.M)


# Which test must catch which bug (the description of each historical bug, not a copied output).
EXPECTED_GRID = {
    "MultiHeadAttention": {"shape": True, "parameters": True, "equivalence": True, "parity": True},
    "EinsumAttention": {"shape": True, "parameters": True, "equivalence": True, "parity": True},
    "NoProjection": {"shape": True, "parameters": False, "equivalence": False, "parity": True},
    "ProjectionNeverApplied": {"shape": True, "parameters": True, "equivalence": False, "parity": True},
    "ProjectionFromDIn": {"shape": True, "parameters": True, "equivalence": True, "parity": False},
    "ScoresTimesSqrt": {"shape": True, "parameters": True, "equivalence": False, "parity": True},
    "EinsumTransposed": {"shape": True, "parameters": True, "equivalence": False, "parity": False},
}


def test_clinic_projection_each_sibling_bug_fails_the_test_that_exposes_it(built_book: Path):
    text = output_text(built_book, CLINIC_PROJECTION)
    grid = {}
    for block in re.finditer(r"^(\w+)\n((?:    .*\n?){4})", text, flags=re.M):
        outcomes = {}
        for line in block.group(2).splitlines():
            test, outcome = re.match(r"\s+(\w+).*?\s{2,}(PASS|FAIL.*)$", line).groups()
            outcomes[test] = outcome
        grid[block.group(1)] = outcomes
    assert set(grid) == set(EXPECTED_GRID), f"classes in the results table: {sorted(grid)}"
    for cls, expected in EXPECTED_GRID.items():
        got = {test: outcome == "PASS" for test, outcome in grid[cls].items()}
        assert got == expected, f"{cls}: {grid[cls]}"
    # The failures say why, in the words of the failing check.
    assert "1,769,472 parameters, expected 2,360,064" in grid["NoProjection"]["parameters"]
    assert "forward fails at d_in=6, d_out=12" in grid["ProjectionFromDIn"]["parity"]
    assert "forward fails at d_in=6, d_out=12" in grid["EinsumTransposed"]["parity"]


def test_clinic_projection_multiplied_scale_saturates_the_softmax(built_book: Path):
    text = output_text(built_book, CLINIC_PROJECTION)
    rows = re.findall(r"head_dim\s+(\d+): .*?divided ([\d.]+), multiplied ([\d.]+)", text)
    assert [int(r[0]) for r in rows] == [4, 16, 64]
    divided, multiplied = zip(*[(float(r[1]), float(r[2])) for r in rows])
    assert all(m > d for d, m in zip(divided, multiplied))
    assert multiplied[-1] > 0.9 and multiplied[-1] > multiplied[0], "wider heads must saturate more"


# --- The checklist ---------------------------------------------------------------------------------------------

def test_checklist_runs_all_ten_checks_and_they_pass(built_book: Path):
    text = output_text(built_book, CHECKLIST)
    passed = re.findall(r"^\[pass\] (\d+)\. ", text, flags=re.M)
    assert sorted(map(int, passed)) == list(range(1, 11)), f"checks that ran and passed: {passed}"
    assert "10 of 10 checklist items passed" in text
    # Item 10 times a fixed number of rounds and demands what a broken timer gets wrong.
    rounds = [int(n) for n in re.findall(r"on \w+: median [\d.]+ ms per call, IQR [\d.]+ ms, (\d+) rounds of", text)]
    assert len(rounds) == 2 and rounds[0] == rounds[1] >= 5, rounds
    ratio, calls = re.search(r"long / short, median of the per-round ratios: ([\d.]+)x; forward calls counted: (\d+)",
                             text).groups()
    assert float(ratio) > 4 and int(calls) >= rounds[0] * 44, (ratio, calls)
    assert "forward calls counted for stmt='timed': 0 -> item 10 would fail: True" in text
    assert "largest weight above the diagonal (a future key): 0.0" in text


# --- Every chapter: check yourself, the exercise link, plumbing hidden, full size on meta -----------------------

CHAPTERS = ("book/01_one_head", "book/02_causal_attention", "book/03_many_heads", "book/04_splitting_heads",
            "book/05_concatenating_heads", "book/06_final_projection", CLINIC_9216, CLINIC_PROJECTION, CHECKLIST,
            "book/shape_explorer")
# Pages that no assignment lists as its chapter point at the exercise whose tools they collect.
EXERCISE_OF_EXTRA_PAGES = {CHECKLIST: "ps4", "book/shape_explorer": "ps3"}


def exercise_for(page: str) -> str:
    from grader.assignments import ASSIGNMENTS

    owners = [a.name for a in ASSIGNMENTS.values() if page in a.chapters]
    assert len(owners) <= 1, f"{page} belongs to several assignments: {owners}"
    return owners[0] if owners else EXERCISE_OF_EXTRA_PAGES[page]


SECTION_NUMBER = r'<span class="section-number">[\d.]+\s*</span>'


def last_section(html: str) -> str:
    """The HTML of the page's last second-level section (from its opening tag to the end of the article)."""
    article = html[html.index('<article class="bd-article">'):html.index("</article>")]
    starts = [m.start() for m in re.finditer(r'<section id="[^"]+">\s*<h2>', article)]
    assert starts, "the page has no second-level section"
    return article[starts[-1]:]


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_ends_with_check_yourself_and_its_exercise(built_book: Path, page: str):
    final = last_section((built_book / f"{page}.html").read_text())
    # the parts of _toc.yml are numbered: Sphinx puts the section number in a span before the title
    assert re.match(rf'<section id="check-yourself">\s*<h2>(?:{SECTION_NUMBER})?Check yourself', final), \
        f"{page}: the last section is not 'Check yourself': {final[:120]}"
    assert re.search(r"<ol[ >]", final), f"{page}: 'Check yourself' asks no numbered questions"
    assert re.search(r'class="[^"]*(?:dropdown[^"]*admonition|admonition[^"]*dropdown)', final), f"{page}: the answers are not in a dropdown"
    assignment = exercise_for(page)
    links = re.findall(r'<a class="reference internal" href="exercises\.html[^"]*">(.*?)</a>', final, flags=re.S)
    assert any(re.search(rf"\b{assignment}\b", text) for text in links), \
        f"{page}: no link to the graded exercise {assignment} after the questions (links: {links})"


PLUMBING_CALLS = {"print", "torch.set_printoptions", "plt.rcParams.update", "torch.manual_seed"}


def _is_plumbing(source: str) -> bool:
    """Imports, picking the device, print options and seeds, and nothing else (at least one import)."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%")))
    if not any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body):
        return False
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["device"]:
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                and ast.unparse(node.value.func) in PLUMBING_CALLS:
            continue
        return False
    return True


@pytest.mark.parametrize("page", ("book/index",) + CHAPTERS)
def test_plumbing_cells_are_hidden(page: str):
    """A cell that only imports and sets up is collapsed on the page, so that the page reads as prose."""
    import jupytext

    cells = [c for c in jupytext.read(REPO / f"{page}.md").cells if c.cell_type == "code"]
    plumbing = [c for c in cells if _is_plumbing(c.source)]
    assert plumbing or page == "book/index", f"{page}: no set-up cell found; is the classifier still right?"
    for cell in plumbing:
        tags = set(cell.metadata.get("tags", []))
        assert tags & {"hide-input", "remove-input", "hide-cell", "remove-cell"}, \
            f"{page}: a plumbing cell is shown in full:\n{cell.source[:300]}"
    assert len(plumbing) < len(cells), f"{page}: every cell is hidden"


def test_plumbing_classifier_tells_set_up_from_teaching():
    assert _is_plumbing("%matplotlib inline\nimport torch\ndevice = torch.device('cpu')\nprint(device)")
    assert not _is_plumbing("import torch\nx = torch.ones(3)\nprint(x.shape)")
    assert not _is_plumbing("print('10 of 10 checklist items passed')")


@pytest.mark.parametrize("page", ("book/03_many_heads", CLINIC_9216, CLINIC_PROJECTION))
def test_full_size_shapes_come_from_the_meta_device(built_book: Path, page: str):
    """The first cell that prints a shape at batch 8, context 1024 builds its modules on the meta device (later
    cells of the page reuse them), so a CPU build never allocates the full-size tensors."""
    page_html = (built_book / f"{page}.html").read_text()
    cells = re.split(r'<div class="cell(?: [^"]*)? docutils container">', page_html)[1:]
    full_size = [c for c in cells if re.search(r"cell_output.*torch\.Size\(\[8, 1024, \d+\]\)", c, flags=re.S)]
    assert full_size, f"{page}: no executed output at full size"
    source = unescape(re.sub(r"<[^>]+>", "", full_size[0].split("cell_output", 1)[0]))
    assert 'with torch.device("meta"):' in source, \
        f"{page}: the full-size shapes are not computed on the meta device:\n{source[:400]}"


def test_clinic_9216_says_in_the_text_which_size_the_cpu_times(built_book: Path):
    """The prose must state the CPU size, and it must be the size the code really uses on a CPU."""
    html = (built_book / f"{CLINIC_9216}.html").read_text()
    prose = " ".join(re.findall(r"<p>(.*?)</p>", html, flags=re.S))
    prose = re.sub(r"<[^>]+>", "", prose)
    stated = re.search(r"On a CPU.*?times\s+batch (\d+) and context (\d+)", prose, flags=re.S)
    assert stated, "the clinic does not say at which size it times on a CPU"
    source = (REPO / f"{CLINIC_9216}.md").read_text()
    in_code = re.search(r"timing_batch, timing_tokens = (\d+), (\d+)\s+# a 2-core CPU", source)
    assert in_code and stated.groups() == in_code.groups(), (stated.groups(), in_code and in_code.groups())
