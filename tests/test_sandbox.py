"""Isolation through the real ``python -m grader grade`` (issue 11): what a hostile notebook can do, and that it
costs its classmates nothing.

One class of the real ps1, graded with two jobs at once: two honest students, a blank one, "mallory" (the honest
solution plus a cell that tries to escape) and "hal" (the honest solution plus a cell that attacks the others:
signals every process it can, writes into every folder it can find, fills every disk it can). Run by CI as root,
as an unprivileged user and with an interpreter the kernel's user cannot reach (see .ci/run).
"""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest

from conftest import REPO


MARK = uuid.uuid4().hex[:12]          # names the files and processes the escape notebook tries to leave behind

ESCAPE = r'''
import os, socket, subprocess, sys
found = []
def attempt(what, fn):
    try:
        result = fn()
        found.append(f"ESCAPED {what}: {str(result)[:200]}")
    except Exception as err:
        found.append(f"HELD {what}: {type(err).__name__}")
def write(path):
    with open(path, "w") as f:
        f.write("escaped")
    return path
attempt("write home", lambda: write(os.path.join(%(home)r, "escaped-%(mark)s")))
attempt("write checkout", lambda: write(os.path.join(%(repo)r, "escaped-%(mark)s")))
attempt("read solutions", lambda: open(%(solutions)r).read())
attempt("read classmate", lambda: open(%(classmate)r).read())
attempt("read secret", lambda: open(%(secret)r).read())
attempt("read gradebook", lambda: open(%(gradebook)r, "rb").read(64))
attempt("list submissions", lambda: os.listdir(%(subs)r))
attempt("read git", lambda: os.listdir(%(git)r))
attempt("read tests", lambda: os.listdir(%(tests)r))
attempt("read start folder", lambda: open(%(start_secret)r).read())
attempt("connect", lambda: socket.create_connection(("127.0.0.1", %(port)d), timeout=3).sendall(b"%(mark)s"))
def linger():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", "%(linger)s"])
        os._exit(0)
    return "forked a daemon"
linger()
print("\n".join(found))
'''

ATTACK = r'''
import os, signal, errno
# 1. every process this kernel can name, in a child (kill(-1) would take the kernel too)
if os.fork() == 0:
    for pid in range(2, 70000):
        if pid != os.getpid():
            try: os.kill(pid, signal.SIGKILL)
            except OSError: pass
    try: os.kill(-1, signal.SIGKILL)
    except OSError: pass
    os._exit(0)
os.wait()
# 2. a file in every folder it can find
written = 0
for root, dirs, files in os.walk("/"):
    if root.startswith(("/proc", "/sys", "/dev")):
        dirs[:] = []
        continue
    try:
        with open(os.path.join(root, "hal-was-here"), "w") as f:
            f.write("x")
        written += 1
    except OSError:
        pass
# 3. fill every disk it can write
for folder in (".", "/tmp", "/dev/shm"):
    try:
        with open(os.path.join(folder, "fill"), "wb") as f:
            while True:
                f.write(b"\0" * 2**20)
    except OSError:
        pass
for folder in (".", "/tmp", "/dev/shm"):     # then clean up: hal's own honest work must still be gradable
    try: os.remove(os.path.join(folder, "fill"))
    except OSError: pass
print("hal wrote into", written, "folders")
'''


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


def honest(extra: str | None = None) -> nbformat.NotebookNode:
    """The ps1 solution as a student would hand it in, with `extra` as a new first code cell."""
    nb = nbformat.read(str(REPO / "solutions" / "ps1" / "ps1.ipynb"), as_version=4)
    if extra:
        first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        nb.cells.insert(first, nbformat.v4.new_code_cell(extra))
    return nb


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("sandbox")
    subs, out = base / "class", base / "out"
    start = base / "start"            # the folder the instructor runs the grader from, with a private file
    start.mkdir()
    (start / "secret.txt").write_text("private notes")
    connections: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                connections.append(conn.recv(64) or b"connected")
                conn.close()
            except OSError:
                continue
    threading.Thread(target=accept, daemon=True).start()
    home = os.path.expanduser("~")
    linger = f"7{int(MARK[:6], 16) % 100000}"
    escape = ESCAPE % {"home": home, "mark": MARK, "repo": str(REPO),
                       "solutions": str(REPO / "solutions" / "ps1" / "ps1.ipynb"),
                       "classmate": str(subs / "ada" / "ps1.ipynb"), "secret": str(out / ".grader-secret"),
                       "gradebook": str(out / "gradebook.db"), "subs": str(subs), "git": str(REPO / ".git"),
                       "tests": str(REPO / "tests"), "port": server.getsockname()[1], "linger": linger,
                       "start_secret": str(start / "secret.txt")}
    class_ = {"ada": honest(), "bob": honest(), "blank": nbformat.read(str(REPO / "exercises" / "ps1" / "ps1.ipynb"),
                                                                          as_version=4),
              "mallory": honest(escape), "hal": honest(ATTACK)}
    for sid, nb in class_.items():
        (subs / sid).mkdir(parents=True)
        nbformat.write(nb, str(subs / sid / "ps1.ipynb"))
    out.mkdir()
    (out / ".grader-secret").write_text("ab" * 32)       # a known secret, to look for in the feedback
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "ps1", str(subs), "--out", str(out),
                           "--jobs", "2", "--timeout", "120"], capture_output=True, text=True, timeout=900, cwd=start,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(start)])})
    stop.set()
    server.close()
    lingering = [p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-1:] == [linger]]
    return {"proc": proc, "out": out, "subs": subs, "home": Path(home), "connections": connections,
            "lingering": lingering, "rows": read_csv(out / "grades.csv") if (out / "grades.csv").exists() else {}}


