"""Stage 1, collect: find each student's notebook in SUBMISSIONS and read its bytes.

SUBMISSIONS is a folder with one sub-folder per student (the folder name is the student id; nbgrader's
``submitted/<student>/<assignment>/`` layout works too), or a zip from an LMS with nbgrader's ``zip_collect``
file naming (``<anything>_<student>_attempt_<timestamp>_<file>.ipynb``, at any depth; an unzipped LMS download
works too), or a zip of student folders. A SUBMISSIONS without any student stops the run.
Nothing under SUBMISSIONS is written, moved or executed: only read into memory, with a size bound.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath

from grader.pipeline import Submission

MAX_NOTEBOOK_BYTES = 64 * 2**20
# nbgrader's documented example for LMS downloads (FileNameCollectorPlugin.named_regexp).
LMS_NAME = r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)"
LMS_FALLBACK = re.compile(LMS_NAME)
# After an exact "<assignment>_" prefix: the id runs to the first "_attempt_" (non-greedy).
LMS_AFTER_PREFIX = re.compile(r"(?P<student_id>\w+?)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)")
IGNORED_PARTS = {".ipynb_checkpoints", "__MACOSX", "__pycache__"}


def _ignored(parts: tuple[str, ...]) -> bool:
    return any(p in IGNORED_PARTS or p.startswith(".") for p in parts)


def lms_match(basename: str, assignment: str) -> dict | None:
    """The parts of an LMS file name (student id, timestamp, file), or None if it is not one.

    When the name starts with ``<assignment>_``, exactly that prefix is dropped and the id is everything up to the
    first ``_attempt_``: nbgrader's greedy pattern would turn ``ps1_a_doe_attempt_...`` and ``ps1_b_doe_attempt_...``
    into the one student ``doe``. Other names fall back to nbgrader's pattern (``head`` tells such merges apart)."""
    if assignment and basename.startswith(assignment + "_"):
        found = LMS_AFTER_PREFIX.match(basename[len(assignment) + 1:])
        if found:
            return {**found.groupdict(), "head": found["student_id"]}
    found = LMS_FALLBACK.match(basename)
    if not found:
        return None
    return {**found.groupdict(), "head": basename[:found.start("student_id")] + found["student_id"]}


def choose_notebook(expected: str, candidates: dict[str, bytes], sub: Submission,
                    stamps: dict[str, str] | None = None) -> None:
    """Pick the student's notebook among `candidates` (relative name -> bytes); the rest are extra files.
    `stamps` (LMS attempt timestamps by name): the latest attempt wins, even over a file with the expected name."""
    stamps = stamps or {}
    notebooks = {n: b for n, b in candidates.items() if n.lower().endswith(".ipynb")}
    if not notebooks:
        sub.extra_files = sorted(candidates)
        return
    exact = [n for n in notebooks if PurePosixPath(n).name == expected]
    # The latest attempt wins; then the expected name; otherwise the largest notebook (a renamed copy is usually
    # the only one).
    name = max(notebooks, key=lambda n: (stamps.get(n, ""), n in exact, -len(n) if n in exact else 0,
                                         len(notebooks[n]), n))
    sub.notebook_name = name
    sub.notebook_bytes = notebooks[name]
    sub.extra_files = sorted(n for n in candidates if n != name)
    if PurePosixPath(name).name != expected:
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


class _Class:
    """Files gathered per student: relative name -> (timestamp, bytes), and the LMS name heads seen per id."""

    def __init__(self, expected: str):
        self.expected = expected
        self.assignment = PurePosixPath(expected).stem
        self.files: dict[str, dict[str, tuple[str, bytes]]] = {}
        self.heads: dict[str, set[str]] = {}
        self.assignment_dirs: set[str] = set()   # students with an <assignment>/ folder (maybe empty)

    def add(self, student: str, rel: str, stamp: str, data: bytes) -> None:
        files = self.files.setdefault(student, {})
        # Several attempts of the same file: the latest timestamp wins (LMS timestamps sort as text).
        if rel not in files or stamp >= files[rel][0]:
            files[rel] = (stamp, data)

    def add_lms(self, basename: str, found: dict, read) -> None:
        student = found["student_id"]
        self.heads.setdefault(student, set()).add(found["head"])
        rel = found["file_id"]
        suffix = PurePosixPath(basename).suffix
        if suffix and not rel.lower().endswith(suffix.lower()):
            rel += suffix
        self.add(student, rel, found["timestamp"], read() if rel.lower().endswith(".ipynb") else b"")

    def submissions(self) -> list[Submission]:
        subs = []
        prefix = self.assignment + "/"
        # nbgrader's submitted/<student>/<assignment>/ layout (some student has that folder): only the assignment's
        # folder counts, so another assignment's notebook is never graded as this one.
        layout = bool(self.assignment_dirs) or any(rel.startswith(prefix) for files in self.files.values()
                                                   for rel in files)
        for student in sorted(self.files):
            files, skipped = self.files[student], []
            if student in self.assignment_dirs or any(rel.startswith(prefix) for rel in files):
                files = {rel[len(prefix):]: v for rel, v in files.items() if rel.startswith(prefix)}
            elif layout:
                # No <assignment>/ folder: files at the top still count, other assignments' folders do not.
                skipped = sorted(rel for rel in files if "/" in rel)
                files = {rel: v for rel, v in files.items() if "/" not in rel}
            sub = Submission(student)
            if skipped:
                sub.notes.append(f"No {self.assignment}/ folder was found; other folders were not graded: "
                                 f"{', '.join(skipped[:5])}" + (" ..." if len(skipped) > 5 else "") + ".")
            heads = sorted(self.heads.get(student, ()))
            if len(heads) > 1:
                # Two LMS names give one id: grading either one under that id could give a student another's
                # grade, so the row fails and an instructor sorts it out.
                sub.extra_files = sorted(files)
                sub.notes.append(f"Not graded: LMS files of different students ({', '.join(heads)}) all map to the "
                                 f"student id {student!r}; an instructor must rename them and grade again.")
            else:
                choose_notebook(self.expected, {r: d for r, (_, d) in files.items()}, sub,
                                {r: s for r, (s, _) in files.items()})
            subs.append(sub)
        return subs


