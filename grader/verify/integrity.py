"""Integrity flags: what a person should look at in a submission, found by reading (never running) its code.

A flag is a question for a person, not a verdict: it never changes a score. Flags cover a from-scratch task that
reaches PyTorch's built-in attention, code that patches IPython, builtins, torch, numpy or the grader, and code
that reads the grading environment, grader internals, the probe folder or files outside the notebook's folder.
Only cells the student wrote or changed are read: a cell identical to one of the released notebook's own cells
(imports, visible tests) is the course's code. Cells that do not parse are scanned as text.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from grader import astlock
from grader.verify.loading import BUILTIN_LABELS, ProbeDataError, load_json, safe_dir


BUILTIN_ATTENTION = {
    "scaled_dot_product_attention", "MultiheadAttention", "multi_head_attention_forward", "flex_attention",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder",
    "Transformer", "sdpa_kernel", "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_native_multi_head_attention",
}
PATCHED_ROOTS = {"torch", "numpy", "builtins", "IPython", "ipykernel", "grader", "nbgrader", "sys", "os", "json",
                 "math", "unittest", "pytest", "importlib", "inspect", "traitlets", "jupyter_client"}
GUARDED_BUILTINS = {"isinstance", "issubclass", "getattr", "setattr", "hasattr", "open", "exec", "eval", "compile",
                    "__import__", "print", "AssertionError", "Exception", "type", "len", "all", "any", "abs", "max",
                    "min", "round", "float", "bool", "int", "str", "repr", "globals", "locals", "vars", "id"}
HOOKS = {  # interpreter and IPython hooks: a student's attention code needs none of them
    "get_ipython": "uses IPython's shell (get_ipython)", "run_cell": "touches IPython's run_cell",
    "input_transformers_cleanup": "adds an IPython input transformer",
    "input_transformers_post": "adds an IPython input transformer",
    "ast_transformers": "adds an IPython AST transformer", "register_magic_function": "registers an IPython magic",
    "__IPYTHON__": "checks for IPython", "_ih": "reads IPython's input history", "settrace": "sets a trace hook",
    "setprofile": "sets a profile hook", "meta_path": "hooks imports (sys.meta_path)", "path_hooks": "hooks imports",
    "_getframe": "inspects interpreter frames", "currentframe": "inspects interpreter frames",
    "get_referrers": "walks the garbage collector", "get_objects": "walks the garbage collector",
    "atexit": "registers exit hooks", "ctypes": "uses ctypes", "__builtins__": "touches __builtins__",
    "__subclasses__": "walks class internals",
}
ENVIRONMENT = {"environ": "reads the environment (os.environ)", "getenv": "reads the environment (os.getenv)",
               "environb": "reads the environment", "putenv": "changes the environment"}
FILESYSTEM = {"listdir", "scandir", "walk", "chdir", "glob", "iglob", "rglob", "rmtree", "copytree", "remove",
              "unlink", "rename", "symlink", "system", "popen", "subprocess", "Popen", "run", "check_output",
              "fork", "kill", "execv", "execve", "socket", "urlopen", "requests", "home", "expanduser", "read_text",
              "read_bytes", "write_text", "write_bytes", "iterdir", "_exit", "abort", "killpg"}
SUSPICIOUS_TEXT = [  # in string literals: names of the grading machinery, or of built-in attention spelled out
    (re.compile(r"NBGRADER|_probe|_mha_probe|grader[./](verify|pipeline|grade)|kernel_runtime", re.I),
     "names the grading machinery in a string"),
    (re.compile(r"(^|[/\\])\.\.([/\\]|$)|^/|^~|solutions|gradebook|submitted|autograded|/tmp"),
     "names a path outside the notebook's folder"),
    (re.compile(r"(?i:scaled_dot_product_att|multi_head_attention_forward|flash_att)|MultiheadAttention"),
     "spells out a built-in attention name in a string (getattr-style access)"),
]
DEFAULT_ALIASES = {"torch": "torch", "nn": "torch.nn", "F": "torch.nn.functional", "np": "numpy", "numpy": "numpy",
                   "os": "os", "sys": "sys", "grader": "grader", "builtins": "builtins", "IPython": "IPython",
                   "diagnose": "grader.diagnose"}  # what the released notebooks' set-up cells import
ALLOWED_MAGICS = {"matplotlib", "time", "timeit", "config", "precision", "pinfo", "pdef", "who", "whos"}


def course_cell_sources(source_nb: Path) -> set[str]:
    """The code the course itself gives students: the source notebook's non-solution code cells as released, with
    their hidden tests cleared by nbgrader's own ``ClearHiddenTests`` (what ``python -m grader release`` ships).
    Read from the source actually graded (``grade --source``), never from a fixed path; empty when unreadable."""
    import nbformat
    from nbgrader.preprocessors import ClearHiddenTests

    try:
        nb = nbformat.read(str(source_nb), as_version=4)
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    clear, sources = ClearHiddenTests(), set()
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and not (cell.metadata.get("nbgrader") or {}).get("solution"):
            cleared, _ = clear.preprocess_cell(nbformat.from_dict(json.loads(json.dumps(cell))), {}, index)
            sources.add(cleared.source.strip())
    return sources


def _text(source) -> str:
    if isinstance(source, list):
        return "".join(part for part in source if isinstance(part, str))
    return source if isinstance(source, str) else ""


def _strip_ipython(source: str, notes: list[str]) -> str:
    """Replace IPython-only lines (!shell, %magic, %%cell magic) with `pass`, noting the risky ones."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].lstrip()[2:].split()[0] if lines[0].strip() != "%%" else ""
        if magic not in ALLOWED_MAGICS:
            notes.append(f"runs the cell magic %%{magic}")
        return ""
    kept = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith("!") or re.match(r"^\w+\s*=\s*!", stripped):
            notes.append("runs a shell command (!)")
            kept.append(indent + "pass")
        elif stripped.startswith("%"):
            magic = stripped.lstrip("%").split()[0] if stripped.strip("%") else ""
            if magic not in ALLOWED_MAGICS:
                notes.append(f"runs the magic %{magic}")
            kept.append(indent + "pass")
        else:
            kept.append(line)
    return "\n".join(kept)


