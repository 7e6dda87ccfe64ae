"""Stage 3, execute: run the sanitized notebook in a fresh confined kernel of the run's sandbox.

Everything about kernels (bubblewrap, namespaces, limits, the watchdog, nbclient cell by cell) lives in
``grader.sandbox``; this stage only hands it the notebook and passes on what happened (an ``Execution``).
"""
from __future__ import annotations

from nbformat import NotebookNode

from grader.sandbox.runner import Execution

__all__ = ["Execution", "execute"]


def execute(nb: NotebookNode, sandbox, notebook_timeout: float | None = None) -> Execution:
    """Run `nb` in place (outputs are filled in) in `sandbox` (a started grader.sandbox.Sandbox), within
    `notebook_timeout` seconds when given (else the sandbox's limit)."""
    return sandbox.run(nb, notebook_timeout=notebook_timeout)