def collect_folder(root: Path, expected: str) -> list[Submission]:
    """Student folders, and LMS-named files at the top (an unzipped LMS download)."""
    found = _Class(expected)
    for entry in sorted(root.iterdir()):
        if _ignored((entry.name,)) or entry.is_symlink():
            continue
        if entry.is_file():
            lms = lms_match(entry.name, found.assignment)
            if lms:
                found.add_lms(entry.name, lms, lambda: _read_bounded(entry))
            continue
        if not entry.is_dir():
            continue
        found.files.setdefault(entry.name, {})
        if (entry / found.assignment).is_dir():
            found.assignment_dirs.add(entry.name)
        for path in sorted(entry.rglob("*")):
            rel = path.relative_to(entry)
            if _ignored(rel.parts) or not path.is_file() or path.is_symlink():
                continue
            # Only notebooks are read; other files are only named.
            found.add(entry.name, rel.as_posix(), "", _read_bounded(path) if path.suffix.lower() == ".ipynb" else b"")
    return found.submissions()


def collect_zip(archive: Path, expected: str) -> list[Submission]:
    """Students from an LMS zip: file names carry the student id (at any depth), or top folders are students."""
    found = _Class(expected)
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        lms = {i.filename: lms_match(PurePosixPath(i.filename).name, found.assignment) for i in infos}
        folder_names = [n for n in (PurePosixPath(i.filename) for i in infos if not lms[i.filename])
                        if not _ignored(n.parts)]
        # A zip of a class folder ("ps1-class/alice/ps1.ipynb"): drop the common top folder.
        strip = 1 if folder_names and all(len(n.parts) >= 3 and n.parts[0] == folder_names[0].parts[0]
                                          for n in folder_names) else 0
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts[strip:]
            if info.is_dir() and len(parts) == 2 and parts[1] == found.assignment:
                found.assignment_dirs.add(parts[0])
        for info in infos:
            name = PurePosixPath(info.filename)
            if _ignored(name.parts) or ".." in name.parts:
                continue
            # Bounded read: a zip bomb stops at the cap, and sanitize reports the notebook as too large.
            read = lambda info=info: zf.open(info).read(MAX_NOTEBOOK_BYTES + 1)  # noqa: E731
            if lms[info.filename]:
                found.add_lms(name.name, lms[info.filename], read)
                continue
            parts = name.parts[strip:]
            if len(parts) >= 2:       # student folder / file
                rel = "/".join(parts[1:])
                found.add(parts[0], rel, "", read() if rel.lower().endswith(".ipynb") else b"")
    return found.submissions()


def collect(submissions: Path, expected: str) -> list[Submission]:
    """All students of SUBMISSIONS (a folder or a zip), sorted by student id."""
    if submissions.is_dir():
        subs = collect_folder(submissions, expected)
    elif zipfile.is_zipfile(submissions):
        subs = collect_zip(submissions, expected)
    else:
        raise SystemExit(f"{submissions} is neither a folder of student folders nor a zip file")
    if not subs:
        raise SystemExit(f"no student found in {submissions}: expected one folder per student, or LMS files "
                         f"named <assignment>_<student>_attempt_<timestamp>_<file>.ipynb")
    return subs


SAFE_ID = re.compile(r"[^A-Za-z0-9._@+-]")


def safe_name(student_id: str) -> str:
    """A student id made safe as one folder name under OUT/feedback/."""
    name = SAFE_ID.sub("_", student_id).lstrip(".")
    return name or "_"
