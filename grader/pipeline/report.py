"""Stage 6, report: grades.csv, tasks.csv, one feedback page per student, and the autograded notebooks for
nbgrader's formgrader (OUT/autograded/<student>/<assignment>/<notebook>.ipynb, nbgrader's own layout).

The feedback page is the executed notebook, headed by a table of each task's result and message, with the probe
cells removed and the hidden tests' code replaced by a line that says they are hidden (nbgrader shows that code,
its issue #917). A failing hidden test shows only its error's type and message, never its traceback (which quotes
the failing line). Rows are sorted by student id, so grading twice writes the same files.

What a probe cell printed never reaches the page: probe cells are dropped whole, and what the kernel sent while
they ran went to them (nbclient files output under the cell whose request it answers, and drops what a thread
sends for an earlier cell). One path is not closed here: a display update sent during a probe cell rewrites the
earlier cell that made the display, in place, and the page cannot tell it from the original; execute must ignore
display updates once the probe cells start (the xfail test in tests/test_batch_robustness.py). The page is bounded:
each cell shows at most FEEDBACK_CELL_CHARS of code, the page at most FEEDBACK_PAGE_CHARS of code and output, and
an output nested too deep to render is replaced by a note, because sanitizing the page's HTML costs the grader
about a second per 5,000 characters of highlighted code (1 MB of code took 3.5 minutes and 1.2 GB).

A page is the same bytes whenever the same result is written (cell ids follow the cells' positions, nothing holds a
time), and it loads nothing from outside OUT: MathJax is the course's vendored copy (book/_vendor/, as the book
serves it), copied once into OUT/feedback/_static/ and named by a relative path; require.js and mermaid, which
nbconvert's template fetches from a CDN, are left out (the page has no widgets; a mermaid block shows as text).
"""
from __future__ import annotations

import hashlib
import html
import json
import shutil
import tempfile
import threading
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter
from nbformat import NotebookNode

from grader.paths import REPO
from grader.pipeline.clean_html import clean_feedback_html
from grader.pipeline.types import STATUSES, Result
from grader.pipeline.collect import safe_name
from grader.pipeline.sanitize import MAX_DEPTH, json_depth, nbgrader_meta, strip_hidden

GRADES_COLUMNS = ["student_id", "assignment", "score", "max_score", "status", "flags", "message"]
TASKS_COLUMNS = ["student_id", "assignment", "task", "score", "max_score", "message"]
HIDDEN_NOTE = "# (hidden tests run here when the notebook is graded; their code is not shown)"
FEEDBACK_CELL_CHARS = 20_000     # code shown per cell
FEEDBACK_PAGE_CHARS = 100_000    # code and output shown per page (the course's longest solution: 36,000 of code)


def _number(x: float) -> str:
    return f"{x:g}"


def write_csvs(out: Path, results: list[Result], replace=None) -> None:
    """OUT/grades.csv and OUT/tasks.csv, rows in student-id order. `replace` (the ids a ``--student`` regrade
    graded): only those students' rows of the earlier files are replaced, every other row keeps its bytes; raises
    lms.CannotMerge (before writing either file) when an earlier file is missing or has other columns."""
    # Every CSV goes through lms.write_csv: a cell such as a student id "=1+1" gets a leading ' (no formula).
    from grader.pipeline.lms import CannotMerge, merge_rows, write_csv

    results = sorted(results, key=lambda r: r.student_id)
    grades = [[r.student_id, r.assignment, _number(r.score), _number(r.max_score), r.status, "; ".join(r.flags),
               r.message] for r in results]
    tasks = [[r.student_id, r.assignment, t.task, _number(t.score), _number(t.max_score), t.message]
             for r in results for t in r.tasks]
    if replace is not None:      # both merged before either is written: never one file new and the other old
        first = lambda row: row[0]  # noqa: E731
        grades = merge_rows(out / "grades.csv", GRADES_COLUMNS, grades, replace, first)
        tasks = merge_rows(out / "tasks.csv", TASKS_COLUMNS, tasks, replace, first)
        others = sorted({row[1] for row in grades} - {r.assignment for r in results})
        if results and others:
            raise CannotMerge(f"{out / 'grades.csv'} holds another assignment ({', '.join(others)}): --student "
                              "replaces rows of an earlier run of the same assignment; use that run's OUT")
    write_csv(out / "grades.csv", GRADES_COLUMNS, grades)
    write_csv(out / "tasks.csv", TASKS_COLUMNS, tasks)


def _summary_html(result: Result) -> str:
    # Only tags nbconvert's sanitizer keeps (the page is sanitized because student markdown is in it).
    items = "".join(f"<li><b>{html.escape(t.task)}</b>: {_number(t.score)} / {_number(t.max_score)}, "
                    f"{html.escape(t.message)}</li>" for t in result.tasks)
    flags = "".join(f"<li>{html.escape(f)}</li>" for f in result.flags)
    return (f"<div><b>Feedback on {html.escape(result.assignment)} for {html.escape(result.student_id)}</b></div>"
            f"<div><b>Score: {_number(result.score)} / {_number(result.max_score)}</b>, status "
            f"<code>{html.escape(result.status)}</code>: {html.escape(STATUSES.get(result.status, ''))}</div>"
            + (f"<div>{html.escape(result.message)}</div>" if result.message else "")
            + (f"<ul>{items}</ul>" if items else "")
            + (f"<div>For review by a person:</div><ul>{flags}</ul>" if flags else ""))


