"""Verification outside the student's kernel: scores that student code cannot fake.

The pipeline's verify stage (:mod:`grader.pipeline.verify`) calls four functions, each given the assignment
(a :class:`grader.assignments.Assignment`, whose module declares the probe cases):

- :func:`plan_probes` gives code cells to append after the student's cells (run in the same sandboxed kernel).
  They call the student's functions and classes on inputs and weights drawn from a seed the student never sees,
  and write plain ``.npy``/JSON files into ``./_probe/``.
- :func:`verify_outputs` reads those files as data (never unpickling or running anything from the sandbox),
  recomputes what they must be with PyTorch's own operators, and returns each task's verified score.
- :func:`integrity_flags` reads the student's cell sources (never runs them) and lists what a person should
  review: built-in attention in a from-scratch task, patched IPython/builtins/torch/grader, reads of the grading
  environment or files outside the notebook's folder; :func:`runtime_flags` adds what the probes' tripwires saw.
  A flag never changes a score.
"""
from grader.verify.checks import verify_outputs
from grader.verify.integrity import course_cell_sources, integrity_flags, runtime_flags
from grader.verify.probes import PROBE_DIRNAME, plan_probes

__all__ = ["plan_probes", "verify_outputs", "integrity_flags", "runtime_flags", "course_cell_sources",
           "PROBE_DIRNAME"]
