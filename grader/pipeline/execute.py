"""Stage 3, execute: run the sanitized notebook in a fresh confined kernel of the run's sandbox.

Everything about kernels (bubblewrap, namespaces, limits, the watchdog, nbclient cell by cell) lives in
``grader.sandbox``; this stage only hands it the notebook and passes on what happened (an ``Execution``).
"""
from __future__ import annotations

from nbformat import NotebookNode

from grader.sandbox.runner import Execution

__all__ = ["Execution", "execute"]


def execute(nb: NotebookNode, sandbox) -> Execution:
    """Run `nb` in place (outputs are filled in) in `sandbox` (a started grader.sandbox.Sandbox)."""
    return sandbox.run(nb)
