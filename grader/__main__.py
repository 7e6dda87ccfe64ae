"""Command line: ``python -m grader <command> ...``.

Each command lives in its own module; this file only dispatches, so that one broken command
cannot take the others down and ``python -m grader --help`` stays fast (no torch import).
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "release": ("grader.release", "Generate the student notebooks in exercises/ from solutions/ (nbgrader)."),
    "grade": ("grader.grade", "Grade a class: python -m grader grade ASSIGNMENT SUBMISSIONS --out OUT"),
    "check": ("grader.check", "Run the visible tests of one notebook under grading limits: python -m grader check NB"),
    "report": ("grader.pipeline.class_report", "Rebuild a graded class's report.html and class_summary.csv: "
                                               "python -m grader report OUT"),
    "student-kit": ("grader.student_kit", "Write what students get (notebooks, the check command, a README): "
                                          "python -m grader student-kit DIR"),
    "bench": ("grader.bench", "Run the course's benchmarks and write JSON plus a table."),
    "gradescope": ("grader.gradescope", "Inside a Gradescope autograder: grade /autograder/submission into "
                                        "/autograder/results/results.json"),
}


def usage() -> str:
    lines = ["usage: python -m grader <command> [options]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<11} {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
