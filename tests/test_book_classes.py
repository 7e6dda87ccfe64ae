"""No silent drift between the book's copies of a class (the one-file-per-assignment issue, its book part).

Pages run on their own (and open on their own in Colab), so a chapter restates the classes it builds on. Each
restatement is either the same code as the previous chapter's (docstrings aside) or says what changed in a
``# changed from chapter N: ...`` comment inside the class. Read from the MyST sources, in the order of _toc.yml.
"""
from __future__ import annotations

import ast
import re

from conftest import REPO, toc_files

COURSE_CLASSES = {"SelfAttention", "CausalAttention", "MultiHeadAttentionWrapper", "MultiHeadAttention"}
CELL = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)```", re.S)


def _without_docstrings(node: ast.ClassDef) -> str:
    node = ast.parse(ast.unparse(node)).body[0]
    for holder in ast.walk(node):
        if isinstance(holder, (ast.ClassDef, ast.FunctionDef)) and holder.body \
                and isinstance(holder.body[0], ast.Expr) and isinstance(holder.body[0].value, ast.Constant) \
                and isinstance(holder.body[0].value.value, str):
            holder.body = holder.body[1:] or [ast.Pass()]
    return ast.dump(node)


def definitions():
    """(page, class name, code without docstrings, source text) in reading order."""
    found = []
    for page in toc_files():
        path = REPO / f"{page}.md"
        if not path.exists():
            continue
        for cell in CELL.finditer(path.read_text()):
            code = "\n".join(line for line in cell.group(1).splitlines() if not line.startswith(":"))
            try:
                tree = ast.parse(code)
            except SyntaxError:
                continue
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name in COURSE_CLASSES:
                    found.append((page, node.name, _without_docstrings(node), ast.get_source_segment(code, node)))
    return found


def test_every_changed_restatement_says_what_changed():
    previous: dict[str, tuple[str, str]] = {}
    silent = []
    for page, name, code, source in definitions():
        if name in previous and previous[name][1] != code:
            chapter = int(previous[name][0].split("/")[-1][:2])
            if f"# changed from chapter {chapter}:" not in source:
                silent.append(f"{page}: {name} differs from {previous[name][0]}'s without a "
                              f"'# changed from chapter {chapter}:' comment")
        previous[name] = (page, code)
    assert not silent, "\n".join(silent)


def test_the_check_sees_a_silent_change():
    """The comparison is not blind: a one-token edit of a restated class is a difference."""
    defs = [d for d in definitions() if d[1] == "CausalAttention"]
    assert len(defs) >= 3
    first, second = defs[0], defs[1]
    assert first[2] == second[2]                        # chapter 3 restates chapter 2 unchanged
    edited = ast.parse(second[3].replace("diagonal=1", "diagonal=0")).body[0]
    assert _without_docstrings(edited) != first[2]
