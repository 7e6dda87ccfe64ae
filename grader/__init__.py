"""The course's Python package.

Student-facing: :mod:`grader.diagnose` turns symptoms of broken attention code into named bugs.
Instructor-facing: ``python -m grader release|grade|check|bench``.

Nothing in this package contains a solution to an exercise: checks compare against PyTorch's own operators.
"""

import sys as _sys

__version__ = "0.1.0"

# nbformat validates with jsonschema, which imports rfc3987_syntax where it is installed (jupyter-events pulls it in
# through jsonschema[format-nongpl]) only to check the "iri" string format, which nothing here validates. That
# module builds a lark grammar when imported: 2.4 s of CPU in every grader process, each dask worker and each
# `grader check` (measured: importing grader.cluster 3.1 s -> 0.7 s; python-jsonschema/jsonschema#1428). Marked
# absent, jsonschema leaves "iri" unchecked, its own behaviour when the package is not installed.
_sys.modules.setdefault("rfc3987_syntax", None)