class _Scanner(ast.NodeVisitor):
    def __init__(self):
        self.aliases = dict(DEFAULT_ALIASES)
        self.notes: list[str] = []
        self.attention: list[str] = []
        self.defined: set[str] = set()

    def dotted(self, node) -> str:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(self.aliases.get(node.id, node.id))
            return ".".join(reversed(parts))
        # x().eval, (a + b).view: rooted in an expression, so it names no module and no builtin
        return "<expr>." + ".".join(reversed(parts)) if parts else ""

    def _name_used(self, name: str, full: str) -> None:
        if name in BUILTIN_ATTENTION:
            self.attention.append(full or name)
        if name in HOOKS:
            self.notes.append(HOOKS[name])
        if name in ENVIRONMENT:
            self.notes.append(ENVIRONMENT[name])
        root = full.split(".")[0]
        if name in FILESYSTEM and (root in {"os", "shutil", "subprocess", "glob", "pathlib", "socket", "urllib",
                                            "requests", "Path"} or name in {"subprocess", "Popen", "socket"}):
            self.notes.append(f"touches files, processes or the network ({full})")
        if full.startswith(("sys.modules", "gc.", "inspect.stack", "IPython", "ipykernel")):
            self.notes.append(f"reaches interpreter internals ({full})")
        if full.startswith("grader.") and not full.startswith(("grader.diagnose", "grader.check")):
            self.notes.append(f"reads grader internals ({full})")
        if full.startswith("nbgrader"):
            self.notes.append(f"reads grader internals ({full})")

    def visit_Import(self, node):
        for alias in node.names:
            self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                alias.name.split(".")[0]
            self._name_used(alias.name.split(".")[-1], alias.name)
            if alias.name.split(".")[0] in {"builtins", "ctypes", "atexit", "subprocess", "socket", "importlib"}:
                self.notes.append(f"imports {alias.name}")

    def visit_ImportFrom(self, node):
        module = node.module or ""
        for alias in node.names:
            full = f"{module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            self._name_used(alias.name, full)
        if module.split(".")[0] in {"builtins", "ctypes", "atexit", "subprocess", "socket", "importlib"}:
            self.notes.append(f"imports from {module}")

    def visit_Attribute(self, node):
        self._name_used(node.attr, self.dotted(node))
        self.generic_visit(node)

    def visit_Name(self, node):
        self._name_used(node.id, self.aliases.get(node.id, node.id))
        if isinstance(node.ctx, ast.Store) and node.id in GUARDED_BUILTINS:
            self.notes.append(f"rebinds the built-in {node.id}")

    def _patched(self, target) -> None:
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            base = target.value
            full = self.dotted(base) if not isinstance(base, ast.Subscript) else self.dotted(base.value)
            root = full.split(".")[0]
            if root in PATCHED_ROOTS or full.endswith("__builtins__"):
                label = full + (f".{target.attr}" if isinstance(target, ast.Attribute) else "[...]")
                self.notes.append(f"patches {label}")
            elif isinstance(target, ast.Attribute) and target.attr.startswith("__") and target.attr.endswith("__"):
                self.notes.append(f"replaces {target.attr} of an existing object")

    def visit_Assign(self, node):
        for target in node.targets:
            for element in (target.elts if isinstance(target, ast.Tuple) else [target]):
                self._patched(element)
                if isinstance(element, ast.Name):
                    self.defined.add(element.id)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self._patched(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node):
        for target in node.targets:
            self._patched(target)
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        self.defined.add(node.name)
        if node.name in GUARDED_BUILTINS:
            self.notes.append(f"rebinds the built-in {node.name}")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self.defined.add(node.name)
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name in {"__eq__", "__ne__", "__bool__", "__getattr__",
                                                                   "__getattribute__", "__torch_function__"}:
                self.notes.append(f"defines {item.name} on class {node.name} (an object that fakes comparisons)")
        for base in node.bases:
            if self.dotted(base) in {"torch.Tensor", "numpy.ndarray", "float", "bool", "dict", "str"}:
                self.notes.append(f"class {node.name} subclasses {self.dotted(base)}")
        self.generic_visit(node)

    def visit_Call(self, node):
        func = self.dotted(node.func)
        if func in {"setattr", "delattr"} and node.args:
            root = self.dotted(node.args[0]).split(".")[0]
            if root in PATCHED_ROOTS:
                self.notes.append(f"patches {self.dotted(node.args[0])} with {func}()")
        if func in {"getattr", "hasattr"} and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant):
            self.notes.append("looks up an attribute by a computed name (getattr)")
        if func in {"exec", "eval", "compile", "__import__", "importlib.import_module"}:
            self.notes.append(f"runs code built at run time ({func})")
        if func in {"open", "io.open", "pathlib.Path", "Path", "numpy.load", "torch.load", "pickle.load"}:
            path = node.args[0] if node.args else None
            if not (isinstance(path, ast.Constant) and isinstance(path.value, str)):
                self.notes.append(f"opens a file whose name is computed ({func})")
        self.generic_visit(node)

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring or a bare string: prose, not a name the code looks up
        self.generic_visit(node)

    def visit_Constant(self, node):
        if isinstance(node.value, str):
            for index, (pattern, what) in enumerate(SUSPICIOUS_TEXT):
                # Paths and getattr-style names have no spaces; a sentence that mentions them is prose.
                if (index == 0 or not re.search(r"\s", node.value)) and pattern.search(node.value):
                    self.notes.append(f"{what} ({node.value[:40]!r})")


