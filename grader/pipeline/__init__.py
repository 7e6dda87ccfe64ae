"""The grading pipeline, one stage per module, in the order a submission flows through them:

    collect   SUBMISSIONS (folder or LMS zip) -> one Submission per student, bytes read, nothing modified
    sanitize  bytes -> a notebook to run: decoded, parsed, test cells restored from the source, probes appended
    execute   the notebook -> executed cells, in a sandboxed kernel (grader.sandbox) under the limits
    verify    the assignment's probe cells (planned before execute), then their files -> verified scores and
              integrity flags, outside the kernel (grader.verify, with the assignment from grader.assignments)
    score     executed test cells + verified scores -> one TaskResult per task
    record    results -> nbgrader's gradebook (SQLite by default, any SQLAlchemy URL)
    report    results -> grades.csv, tasks.csv, feedback HTML without hidden test code

The stages are composed in one place, ``grader.grade.grade_one`` (one submission) and ``grader.grade.grade_class``
(all of them, in parallel). The types they pass along are in ``grader.pipeline.types`` (re-exported here).
"""
from grader.pipeline.types import STATUSES, Result, Submission, TaskResult

__all__ = ["STATUSES", "Result", "Submission", "TaskResult"]
