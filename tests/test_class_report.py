"""The class report (grader/pipeline/class_report.py): OUT/report.html and OUT/class_summary.csv after ``grade``.

A class per assignment is the sample class (samples/make_class.py: graded, partial, crashed, invalid and missing
students) plus planted bugs (tests/test_mutations_grade.py's recipes): the first plant in three students, the
second in two, the third in one. The report must count each planted bug for exactly the students it was planted
in, rank them by that count, link each to the book chapter its catalogue entry names, list the statuses other than
graded, and follow a ``--student`` regrade. The page must pass axe-core at 1280 and 390 px.
"""
from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from grader.bench_grading import honest_copy
from grader.bugs import BY_CODE, CATALOGUE, named
from grader.pipeline.class_report import (CLASS_SUMMARY_COLUMNS, bugs_named, is_evidence, is_unknown,
                                           write_report)
from test_grading import grade, read_csv
from test_mutations_grade import PLANTED, planted_notebook

sys.path.insert(0, str(REPO / "samples"))
from make_class import make_class  # noqa: E402

COPIES = (3, 2, 1)      # students per planted bug, in PLANTED's order
SAMPLE_STATUSES = {"eve": "crashed", "fay": "invalid_notebook", "gus": "missing_notebook"}


def test_every_catalogued_name_is_found_where_a_message_says_it():
    """Inside the composite messages tasks.csv holds (test words; verification; looks like ...)."""
    for bug in CATALOGUE:
        message = (f"the notebook's test failed: AssertionError: {named(bug.code, 'detail')}; verification "
                   f"failed, case square: result [0] differs (largest error 0.5): looks like {bug.name}")
        assert bugs_named(message) == [bug.code], bug.code
    assert bugs_named("the notebook's test failed: NotImplementedError") == []
    unknown = "verification failed, case x: not one of the 5 known bugs the grader checked for this case"
    assert is_unknown(unknown) and not is_unknown(f"{unknown}; looks like {BY_CODE['batch'].name}")


def test_a_task_not_written_or_not_run_is_no_evidence_of_a_bug():
    said = f"verification: check divisibility failed, case c: {named('divisibility', 'raised KeyError')}"
    assert not is_evidence(f"the notebook's test failed: NotImplementedError; {said}")
    assert not is_evidence(f"{said} (notebook tests: not run: The kernel died)")
    assert not is_evidence(said, "crashed") and is_evidence(said, "graded")
    assert is_evidence(f"the notebook's test failed: AssertionError: {said}", "crashed")


def make_submissions(assignment: str, dest: Path) -> dict[str, list[str]]:
    """The sample class plus the planted students; returns plant name -> its students."""
    make_class(assignment, dest)
    planted = {}
    for plant, copies in zip(PLANTED[assignment], COPIES):
        planted[plant.student] = [f"{plant.student}_{k}" for k in range(copies)]
        for student in planted[plant.student]:
            (dest / student).mkdir(parents=True)
            nbformat.write(planted_notebook(assignment, plant), dest / student / f"{assignment}.ipynb")
    return planted


