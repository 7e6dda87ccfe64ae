"""The class report: what a whole class got right and wrong, for the instructor, from OUT/grades.csv and tasks.csv.

``python -m grader report OUT [--site PATH]`` (and the end of every ``grade`` run, ``--student`` regrades too,
since grades.csv then holds every row) writes:

    OUT/report.html          the score distribution per task (a plot, and its numbers in a table), the catalogued
                             bugs the class made ranked by how many students made them (each linked to the book
                             chapter that teaches it), the tasks most often "not one of the known bugs" (candidates
                             for new catalogue entries), the statuses other than graded, and the review flags
    OUT/class_summary.csv    the same data, one row per item (CLASS_SUMMARY_COLUMNS)

It reads the two CSVs as plain text: nothing a submission produced is imported or run. A bug is counted for a
student when a task that lost points has a message naming it (:func:`grader.bugs.code_of` at each place a name can
start), so the counts are what the students were told; a task left as released (NotImplementedError) or whose test
never ran (the kernel stopped before it; in a stopped notebook, any task whose test did not run) counts for no
bug. The chapter of a bug is the first chapter number in
its catalogue entry's ``where``; chapter N is the book page whose file name starts with N and an underscore
(book/07_bug_clinic_9216.md is chapter 7), linked as the built site names it (``<site>/book/<stem>.html``), where
``site`` defaults to ``../_build/html``: the site built beside OUT (``jupyter-book build .`` writes _build/html).
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from grader.bugs import BY_CODE, code_of
from grader.paths import REPO
from grader.pipeline.types import STATUSES

CLASS_SUMMARY_COLUMNS = ["section", "item", "code", "task", "students", "of_students", "lesson", "student_ids"]
DEFAULT_SITE = "../_build/html"      # from OUT/report.html to a site built in OUT's parent folder
UNKNOWN = re.compile(r"not one of the (?:\d+ )?known bugs")
NAME_STARTS = re.compile(r"(?:^|(?<=[\s:;(,]))\S")     # where a bug's name may start inside a message
# A task left as released (nbgrader's stub raises NotImplementedError) or whose test never ran (the kernel stopped
# before it): what verification said of it is no evidence of a bug the student made.
NOT_EVIDENCE = re.compile(r"NotImplementedError|notebook tests: not run|^not graded: ")
LOCATED_FLAG = re.compile(r"^(?:cell \d+(?: \(task [^)]*\))?|task \S+): ")


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def bugs_named(message: str) -> list[str]:
    """The catalogue codes a message names, in order, each once ("mismatch" included): code_of at every place a
    name can start, the longest name there, the scan resuming after it."""
    found, start = [], 0
    for match in NAME_STARTS.finditer(message):
        if match.start() < start:
            continue
        code = code_of(message[match.start():])
        if code is not None:
            start = match.start() + len(BY_CODE[code].name)
            if code not in found:
                found.append(code)
    return found


def is_unknown(message: str) -> bool:
    """The message says no catalogued bug reproduces the output, and names none (a task whose notebook test did
    not know the bug but whose verification named it is diagnosed)."""
    named = bugs_named(message)
    return (bool(UNKNOWN.search(message)) or "mismatch" in named) and not set(named) - {"mismatch"}


def is_evidence(message: str, status: str = "graded") -> bool:
    """Whether a task's message can be evidence of a bug: not a task left as released or whose test never ran; in
    a notebook that was stopped (a status other than graded), only a test that ran (failed, or passed)."""
    if NOT_EVIDENCE.search(message):
        return False
    return status == "graded" or message.startswith("the notebook's test failed") or "notebook tests: passed" in message


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def chapter_pages(book: Path = REPO / "book") -> dict[int, tuple[str, str]]:
    """Chapter number -> (page stem, title) for book/NN_*.md; the title is the page's first level-1 heading."""
    pages = {}
    for path in sorted(book.glob("[0-9][0-9]_*.md")):
        number, title, fenced = int(path.name[:2]), path.stem, False
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0].strip() == "---":      # MyST front matter
            lines = lines[next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), 0) + 1:]
        for line in lines:
            if line.startswith(("```", "~~~")):
                fenced = not fenced
            elif not fenced and line.startswith("# "):
                title = line[2:].strip()
                break
        pages[number] = (path.stem, title)
    return pages


def lesson_of(code: str, pages: dict[int, tuple[str, str]], site: str) -> tuple[str, str]:
    """(link, words) for the chapter that teaches bug `code`: the first "chapter N" of its ``where``; ("", where)
    when the entry names no chapter the book has."""
    where = BY_CODE[code].where
    found = re.search(r"chapters? (\d+)", where)
    if not found or int(found.group(1)) not in pages:
        return "", where
    stem, title = pages[int(found.group(1))]
    return f"{site.rstrip('/')}/book/{stem}.html", f"chapter {found.group(1)}, {title}"


