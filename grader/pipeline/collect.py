"""Stage 1, collect: find each student's notebook in SUBMISSIONS and read its bytes.

SUBMISSIONS is a folder or a zip. Every file is first matched against the names the LMSs give their downloads,
at any depth, and keeps the student id the LMS knows:

    Canvas      <lastfirst>[_LATE]_<user id>_<submission id>_<file>      resubmissions <file>-1, -2 (latest wins)
    Moodle      <Full Name>_<participant id>_assignsubmission_file_/<file>  (or flattened into the file name);
                the _onlinetext_ sibling is the same student, never a second one
    Blackboard  <assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file>  (nbgrader's zip_collect names)

Everything else is read as a class folder: one folder per student (the folder name is the id; nbgrader's
``submitted/<student>/<assignment>/`` too), or one notebook per student named by the id (``alice.ipynb``); a single
wrapper folder around the class (``ps1-class/...``) is skipped, even beside stray files that are not notebooks
(an ``index.html`` an LMS or a TA added: they are listed as ignored). In a student's files the notebook may be one
folder down (``ps1-main/ps1.ipynb``) or inside a zip. A file that matches no rule while the others are LMS names still
gets a row, under its raw name. Nothing under SUBMISSIONS is written, moved or executed: zips are read in memory
(entries with ``..`` or an absolute path are never read), every read is bounded.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Callable

from grader.pipeline.types import Submission

MAX_NOTEBOOK_BYTES = 64 * 2**20
MAX_INNER_ZIP_BYTES = 4 * MAX_NOTEBOOK_BYTES
READ_ERRORS = (OSError, RuntimeError, zipfile.BadZipFile, EOFError, NotImplementedError)   # encrypted, bad CRC, ...
IGNORED_PARTS = {".ipynb_checkpoints", "__MACOSX", "__pycache__"}

# nbgrader's documented example for LMS downloads (FileNameCollectorPlugin.named_regexp), with ids widened to any
# characters but "_" (jane.doe, o-brien, jane@uni.edu) and Blackboard's receipt file (<...>_attempt_<ts>.txt).
_ATTEMPT = r"_attempt_(?P<timestamp>\d[0-9\-]*)(?:_(?P<file_id>.+)|(?P<receipt>\.txt))$"
LMS_FALLBACK = re.compile(r".*_(?P<student_id>[^_/]+)" + _ATTEMPT)
# After an exact "<assignment>_" prefix: the id runs to the first "_attempt_" (non-greedy, underscores allowed).
LMS_AFTER_PREFIX = re.compile(r"(?P<student_id>[^/]+?)" + _ATTEMPT)
# Canvas "Download Submissions": the sortable name lower-cased without punctuation, _LATE, user id, attachment id.
CANVAS = re.compile(r"(?P<name>\w+?)(?P<late>_LATE)?_(?P<user_id>\d+)_(?P<submission_id>\d+)_(?P<file>.+)$")
CANVAS_RESUBMISSION = re.compile(r"(?P<stem>.+)-(?P<n>\d+)(?P<ext>\.[^.]+)$")
# Moodle "Download all submissions": a folder per student and plugin, or the same prefix on each file.
MOODLE_FOLDER = re.compile(r"(?P<name>.+)_(?P<participant>\d+)_assignsubmission_(?P<plugin>[a-z]+)_$")
MOODLE_FILE = re.compile(r"(?P<name>.+)_(?P<participant>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>.+)$")

RULES = {
    "canvas": "Canvas file names (<lastfirst>_<user id>_<submission id>_<file>)",
    "moodle": "Moodle names (<Full Name>_<participant id>_assignsubmission_...)",
    "blackboard": "Blackboard file names (<assignment>_<username>_attempt_<timestamp>_<file>)",
    "nbgrader": "nbgrader's submitted/<student>/<assignment>/ folders",
    "folder": "student folders (folder name = student id)",
    "notebook": "notebooks named by student id (<id>.ipynb)",
    "unmatched": "files that match no student id (a row under the raw name)",
}


def _ignored(parts: tuple[str, ...]) -> bool:
    return any(p in IGNORED_PARTS or p.startswith(".") for p in parts)


def lms_match(basename: str, assignment: str) -> dict | None:
    """The parts of a Blackboard name (student id, timestamp, file), or None if it is not one.

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