def test_the_batch_completes_and_honest_students_keep_their_scores(hostile_run):
    proc, rows = hostile_run["proc"], hostile_run["rows"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert set(rows) == {"ada", "bob", "blank", "mallory", "hal"}
    for sid in ("ada", "bob"):
        assert (rows[sid]["status"], rows[sid]["score"]) == ("graded", "10"), rows[sid]
    assert (rows["blank"]["status"], rows["blank"]["score"]) == ("graded", "0"), rows["blank"]
    # the attackers' own honest work still counts: isolation took nothing from them either
    for sid in ("mallory", "hal"):
        assert rows[sid]["score"] == "10", rows[sid]


def test_the_run_says_what_isolation_holds(hostile_run):
    err = hostile_run["proc"].stderr
    assert "sandbox: bubblewrap" in err and "no network: holds" in err and "DOES NOT HOLD" not in err, err[-2000:]


def test_nothing_is_written_outside_the_kernel(hostile_run):
    assert not (hostile_run["home"] / f"escaped-{MARK}").exists()
    assert not (REPO / f"escaped-{MARK}").exists()
    stray = [p for p in (REPO, hostile_run["home"], hostile_run["out"], hostile_run["subs"], Path("/tmp"))
             if (p / "hal-was-here").exists()]
    assert stray == []


def test_nothing_hidden_is_read(hostile_run):
    page = (hostile_run["out"] / "feedback" / "mallory" / "ps1.html").read_text()
    for what in ("write home", "write checkout", "read solutions", "read classmate", "read secret",
                 "read gradebook", "list submissions", "read git", "read tests", "read start folder", "connect"):
        assert f"HELD {what}" in page, (what, page[page.find("HELD") - 200: page.find("HELD") + 1500])
        assert f"ESCAPED {what}:" not in page, what
    assert "ab" * 32 not in page and "BEGIN HIDDEN" not in page


def test_no_connection_is_made_and_no_process_outlives_the_notebook(hostile_run):
    assert hostile_run["connections"] == []
    assert hostile_run["lingering"] == []


def test_check_gives_the_solution_full_marks():
    proc = subprocess.run([sys.executable, "-m", "grader", "check", str(REPO / "solutions" / "ps1" / "ps1.ipynb")],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert any(line.split()[:4] == ["total", "10", "/", "10"] for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.slow
def test_no_sandbox_is_refused_without_bubblewrap_and_said_with_the_flag(tmp_path):
    """Without bwrap on PATH the grader refuses (exit 2, saying how to fix it); --no-sandbox grades and says so."""
    subs = tmp_path / "class"
    (subs / "ada").mkdir(parents=True)
    nbformat.write(honest(), str(subs / "ada" / "ps1.ipynb"))
    python_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": python_dir}          # no /usr/bin: no bwrap
    cmd = [sys.executable, "-m", "grader", "grade", "ps1", str(subs), "--out", str(tmp_path / "out")]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "bubblewrap" in refused.stderr and "--no-sandbox" in refused.stderr
    assert not (tmp_path / "out" / "grades.csv").exists()
    allowed = subprocess.run(cmd + ["--no-sandbox"], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "sandbox: NONE" in allowed.stderr
    row = read_csv(tmp_path / "out" / "grades.csv")["ada"]
    assert row["score"] == "10" and "without a sandbox" in row["flags"], row


def test_probe_files_are_copied_out_without_following_links(tmp_path):
    """The grader copies the kernel's probe folder; a link there (to a file or a folder of the grader's) is
    skipped, never followed."""
    from grader.sandbox.runner import copy_plain_files

    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("grader's own")
    probe = tmp_path / "probe"
    (probe / "task").mkdir(parents=True)
    (probe / "task" / "case.json").write_text("{}")
    (probe / "task" / "stolen.json").symlink_to(outside / "secret.txt")
    (probe / "linked_dir").symlink_to(outside)
    dest = tmp_path / "copy"
    dest.mkdir()
    copy_plain_files(probe, dest)
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert copied == ["task", "task/case.json"]
