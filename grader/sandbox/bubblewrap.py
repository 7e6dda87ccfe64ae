"""The outer layer of the sandbox: the ``bwrap`` command (Debian package ``bubblewrap``) the fork server and every
launched kernel run under, and the read-only copy of the package that kernels import.

What a kernel's file system holds (everything else of the machine is absent, not merely unreadable):

- read-only: ``/usr`` and the ``/bin``, ``/lib*`` links or folders beside it; a few files of ``/etc`` (dynamic
  linker, fonts, time zone; ``passwd`` and ``group`` written here, so no real account is listed); the Python
  installation(s) the grader runs on, at their own paths, wherever they lie (a venv in the checkout, beside the
  notebook, under /tmp or the home folder: only the venv is shown, nothing else of the folder around it); the
  kernel-side ``grader`` package at ``/opt/mha-course`` (``__init__``, ``bugs``, ``references``, ``diagnose``,
  ``diagnose_perf``, ``notebook_check`` and the sandbox's inside code: no verification, no answer keys) and the
  kernels' seccomp filter;
- its own ``/box`` (conn/, work/, tmp/), ``/tmp``, ``/dev/shm`` and ``/proc`` (made in ``inside.confine_kernel``);
- with ``--gpus``, the NVIDIA device nodes and ``/sys`` (CUDA reads its topology there).

Root runs bwrap without a user namespace (there only uid 0 would be mapped, and a kernel running as the host's
uid 0 could write host sysctls through its own /proc), and kernels become ``nobody``; any other user gets a user
namespace in which no further one can be made (``--disable-userns``, bubblewrap 0.8). Either way the fork server
keeps CAP_SYS_ADMIN (and, for root, SETUID and SETGID) to make each kernel's namespaces, and every kernel drops
all of them, then loads the seccomp filter (grader.sandbox.seccomp: no keyrings, namespaces, mounts...) before
student code runs.
"""
from __future__ import annotations

import os
import shutil
import site
import sys
from pathlib import Path

from grader.sandbox.inside import SECCOMP_PATH

PACKAGE = Path(__file__).resolve().parents[1]      # grader/
INSIDE_ROOT = "/opt/mha-course"
INSIDE_LIB = f"{INSIDE_ROOT}/lib"                   # where kernels find the kernel-side package
SECCOMP_FILE = "seccomp.bpf"                        # the kernels' seccomp filter (grader.sandbox.seccomp), in lib
INSIDE_BOX = "/box"
INSIDE_LOGS = "/run/grader-logs"
NOBODY = 65534
# What a kernel imports from the course: the student checks, and what the sandbox itself needs inside.
KERNEL_SIDE = ("__init__.py", "bugs.py", "references.py", "diagnose.py", "diagnose_perf.py", "notebook_check.py",
               "sandbox/__init__.py", "sandbox/limits.py", "sandbox/inside.py")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "fonts", "alternatives",
             "ssl/openssl.cnf", "mime.types", "host.conf")


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def make_kernel_lib(dest: Path) -> Path:
    """Copy the kernel-side files of the package into `dest`/grader (read-only for kernels); returns `dest`."""
    for rel in KERNEL_SIDE:
        target = dest / "grader" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE / rel, target)
    (dest / "etc").mkdir(exist_ok=True)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                         "nobody:x:65534:65534:nobody:/box/work:/usr/sbin/nologin\n"
                                         f"student:x:{os.getuid()}:{os.getgid()}:student:/box/work:/usr/sbin/nologin\n")
    (dest / "etc" / "group").write_text(f"root:x:0:\nnogroup:x:65534:\nstudent:x:{os.getgid()}:\n")
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    from grader.sandbox.seccomp import write_filter

    write_filter(dest / SECCOMP_FILE)        # a machine without libseccomp: none; the start-up check refuses
    dest.chmod(0o755)
    return dest


def user_site() -> str | None:
    """The user's site-packages when this interpreter imports from it (a `pip install --user`), else None."""
    path = site.getusersitepackages()
    return path if site.ENABLE_USER_SITE and path in sys.path and os.path.isdir(path) else None