def scan_source(source: str) -> tuple[list[str], list[str], set[str]]:
    """(notes, built-in attention uses, names defined) of one cell's source."""
    scanner = _Scanner()
    code = _strip_ipython(source, scanner.notes)
    try:
        scanner.visit(astlock.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # Unparsable: it cannot run either, but a text scan still reports what it reaches for.
        for word in sorted(BUILTIN_ATTENTION):
            if re.search(rf"\b{word}\b", code):
                scanner.attention.append(word)
        for word, what in {**HOOKS, **ENVIRONMENT}.items():
            if re.search(rf"\b{re.escape(word)}\b", code):
                scanner.notes.append(what)
        for pattern, what in SUSPICIOUS_TEXT[:1]:
            if pattern.search(code):
                scanner.notes.append(what)
    return scanner.notes, scanner.attention, scanner.defined


def integrity_flags(assignment, notebook_json: dict, course_cells: set[str] | None = None) -> list[str]:
    """Review flags for one submitted notebook (plain text, each naming the cell and, when known, the task).

    ``assignment`` is a :class:`grader.assignments.Assignment` (None: no flags); ``course_cells`` the sources of the
    cells the course gives (:func:`course_cell_sources`), which are not the student's and are skipped unchanged."""
    spec = assignment
    if spec is None or not isinstance(notebook_json, dict) or not isinstance(notebook_json.get("cells"), list):
        return []
    release = course_cells or set()
    task_of_name = {name: task for task in spec.tasks for name in task.names}
    task_by_id = {task.name: task for task in spec.tasks}
    flags: list[str] = []
    for number, cell in enumerate(notebook_json["cells"], start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        nbmeta = metadata.get("nbgrader") if isinstance(metadata.get("nbgrader"), dict) else {}
        grade_id = nbmeta.get("grade_id")
        source = _text(cell.get("source"))
        own_task = task_by_id.get(grade_id) if isinstance(grade_id, str) else None
        if own_task is None and source.strip() in release:
            continue  # the course's own cell, unchanged
        notes, attention, defined = scan_source(source)
        tasks = {own_task} if own_task else set()
        tasks |= {task_of_name[name] for name in defined if name in task_of_name}
        where = f"cell {number}" + (f" (task {', '.join(sorted(t.name for t in tasks))})" if tasks else "")
        if attention:
            used = ", ".join(sorted(set(attention)))
            scratch = sorted(t.name for t in tasks if t.from_scratch)
            if scratch:
                flags.append(f"{where}: from-scratch task {', '.join(scratch)} uses PyTorch's built-in "
                             f"attention ({used})")
            elif not tasks and any(t.from_scratch for t in spec.tasks):
                flags.append(f"{where}: uses PyTorch's built-in attention ({used}) outside the task cells")
        for note in dict.fromkeys(notes):
            flags.append(f"{where}: {note}")
    return list(dict.fromkeys(flags))


def runtime_flags(assignment, probe_dir: Path) -> list[str]:
    """Flags from the probes' tripwires: built-in attention that ran while a from-scratch task of ``assignment``
    (a :class:`grader.assignments.Assignment`) was probed."""
    spec = assignment
    flags: list[str] = []
    for task in spec.tasks if spec else []:
        if not task.from_scratch:
            continue
        try:
            folder = safe_dir(probe_dir, task.name)
            names = sorted(p.name for p in folder.iterdir() if p.suffix == ".json")[:50]
        except (ProbeDataError, OSError):
            continue
        seen: dict[str, int] = {}
        for name in names:
            try:
                calls = load_json(folder / name).get("builtin_attention_calls") or {}
            except ProbeDataError:
                continue
            for label, count in (calls.items() if isinstance(calls, dict) else []):
                # Only the probe runtime's own labels (kernel_runtime.tripwire): the file is the kernel's to write.
                if label in BUILTIN_LABELS and isinstance(count, int) and count > 0:
                    seen[label] = seen.get(label, 0) + count
        if seen:
            text = ", ".join(f"{label} x{count}" for label, count in sorted(seen.items()))
            flags.append(f"task {task.name}: PyTorch's built-in attention ran while it was probed ({text})")
    return flags