def is_probe(cell) -> bool:
    grader_meta = cell.get("metadata", {}).get("grader", {})
    return isinstance(grader_meta, dict) and bool(grader_meta.get("probe"))


BINARY_IMAGES = {"image/png", "image/jpeg", "image/gif"}   # an attribute to the sanitizer: cheap, not counted


def _output_chars(output: dict) -> int:
    """The characters of an output that the page's sanitizer has to read as text or markup."""
    size = len(str(output.get("text", "") or ""))
    data = output.get("data") or {}
    for mime, value in (data.items() if isinstance(data, dict) else [("", data)]):
        if mime not in BINARY_IMAGES:
            size += len("".join(map(str, value))) if isinstance(value, list) else len(str(value))
    return size + sum(len(str(line)) for line in output.get("traceback", []) or [])


def _note_output(text: str) -> NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=text + "\n")


class PageBudget:
    """What is left of the page's characters; cut() shortens one text to fit, saying how much it left out."""

    def __init__(self, chars: int = FEEDBACK_PAGE_CHARS):
        self.left = chars

    def cut(self, text: str, cap: int, note) -> str:
        keep = min(len(text), cap, max(0, self.left))
        self.left -= keep
        if keep == len(text):
            return text
        shown = text[:keep]
        shown = shown[: shown.rfind("\n") + 1] if "\n" in shown else ""
        return shown + note(len(text) - len(shown))

    def outputs(self, outputs: list) -> list:
        """Copies of the outputs that fit; the others replaced by a line that says what was left out."""
        kept = []
        for output in outputs:
            if not isinstance(output, dict) or json_depth(output, MAX_DEPTH) > MAX_DEPTH:
                kept.append(_note_output(f"(an output nested more than {MAX_DEPTH} levels deep is not shown)"))
                continue
            size = _output_chars(output)
            if size <= self.left:
                self.left -= size
                kept.append(nbformat.from_dict(json.loads(json.dumps(output))))
            elif output.get("output_type") == "stream":
                kept.append(_note_output(self.cut(str(output.get("text", "")), self.left, lambda n: (
                    f"\n({n:,} more characters of output are not shown on this page)"))))
            else:
                kept.append(_note_output(f"(an output of {size:,} characters is not shown: the page shows at most "
                                         f"{FEEDBACK_PAGE_CHARS:,} characters)"))
        return kept


def feedback_notebook(result: Result) -> NotebookNode:
    """The notebook a student sees: summary first, no probes, no hidden test code or tracebacks, bounded size."""
    cells = [nbformat.v4.new_markdown_cell(_summary_html(result))]
    nb = result.feedback_nb
    budget = PageBudget()
    for original in (nb.cells if nb is not None else []):
        if is_probe(original):
            continue
        cell = nbformat.from_dict(json.loads(json.dumps({k: v for k, v in original.items() if k != "outputs"})))
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        hidden_tests = nbgrader_meta(cell).get("grade") and not nbgrader_meta(cell).get("solution")
        if hidden_tests:
            source = strip_hidden(source, placeholder=HIDDEN_NOTE)
        comment = "# " if cell.cell_type == "code" else ""
        cell.source = budget.cut(source, FEEDBACK_CELL_CHARS, lambda n: (
            f"\n{comment}({n:,} more characters of this cell are not shown on this page)"))
        if cell.cell_type == "code":
            cell.outputs = budget.outputs(original.get("outputs", []))
            for output in cell.outputs if hidden_tests else []:
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        cells.append(cell)
    for index, cell in enumerate(cells):     # nbformat draws new ids at random; the page must not change
        cell.id = f"feedback-{index:03d}"
    return nbformat.v4.new_notebook(cells=cells, metadata={"language_info": {"name": "python"}})


# Student markdown and outputs are sanitized (no script, no event handlers): grader.pipeline.clean_html.


STATIC_FOLDER = "_static"      # OUT/feedback/_static/: what every page loads, beside the students' folders
VENDORED_MATHJAX = REPO / "book" / "_vendor" / "static" / "vendor" / "mathjax"
MATHJAX_URL = f"../{STATIC_FOLDER}/mathjax/tex-chtml.js"      # from OUT/feedback/<student>/<notebook>.html
_static_lock = threading.Lock()  # pages are written by several grading threads at once