def python_roots(exclude: list[Path]) -> list[str]:
    """Folders a kernel needs to run this interpreter and import its packages: its prefixes, the folder of the
    real executable, its site-packages (and the user's, when used). Wherever they lie (a venv inside the checkout,
    beside a notebook, under /tmp or the home folder), but never the folder the grader was started from nor
    PYTHONPATH entries (plain sys.path entries), never the home folder itself or a folder above it, never a folder
    that is itself excluded or holds one (`exclude`: the grading folders; hidden ones inside a bound root are
    covered by bwrap_command), nothing under /usr (bound whole)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(os.path.realpath(sys.executable)).parent.parent), *site.getsitepackages()}
    if user_site():
        candidates.add(user_site())
    home = Path(os.path.realpath(os.path.expanduser("~")))
    roots: list[str] = []
    for raw in sorted(candidates, key=len):
        path = Path(os.path.realpath(raw))
        if not path.is_dir() or str(path) in ("/", "/usr", "/tmp") or path.is_relative_to("/usr"):
            continue
        if path == home or home.is_relative_to(path) or any(path == e for e in exclude):
            continue
        if any(path.is_relative_to(r) for r in roots):
            continue
        roots.append(str(path))
    return roots


def _depth(path: str) -> int:
    return len(Path(path).parts)


def layout(roots: list[str], hide: list[Path]) -> list[str]:
    """The bwrap arguments that show `roots` (read-only) and the sandbox's fresh /tmp, and cover every folder of
    `hide` that lies inside a root. Mounts go shallowest first, so none covers another that lies below it: /tmp
    before a venv under /tmp, a root before a hidden folder inside it, that hidden folder before a root inside it
    (a venv in the checkout, when the checkout lies in a bound folder). Missing parents are made 0755 (bwrap
    would make them 0700, and a kernel that is not root could not reach the interpreter below them)."""
    hidden = sorted({str(h) for h in hide if any(h.is_relative_to(r) and str(h) != r for r in roots)})
    mounts = [("tmpfs", "/tmp")] + [("root", r) for r in roots] + [("hide", h) for h in hidden]
    mounts.sort(key=lambda m: (_depth(m[1]), m[0] != "tmpfs", m[0] == "hide"))
    points = {m[1] for m in mounts}
    args: list[str] = []
    made: set[str] = set()
    for kind, path in mounts:
        if kind != "root":
            args += ["--tmpfs", path]
            continue
        for parent in reversed(Path(path).parents):
            parent_s = str(parent)
            if parent_s == "/" or parent_s in made or parent_s in points:
                continue
            # inside a bound root the folder exists already (and the root is read-only); elsewhere (the sandbox's
            # own root, /tmp, a covered folder) it is made
            covering = [m for m in mounts if _depth(m[1]) < _depth(parent_s) and parent.is_relative_to(m[1])]
            if covering and max(covering, key=lambda m: _depth(m[1]))[0] == "root":
                continue
            args += ["--perms", "0755", "--dir", parent_s]
            made.add(parent_s)
        args += ["--ro-bind", path, path]
    for path in hidden:          # a covered folder stays empty: no kernel may store anything there
        args += ["--remount-ro", path]
    return args


def bwrap_command(*, lib: Path, logs: Path, hide: list[Path], gpus: str, extra_roots: list[str] = (),
                  probe: bool = True) -> list[str]:
    """The bwrap prefix of a sandboxed command. `lib`: from make_kernel_lib; `logs`: the grader's log folder
    (the supervisors write there; kernels cover it); `hide`: folders that stay invisible even where they lie
    inside a bound Python root; `extra_roots`: folders of another kernel's interpreter. With `probe`, the first
    use of a command runs it once with ``true`` and with the interpreter (grader.sandbox.preflight) and raises
    SandboxUnavailable saying what is actually missing when either fails."""
    bwrap = find_bwrap()
    if not bwrap:
        raise FileNotFoundError("bwrap (bubblewrap) is not installed")
    cmd = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
           "--die-with-parent", "--new-session", "--cap-add", "CAP_SYS_ADMIN"]
    if os.geteuid() == 0:
        # No user namespace: in one, only uid 0 would be mapped and the kernel could not become nobody, and a
        # kernel running as the host's uid 0 may write host sysctls through a fresh /proc. Kernels cannot make
        # one either: their seccomp filter (grader.sandbox.seccomp) denies it.
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    else:
        cmd += ["--unshare-user", "--disable-userns", "--cap-add", "CAP_SETPCAP"]
    for parent in ("/etc", "/run", "/opt", INSIDE_ROOT, INSIDE_LIB):     # bwrap would make them 0700
        cmd += ["--perms", "0755", "--dir", parent]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        if (Path("/etc") / name).exists():
            cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    cmd += ["--ro-bind", str(lib / "etc" / "passwd"), "/etc/passwd",
            "--ro-bind", str(lib / "etc" / "group"), "/etc/group"]
    if (lib / SECCOMP_FILE).is_file():
        cmd += ["--ro-bind", str(lib / SECCOMP_FILE), SECCOMP_PATH]
    exclude = [p.resolve() for p in hide]
    roots = list(dict.fromkeys(python_roots(exclude) + [r for r in extra_roots if r]))
    package_home = PACKAGE.parent.resolve()
    # The checkout (solutions, tests) or, for an installed grader, the package itself (verification, answer keys)
    covered = package_home if (package_home / "solutions").is_dir() or (package_home / ".git").exists() else PACKAGE
    cmd += layout(roots, exclude + [covered])
    cmd += ["--ro-bind", str(lib / "grader"), f"{INSIDE_LIB}/grader"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--dir", INSIDE_BOX, "--bind", str(logs), INSIDE_LOGS]
    if gpus:
        for node in sorted(Path("/dev").glob("nvidia*")):
            cmd += ["--dev-bind", str(node), str(node)]
        if Path("/sys").is_dir():
            cmd += ["--ro-bind", "/sys", "/sys"]
    cmd += ["--remount-ro", "/", "--chdir", "/", "--clearenv"]
    if probe:
        from grader.sandbox.preflight import require

        require(cmd, roots)
    return cmd


def interpreter_roots(kernel_argv0: str) -> list[str]:
    """For a kernel whose interpreter is not the grader's: its installation (bin/..) and a venv's base."""
    real = Path(os.path.realpath(shutil.which(kernel_argv0) or kernel_argv0))
    roots = [str(real.parent.parent)]
    cfg = Path(kernel_argv0).resolve().parent.parent / "pyvenv.cfg"
    if cfg.is_file():
        roots.append(str(Path(kernel_argv0).parent.parent.resolve()))
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                roots.append(str(Path(value.strip()).resolve().parent))
    return [r for r in roots if r not in ("/", "/usr") and not Path(r).is_relative_to("/usr")]
