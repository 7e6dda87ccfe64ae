"""When the sandbox cannot be had, the grader says what is actually missing, found by the real path, and advises
only the fix that applies (issue 25): no "install bubblewrap" when bwrap runs, no sysctl to root, and a kernel
without its seccomp filter is refused, naming the checks that do not hold (issue 23)."""
from __future__ import annotations

import os

import pytest

from grader.sandbox import Limits
from grader.sandbox.bubblewrap import bwrap_command, find_bwrap, make_kernel_lib, python_roots
from grader.sandbox.preflight import diagnose, missing_bwrap, namespace_advice
from grader.sandbox.service import Sandbox, SandboxUnavailable

pytestmark = pytest.mark.slow


def test_an_interpreter_the_sandbox_cannot_show_is_named_and_no_wrong_fix_is_advised(tmp_path):
    (tmp_path / "logs").mkdir()
    lib = make_kernel_lib(tmp_path / "lib")
    prefix = bwrap_command(lib=lib, logs=tmp_path / "logs", hide=[], gpus="", probe=False)
    assert diagnose(prefix, python_roots([])) == ""          # this machine's own layout runs
    why = diagnose(prefix, ["/usr"], python="/nowhere/bin/python3")
    assert "/nowhere/bin/python3" in why and "does not run inside the sandbox" in why, why
    assert "No such file" in why, why                         # bubblewrap's own words
    assert "apt-get install" not in why and "sysctl" not in why and "as root" not in why, why


def test_bubblewrap_that_cannot_make_its_namespaces_is_quoted(tmp_path):
    # A real bwrap failure: an option this bwrap refuses stands in for a namespace it may not make.
    why = diagnose([find_bwrap(), "--unshare-pid", "--no-such-option"], [])
    assert why.startswith(f"bubblewrap is installed ({find_bwrap()}) but cannot") and "--no-such-option" in why
    assert "apt-get install" not in why, why


def test_the_advice_fits_the_user():
    assert "sysctl" not in namespace_advice(root=True) and "run the grader as root" not in namespace_advice(True)
    assert namespace_advice(root=False).endswith("Or run the grader as root.")
    said = missing_bwrap()
    assert "apt-get install bubblewrap" in said and "--no-sandbox" in said
    if os.geteuid() == 0:
        assert "sysctl" not in said and "as root" not in said, said


def test_a_kernel_without_its_seccomp_filter_is_refused(monkeypatch):
    import grader.sandbox.seccomp as seccomp

    monkeypatch.setattr(seccomp, "write_filter", lambda path: "switched off by this test")
    with Sandbox(Limits()) as sandbox:
        with pytest.raises(SandboxUnavailable) as refused:
            sandbox.start(log=lambda m: None)
    said = str(refused.value)
    for check in ("seccomp filter", "no shared kernel keyring", "no new namespaces", "no userfaultfd or io_uring",
                  "no uncounted shared memory"):
        assert check in said.split("does not hold")[0], said
    assert "switched off by this test" in said and "--no-sandbox" in said, said
    assert "apt-get install" not in said and "sysctl" not in said, said    # libseccomp is there: not the fix
