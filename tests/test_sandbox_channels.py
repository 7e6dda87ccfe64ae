"""Sandbox round 3 (issue 23), the grader's side: what a kernel sends or holds can neither steer the grader nor
escape the limits, and costs its classmates nothing. One ``python -m grader grade`` run of the tiny assignment
(tests/test_grading.py: add 2 points, then greet 3) with honest classmates; each attack is a cell put right after
add's test cell, so add's 2 points are earned before it starts and greet's 3 show whether the rest still ran.
"""
from __future__ import annotations

import json
import socket
import threading

import pytest

from test_grading import grade, read_csv, student, tiny_source, write_student

pytestmark = pytest.mark.slow

# The kernel's sockets replaced with links to a unix socket of the host, then the kernel's own sockets closed, so
# that the grader's side reconnects: it must reconnect to what it opened at start-up, never through the links.
STEER = '''
import gc, glob, os, time, zmq
for path in glob.glob("/box/conn/k-*"):
    os.unlink(path)
    os.symlink(%(host)r, path)
for obj in gc.get_objects():
    if isinstance(obj, zmq.Socket) and obj.type in (zmq.REP, zmq.ROUTER):
        obj.close(linger=0)
time.sleep(8)
'''


# Output that is not a print (and one print too large to be received at all): each sends about 20-80 MB under
# --output 1 (kept: 1 MB), then the notebook goes on.
OUTPUTS = {
    "display_updates": 'h = display("start", display_id=True)\nfor i in range(40):\n    h.update("u" * 2**20)',
    "error_text": 'raise ValueError("e" * 3 * 2**20)',
    "one_huge_message": 'print("z" * 80 * 2**20)',       # one frame past what the grader accepts at all
    "display_metadata": ('for i in range(20):\n    display({"text/plain": "m"}, metadata={"pad": "p" * 2**20}, '
                         'raw=True)'),
    "widget_state": ('from comm import create_comm\n'
                     'c = create_comm(target_name="jupyter.widget", data={"state": {"_model_name": "DOMWidgetModel", '
                     '"_model_module": "@jupyter-widgets/base"}, "buffer_paths": []})\n'
                     'for i in range(40):\n'
                     '    c.send({"method": "update", "state": {"pad": "w" * 2**20}, "buffer_paths": []})'),
}

# 1.5 GiB under --memory 1 that no process's resident memory shows: memfd files written with write(), and a System V
# segment filled then detached. (A seccomp filter may refuse the call: then the cell says so and nothing is held.)
MEMFD = '''
import os, time
try:
    fds = [os.memfd_create(f"hoard{i}") for i in range(8)]
except OSError as err:
    print("REFUSED", type(err).__name__)
else:
    for fd in fds:                  # 8 x 192 MiB: each file below the sandbox's largest-file limit
        for i in range(3):
            os.write(fd, b"m" * 2**26)
    time.sleep(5)
'''
SYSV = '''
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
size = 1536 * 2**20
shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)      # IPC_PRIVATE, IPC_CREAT | 0600
if shmid < 0:
    print("REFUSED", ctypes.get_errno())
else:
    for part in range(6):
        addr = libc.shmat(shmid, None, 0)
        ctypes.memset(ctypes.c_void_p(addr + part * size // 6), 1, size // 6)
        libc.shmdt(ctypes.c_void_p(addr))
    time.sleep(5)
'''


class HostSocket:
    """A unix socket of the host that counts the connections made to it."""

    def __init__(self, path):
        self.path, self.connections = str(path), 0
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.path)
        self.server.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("channels")
    source = tiny_source(base / "solutions")
    subs, out = base / "class", base / "out"
    host = HostSocket(base / "host.sock")
    write_student(subs, "honest", student(source))
    write_student(subs, "honest_too", student(source))
    write_student(subs, "steer", student(source, after_add_test=STEER % {"host": host.path}))
    for sid, code in OUTPUTS.items():
        write_student(subs, sid, student(source, after_add_test=code))
    # A test whose failure is too large to be received on the output channel still fails (the shell reply says so).
    write_student(subs, "huge_test_error", student(source, answers={
        "greet": "def greet(name):\n    raise ValueError('g' * 20 * 2**20)"}))
    write_student(subs, "memfd", student(source, after_add_test=MEMFD))
    write_student(subs, "sysv_shm", student(source, after_add_test=SYSV))
    proc = grade("tiny", subs, out, "--source", str(source), "--timeout", "15", "--jobs", "2", "--memory", "1",
                 "--output", "1")
    rows = {r["student_id"]: r for r in read_csv(out / "grades.csv")}
    return dict(proc=proc, rows=rows, host=host, out=out)


