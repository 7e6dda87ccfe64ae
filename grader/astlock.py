"""One lock for every AST the grader builds in its threads.

Python 3.11's ``ast`` module keeps one recursion counter per interpreter, so two threads building ASTs at once
(``grade --jobs`` verifies submissions in threads) can fail with "SystemError: AST constructor recursion depth
mismatch" (CPython issue gh-106905, https://github.com/python/cpython/issues/106905). Every ``ast.parse`` of the
grader's own process goes through ``parse`` (or holds ``AST_LOCK``); walking or unparsing a tree needs no lock.
"""
from __future__ import annotations

import ast
import threading

AST_LOCK = threading.Lock()


def parse(source: str, **kwargs) -> ast.Module:
    """``ast.parse(source, **kwargs)`` under AST_LOCK. Raises what ast.parse raises (SyntaxError, ValueError,
    RecursionError, MemoryError)."""
    with AST_LOCK:
        return ast.parse(source, **kwargs)
