"""Answer tasks (ps4 ``diagnoses``, ps5 ``anomaly_answer``): the student's value, written by the probe as JSON,
against the instructor's key.

The key is data: the assignment's module reads it from ``answer_key.json`` beside the source notebook (in
solutions/, which no kernel can see) and puts it in the case's ``params["answer"]``, which never travels to the
kernel (see :meth:`grader.verify.cases.Case.kernel_spec`). Two kinds of answer:

- ``labels``: a dict mapping each item to one label of a fixed list; each right label earns its share of the
  points, and nothing is earned when an item is missing, a label is not in the list or no label is right (the rule
  of ps4's test cell);
- ``choice``: one letter out of ``choices``, all or nothing, with a hint when it is wrong.
"""
from __future__ import annotations

from grader.verify.cases import Case
from grader.verify.diagnosis import CaseFailure


# The failure of every probe kind (grader.verify.diagnosis), under the name this module's callers know.
AnswerFailure = CaseFailure


def check_answer(case: Case, meta: dict) -> float:
    """The fraction of the task's points the answer earns (1.0 all, 0 none); AnswerFailure when none."""
    answer, key = meta.get("answer"), case.params["answer"]
    if key["kind"] == "labels":
        right_labels, labels = key["key"], key["labels"]
        if not isinstance(answer, dict) or not all(isinstance(v, str) for v in answer.values()):
            raise AnswerFailure(f"{case.callee} must be a dict mapping each mystery module's name to a label")
        missing = sorted(set(right_labels) - set(answer))
        if missing:
            raise AnswerFailure(f"no diagnosis for {missing}")
        unknown = sorted(name for name, label in answer.items() if label not in labels)
        if unknown:
            raise AnswerFailure(f"{len(unknown)} label(s) not in BUG_LABELS")
        right = sum(answer.get(name) == label for name, label in right_labels.items())
        if right == 0:
            raise AnswerFailure("no mystery module diagnosed correctly")
        return right / len(right_labels)
    if key["kind"] == "choice":
        choices = key["choices"]
        if not isinstance(answer, str) or answer not in choices:
            raise AnswerFailure(f"{case.callee} must be one of {', '.join(repr(c) for c in choices)}")
        if answer != key["answer"]:
            hint = key.get("hint", "")
            raise AnswerFailure(f"{answer} is not the explanation" + (f"; {hint[0].lower()}{hint[1:]}" if hint
                                                                      else ""))
        return 1.0
    raise ValueError(f"unknown answer kind {key['kind']!r}")