def summarise(out: Path, site: str = DEFAULT_SITE) -> dict:
    """Everything the report shows, computed from OUT/grades.csv and OUT/tasks.csv."""
    grades, tasks = read_rows(out / "grades.csv"), read_rows(out / "tasks.csv")
    students = [row["student_id"] for row in grades]
    status_of = {row["student_id"]: row["status"] for row in grades}
    scores: dict[str, Counter] = defaultdict(Counter)      # task -> Counter of (score, max_score)
    bug_students: dict[str, set] = defaultdict(set)
    bug_tasks: dict[str, set] = defaultdict(set)
    unknown: dict[str, set] = defaultdict(set)
    for row in tasks:
        score, top = _number(row["score"]), _number(row["max_score"])
        scores[row["task"]][(score, top)] += 1
        if score >= top or not is_evidence(row["message"], status_of.get(row["student_id"], "graded")):
            continue
        for code in bugs_named(row["message"]):
            if code != "mismatch":
                bug_students[code].add(row["student_id"])
                bug_tasks[code].add(row["task"])
        if is_unknown(row["message"]):
            unknown[row["task"]].add(row["student_id"])
    pages = chapter_pages()
    bugs = [{"code": code, "name": BY_CODE[code].name, "students": sorted(ids), "tasks": sorted(bug_tasks[code]),
             "lesson": lesson_of(code, pages, site)} for code, ids in bug_students.items()]
    bugs.sort(key=lambda b: (-len(b["students"]), b["name"]))
    statuses: dict[str, list] = defaultdict(list)
    flags: dict[str, list] = defaultdict(list)
    for row in grades:
        if row["status"] != "graded":
            statuses[row["status"]].append(row["student_id"])
        for flag in filter(None, (f.strip() for f in (row.get("flags") or "").split("; "))):
            kind = LOCATED_FLAG.sub("", flag)
            if row["student_id"] not in flags[kind]:
                flags[kind].append(row["student_id"])
    return {"assignment": grades[0]["assignment"] if grades else "", "students": students, "scores": scores,
            "bugs": bugs, "unknown": sorted(unknown.items(), key=lambda kv: (-len(kv[1]), kv[0])),
            "statuses": sorted(statuses.items(), key=lambda kv: (-len(kv[1]), kv[0])),
            "flags": sorted(flags.items(), key=lambda kv: (-len(kv[1]), kv[0]))}


def summary_rows(data: dict) -> list[list[str]]:
    """class_summary.csv's rows, in CLASS_SUMMARY_COLUMNS order."""
    n = str(len(data["students"]))
    rows = []
    for task, counts in data["scores"].items():
        for (score, top), count in sorted(counts.items()):
            rows.append(["score", f"{score:g} / {top:g}", "", task, str(count), n, "", ""])
    for bug in data["bugs"]:
        rows.append(["bug", bug["name"], bug["code"], "; ".join(bug["tasks"]), str(len(bug["students"])), n,
                     bug["lesson"][0] or bug["lesson"][1], "; ".join(bug["students"])])
    for task, ids in data["unknown"]:
        rows.append(["not_a_known_bug", "not one of the known bugs", "mismatch", task, str(len(ids)), n, "",
                     "; ".join(sorted(ids))])
    for status, ids in data["statuses"]:
        rows.append(["status", status, "", "", str(len(ids)), n, "", "; ".join(ids)])
    for flag, ids in data["flags"]:
        rows.append(["flag", flag, "", "", str(len(ids)), n, "", "; ".join(ids)])
    return rows


def distribution_words(data: dict) -> str:
    """The plot's alt text: every bar of it, in words."""
    parts = []
    for task, counts in data["scores"].items():
        bars = ", ".join(f"{count} at {score:g} of {top:g}" for (score, top), count in sorted(counts.items()))
        parts.append(f"{task}: {bars}")
    return ("Bar charts, one per task, of how many students got each score. " + "; ".join(parts) + ".") if parts \
        else "No task was graded."


def distribution_png(data: dict) -> bytes:
    """One bar chart per task (students per score), side by side, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    tasks = list(data["scores"].items()) or [("no tasks", Counter())]
    columns = min(3, len(tasks))
    rows = -(-len(tasks) // columns)
    fig = Figure(figsize=(4 * columns, 2.8 * rows), layout="constrained")
    for index, (task, counts) in enumerate(tasks):
        ax = fig.add_subplot(rows, columns, index + 1)
        bars = sorted(counts.items())
        labels = [f"{score:g}/{top:g}" for (score, top), _ in bars]
        ax.bar(labels, [count for _, count in bars], color="#1f4fa8")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("score")
        ax.set_ylabel("students")
        ax.yaxis.get_major_locator().set_params(integer=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem;color:#1a1a1a;
background:#fff;line-height:1.45}table{border-collapse:collapse;margin:.5rem 0 1.5rem;display:block;overflow-x:auto}
th,td{border:1px solid #767676;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#eef1f6}
img{max-width:100%;height:auto}a{color:#1f4fa8}caption{text-align:left;font-weight:600;padding:.3rem 0}"""


