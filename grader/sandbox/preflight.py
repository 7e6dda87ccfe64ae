"""Why the sandbox cannot start, found by the real path: the very bwrap command that will run the kernels, run once
with ``true`` (can bubblewrap make its namespaces here?) and once with the grader's interpreter (does the layout
show this Python?). The message says what failed, with bubblewrap's own words, and only the fix that applies to
this machine and this user (issue 25: no "install bubblewrap" when it is installed, no sysctl advice to root).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NO_SANDBOX = "To run untrusted notebooks without isolation anyway, pass --no-sandbox."
_passed: set[tuple[str, ...]] = set()


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def namespace_advice(root: bool) -> str:
    """What keeps bubblewrap from making namespaces on this machine, for this user, and what fixes it."""
    if root:
        return ("Even root may not make namespaces here: this is a container that forbids them (Docker: run it "
                "with --privileged, or with --security-opt seccomp=unconfined --security-opt apparmor=unconfined "
                "--cap-add SYS_ADMIN), or grade on the host.")
    causes = []
    if _sysctl("kernel.unprivileged_userns_clone") == "0":
        causes.append("user namespaces are off for normal users (kernel.unprivileged_userns_clone = 0; as root: "
                      "`sysctl -w kernel.unprivileged_userns_clone=1`)")
    if _sysctl("user.max_user_namespaces") == "0":
        causes.append("user namespaces are off (user.max_user_namespaces = 0; as root: "
                      "`sysctl -w user.max_user_namespaces=15000`)")
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        causes.append("AppArmor forbids user namespaces to unconfined programs "
                      "(kernel.apparmor_restrict_unprivileged_userns = 1; as root: set it to 0, or give bwrap an "
                      "AppArmor profile that allows `userns`)")
    if not causes:
        causes.append("this machine (a container?) does not let a normal user make namespaces, though its sysctls "
                      "allow them")
    return "; ".join(causes) + ". Or run the grader as root."


def diagnose(prefix: list[str], roots: list[str], python: str = sys.executable) -> str:
    """"" when `prefix` runs ``true`` and `python` inside bubblewrap; else what failed and how to fix it."""
    try:
        probe = subprocess.run(prefix + ["true"], capture_output=True, text=True, timeout=60, cwd="/",
                               stdin=subprocess.DEVNULL)
    except OSError as err:
        return f"bubblewrap ({prefix[0]}) could not be run: {err}. {NO_SANDBOX}"
    except subprocess.TimeoutExpired:
        return f"bubblewrap ({prefix[0]}) did not finish within 60 s. {NO_SANDBOX}"
    said = " ".join(probe.stderr.split())
    if probe.returncode != 0:
        return (f"bubblewrap is installed ({prefix[0]}) but cannot make its namespaces: {said or 'no message'} "
                f"(exit {probe.returncode}). {namespace_advice(os.geteuid() == 0)} {NO_SANDBOX}")
    try:
        run = subprocess.run(prefix + [python, "-c", "import encodings, site"], capture_output=True, text=True,
                             timeout=120, cwd="/", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"the grader's Python ({python}) did not start within 120 s inside the sandbox. {NO_SANDBOX}"
    if run.returncode != 0:
        said = " ".join(run.stderr.split())[-1500:]
        real = os.path.realpath(python)
        return (f"bubblewrap works, but the grader's Python {python}" + (f" (really {real})" if real != python else "")
                + f" does not run inside the sandbox: {said or 'no message'} (exit {run.returncode}). The sandbox "
                f"shows these folders of it: {', '.join(roots) or 'none'}. This layout is a bug of the grader: "
                f"please report it with this message. {NO_SANDBOX}")
    return ""


def require(prefix: list[str], roots: list[str]) -> None:
    """Raise SandboxUnavailable with diagnose's message unless `prefix` passed it already in this process."""
    key = tuple(prefix)
    if key in _passed:
        return
    why = diagnose(prefix, roots)
    if why:
        from grader.sandbox.service import SandboxUnavailable

        raise SandboxUnavailable(why)
    _passed.add(key)


def missing_bwrap() -> str:
    """The refusal where bwrap is not on PATH: install it; for a normal user, also what keeps user namespaces off
    here, if anything does (checked, not guessed)."""
    advice = "Install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`)."
    if os.geteuid() != 0:
        blocked = namespace_advice(False)
        if not blocked.startswith("this machine"):
            advice += f" It will also need: {blocked}"
    return f"bubblewrap (bwrap) is not installed (not on PATH). {advice} {NO_SANDBOX}"
