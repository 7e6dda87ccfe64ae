"""The course's Python package.

Student-facing: :mod:`grader.diagnose` turns symptoms of broken attention code into named bugs.
Instructor-facing: ``python -m grader release|grade|check|bench``.

Nothing in this package contains a solution to an exercise: checks compare against PyTorch's own operators.
"""

__version__ = "0.1.0"