def _table(caption: str, head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    header = "".join(f'<th scope="col">{e(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><caption>{e(caption)}</caption><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict, png: bytes) -> str:
    e, n = html.escape, len(data["students"])
    title = f"Class report: {data['assignment'] or 'no assignment'} ({n} students)"
    parts = [f"<h1>{e(title)}</h1>",
             "<p>From grades.csv and tasks.csv of this folder. A bug is counted for a student when a task that "
             "lost points names it; a task left as released (NotImplementedError) or whose test never ran (the "
             "kernel stopped before it) counts for none.</p>",
             "<h2>Scores per task</h2>",
             f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{e(distribution_words(data))}">',
             _table("Students per score and task", ["task", "score", "students"],
                    [[e(task), e(f"{s:g} / {t:g}"), str(c)] for task, counts in data["scores"].items()
                     for (s, t), c in sorted(counts.items())])]
    parts.append("<h2>Bugs the class made</h2>")
    if data["bugs"]:
        rows = []
        for bug in data["bugs"]:
            link, words = bug["lesson"]
            lesson = f'<a href="{e(link)}">{e(words)}</a>' if link else e(words)
            rows.append([e(bug["name"]), str(len(bug["students"])), e(", ".join(bug["tasks"])), lesson,
                         e(", ".join(bug["students"]))])
        parts.append(_table("Catalogued bugs, most students first", ["bug", "students", "tasks", "lesson",
                                                                      "who"], rows))
    else:
        parts.append("<p>No task lost points to a catalogued bug.</p>")
    parts.append("<h2>Not one of the known bugs</h2><p>Tasks whose output no catalogued bug reproduces: "
                 "candidates for new catalogue entries (grader/bugs.py).</p>")
    parts.append(_table("Tasks most often not a known bug", ["task", "students", "who"],
                        [[e(t), str(len(ids)), e(", ".join(sorted(ids)))] for t, ids in data["unknown"]])
                 if data["unknown"] else "<p>None.</p>")
    parts.append("<h2>Statuses other than graded</h2>")
    parts.append(_table("Submissions that did not run to the end", ["status", "students", "meaning", "who"],
                        [[e(s), str(len(ids)), e(STATUSES.get(s, "")), e(", ".join(ids))]
                         for s, ids in data["statuses"]]) if data["statuses"] else "<p>Every submission was graded."
                 "</p>")
    parts.append("<h2>Flags for review</h2>")
    parts.append(_table("Flags (questions for a person, never a score)", ["flag", "students", "who"],
                        [[e(f), str(len(ids)), e(", ".join(ids))] for f, ids in data["flags"]])
                 if data["flags"] else "<p>No flags.</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{e(title)}</title><style>{CSS}</style></head>'
            f'<body><main>{"".join(parts)}</main></body></html>\n')


def write_report(out: Path, site: str = DEFAULT_SITE) -> tuple[Path, Path]:
    """Write OUT/report.html and OUT/class_summary.csv from OUT's grades.csv and tasks.csv; returns their paths.
    Raises FileNotFoundError when either CSV is missing."""
    from grader.pipeline.lms import write_csv      # every CSV of OUT goes through it (no formulas from ids)

    out = Path(out)
    data = summarise(out, site)
    write_csv(out / "class_summary.csv", CLASS_SUMMARY_COLUMNS, summary_rows(data))
    page = out / "report.html"
    page.write_text(render_html(data, distribution_png(data)), encoding="utf-8")
    return page, out / "class_summary.csv"


def after_grading(out: Path, log=print) -> None:
    """The end of a ``grade`` run: the report, or one line saying why not (the rows are already written)."""
    try:
        page, _ = write_report(out)
        log(f"class report: {page}")
    except Exception as err:      # a convenience: never fail a grading run over it
        log(f"class report not written: {type(err).__name__}: {err} (python -m grader report {out} retries)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grader report", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="a grading run's output folder (grades.csv, tasks.csv)")
    p.add_argument("--site", default=DEFAULT_SITE,
                   help=f"the built book, as a link from OUT/report.html (default {DEFAULT_SITE}: the site built "
                        "beside OUT); a URL works too")
    args = p.parse_args(argv)
    missing = [name for name in ("grades.csv", "tasks.csv") if not (args.out / name).is_file()]
    if missing:
        print(f"{args.out} has no {' or '.join(missing)}: grade the class first (python -m grader grade ...)",
              file=sys.stderr)
        return 2
    page, summary = write_report(args.out, args.site)
    print(f"wrote {page} and {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
