"""The sandbox: runs one notebook in a confined kernel, under limits, and says what happened.

One entry point: ``Sandbox`` (grader.sandbox.service), a context manager made once per run::

    with Sandbox(limits, isolate=True) as sandbox:
        sandbox.start(log)               # fork server, then a real confined kernel checks what isolation holds
        execution = sandbox.run(nb)      # -> grader.sandbox.runner.Execution

Modules: ``limits`` (what a notebook may use), ``bubblewrap`` (the outer layer: the bwrap command and the
kernels' read-only package), ``inside`` (runs inside bwrap: fork server, per-kernel namespaces and privilege
drop; standard library only), ``kernel`` (jupyter_client's side), ``watch`` (cgroups and the watchdog),
``runner`` (nbclient, cell by cell), ``isolation`` (the start-up check), ``service`` (``Sandbox``),
``seccomp`` (the kernels' filter, built with libseccomp), ``preflight`` (why bwrap or the interpreter cannot start).

This file is copied into the kernels' view of the package, so it imports nothing but ``limits`` eagerly.
"""
from grader.sandbox.limits import Limits

__all__ = ["Limits", "Sandbox", "SandboxUnavailable", "Execution"]


def __getattr__(name: str):
    if name in ("Sandbox", "SandboxUnavailable"):
        from grader.sandbox import service
        return getattr(service, name)
    if name == "Execution":
        from grader.sandbox.runner import Execution
        return Execution
    raise AttributeError(name)
