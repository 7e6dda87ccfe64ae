"""Sandbox round 3 (issue 23), the grader's side: what a kernel sends or holds can neither steer the grader nor
escape the limits, and costs its classmates nothing. One ``python -m grader grade`` run of the tiny assignment
(tests/test_grading.py: add 2 points, then greet 3) with honest classmates; each attack is a cell put right after
add's test cell, so add's 2 points are earned before it starts and greet's 3 show whether the rest still ran.
"""
from __future__ import annotations

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
    proc = grade("tiny", subs, out, "--source", str(source), "--timeout", "15", "--jobs", "2")
    rows = {r["student_id"]: r for r in read_csv(out / "grades.csv")}
    return dict(proc=proc, rows=rows, host=host, out=out)


def test_every_student_has_a_row_and_classmates_are_graded_as_alone(channel_run):
    assert channel_run["proc"].returncode == 0, channel_run["proc"].stderr[-3000:]
    rows = channel_run["rows"]
    assert set(rows) == {"honest", "honest_too", "steer"}
    for sid in ("honest", "honest_too"):
        assert (rows[sid]["status"], rows[sid]["score"], rows[sid]["message"]) == ("graded", "5", "")


def test_a_kernel_cannot_steer_the_grader_to_a_host_socket(channel_run):
    assert channel_run["host"].connections == 0
    row = channel_run["rows"]["steer"]
    # Its sockets closed, the kernel no longer answers: stopped at the cell's limit, add's points kept.
    assert (row["status"], row["score"]) == ("timeout", "2")
    assert "stopped answering" in row["message"]
