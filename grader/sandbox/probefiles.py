"""The probe cells' files (``work/_probe``), read out of a kernel's private folder without following links, and
checked against change (issue 23: a thread the student left running rewrote them while the probes ran).

After each probe cell the grader notes every file's identity (inode, size, modification time); the files are read
once, after every process of the kernel is stopped. A file that changed after the probe cell that wrote it, or that
appeared after the last probe cell, was written by something other than a probe: its task's results are dropped.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def open_no_links(root: str, parts: list[str]) -> int:
    """A file descriptor of folder `root`/`parts`..., refusing a link at every step: the kernel owns these folders
    and could swap one for a link that points into the grader's own file system."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def _walk(fd: int, visit, rel: str = "", depth: int = 0) -> None:
    """visit(dir_fd, name, relative path, stat) for every regular file under folder `fd`, no link followed."""
    for name in sorted(os.listdir(fd)):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) and depth < 4:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    if visit(fd, name, f"{rel}{name}/", None) is not False:
                        _walk(sub, visit, f"{rel}{name}/", depth + 1)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                if visit(fd, name, f"{rel}{name}", st) is False:
                    return
        except OSError:
            continue


def copy_plain_files(src: Path | int, dest: Path, max_files: int = 2000, max_bytes: int = 256 * 2**20,
                     identities: dict | None = None) -> Path:
    """Copy regular files and folders out of the sandbox for verification, through file descriptors (a link is
    never followed, whenever it appears), stopping at a file count and a byte budget. `src`: a folder or an fd of
    one (which this closes). `identities`, when given, receives each copied file's identity (see ``identity``)."""
    budget = [max_files, max_bytes]

    def visit(fd, name, rel, st):
        if budget[0] <= 0:
            return False
        if st is None:
            (dest / rel).mkdir(exist_ok=True)
            return True
        if st.st_size > budget[1]:
            return True
        src_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        with os.fdopen(src_fd, "rb") as source:
            opened = os.fstat(source.fileno())
            if not stat.S_ISREG(opened.st_mode):
                return True
            data = source.read(budget[1] + 1)
        if len(data) > budget[1]:
            return True
        (dest / rel).write_bytes(data)
        if identities is not None:
            identities[rel] = identity(opened)
        budget[0] -= 1
        budget[1] -= len(data)
        return True

    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW) if not isinstance(src, int) else src
    try:
        _walk(fd, visit)
    finally:
        os.close(fd)
    return dest


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten: inode, size, modification and status-change times (ns)."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class ProbeFiles:
    """The probe folder of one kernel: ``note()`` after each probe cell, ``collect(dest)`` once at the end."""

    def __init__(self, open_folder):
        self.open_folder = open_folder      # () -> an fd of the kernel's probe folder (OSError when there is none)
        self.noted: dict[str, tuple] = {}   # relative path -> identity when first seen after a probe cell
        self.changed: dict[str, tuple] = {}  # relative path -> identity seen later, different

    def note(self) -> None:
        """After a probe cell: the identity of every file; a file already noted that now differs is remembered."""
        try:
            fd = self.open_folder()
        except OSError:
            return

        def visit(_fd, _name, rel, st):
            if st is not None:
                now = identity(st)
                first = self.noted.setdefault(rel, now)
                if first != now:
                    self.changed.setdefault(rel, now)
            return True

        try:
            _walk(fd, visit)
        finally:
            os.close(fd)

    def collect(self, dest: Path) -> tuple[Path | None, list[str]]:
        """(copy of the folder, tasks whose results were dropped): to call once the kernel's processes are stopped.
        A file that changed after it was first noted, or that no note saw, is dropped with its whole task folder."""
        try:
            fd = self.open_folder()
        except OSError:
            return None, []
        found: dict[str, tuple] = {}
        copy_plain_files(fd, dest, identities=found)
        bad = {rel for rel, ident in found.items() if self.noted.get(rel) != ident} | set(self.changed)
        tasks = sorted({rel.split("/", 1)[0] for rel in bad if "/" in rel})
        for task in tasks:
            shutil.rmtree(dest / task, ignore_errors=True)
        for rel in bad:                      # loose files outside any task folder
            if "/" not in rel:
                (dest / rel).unlink(missing_ok=True)
        return dest, tasks
