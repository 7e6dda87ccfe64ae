"""Reading what the sandbox wrote, as data only.

Everything under the probe folder was written by a process the student controlled: it may be missing, huge, a
symlink to somewhere else, a FIFO that blocks a reader, a pickle, an object array, NaN, or deeply nested JSON.
These functions read plain files of bounded size and return plain numbers, or raise :class:`ProbeDataError` with
a sentence for the student. Nothing is unpickled, imported or executed.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from grader.astlock import AST_LOCK

MAX_ARRAY_BYTES = 8 * 1024 * 1024
MAX_JSON_BYTES = 256 * 1024
MAX_NDIM = 6


class ProbeDataError(Exception):
    """A probe file is missing or is not the plain data it should be."""


def _read_regular(path: Path, limit: int) -> bytes:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ProbeDataError(f"no {path.name} was written") from None
    except OSError as exc:
        raise ProbeDataError(f"{path.name} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):  # a symlink, FIFO or device: never followed, never opened
        raise ProbeDataError(f"{path.name} is not a plain file")
    if info.st_size > limit:
        raise ProbeDataError(f"{path.name} is {info.st_size} bytes, more than the {limit} a probe result may be")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read(limit + 1)[:limit]
    except OSError as exc:
        raise ProbeDataError(f"{path.name} cannot be read ({exc.strerror})") from None


# The labels the probe runtime's tripwires count calls under (grader/verify/kernel_runtime.py): a result file may
# hold any other, written by student code, and none of those is ever shown.
BUILTIN_LABELS = ("F.scaled_dot_product_attention", "F.multi_head_attention_forward", "nn.MultiheadAttention")


def exception_name(text) -> str:
    """The exception's type at the start of a probe's error text ("ValueError: ..."), when it is one of Python's
    own exceptions, else "an exception of the notebook's own class". The rest of the text, and the name of a class
    the student defined, were written by student code that held the probe's inputs: no feedback quotes them
    (issue 23)."""
    # The leading name, up to ":" or a space ("NotImplementedError (not written yet)" is the runtime's own form).
    found = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\b", str(text or ""))
    name = found.group(1) if found else ""
    known = getattr(builtins, name, None) if name else None
    if isinstance(known, type) and issubclass(known, BaseException):
        return name
    return "an exception of the notebook's own class"


def safe_dir(root: Path, *parts: str) -> Path:
    """root/parts..., each level a real directory (not a symlink), else ProbeDataError."""
    if root is None:
        raise ProbeDataError("no probe results: the kernel stopped, or the probes could not run")
    levels = [Path(root)]
    for part in parts:
        levels.append(levels[-1] / part)
    for path in levels:
        try:
            info = os.lstat(path)
        except OSError:
            raise ProbeDataError("no probe results: the kernel stopped, or the probes could not run") from None
        if not stat.S_ISDIR(info.st_mode):
            raise ProbeDataError(f"{path.name} is not a plain folder")
    return levels[-1]


def load_json(path: Path) -> dict:
    raw = _read_regular(path, MAX_JSON_BYTES)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise ProbeDataError(f"{path.name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProbeDataError(f"{path.name} does not hold a JSON object")
    return data


def load_array(path: Path, allow_nonfinite: bool = False) -> np.ndarray:
    """A numeric or bool ndarray from a .npy file (allow_pickle=False), of bounded size and rank; finite unless
    ``allow_nonfinite`` (NaN is plain data too: the caller compares it with what a known bug produces)."""
    raw = _read_regular(path, MAX_ARRAY_BYTES)
    try:
        # numpy reads the .npy header with ast.literal_eval: under the grader's AST lock (grader/astlock.py),
        # or a SystemError from another thread's AST would pass here for a malformed file.
        with AST_LOCK:
            array = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception:  # ValueError (pickle refused), EOFError, bad header...: all mean "not a plain array"
        raise ProbeDataError(f"{path.name} is not a plain .npy array") from None
    if not isinstance(array, np.ndarray):  # an .npz archive loads as NpzFile
        raise ProbeDataError(f"{path.name} is not a single .npy array")
    if array.dtype.kind not in "biuf" or array.dtype.hasobject:
        raise ProbeDataError(f"{path.name} holds {array.dtype} values, not numbers")
    if array.ndim > MAX_NDIM:
        raise ProbeDataError(f"{path.name} has {array.ndim} dimensions")
    if not allow_nonfinite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ProbeDataError("the result contains NaN or infinity")
    return array
