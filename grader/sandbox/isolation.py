"""What isolation holds, found by the very path that runs students' notebooks: one confined kernel, started at
start-up like any other, tries to reach a server on 127.0.0.1, a unix socket and a canary file in a folder it must
not see, to write outside its folder, and to signal the grader. What it could not do holds."""
from __future__ import annotations

import json
import os
import socket

import nbformat

CHECKS = {
    "no network": "net",
    "hidden files unreadable": "read",
    "no writes outside its folder": "write",
    "no host unix socket": "unix",
    "grader's processes out of reach": "procs",
}

PROBE = '''
import json, os, socket
r = {}
try:
    socket.create_connection(("127.0.0.1", %(port)d), timeout=2).close(); r["net"] = False
except OSError:
    r["net"] = True
try:
    open(%(canary)r).read(); r["read"] = False
except OSError:
    r["read"] = True
try:
    with open(%(target)r, "w") as f:
        f.write("escaped")
    r["write"] = False
except OSError:
    r["write"] = True
try:
    u = socket.socket(socket.AF_UNIX); u.settimeout(2); u.connect(%(sock)r); u.close(); r["unix"] = False
except OSError:
    r["unix"] = True
try:
    os.kill(%(pid)d, 0); r["procs"] = False
except ProcessLookupError:
    r["procs"] = True
except OSError:
    r["procs"] = False
print("ISOLATION " + json.dumps(r))
'''


def check_isolation(sandbox) -> dict[str, bool]:
    """{check: holds} for CHECKS, from one kernel of `sandbox`. A kernel that cannot start holds nothing."""
    canary_dir = sandbox.staging / "canary"
    canary_dir.mkdir(exist_ok=True)
    os.chmod(sandbox.staging, 0o711)        # only isolation, not permissions, may keep the kernel out
    os.chmod(canary_dir, 0o777)
    canary = canary_dir / "secret.txt"
    canary.write_text("the kernel must not read this")
    canary.chmod(0o644)
    target = canary_dir / "escaped.txt"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = str(canary_dir / "s")
    unix.bind(sock_path)
    os.chmod(sock_path, 0o777)
    unix.listen(8)
    code = PROBE % {"port": listener.getsockname()[1], "canary": str(canary), "target": str(target),
                    "sock": sock_path, "pid": os.getpid()}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    try:
        execution = sandbox.run(nb)
    finally:
        listener.close()
        unix.close()
        os.chmod(sandbox.staging, 0o700)
    found: dict = {}
    for output in nb.cells[0].get("outputs", []):
        for line in str(output.get("text", "")).splitlines():
            if line.startswith("ISOLATION "):
                found = json.loads(line[len("ISOLATION "):])
    report = {name: bool(found.get(key)) for name, key in CHECKS.items()}
    if target.exists():
        report["no writes outside its folder"] = False
    if not found:
        sandbox.start_error = (execution.message + (" " + execution.stderr_tail if execution.stderr_tail else "")
                               ).strip() or "the check kernel printed nothing"
    return report
