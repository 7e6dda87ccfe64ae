"""The book's data-flow pictures, one per step of multi-head attention, written as plain SVG.

    python book/figures/make_figures.py          # rewrites the .svg files beside this script

Each picture draws tensors as grids of cells (one cell per number, at the small sizes the chapters use) and the
operations between them as labelled arrows, with every shape in the course's terms (batch, num_tokens, d_in,
d_out, num_heads, head_dim). Nothing is fetched: text uses the DejaVu fonts when the reader has them and the
browser's own sans-serif or monospace font otherwise, and code-like labels are monospace so that their width is
known here. The output depends on nothing but this file, so tests/test_figures.py can check that the committed
SVGs are exactly what it makes.
"""
from __future__ import annotations

import sys
from html import escape
from pathlib import Path

HERE = Path(__file__).resolve().parent

SANS = "DejaVu Sans, Verdana, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
MONO_WIDTH = 0.602  # advance of one DejaVu Sans Mono character, in ems

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/).
HEAD_COLOURS = ("#56B4E9", "#E69F00", "#009E73", "#CC79A7")
INPUT = "#D9D9D9"
QUERY, KEY, VALUE = "#56B4E9", "#E69F00", "#009E73"
SCORE = "#F2F2F2"
WEIGHT = "#A6CEE3"
MASKED = "#595959"
INK = "#1A1A1A"
MUTED = "#555555"


class Picture:
    """An SVG document built from a few primitives; ``str()`` gives the file's text."""

    def __init__(self, width: int, height: int, title: str, description: str):
        self.width, self.height = width, height
        self.title, self.description = title, description
        self.parts: list[str] = []

    def rect(self, x, y, w, h, fill, stroke=INK, width=1.0, radius=0, dash=""):
        extra = f' rx="{radius}"' if radius else ""
        extra += f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" fill="{fill}" '
                          f'stroke="{stroke}" stroke-width="{width:g}"{extra}/>')

    def text(self, x, y, content, size=13, anchor="middle", mono=False, bold=False, colour=INK):
        weight = ' font-weight="bold"' if bold else ""
        family = MONO if mono else SANS
        self.parts.append(f'<text x="{x:g}" y="{y:g}" font-family="{family}" font-size="{size:g}" '
                          f'text-anchor="{anchor}" fill="{colour}"{weight}>{escape(content)}</text>')

    def line(self, x1, y1, x2, y2, colour=INK, width=1.5, arrow=True, dash=""):
        head = ' marker-end="url(#arrow)"' if arrow else ""
        pattern = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<path d="M {x1:g} {y1:g} L {x2:g} {y2:g}" fill="none" stroke="{colour}" '
                          f'stroke-width="{width:g}"{pattern}{head}/>')

    def elbow(self, points, colour=INK, width=1.5):
        """An arrow along straight segments through (x, y) points."""
        path = " L ".join(f"{x:g} {y:g}" for x, y in points)
        self.parts.append(f'<path d="M {path}" fill="none" stroke="{colour}" stroke-width="{width:g}" '
                          'marker-end="url(#arrow)"/>')

    def grid(self, x, y, rows, cols, cell, fill, labels=None, label_size=9, depth=0, gaps=None):
        """A tensor as a rows x cols grid of cells; ``fill(r, c)`` and ``labels(r, c)`` give each cell's colour and
        text. ``depth`` > 0 draws that many shadow copies behind it (the batch dimension). ``gaps`` maps a column
        index to extra space before it (the head boundaries of a split tensor). Returns the bounding box."""
        gaps = gaps or {}
        width = cols * cell + sum(gaps.values())
        for layer in range(depth, 0, -1):
            self.rect(x + 5 * layer, y - 5 * layer, width, rows * cell, "#FFFFFF", stroke=MUTED, width=0.8)
        for r in range(rows):
            offset = 0
            for c in range(cols):
                offset += gaps.get(c, 0)
                cx, cy = x + offset + c * cell, y + r * cell
                self.rect(cx, cy, cell, cell, fill(r, c), stroke=INK, width=0.6)
                if labels is not None:
                    content = labels(r, c)
                    if content:
                        colour = "#FFFFFF" if fill(r, c) == MASKED else INK
                        self.text(cx + cell / 2, cy + cell / 2 + label_size * 0.36, content, size=label_size,
                                  mono=True, colour=colour)
        return x, y, width, rows * cell

    def caption(self, x, y, name, shape, example=""):
        """A tensor's name (bold), its shape in the course's terms (monospace, one or more lines) and the example
        size below it."""
        self.text(x, y, name, size=13, bold=True)
        lines = [shape] if isinstance(shape, str) else shape
        for i, line in enumerate(lines):
            self.text(x, y + 16 + 15 * i, line, size=12, mono=True)
        if example:
            self.text(x, y + 16 + 15 * len(lines), example, size=11, colour=MUTED)

    def __str__(self) -> str:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" '
                f'width="{self.width}" height="{self.height}" role="img" aria-labelledby="title desc">\n'
                f'<title id="title">{escape(self.title)}</title>\n'
                f'<desc id="desc">{escape(self.description)}</desc>\n'
                '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" '
                'markerWidth="10" markerHeight="10" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#1A1A1A"/>'
                '</marker>\n'
                '<pattern id="mixed" width="6" height="6" patternUnits="userSpaceOnUse" '
                'patternTransform="rotate(45)"><rect width="3" height="6" fill="#56B4E9"/>'
                '<rect x="3" width="3" height="6" fill="#E69F00"/></pattern></defs>\n'
                # A white card: the pictures stay readable on the site's dark theme.
                f'<rect width="{self.width}" height="{self.height}" fill="#FFFFFF"/>\n')
        return head + "\n".join(self.parts) + "\n</svg>\n"


