"""ps4, the bug clinic (chapters 7 and 8): tasks, probe cases, answer keys.

- ``diagnoses`` (an answer task): the student's labels against ``answer_key.json`` beside the source notebook.
- ``parity_test``: the student's ``passes_parity_test`` judges classes taken from the source notebook (the correct
  and camouflaged classes the answer key lists, with the mystery modules they use), renamed from the seed and
  stripped of docstrings, so an answer keyed on class names or docs cannot work.
- ``fixed_wrapper`` / ``fixed_projection``: the same seeded module checks as ps3, with heads for the wrapper; the
  wrapper also called at several lengths, in training then eval mode, on a batch with one sequence changed, and in
  eval mode with dropout 0.5 twice (its equivalence check: the task has no dropout check).
"""
from __future__ import annotations

import ast
import functools
import json
from pathlib import Path

from grader.assignments.spec import Assignment, Check, Task
from grader.astlock import AST_LOCK
from grader.bugs import OUTPUT_BUGS
from grader.verify.cases import (Case, batch_case, eval_twice_case, lengths_case, module_case, rng_for,
                                 with_params)


def parity_classes(source_nb: Path, verdicts_by_class: dict[str, bool], seed: int,
                   members: bool = False, extra: str = "") -> tuple[str, dict[str, bool]]:
    """(class definitions renamed from the seed, {new name: verdict a correct test gives}).

    With ``members`` the classes' own members are renamed from the seed too: the attributes each class sets on
    ``self``, its buffers (``register_buffer``'s name) and its helper methods (not ``forward``, not dunders), so
    that a test which reads a buffer's or an attribute's name instead of the module's behaviour tells nothing.
    ``extra``: source of more classes (the grader's own), taken as if the notebook defined them.

    The classes are read from the source notebook's non-solution code cells with ``ast`` (nothing is executed);
    ``verdicts_by_class`` says which must pass (True) and which must fail. Raises KeyError naming a class the
    notebook does not define. The result is cached per notebook version, verdicts and seed.
    """
    path = Path(source_nb)
    stat = path.stat()
    with AST_LOCK:
        source, verdicts = _parity_classes(str(path.resolve()), stat.st_mtime_ns, stat.st_size,
                                           tuple(sorted(verdicts_by_class.items())), seed, members, extra)
    return source, dict(verdicts)


# nn.Module's own attributes a class may set or read on self: never renamed.
_MODULE_OWN = {"training", "forward"}


def _rename_members(node: ast.ClassDef, numbers) -> ast.ClassDef:
    """``node`` with the members it defines renamed (``self.X = ...``, ``register_buffer("X", ...)``, methods
    other than forward and dunders), every ``self.X`` that reads them following."""
    own = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store) and isinstance(sub.value, ast.Name) \
                and sub.value.id == "self":
            own.add(sub.attr)
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "register_buffer" \
                and sub.args and isinstance(sub.args[0], ast.Constant) and isinstance(sub.args[0].value, str):
            own.add(sub.args[0].value)
    own |= {f.name for f in node.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("__")}
    own = {name for name in own if name not in _MODULE_OWN and not name.startswith("__")}
    new = {name: f"m{next(numbers)}" for name in sorted(own)}

    class Members(ast.NodeTransformer):
        def visit_Attribute(self, sub):
            self.generic_visit(sub)
            if isinstance(sub.value, ast.Name) and sub.value.id == "self" and sub.attr in new:
                sub.attr = new[sub.attr]
            return sub

        def visit_Call(self, sub):
            self.generic_visit(sub)
            if isinstance(sub.func, ast.Attribute) and sub.func.attr == "register_buffer" and sub.args \
                    and isinstance(sub.args[0], ast.Constant) and sub.args[0].value in new:
                sub.args[0] = ast.copy_location(ast.Constant(new[sub.args[0].value]), sub.args[0])
            return sub

    node = Members().visit(node)
    for f in node.body:
        if isinstance(f, ast.FunctionDef) and f.name in new:
            f.name = new[f.name]
    return node