@dataclass
class _Owner:
    """Who an LMS name belongs to, and what it says about the file."""
    student: str
    rule: str
    head: str
    rel: str | None             # the file's name inside the submission; None: seen, but not a file to grade
    stamp: str = ""
    name: str = ""
    late: bool = False
    submitted_at: str = ""


def lms_owner(parts: tuple[str, ...], assignment: str, expected: str, is_dir: bool = False,
              canvas: bool = True) -> _Owner | None:
    """The student an entry (path parts inside SUBMISSIONS) belongs to by an LMS's naming, or None.
    `canvas`: Canvas names are looked for (only at the top of a download: the pattern is looser than the others)."""
    for i, part in enumerate(parts if is_dir else parts[:-1]):
        found = MOODLE_FOLDER.match(part)
        if found:
            rel = "/".join(parts[i + 1:]) if found["plugin"] == "file" else None
            return _Owner(found["participant"], "moodle", f"{found['name']}_{found['participant']}", rel,
                          name=found["name"])
    if is_dir:
        return None
    base = parts[-1]
    found = lms_match(base, assignment)
    if found:
        ts = found["timestamp"]
        when = f"{ts[:10]} {ts[11:].replace('-', ':')}" if re.fullmatch(r"\d{4}(-\d\d){5}", ts) else ts
        rel = None if found["receipt"] else found["file_id"]
        return _Owner(found["student_id"], "blackboard", found["head"], rel, ts, submitted_at=when)
    found = MOODLE_FILE.match(base)
    if found:
        return _Owner(found["participant"], "moodle", f"{found['name']}_{found['participant']}",
                      found["file"] if found["plugin"] == "file" else None, name=found["name"])
    found = CANVAS.match(base) if canvas else None
    if found:
        rel, n = found["file"], 0
        again = CANVAS_RESUBMISSION.match(rel)
        if again:      # Canvas renames a file handed in again to <stem>-1, -2, ...: a higher number is later
            n = int(again["n"])
            if again["stem"] + again["ext"] == expected:
                rel = expected
        return _Owner(found["user_id"], "canvas", f"{found['name']}_{found['user_id']}", rel,
                      f"{int(found['submission_id']):020d}.{n:06d}", found["name"], bool(found["late"]))
    return None


@dataclass
class _File:
    source: str                 # where it was found, for the instructor
    stamp: str = ""             # the LMS's attempt order (sorts as text)
    late: bool = False
    submitted_at: str = ""
    data: bytes = b""           # notebooks only: other files are only named


@dataclass
class _Student:
    rule: str
    name: str = ""
    heads: set[str] = field(default_factory=set)
    files: dict[str, _File] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)        # files that are not graded (Moodle online text, ...)
    notes: list[str] = field(default_factory=list)
    submitted_at: str = ""


class Collected(list):
    """The Submissions of a class (a list, sorted by id), and what collection left out, for the run's log."""

    def __init__(self, subs, origin: str = "", ignored=(), unsafe=()):
        super().__init__(subs)
        self.origin, self.ignored, self.unsafe = origin, list(ignored), list(unsafe)

    def counts(self) -> dict[str, int]:
        return dict(Counter(sub.found_by for sub in self))

    def summary(self) -> list[str]:
        """Lines for the log: how many students each rule found, and what was not read as a student."""
        lines = [f"found {len(self)} student(s) in {self.origin}: " + ", ".join(
            f"{n} by {RULES.get(rule, rule)}" for rule, n in sorted(self.counts().items()))]
        unmatched = [s.student_id for s in self if s.found_by == "unmatched"]
        if unmatched:
            lines.append(f"  matched to no student id (rows under the raw name): {_listing(unmatched)}")
        if self.ignored:
            lines.append(f"  not a student's (ignored): {_listing(self.ignored)}")
        if self.unsafe:
            lines.append(f"  zip entries with '..' or an absolute path (never read): {_listing(self.unsafe)}")
        return lines