@pytest.fixture(scope="module", params=["ps1", "ps3"])
def graded_class(request, tmp_path_factory):
    assignment = request.param
    root = tmp_path_factory.mktemp(f"class-report-{assignment}")
    subs, out = root / "submissions", root / "out"
    planted = make_submissions(assignment, subs)
    proc = grade(assignment, subs, out, "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "class report:" in proc.stderr, proc.stderr[-2000:]
    return assignment, subs, out, planted


def section(out: Path, name: str) -> list[dict]:
    return [row for row in read_csv(out / "class_summary.csv") if row["section"] == name]


def expected_counts(assignment: str, planted: dict[str, list[str]]) -> dict[str, set]:
    """Catalogue code -> the students it was planted in (plants that name no bug add nothing)."""
    want: dict[str, set] = {}
    for plant in PLANTED[assignment][:len(COPIES)]:
        for code in plant.names:
            want.setdefault(code, set()).update(planted[plant.student])
    return want


@pytest.mark.slow
def test_the_report_ranks_the_planted_bugs_by_students(graded_class):
    assignment, _, out, planted = graded_class
    assert (out / "class_summary.csv").read_text().splitlines()[0].split(",") == CLASS_SUMMARY_COLUMNS
    bugs = section(out, "bug")
    found = {row["code"]: set(row["student_ids"].split("; ")) for row in bugs}
    for code, students in expected_counts(assignment, planted).items():
        assert found.get(code) == students, (code, found.get(code), students)
        row = next(r for r in bugs if r["code"] == code)
        assert int(row["students"]) == len(students) and row["item"] == BY_CODE[code].name
    counts = [int(row["students"]) for row in bugs]
    assert counts == sorted(counts, reverse=True), "bugs are not ranked by students"
    for plant in PLANTED[assignment][:len(COPIES)]:
        if not plant.names:      # planted, and said as no known bug: counted for its task
            row = next(r for r in section(out, "not_a_known_bug") if r["task"] == plant.loses)
            assert set(planted[plant.student]) <= set(row["student_ids"].split("; ")), row


@pytest.mark.slow
def test_each_bug_links_to_the_chapter_its_catalogue_entry_names(graded_class):
    _, _, out, _ = graded_class
    page = (out / "report.html").read_text(encoding="utf-8")
    bugs = section(out, "bug")
    assert bugs
    for row in bugs:
        chapter = re.search(r"chapters? (\d+)", BY_CODE[row["code"]].where).group(1)
        link = row["lesson"]
        assert link.startswith("../_build/html/book/") and link.endswith(".html"), link
        source = REPO / "book" / (Path(link).stem + ".md")
        assert source.is_file() and source.name.startswith(f"{int(chapter):02d}_"), (row["code"], link)
        assert f'href="{link}"' in page


@pytest.mark.slow
def test_statuses_scores_and_the_plot(graded_class):
    _, subs, out, _ = graded_class
    statuses = {row["item"]: row["student_ids"] for row in section(out, "status")}
    assert statuses == {status: student for student, status in SAMPLE_STATUSES.items()}
    students = len(list(subs.iterdir()))
    per_task = Counter()
    for row in section(out, "score"):
        per_task[row["task"]] += int(row["students"])
        assert int(row["of_students"]) == students
    assert per_task and set(per_task.values()) == {students}, per_task
    page = (out / "report.html").read_text(encoding="utf-8")
    alt = re.search(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', page).group(1)
    assert all(task in alt for task in per_task), alt


@pytest.mark.slow
def test_a_regrade_updates_the_report_and_it_can_be_rebuilt(graded_class, tmp_path):
    assignment, subs, out, planted = graded_class
    out = shutil.copytree(out, tmp_path / "out")
    code, students = max(expected_counts(assignment, planted).items(), key=lambda kv: len(kv[1]))
    fixed = sorted(students)[0]
    source = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    nbformat.write(honest_copy(source), subs / fixed / f"{assignment}.ipynb")
    proc = grade(assignment, subs, out, "--student", fixed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = next(r for r in section(out, "bug") if r["code"] == code)
    assert set(row["student_ids"].split("; ")) == students - {fixed}
    from grader.__main__ import main

    assert main(["report", str(out), "--site", "https://course.example/mha"]) == 0
    assert all(r["lesson"].startswith("https://course.example/mha/book/") for r in section(out, "bug"))


# ------------------------------------------------------------------------------------------------ the page in a browser
def small_class_out(out: Path) -> Path:
    """A report from CSVs written as grade writes them: bugs, an unknown, statuses and a flag."""
    from grader.pipeline import Result, TaskResult
    from grader.pipeline.report import write_csvs

    def result(student, status, messages, flags=()):
        tasks = [TaskResult(task, 0.0 if text else 3.0, 3.0, text or "verified") for task, text in messages]
        return Result(student, "ps1", status, "", 6.0, tasks, list(flags))

    results = [result("ada", "graded", [("scaled_dot_product", ""), ("self_attention", "")]),
               result("ben", "graded", [("scaled_dot_product", "looks like " + named("softmax_dim")),
                                        ("self_attention", "not one of the 5 known bugs the grader checked")]),
               result("cai", "graded", [("scaled_dot_product", "looks like " + named("softmax_dim")),
                                        ("self_attention", named("scale_d_in"))], ["cell 4: uses ctypes"]),
               result("eve", "crashed", [("scaled_dot_product", ""), ("self_attention", "not run")])]
    out.mkdir(parents=True, exist_ok=True)
    write_csvs(out, results)
    write_report(out)
    return out


@pytest.mark.browser
@pytest.mark.parametrize("width", (1280, 390))
def test_report_meets_wcag_aa_and_shows_its_plot_and_links(tmp_path, width):
    from browser_support import serve
    from test_accessibility import assert_no_blocking, settled_page
    from browser_support import axe_violations, chromium_browser

    out = small_class_out(tmp_path / "out")
    with chromium_browser() as browser, serve(out) as base:
        context, page, log = settled_page(browser, base + "report.html", base, width)
        try:
            assert page.evaluate("() => [...document.images].every(i => i.naturalWidth > 0 && i.alt.length > 40)")
            hrefs = page.evaluate("() => [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
            assert "../_build/html/book/01_one_head.html" in hrefs, hrefs
            assert_no_blocking(axe_violations(page), f"report.html at {width} px")
            assert not log.problems(), "\n".join(log.problems())
        finally:
            context.close()