def mono_width(text: str, size: float) -> float:
    return len(text) * size * MONO_WIDTH


def solid(colour):
    return lambda r, c: colour


def by_head(head_dim, colours=HEAD_COLOURS):
    return lambda r, c: colours[c // head_dim]


def op_label(picture, x, y, lines, size=12):
    """An operation's code, one line per entry, centred above an arrow."""
    for i, line in enumerate(lines):
        picture.text(x, y - (len(lines) - 1 - i) * (size + 3), line, size=size, mono=True)


# ---------------------------------------------------------------------------------------------------------------
# Chapter 1: one head. num_tokens = 6, d_in = 3, d_out = 2, as in the chapter's toy sentence.

def one_head() -> Picture:
    p = Picture(860, 420, "One attention head: from x to the context vectors",
                "x (num_tokens, d_in) is projected by W_query, W_key and W_value into queries, keys and values, "
                "each (num_tokens, d_out). queries @ keys.T gives the scores (num_tokens, num_tokens); a softmax "
                "along each row, after dividing by the square root of d_out, turns them into weights whose rows "
                "sum to 1; weights @ values gives the context vectors (num_tokens, d_out).")
    cell = 14
    p.grid(60, 160, 6, 3, cell, solid(INPUT))
    p.caption(81, 268, "x", ["(num_tokens,", "d_in)"], "6 × 3")
    for i, (name, colour, weight) in enumerate((("queries", QUERY, "W_query"), ("keys", KEY, "W_key"),
                                                ("values", VALUE, "W_value"))):
        y = 40 + i * 120
        p.grid(250, y, 6, 2, cell, solid(colour))
        p.text(286, y + 28, name, size=13, anchor="start", bold=True)
        p.text(286, y + 45, "(num_tokens, d_out)", size=12, anchor="start", mono=True)
        p.text(286, y + 61, "6 × 2", size=11, anchor="start", colour=MUTED)
        p.elbow([(108, 202), (140, 202), (140, y + 42), (244, y + 42)])
        p.text(192, y + 36, weight, size=12, mono=True)
    p.text(192, 412, "three nn.Linear(d_in, d_out)", size=11, colour=MUTED)
    # queries and keys meet in one matrix product
    p.elbow([(432, 82), (450, 82), (450, 140), (476, 140)])
    p.elbow([(432, 202), (450, 202), (450, 180), (476, 180)])
    p.grid(482, 118, 6, 6, cell, solid(SCORE))
    op_label(p, 524, 100, ["queries @ keys.T"], size=11)
    p.caption(524, 226, "scores", ["(num_tokens,", "num_tokens)"], "6 × 6")
    p.line(572, 160, 670, 160)
    op_label(p, 621, 148, ["softmax(", "scores / √d_out,", "dim=-1)"], size=10)
    p.grid(676, 118, 6, 6, cell, solid(WEIGHT))
    p.text(718, 108, "rows sum to 1", size=11, colour=MUTED)
    p.caption(718, 226, "weights", ["(num_tokens,", "num_tokens)"], "6 × 6")
    # weights @ values: the weights come from the right-hand side, the values from the left
    p.elbow([(766, 160), (800, 160), (800, 310)])
    p.elbow([(432, 322), (780, 322)])
    op_label(p, 600, 314, ["weights @ values"], size=12)
    p.grid(786, 316, 6, 2, cell, solid(VALUE))
    p.text(700, 360, "context vectors", size=13, bold=True)
    p.text(700, 377, "(num_tokens, d_out)", size=12, mono=True)
    p.text(700, 392, "6 × 2", size=11, colour=MUTED)
    return p


# ---------------------------------------------------------------------------------------------------------------
# Chapter 2: the causal mask on the scores.

def causal_mask() -> Picture:
    p = Picture(900, 336, "The causal mask: no token looks at a later one",
                "The scores (batch, num_tokens, num_tokens) hold one row per query and one column per key. The "
                "mask, torch.triu(ones, diagonal=1) sliced to (num_tokens, num_tokens) from the "
                "(context_length, context_length) buffer, is True above the diagonal. masked_fill(mask, -inf) "
                "puts minus infinity in those cells; the softmax along each row turns them into exact zeros and "
                "spreads each row's weight over the current and earlier tokens only, so every row still sums "
                "to 1.")
    n, cell = 6, 26
    upper = lambda r, c: c > r  # noqa: E731  the future: key after query
    p.grid(80, 70, n, n, cell, solid(SCORE), depth=1)
    p.text(80 + n * cell / 2, 52, "key j →", size=12, colour=MUTED)
    p.text(72, 70 + n * cell / 2 + 4, "query i ↓", size=12, colour=MUTED, anchor="end")
    p.caption(158, 252, "scores", ["(batch, num_tokens,", "num_tokens)"])
    # the mask itself, small, above the arrow
    p.grid(269, 34, n, n, 12, lambda r, c: MASKED if upper(r, c) else "#FFFFFF")
    p.text(305, 24, "mask (dark = True)", size=11, colour=MUTED)
    p.line(250, 148, 360, 148)
    op_label(p, 305, 174, ["masked_fill(", "mask, -inf)"], size=11)
    p.grid(372, 70, n, n, cell, lambda r, c: MASKED if upper(r, c) else SCORE,
           labels=lambda r, c: "-∞" if upper(r, c) else "", label_size=10, depth=1)
    p.caption(450, 252, "masked scores", ["(batch, num_tokens,", "num_tokens)"])
    p.line(542, 148, 650, 148)
    op_label(p, 596, 134, ["softmax(masked /", "√d_out, dim=-1)"], size=11)
    p.grid(662, 70, n, n, cell, lambda r, c: "#FFFFFF" if upper(r, c) else WEIGHT,
           labels=lambda r, c: "0" if upper(r, c) else "", label_size=10, depth=1)
    for r in range(n):
        p.text(662 + n * cell + 14, 70 + r * cell + cell / 2 + 4, "Σ = 1", size=10, anchor="start",
               colour=MUTED)
    p.caption(740, 252, "weights", ["(batch, num_tokens,", "num_tokens)"])
    p.text(450, 306, "mask = self.mask[:num_tokens, :num_tokens], a slice of the (context_length, "
           "context_length) buffer", size=11, mono=True, colour=MUTED)
    p.text(450, 324, "example: num_tokens = 6; row i keeps keys 0 … i, the later keys get weight 0", size=11,
           colour=MUTED)
    return p


# ---------------------------------------------------------------------------------------------------------------
# Chapter 3: heads side by side (the wrapper). batch 2, num_tokens 6, d_in 3, d_out 2 per head, 2 heads.

def heads_side_by_side() -> Picture:
    p = Picture(900, 340, "MultiHeadAttentionWrapper: independent heads, concatenated",
                "x (batch, num_tokens, d_in) goes to every head. Each head is a CausalAttention(d_in, d_out) "
                "with its own W_query, W_key and W_value and returns (batch, num_tokens, d_out). torch.cat along "
                "the last dimension puts the heads' outputs side by side: (batch, num_tokens, num_heads * d_out), "
                "head 0 in the first d_out columns, head 1 in the next d_out.")
    cell = 16
    p.grid(60, 118, 6, 3, cell, solid(INPUT), depth=1)
    p.caption(84, 240, "x", ["(batch,", "num_tokens, d_in)"], "2 × 6 × 3")
    for head in range(2):
        y = 70 + head * 180  # the head's centre line
        colour = HEAD_COLOURS[head]
        p.elbow([(116, 166), (150, 166), (150, y), (184, y)])
        p.rect(190, y - 28, 210, 56, colour, radius=8)
        p.text(295, y - 5, f"head {head}", size=13, bold=True)
        p.text(295, y + 14, "CausalAttention(d_in, d_out)", size=11, mono=True)
        p.line(400, y, 434, y)
        p.grid(440, y - 48, 6, 2, cell, solid(colour), depth=1)
        p.text(486, y - 4, "(batch, num_tokens, d_out)", size=12, anchor="start", mono=True)
        p.text(486, y + 12, "2 × 6 × 2", size=11, anchor="start", colour=MUTED)
    p.elbow([(456, 118), (456, 150), (700, 150)])
    p.elbow([(456, 202), (456, 182), (700, 182)])
    op_label(p, 600, 170, ["torch.cat(dim=-1)"], size=12)
    p.grid(712, 118, 6, 4, cell, by_head(2), depth=1)
    p.caption(744, 240, "output", ["(batch, num_tokens,", "num_heads * d_out)"], "2 × 6 × 4")
    p.text(450, 328, "each head has its own three projections; the output is num_heads times as wide as one head",
           size=11, colour=MUTED)
    return p


# ---------------------------------------------------------------------------------------------------------------
# Chapter 4: one projection, split into heads. batch 2, num_tokens 6, d_in 4, d_out 8, num_heads 2, head_dim 4.

def split_heads() -> Picture:
    p = Picture(940, 350, "Splitting one projection into heads with view and transpose",
                "x (batch, num_tokens, d_in) goes through one W_query, nn.Linear(d_in, d_out), giving queries "
                "(batch, num_tokens, d_out): columns 0 to head_dim - 1 belong to head 0, the next head_dim to "
                "head 1. view(batch, num_tokens, num_heads, head_dim) cuts each row into num_heads pieces "
                "without moving any number; transpose(1, 2) moves the head dimension in front of the tokens, "
                "giving (batch, num_heads, num_tokens, head_dim): one (num_tokens, head_dim) matrix per "
                "sequence and head. Keys and values are split the same way.")
    cell = 14
    p.grid(60, 120, 6, 4, cell, solid(INPUT), depth=1)
    p.caption(88, 224, "x", ["(batch,", "num_tokens, d_in)"], "2 × 6 × 4")
    p.line(126, 162, 206, 162)
    op_label(p, 166, 148, ["W_query"], size=12)
    p.text(166, 184, "nn.Linear(", size=10, mono=True, colour=MUTED)
    p.text(166, 197, "d_in, d_out)", size=10, mono=True, colour=MUTED)
    p.grid(214, 120, 6, 8, cell, by_head(4), depth=1)
    for c in range(8):
        p.text(214 + c * cell + cell / 2, 108, str(c), size=9, mono=True, colour=MUTED)
    p.caption(270, 224, "queries", ["(batch, num_tokens,", "d_out)"], "2 × 6 × 8")
    p.line(342, 162, 428, 162)
    op_label(p, 385, 134, [".view(batch,", "num_tokens,", "num_heads,", "head_dim)"], size=10)
    p.grid(436, 120, 6, 8, cell, by_head(4), depth=1, gaps={4: 10})
    p.text(464, 108, "head 0", size=10, colour=MUTED)
    p.text(530, 108, "head 1", size=10, colour=MUTED)
    p.caption(497, 224, "split", ["(batch, num_tokens,", "num_heads, head_dim)"], "2 × 6 × 2 × 4 · nothing moved")
    p.line(576, 162, 676, 162)
    op_label(p, 626, 148, [".transpose(1, 2)"], size=11)
    for head in range(2):
        y = 40 + head * 126
        p.grid(690, y, 6, 4, cell, solid(HEAD_COLOURS[head]), depth=1)
        p.text(764, y + 30, f"head {head}", size=12, anchor="start", bold=True)
        p.text(764, y + 47, "(num_tokens, head_dim)", size=12, anchor="start", mono=True)
        p.text(764, y + 63, "for each sequence", size=11, anchor="start", colour=MUTED)
    p.caption(760, 300, "queries", "(batch, num_heads, num_tokens, head_dim)", "2 × 2 × 6 × 4")
    return p


# ---------------------------------------------------------------------------------------------------------------
# Chapter 5: concatenating the heads again. The chapter's coded tensor: 100 * head + 10 * token + feature.

def concatenate_heads() -> Picture:
    p = Picture(900, 350, "Concatenating heads: transpose back, then contiguous().view",
                "context (batch, num_heads, num_tokens, head_dim) holds one matrix per head; every entry is "
                "100 * head + 10 * token + feature. transpose(1, 2) gives (batch, num_tokens, num_heads, "
                "head_dim): each token's row now holds head 0's features then head 1's, but only the strides "
                "changed, so view refuses; contiguous() copies into that order and view(batch, num_tokens, "
                "d_out) joins the heads into one row per token, for token 1: 10 11 12 13 110 111 112 113.")
    cell = 26
    code = lambda head, token, feature: str(100 * head + 10 * token + feature)  # noqa: E731
    for head in range(2):
        y = 40 + head * 118
        p.grid(60, y, 3, 4, cell, solid(HEAD_COLOURS[head]), labels=lambda r, c, h=head: code(h, r, c),
               label_size=9, depth=1)
        p.text(60 + 2 * cell, y - 10, f"head {head}", size=11, colour=MUTED)
    p.caption(112, 278, "context", ["(batch, num_heads,", "num_tokens, head_dim)"])
    p.line(180, 140, 280, 140)
    op_label(p, 230, 126, [".transpose(1, 2)"], size=11)
    p.text(230, 160, "strides swap,", size=10, colour=MUTED)
    p.text(230, 173, "nothing is copied", size=10, colour=MUTED)
    fill = lambda r, c: HEAD_COLOURS[c // 4]  # noqa: E731
    p.grid(290, 101, 3, 8, cell, fill, labels=lambda r, c: code(c // 4, r, c % 4), label_size=9, depth=1,
           gaps={4: 8})
    p.caption(398, 212, "per_token", ["(batch, num_tokens,", "num_heads, head_dim)"])
    p.line(516, 140, 622, 140)
    op_label(p, 569, 126, [".contiguous()", ".view(batch,", "num_tokens, d_out)"], size=10)
    p.text(569, 160, "copies into row order,", size=10, colour=MUTED)
    p.text(569, 173, "then joins the heads", size=10, colour=MUTED)
    p.grid(634, 101, 3, 8, cell, fill, labels=lambda r, c: code(c // 4, r, c % 4), label_size=9, depth=1)
    p.caption(738, 212, "concatenated", "(batch, num_tokens, d_out)", "2 × 3 × 8: token 1 is 10 11 12 13 110 "
              "111 112 113")
    p.text(480, 336, "every entry is 100 * head + 10 * token + feature;  d_out = num_heads * head_dim;  "
           "the same tensor as torch.cat over the heads", size=11, colour=MUTED)
    return p


# ---------------------------------------------------------------------------------------------------------------
# Chapter 6: out_proj. d_out 8, 2 heads of head_dim 4.

def final_projection() -> Picture:
    p = Picture(920, 400, "The final projection out_proj: every head writes into the full width",
                "The concatenated heads (batch, num_tokens, d_out) hold head 0 in columns 0 to 3 and head 1 in "
                "columns 4 to 7. out_proj, nn.Linear(d_out, d_out), is the sum over heads of each head's "
                "columns (batch, num_tokens, head_dim) times its own block of the weight, W_o[:, block].T of "
                "shape (head_dim, d_out), plus the bias. So each head writes a full-width "
                "(batch, num_tokens, d_out) contribution, and the output mixes all heads in every column.")
    cell = 14
    p.grid(40, 148, 6, 8, cell, by_head(4), depth=1, gaps={4: 8})
    p.text(68, 136, "head 0", size=10, colour=MUTED)
    p.text(132, 136, "head 1", size=10, colour=MUTED)
    p.caption(100, 258, "concatenated", "(batch, num_tokens, d_out)", "2 × 6 × 8")
    for head in range(2):
        y = 72 if head == 0 else 290  # the arrow's line
        colour = HEAD_COLOURS[head]
        p.elbow([(170, 176 + 28 * head), (220, 176 + 28 * head), (220, y), (434, y)], colour=colour,
                width=2.5)
        block = f"{head * 4}:{head * 4 + 4}"
        op_label(p, 330, y - 8, [f"head {head}'s columns @ W_o[:, {block}].T"], size=10)
        p.text(330, y + 18, "(…, head_dim) @ (head_dim, d_out)", size=10, mono=True, colour=MUTED)
        p.grid(440, y - 42, 6, 8, cell, solid(colour), depth=1)
        p.text(496, y + 60, "(batch, num_tokens, d_out)", size=11, mono=True)
        p.line(560, y, 690, y, arrow=False)
        p.line(690, y, 690, 178 if head == 0 else 202)
    # the two contributions are added, then the bias
    p.parts.append('<circle cx="690" cy="190" r="12" fill="#FFFFFF" stroke="#1A1A1A" stroke-width="1.5"/>')
    p.text(690, 197, "+", size=20, bold=True)
    p.line(702, 190, 768, 190)
    op_label(p, 736, 180, ["+ bias"], size=11)
    p.grid(780, 148, 6, 8, cell, solid("url(#mixed)"), depth=1)
    p.caption(836, 258, "output", ["(batch,", "num_tokens, d_out)"], "2 × 6 × 8")
    p.text(836, 320, "every column mixes", size=11, colour=MUTED)
    p.text(836, 334, "all heads", size=11, colour=MUTED)
    p.text(460, 388, "out_proj = nn.Linear(d_out, d_out); its weight W_o is (d_out, d_out), one block of head_dim "
           "columns per head", size=11, colour=MUTED)
    return p


FIGURES = {
    "one_head.svg": one_head,
    "causal_mask.svg": causal_mask,
    "heads_side_by_side.svg": heads_side_by_side,
    "split_heads.svg": split_heads,
    "concatenate_heads.svg": concatenate_heads,
    "final_projection.svg": final_projection,
}


def render_all() -> dict[str, str]:
    """The text of every figure, by file name."""
    return {name: str(make()) for name, make in FIGURES.items()}


def main(out_dir: Path = HERE) -> None:
    for name, text in render_all().items():
        (out_dir / name).write_text(text, encoding="utf-8")
        print("wrote", out_dir / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