def _listing(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


class _Class:
    """The students found so far, each with their files (relative name -> _File)."""

    def __init__(self, expected: str):
        self.expected = expected
        self.assignment = PurePosixPath(expected).stem
        self.students: dict[str, _Student] = {}

    def student(self, sid: str, rule: str) -> _Student:
        return self.students.setdefault(sid, _Student(rule))

    def add(self, st: _Student, rel: str, read: Callable[[], bytes], meta: _File, inner: bool = True) -> None:
        lower = rel.lower()
        if inner and lower.endswith(".zip"):
            return self._add_zip(st, rel, read, meta)
        try:
            data = read() if lower.endswith(".ipynb") or lower.endswith("/timestamp.txt") else b""
        except READ_ERRORS as err:
            st.notes.append(f"{rel} could not be read ({type(err).__name__}).")
            data = b""
        old = st.files.get(rel)
        # Several attempts of one file: the latest wins.
        if old is None or meta.stamp >= old.stamp:
            st.files[rel] = replace(meta, data=data)

    def _add_zip(self, st: _Student, rel: str, read: Callable[[], bytes], meta: _File) -> None:
        """A zip in a student's files: its entries are the student's files (one level deep, in memory)."""
        try:
            data = read()
            if len(data) > MAX_INNER_ZIP_BYTES:
                raise ValueError("too large")
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    parts = safe_parts(info.filename)
                    if parts is None:
                        st.notes.append(f"{rel}: the entry {info.filename!r} was not read ('..' or absolute).")
                    elif parts and not _ignored(parts) and not info.is_dir():
                        inner = "/".join(parts)
                        self.add(st, f"{rel}/{inner}", lambda info=info: _read_entry(zf, info),
                                 replace(meta, source=f"{meta.source}/{inner}"), inner=False)
        except (ValueError, *READ_ERRORS) as err:
            st.notes.append(f"{rel} could not be opened as a zip ({type(err).__name__}: {err}).")
            st.files.setdefault(rel, meta)

    def submissions(self) -> list[Submission]:
        return [self._submission(sid, st) for sid, st in sorted(self.students.items())]

    def _submission(self, sid: str, st: _Student) -> Submission:
        from grader.assignments import ASSIGNMENTS

        sub = Submission(sid, found_by=st.rule, name=st.name)
        files, prefix = st.files, self.assignment + "/"
        inside = {rel[len(prefix):]: f for rel, f in files.items() if rel.startswith(prefix)}
        if (self.assignment in st.dirs or inside) and st.rule == "folder":
            sub.found_by = "nbgrader"
        if any(rel.lower().endswith(".ipynb") for rel in inside):
            # nbgrader's layout: only the assignment's folder counts; timestamp.txt is the submission time.
            files = dict(inside)
            stamp = files.pop("timestamp.txt", None)
            if stamp is not None:
                st.submitted_at = stamp.data.decode("utf-8", "replace").strip()[:64]
        others = {a + "/" for a in ASSIGNMENTS if a != self.assignment}
        skipped = sorted(rel for rel in files if any(rel.startswith(o) for o in others))
        if skipped:
            # Another assignment's folder (nbgrader's layout) is never graded as this one.
            files = {rel: f for rel, f in files.items() if rel not in skipped}
            sub.notes.append(f"No {self.assignment}/ folder was found; other assignments' folders were not graded: "
                             f"{_listing(skipped)}.")
        heads = sorted(st.heads)
        if len(heads) > 1:
            # Two LMS names give one id: grading either one under that id could give a student another's grade,
            # so the row fails and an instructor sorts it out.
            sub.extra_files = sorted(files)
            sub.notes.append(f"Not graded: LMS files of different students ({', '.join(heads)}) all map to the "
                             f"student id {sid!r}; an instructor must rename them and grade again.")
        else:
            choose_notebook(self.expected, {r: f.data for r, f in files.items()}, sub,
                            {r: f.stamp for r, f in files.items()})
            if sub.notebook_bytes is None:
                sub.extra_files = sorted(set(sub.extra_files) | set(st.seen))
        chosen = files.get(sub.notebook_name)
        if chosen is not None:
            sub.late, sub.submitted_at, sub.source = chosen.late, chosen.submitted_at, chosen.source
            if ".zip/" in sub.notebook_name.lower():
                sub.notes.append(f"Your notebook was taken from inside {sub.notebook_name.split('.zip/')[0]}.zip.")
        else:
            sub.late = any(f.late for f in files.values())
            sub.submitted_at = max([f.submitted_at for f in files.values()] + [st.submitted_at])
        sub.submitted_at = sub.submitted_at or st.submitted_at
        sub.notes[:0] = st.notes
        return sub


def choose_notebook(expected: str, candidates: dict[str, bytes], sub: Submission,
                    stamps: dict[str, str] | None = None) -> None:
    """Pick the student's notebook among `candidates` (relative name -> bytes); the rest are extra files.
    `stamps` (LMS attempt stamps by name): the latest attempt wins, even over a file with the expected name."""
    stamps = stamps or {}
    notebooks = {n: b for n, b in candidates.items() if n.lower().endswith(".ipynb")}
    if not notebooks:
        sub.extra_files = sorted(candidates)
        return
    exact = [n for n in notebooks if PurePosixPath(n).name == expected]
    # The latest attempt wins; then the expected name (the shallowest); otherwise the largest notebook (a renamed
    # copy is usually the only one).
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
        sub.notes.append(f"Extra files were ignored: {_listing(sub.extra_files)}.")


@dataclass
class _Entry:
    parts: tuple[str, ...]
    read: Callable[[], bytes] | None      # None: a folder
    source: str


def _read_bounded(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(MAX_NOTEBOOK_BYTES + 1)


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = MAX_NOTEBOOK_BYTES) -> bytes:
    # Bounded: a zip bomb stops at the cap, and sanitize reports the notebook as too large.
    with zf.open(info) as f:
        return f.read((MAX_INNER_ZIP_BYTES if info.filename.lower().endswith(".zip") else limit) + 1)


def safe_parts(name: str) -> tuple[str, ...] | None:
    """A zip entry's path parts, or None when it is absolute or climbs out with '..' (never read)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return None
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    return None if ".." in parts else parts


def folder_entries(root: Path) -> list[_Entry]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root).parts
        dirnames[:] = sorted(d for d in dirnames if not _ignored((d,)) and not (here / d).is_symlink())
        entries += [_Entry(rel + (d,), None, str(Path(*rel, d))) for d in dirnames]
        for name in sorted(filenames):
            path = here / name
            if not _ignored((name,)) and path.is_file() and not path.is_symlink():
                entries.append(_Entry(rel + (name,), lambda path=path: _read_bounded(path), str(Path(*rel, name))))
    return entries


def zip_entries(zf: zipfile.ZipFile, unsafe: list[str]) -> list[_Entry]:
    entries = []
    for info in zf.infolist():
        parts = safe_parts(info.filename)
        if parts is None:
            unsafe.append(info.filename)
        elif parts and not _ignored(parts):
            read = None if info.is_dir() else (lambda info=info: _read_entry(zf, info))
            entries.append(_Entry(parts, read, info.filename))
    return entries


def _wrapper_depth(rest: list[_Entry], assignment: str, expected: str) -> int:
    """1 when every non-LMS entry sits in one folder that wraps the class (``ps1-class/alice/...``,
    ``submitted/alice/ps1/...``, ``class/alice.ipynb ...``), else 0."""
    if not rest or len({e.parts[0] for e in rest}) != 1 or any(len(e.parts) == 1 and e.read for e in rest):
        return 0
    top = rest[0].parts[0]
    child_dirs = {e.parts[1] for e in rest if len(e.parts) >= 3 or (len(e.parts) == 2 and e.read is None)}
    child_files = [e.parts[1] for e in rest if len(e.parts) == 2 and e.read is not None]
    if child_dirs and not child_files:
        if len(child_dirs) >= 2:
            return 1
        # One folder in one folder: alice/ps1-main/ps1.ipynb (a student) or ps1-class/alice/ps1.ipynb (a class).
        child = next(iter(child_dirs))
        container = assignment.lower() in top.lower() or top.lower() in ("submitted", "submissions")
        return int(container and assignment.lower() not in child.lower())
    notebooks = [f for f in child_files if f.lower().endswith(".ipynb")]
    return int(not child_dirs and len(notebooks) >= 2 and expected not in notebooks)


def classify(entries: list[_Entry], expected: str) -> tuple[list[Submission], list[str]]:
    """Entries of SUBMISSIONS -> one Submission per student, and the names that are no student's."""
    found = _Class(expected)
    rest = []
    # Canvas downloads are flat: its names count at the top, or in one folder that wraps the whole download.
    wrapped = len({e.parts[0] for e in entries}) == 1
    for entry in entries:
        canvas = len(entry.parts) == 1 or (wrapped and len(entry.parts) == 2)
        owner = lms_owner(entry.parts, found.assignment, expected, entry.read is None, canvas)
        if owner is None:
            rest.append(entry)
            continue
        st = found.student(owner.student, owner.rule)
        st.heads.add(owner.head)
        st.name = st.name or owner.name
        if entry.read is None:
            continue
        if owner.rel is None:
            st.seen.append(entry.parts[-1])
            st.submitted_at = max(st.submitted_at, owner.submitted_at)
            continue
        suffix = PurePosixPath(entry.parts[-1]).suffix
        rel = owner.rel if not suffix or owner.rel.lower().endswith(suffix.lower()) else owner.rel + suffix
        found.add(st, rel, entry.read, _File(entry.source, owner.stamp, owner.late, owner.submitted_at))
    # Stray files beside the class folder (an index.html an LMS or a TA added) never stop it being unwrapped.
    stray = {id(e) for e in rest if len(e.parts) == 1 and e.read and not e.parts[0].lower().endswith(".ipynb")}
    strip = _wrapper_depth([e for e in rest if id(e) not in stray], found.assignment, expected)
    lms_class = bool(found.students)
    loose, ignored = [], []
    for entry in rest:
        parts = entry.parts[strip:]
        if not parts:
            if entry.read is not None:      # a stray file at the top, beside the unwrapped class folder
                ignored.append(entry.source)
            continue
        if len(parts) == 1:
            if entry.read is None:
                found.student(parts[0], "folder")
            elif parts[0].lower().endswith(".ipynb"):
                loose.append((parts[0], entry))
            else:
                ignored.append(entry.source)
            continue
        st = found.student(parts[0], "folder")
        if entry.read is None:
            st.dirs.add(parts[1])
        else:
            found.add(st, "/".join(parts[1:]), entry.read, _File(entry.source))
    for name, entry in loose:
        stem = PurePosixPath(name).stem
        if not lms_class and stem != found.assignment:
            found.add(found.student(stem, "notebook"), expected, entry.read, _File(entry.source))
        elif found.students:
            st = found.student(name, "unmatched")
            st.notes.append(f"{entry.source} matched no student id in SUBMISSIONS; it was graded under its file "
                            "name, and an instructor must enter the grade by hand.")
            found.add(st, name, entry.read, _File(entry.source))
        else:
            ignored.append(entry.source)
    return found.submissions(), ignored


def collect(submissions: Path, expected: str) -> Collected:
    """All students of SUBMISSIONS (a folder or a zip), sorted by student id; ``.summary()`` says which rule found
    how many, and what was not read as a student."""
    unsafe: list[str] = []
    if submissions.is_dir():
        subs, ignored = classify(folder_entries(submissions), expected)
    elif zipfile.is_zipfile(submissions):
        try:
            with zipfile.ZipFile(submissions) as zf:
                subs, ignored = classify(zip_entries(zf, unsafe), expected)
        except (zipfile.BadZipFile, OSError) as err:
            raise SystemExit(f"{submissions} cannot be read as a zip: {err}") from None
    else:
        raise SystemExit(f"{submissions} is neither a folder of student folders nor a zip file")
    if not subs:
        hint = f" ({_listing(ignored)} belong to no student: is it one student's folder?)" if ignored else ""
        raise SystemExit(f"no student found in {submissions}{hint}: expected one folder per student, notebooks "
                         f"named by student id, or an LMS download (Canvas, Moodle, Blackboard)")
    return Collected(subs, submissions.name, ignored, unsafe)


SAFE_ID = re.compile(r"[^A-Za-z0-9._@+-]")


def safe_name(student_id: str) -> str:
    """A student id made safe as one folder name under OUT/feedback/."""
    name = SAFE_ID.sub("_", student_id).lstrip(".")
    return name or "_"