# The classes are the same for every submission of a run: made once, under the grader's AST lock (see
# grader/astlock.py: two threads building ASTs at once can fail on Python 3.11), and reused.
@functools.lru_cache(maxsize=16)
def _parity_classes(source_path: str, mtime_ns: int, size: int, verdict_items: tuple, seed: int,
                    members: bool = False, extra: str = ""):
    source_nb, verdicts_by_class = Path(source_path), dict(verdict_items)
    definitions: dict[str, ast.ClassDef] = {}
    for cell in json.loads(Path(source_nb).read_text())["cells"]:
        meta = (cell.get("metadata") or {}).get("nbgrader") or {}
        if cell.get("cell_type") != "code" or meta.get("solution"):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                definitions[node.name] = node
    for node in ast.parse(extra).body:
        if isinstance(node, ast.ClassDef):
            definitions[node.name] = node
    absent = sorted(set(verdicts_by_class) - set(definitions))
    if absent:
        raise KeyError(f"the source notebook defines no class {absent}")
    needed, order, stack = set(), list(definitions), list(verdicts_by_class)
    while stack:  # a class needs the classes its body or bases name
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack += [n.id for n in ast.walk(definitions[name]) if isinstance(n, ast.Name) and n.id in definitions]
    numbers = rng_for(seed, "parity_test", "names").permutation(9000)[: len(needed)] + 1000
    renamed = {old: f"Candidate{num}" for old, num in zip(sorted(needed), numbers)}

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node):
            return ast.copy_location(ast.Name(renamed.get(node.id, node.id), node.ctx), node)

        def visit_ClassDef(self, node):
            self.generic_visit(node)
            node.name = renamed.get(node.name, node.name)
            return node

    member_numbers = iter(rng_for(seed, "parity_test", "members").permutation(90000) + 10000)
    pieces = []
    for name in order:
        if name not in needed:
            continue
        node = Rename().visit(ast.parse(ast.unparse(definitions[name])).body[0])
        if members:
            node = _rename_members(node, member_numbers)
        for holder in [node] + [n for n in ast.walk(node) if isinstance(n, ast.FunctionDef)]:
            body = holder.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                holder.body = body[1:] or [ast.Pass()]  # docstrings name the bug
        pieces.append(ast.unparse(node))
    verdicts = {renamed[name]: verdict for name, verdict in verdicts_by_class.items()}
    return "\n\n".join(pieces), dict(sorted(verdicts.items()))