def test_every_student_has_a_row_and_classmates_are_graded_as_alone(channel_run):
    assert channel_run["proc"].returncode == 0, channel_run["proc"].stderr[-3000:]
    rows = channel_run["rows"]
    assert set(rows) == {"honest", "honest_too", "steer", "memfd", "sysv_shm", "huge_test_error", *OUTPUTS}
    for sid in ("honest", "honest_too"):
        assert (rows[sid]["status"], rows[sid]["score"], rows[sid]["message"]) == ("graded", "5", "")


def test_a_kernel_cannot_steer_the_grader_to_a_host_socket(channel_run):
    assert channel_run["host"].connections == 0
    row = channel_run["rows"]["steer"]
    # Its sockets closed, the kernel no longer answers: stopped at the cell's limit, add's points kept.
    assert (row["status"], row["score"]) == ("timeout", "2")
    assert "stopped answering" in row["message"]


@pytest.mark.parametrize("sid", sorted(OUTPUTS))
def test_every_kind_of_output_counts_against_the_cap_and_keeps_the_points(channel_run, sid):
    row = channel_run["rows"][sid]
    assert (row["status"], row["score"]) == ("graded", "5"), row
    assert "the output past that was dropped" in row["message"]
    kept = channel_run["out"] / "autograded" / sid / "tiny" / "tiny.ipynb"
    assert kept.stat().st_size < 3 * 2**20          # 1 MB kept, plus the notebook itself
    assert (channel_run["out"] / "feedback" / sid / "tiny.html").stat().st_size < 8 * 2**20


@pytest.mark.parametrize("sid", ["memfd", "sysv_shm"])
def test_memory_no_process_shows_is_counted(channel_run, sid):
    row = channel_run["rows"][sid]
    nb = json.loads((channel_run["out"] / "autograded" / sid / "tiny" / "tiny.ipynb").read_text())
    # A stream's text in a saved notebook is a string or a list of lines (nbformat allows both).
    printed = ["".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])
               if o.get("name") == "stdout"]
    if any(text.startswith("REFUSED") for text in printed):     # the sandbox refused the call: nothing held
        assert (row["status"], row["score"]) == ("graded", "5"), row
    else:
        assert (row["status"], row["score"]) == ("memory_limit", "2"), row


def test_a_test_cell_never_passes_by_losing_its_error(channel_run):
    row = channel_run["rows"]["huge_test_error"]
    assert (row["status"], row["score"]) == ("graded", "2"), row


def test_streams_are_coalesced_in_linear_time_as_nbclient_would():
    """One printed line of megabytes kept nbclient's carriage-return regular expression busy for hours (quadratic);
    the grader's own coalescing gives nbclient's result on ordinary text, at once on a long line."""
    import re
    import time

    from grader.sandbox.runner import coalesce_streams

    nbclient_cr = re.compile(r".*\r(?=[^\n])")
    for text in ["a\rb\r", "progress 1\rprogress 2\rdone\n", "x\r\ny\rz\n", "plain\n"]:
        out = coalesce_streams([{"output_type": "stream", "name": "stdout", "text": text}])
        assert out[0]["text"] == nbclient_cr.sub("", text), text
    started = time.monotonic()
    out = coalesce_streams([{"output_type": "stream", "name": "stdout", "text": "x" * 4 * 2**20},
                            {"output_type": "stream", "name": "stderr", "text": "e"},
                            {"output_type": "stream", "name": "stdout", "text": "y"}])
    assert time.monotonic() - started < 1
    assert [(o["name"], len(o["text"])) for o in out] == [("stdout", 4 * 2**20 + 1), ("stderr", 1)]
