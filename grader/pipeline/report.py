"""Stage 6, report: grades.csv, tasks.csv and one feedback page per student.

The feedback page is the executed notebook, headed by a table of each task's result and message, with the probe
cells removed and the hidden tests' code replaced by a line that says they are hidden (nbgrader shows that code,
its issue #917). A failing hidden test shows only its error's type and message, never its traceback (which quotes
the failing line). Rows are sorted by student id, so grading twice writes the same files.
"""
from __future__ import annotations

import csv
import hashlib
import html
import json
from pathlib import Path

import bleach
import nbformat
from nbconvert import HTMLExporter
from nbformat import NotebookNode

from grader.pipeline import STATUSES, Result
from grader.pipeline.collect import safe_name
from grader.pipeline.sanitize import nbgrader_meta, strip_hidden

GRADES_COLUMNS = ["student_id", "assignment", "score", "max_score", "status", "flags", "message"]
TASKS_COLUMNS = ["student_id", "assignment", "task", "score", "max_score", "message"]
HIDDEN_NOTE = "# (hidden tests run here when the notebook is graded; their code is not shown)"


def _number(x: float) -> str:
    return f"{x:g}"


def write_csvs(out: Path, results: list[Result]) -> None:
    # Every CSV goes through lms.write_csv: a cell such as a student id "=1+1" gets a leading ' (no formula).
    from grader.pipeline.lms import write_csv

    results = sorted(results, key=lambda r: r.student_id)
    write_csv(out / "grades.csv", GRADES_COLUMNS,
              [[r.student_id, r.assignment, _number(r.score), _number(r.max_score), r.status, "; ".join(r.flags),
                r.message] for r in results])
    write_csv(out / "tasks.csv", TASKS_COLUMNS,
              [[r.student_id, r.assignment, t.task, _number(t.score), _number(t.max_score), t.message]
               for r in results for t in r.tasks])


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


def feedback_notebook(result: Result) -> NotebookNode:
    """The notebook a student sees: summary first, no probes, no hidden test code or tracebacks."""
    cells = [nbformat.v4.new_markdown_cell(_summary_html(result))]
    nb = result.feedback_nb
    for cell in (nb.cells if nb is not None else []):
        if cell.metadata.get("grader", {}).get("probe"):
            continue
        cell = nbformat.from_dict(json.loads(json.dumps(cell)))
        if nbgrader_meta(cell).get("grade") and not nbgrader_meta(cell).get("solution"):
            cell.source = strip_hidden(cell.source, placeholder=HIDDEN_NOTE)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells, metadata={"language_info": {"name": "python"}})


# Student markdown and outputs are sanitized (no script, no event handlers), but nbconvert's own allowlist also
# escapes headings and paragraphs, which left raw "<h1 ...>" text on every page: widen it to plain document markup.
FEEDBACK_TAGS = sorted(set(bleach.ALLOWED_TAGS) | {
    "div", "span", "pre", "code", "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead",
    "tbody", "tr", "th", "td", "img", "sub", "sup", "del", "details", "summary"})
FEEDBACK_ATTRIBUTES = {"*": ["class", "id", "title"], "a": ["href", "title"], "img": ["src", "alt", "width", "height"],
                       "th": ["align"], "td": ["align"]}


def clean_feedback_html(element) -> str:
    text = element.decode() if isinstance(element, bytes) else str(element)
    return bleach.clean(text, tags=FEEDBACK_TAGS, attributes=FEEDBACK_ATTRIBUTES,
                        protocols=["http", "https", "mailto", "data"])


def feedback_folder(student_id: str) -> str:
    """One folder per student id: the id itself when it is already a safe name, else the safe name plus a short
    hash of the id, so that ids which sanitize alike ("jo doe", "jo_doe") never share a folder."""
    name = safe_name(student_id)
    if name == student_id:
        return name
    return f"{name}-{hashlib.sha256(student_id.encode('utf-8')).hexdigest()[:8]}"


def write_feedback(out: Path, result: Result, notebook_stem: str) -> Path:
    exporter = HTMLExporter(sanitize_html=True, filters={"clean_html": clean_feedback_html})
    exporter.exclude_input_prompt = False
    body, _ = exporter.from_notebook_node(feedback_notebook(result))
    folder = out / "feedback" / feedback_folder(result.student_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{notebook_stem}.html"
    path.write_text(body, encoding="utf-8")
    return path