def cases(seed: int, source_nb: Path | None = None, keys: dict | None = None) -> list:
    found = []
    keys = keys or {}
    if source_nb is not None and "parity_test" in keys:
        parity = keys["parity_test"]
        verdicts = {cls: True for cls in parity["correct_classes"].values()}
        verdicts.update({entry[0]: False for entry in parity["camouflaged_bugs"].values()})
        source, renamed = parity_classes(source_nb, verdicts, seed)
        found.append(Case("parity_test", "classes", "parity", "passes_parity_test", check="parity",
                          kwargs={"source": source, "classes": list(renamed)}, params={"verdicts": renamed}))
    wrapper = "FixedMultiHeadAttentionWrapper"
    found += with_params([
        module_case("fixed_wrapper", "d_in_ne_d_out", wrapper, seed, batch=2, num_tokens=6, d_in=8, d_out=4,
                    heads=3, out_proj=True,
                    kwargs={"d_in": 8, "d_out": 12, "context_length": 8, "dropout": 0.0, "num_heads": 3}),
        module_case("fixed_wrapper", "square_with_bias", wrapper, seed, batch=1, num_tokens=5, d_in=8, d_out=2,
                    heads=4, out_proj=True, qkv_bias=True,
                    kwargs={"d_in": 8, "d_out": 8, "context_length": 5, "dropout": 0.0, "num_heads": 4}),
    ], reference="heads_out_proj")
    found.append(Case("fixed_wrapper", "indivisible_d_out", "raises", wrapper, check="raises",
                      kwargs={"d_in": 8, "d_out": 10, "context_length": 8, "dropout": 0.0, "num_heads": 4},
                      params={"exception": "ValueError"}))
    found += with_params([lengths_case("fixed_wrapper", wrapper, seed, d_in=6, d_out=2, heads=3, out_proj=True,
                                       kwargs={"d_in": 6, "d_out": 6, "num_heads": 3}),
                          batch_case("fixed_wrapper", wrapper, seed, d_in=5, d_out=3, heads=2, out_proj=True,
                                     kwargs={"d_in": 5, "d_out": 6, "num_heads": 2})],
                         reference="heads_out_proj")
    found.append(eval_twice_case("fixed_wrapper", wrapper, seed, num_heads=2, separate_heads=True, out_proj=True,
                                 d_out_is_total=True))
    for name, d_in, d_out, heads, bias in (("square", 12, 12, 3, False), ("d_in_ne_d_out", 8, 12, 3, False),
                                           ("wide_input_with_bias", 20, 6, 2, True)):
        found += with_params([module_case("fixed_projection", name, "FixedMultiHeadAttention", seed, batch=2,
                                          num_tokens=5, d_in=d_in, d_out=d_out, out_proj=True, qkv_bias=bias,
                                          kwargs={"d_in": d_in, "d_out": d_out, "context_length": 7,
                                                  "dropout": 0.0, "num_heads": heads})], reference="mha")
    found += with_params([lengths_case("fixed_projection", "FixedMultiHeadAttention", seed, d_in=6, d_out=8,
                                       out_proj=True, kwargs={"d_in": 6, "d_out": 8, "num_heads": 2}),
                          batch_case("fixed_projection", "FixedMultiHeadAttention", seed, d_in=5, d_out=6,
                                     out_proj=True, kwargs={"d_in": 5, "d_out": 6, "num_heads": 3})],
                         reference="mha")
    found.append(eval_twice_case("fixed_projection", "FixedMultiHeadAttention", seed, num_heads=2, out_proj=True))
    if "diagnoses" in keys:
        key = keys["diagnoses"]
        found.append(Case("diagnoses", "answer", "answer", "diagnoses", check="answer",
                          params={"answer": {"kind": "labels", "labels": list(key["labels"]),
                                             "key": {name: entry[0] for name, entry in key["key"].items()}}}))
    return found


ASSIGNMENT = Assignment(
    "ps4",
    "Bug clinic",
    ("book/07_bug_clinic_9216", "book/08_bug_clinic_projection"),
    (
        Task("diagnoses", 4, ("diagnoses",),
             "diagnoses: dict mystery module name -> one label of BUG_LABELS", kind="answer"),
        Task("parity_test", 3, ("passes_parity_test",),
             "passes_parity_test(mha_cls) -> bool: True for a correct class, False for one whose bug "
             "hides when d_in == d_out",
             # A parity test may well compare against nn.MultiheadAttention: that is not a shortcut.
             from_scratch=False),
        Task("fixed_wrapper", 3, ("FixedMultiHeadAttentionWrapper",),
             "the 9216 wrapper fixed: d_out total, d_out // num_heads per head, out_proj after the concat",
             checks=(Check("equivalence", 2, ("d_in_ne_d_out", "square_with_bias", "lengths_and_modes",
                                              "batch_independence", "eval_twice"), bugs=OUTPUT_BUGS),
                     Check("divisibility", 1, ("indivisible_d_out",), bugs=("divisibility",)))),
        Task("fixed_projection", 3, ("FixedMultiHeadAttention",),
             "the module without a final projection, fixed: equals nn.MultiheadAttention"),
    ),
    cases=cases,
    keyed_tasks=("diagnoses", "parity_test"),
)