# nbconvert's lab page without its CDN scripts: MathJax 3 from MATHJAX_URL, configured as nbconvert configures
# MathJax 2 (dollar signs, environments, AMS numbering) with the `safe` extension (no javascript: links from TeX).
FEEDBACK_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block notebook_css -%}
{{ super() }}
<style>
/* WCAG 2.1 AA contrast (4.5:1) on the page's code, prompts and tracebacks (tests/test_accessibility.py). */
:root {
  --jp-mirror-editor-number-color: #006400;
  --jp-mirror-editor-comment-color: #2d5b5b;
  --jp-mirror-editor-operator-color: #7316c4;
  --jp-mirror-editor-meta-color: #7316c4;
  --jp-mirror-editor-atom-color: #3232c8;
  --jp-cell-prompt-not-active-font-color: #595959;
  --jp-cell-prompt-not-active-opacity: 1;
  --jp-rendermime-error-background: #fff0f0;
}
.jp-RenderedText pre .ansi-red-fg { color: #b3261e; }
.jp-RenderedText pre .ansi-green-fg { color: #006b2e; }
.jp-RenderedText pre .ansi-yellow-fg { color: #7a5c00; }
.jp-RenderedText pre .ansi-blue-fg { color: #1f4fa8; }
.jp-RenderedText pre .ansi-magenta-fg { color: #8a2c8a; }
.jp-RenderedText pre .ansi-cyan-fg { color: #00656b; }
.jp-RenderedText pre span[style] { color: inherit !important; }
</style>
{%- endblock notebook_css -%}
{%- block html_head_js_mathjax -%}
<script>
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams', useLabelIds: true},
  loader: {load: ['ui/safe']}
};
</script>
<script src="{{ resources.mathjax_url }}" id="MathJax-script" async></script>
{%- endblock html_head_js_mathjax -%}
"""


def feedback_folder(student_id: str) -> str:
    """One folder per student id: the id itself when it is already a safe name, else the safe name plus a short
    hash of the id, so that ids which sanitize alike ("jo doe", "jo_doe") never share a folder (nor the pages'
    own _static folder)."""
    name = safe_name(student_id)
    if name == student_id and name != STATIC_FOLDER:
        return name
    return f"{name}-{hashlib.sha256(student_id.encode('utf-8')).hexdigest()[:8]}"


def install_static(feedback: Path) -> None:
    """The vendored MathJax under feedback/_static/mathjax/, copied when absent or of another version; whole or
    not at all (copied beside, then renamed), so a page never names a half-copied file."""
    dest = feedback / STATIC_FOLDER / "mathjax"
    version = VENDORED_MATHJAX / "package.json"
    with _static_lock:
        if not version.is_file():
            return      # no vendored copy (the grader installed without the course): the page shows TeX as text
        if (dest / "package.json").is_file() and (dest / "package.json").read_bytes() == version.read_bytes():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".mathjax-", dir=dest.parent))
        shutil.copytree(VENDORED_MATHJAX, staging, dirs_exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)


_exporters = threading.local()


def feedback_exporter() -> HTMLExporter:
    """This thread's HTMLExporter for feedback pages, made once: a new exporter compiles its ten jinja templates
    again (measured on the ps1 solution: 0.29-0.64 s of CPU per page with a new exporter, 0.22-0.40 s with one
    reused; sanitising the highlighted code is most of the rest)."""
    exporter = getattr(_exporters, "html", None)
    if exporter is None:
        exporter = HTMLExporter(sanitize_html=True, filters={"clean_html": clean_feedback_html},
                                extra_loaders=[jinja2.DictLoader({"feedback.html.j2": FEEDBACK_TEMPLATE})],
                                template_file="feedback.html.j2", mathjax_url=MATHJAX_URL)
        exporter.exclude_input_prompt = False
        _exporters.html = exporter
    return exporter


def write_feedback(out: Path, result: Result, notebook_stem: str) -> Path:
    body, _ = feedback_exporter().from_notebook_node(feedback_notebook(result))
    install_static(out / "feedback")
    folder = out / "feedback" / feedback_folder(result.student_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{notebook_stem}.html"
    path.write_text(body, encoding="utf-8")
    return path


AUTOGRADED_FOLDER = "autograded"     # nbgrader's CourseDirectory.autograded_directory default


def write_autograded(out: Path, result: Result, notebook_stem: str) -> Path | None:
    """OUT/autograded/<student>/<assignment>/<notebook>.ipynb: the executed notebook as nbgrader's autograde leaves
    it (hidden tests included, the grader's probe cells removed), where formgrader's submission view looks for it
    (nbgrader's CourseDirectory.directory_structure, with autograded_directory pointed at OUT/autograded). This
    folder is for the instructor only: it holds the hidden tests. Returns None, writing nothing, when there is no
    executed notebook (a rejected submission) or the student id is not a safe folder name (formgrader builds the
    path from the id itself)."""
    if feedback_folder(result.student_id) != result.student_id:
        return None
    folder = out / AUTOGRADED_FOLDER / result.student_id / result.assignment
    path = folder / f"{notebook_stem}.ipynb"
    if result.feedback_nb is None:
        path.unlink(missing_ok=True)     # a regrade rejected it: formgrader must not show the earlier run's
        return None
    kept = nbformat.from_dict(json.loads(json.dumps(result.feedback_nb)))
    kept.cells = [c for c in kept.cells if not is_probe(c)]
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(kept), encoding="utf-8")
    return path
