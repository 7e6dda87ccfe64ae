"""Stage 1, collect: find each student's notebook in SUBMISSIONS and read its bytes.

SUBMISSIONS is a folder with one sub-folder per student (the folder name is the student id; nbgrader's
``submitted/<student>/<assignment>/`` layout works too), or a zip from an LMS with nbgrader's ``zip_collect``
file naming (``<anything>_<student>_attempt_<timestamp>_<file>.ipynb``), or a zip of student folders.
Nothing under SUBMISSIONS is written, moved or executed: only read into memory, with a size bound.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath

from grader.pipeline import Submission

MAX_NOTEBOOK_BYTES = 64 * 2**20
# nbgrader's documented example for LMS downloads (FileNameCollectorPlugin.named_regexp).
LMS_NAME = r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>\w+)"
IGNORED_PARTS = {".ipynb_checkpoints", "__MACOSX", "__pycache__"}


def _ignored(parts: tuple[str, ...]) -> bool:
    return any(p in IGNORED_PARTS or p.startswith(".") for p in parts)


def choose_notebook(expected: str, candidates: dict[str, bytes], sub: Submission) -> None:
    """Pick the student's notebook among `candidates` (relative name -> bytes); the rest are extra files."""
    notebooks = {n: b for n, b in candidates.items() if n.lower().endswith(".ipynb")}
    if not notebooks:
        sub.extra_files = sorted(candidates)
        return
    exact = [n for n in notebooks if PurePosixPath(n).name == expected]
    # The expected name wins; otherwise the largest notebook (a renamed copy is usually the only one).
    name = sorted(exact, key=len)[0] if exact else max(notebooks, key=lambda n: (len(notebooks[n]), n))
    sub.notebook_name = name
    sub.notebook_bytes = notebooks[name]
    sub.extra_files = sorted(n for n in candidates if n != name)
    if not exact:
        sub.notes.append(f"Your notebook was named {name!r} instead of {expected!r}; it was graded anyway.")
    others = [n for n in notebooks if n != name]
    if others:
        sub.notes.append(f"Only {name!r} was graded; other notebooks were ignored: {', '.join(sorted(others))}.")
    elif sub.extra_files:
        sub.notes.append(f"Extra files were ignored: {', '.join(sub.extra_files[:5])}"
                         + (" ..." if len(sub.extra_files) > 5 else "") + ".")


def _read_bounded(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_NOTEBOOK_BYTES + 1)
    return data


def collect_folder(root: Path, expected: str) -> list[Submission]:
    subs = []
    for student_dir in sorted(p for p in root.iterdir() if p.is_dir() and not _ignored((p.name,))):
        files: dict[str, bytes] = {}
        for path in sorted(student_dir.rglob("*")):
            rel = path.relative_to(student_dir)
            if _ignored(rel.parts) or not path.is_file() or path.is_symlink():
                continue
            # Only notebooks are read; other files are only named.
            files[rel.as_posix()] = _read_bounded(path) if path.suffix.lower() == ".ipynb" else b""
        sub = Submission(student_dir.name)
        choose_notebook(expected, files, sub)
        subs.append(sub)
    return subs


def collect_zip(archive: Path, expected: str, named_regexp: str = LMS_NAME) -> list[Submission]:
    """Students from an LMS zip: file names carry the student id, or top folders are students."""
    from nbgrader.plugins.zipcollect import FileNameCollectorPlugin

    plugin = FileNameCollectorPlugin(named_regexp=named_regexp)
    per_student: dict[str, dict[str, tuple[str, bytes]]] = {}
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        names = [PurePosixPath(i.filename) for i in infos]
        # A zip of a class folder ("ps1-class/alice/ps1.ipynb"): drop the common top folder.
        strip = 1 if names and all(len(n.parts) >= 3 and n.parts[0] == names[0].parts[0] for n in names) else 0
        for info, name in zip(infos, names):
            parts = name.parts[strip:]
            if not parts or _ignored(parts) or ".." in parts:
                continue
            if len(parts) >= 2:       # student folder / file
                student, rel, stamp = parts[0], "/".join(parts[1:]), ""
            else:
                found = plugin.collect(parts[0])
                if not found:
                    continue
                student, stamp = found["student_id"], found.get("timestamp") or ""
                rel = found["file_id"] + PurePosixPath(parts[0]).suffix
            is_nb = rel.lower().endswith(".ipynb")
            # Bounded read: a zip bomb stops at the cap, and sanitize reports the notebook as too large.
            data = zf.open(info).read(MAX_NOTEBOOK_BYTES + 1) if is_nb else b""
            files = per_student.setdefault(student, {})
            # Several attempts of the same file: the latest timestamp wins (LMS timestamps sort as text).
            if rel not in files or stamp >= files[rel][0]:
                files[rel] = (stamp, data)
    subs = []
    for student in sorted(per_student):
        sub = Submission(student)
        choose_notebook(expected, {rel: data for rel, (_, data) in per_student[student].items()}, sub)
        subs.append(sub)
    return subs


def collect(submissions: Path, expected: str) -> list[Submission]:
    """All students of SUBMISSIONS (a folder or a zip), sorted by student id."""
    if submissions.is_dir():
        return collect_folder(submissions, expected)
    if zipfile.is_zipfile(submissions):
        return collect_zip(submissions, expected)
    raise SystemExit(f"{submissions} is neither a folder of student folders nor a zip file")


SAFE_ID = re.compile(r"[^A-Za-z0-9._@+-]")


def safe_name(student_id: str) -> str:
    """A student id made safe as one folder name under OUT/feedback/."""
    name = SAFE_ID.sub("_", student_id).lstrip(".")
    return name or "_"
