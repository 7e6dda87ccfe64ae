"""What the GPU kit holds, written once: the packages scripts/gpu_check.sh needs beyond the GPU machine's image.

The lent GPU machines run CPython 3.12 on manylinux x86-64 with a CUDA build of PyTorch already installed
(scripts/gpu_image_packages.txt lists what else is there) and reach no network. The kit carries the rest as
wheels: the notebook stack (nbclient, nbformat, jupytext, ipykernel) and nbgrader with what its grading path
imports. nbgrader also requires its web front end (JupyterLab, Notebook, the server's terminals and event schemas):
about 45 MiB of wheels (JupyterLab, babel, Notebook, debugpy, jedi) that the check never imports, so they are left out
(``LEFT_OUT``) and the kit is installed with ``--no-deps``: the lock itself is the whole closure.

    python scripts/gpu_kit_lock.py relock     # resolve again from PyPI (network), rewrite scripts/gpu_kit.lock

The lock pins every wheel with its sha256 (``pip download --require-hashes`` checks them); the top-level pins are
requirements.txt's, so the GPU machine runs the versions CI runs.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "scripts" / "gpu_kit.lock"
IMAGE = REPO / "scripts" / "gpu_image_packages.txt"
# What the check imports that the image lacks (pins come from requirements.txt).
TOP = ("nbgrader", "nbclient", "nbconvert", "nbformat", "ipykernel", "jupytext", "sqlalchemy", "nh3")
# Requirements of the kit's packages that nothing the check runs imports; their own requirements drop out with
# them. jupyter-server itself stays: nbgrader.apps imports its handlers' module.
LEFT_OUT = {
    "jupyterlab": "nbgrader's lab extension: a web front end",
    "notebook": "nbgrader's classic extension: a web front end",
    "jupyterlab-server": "JupyterLab's server (with babel's 10 MiB of locales)",
    "jupyter-server-terminals": "terminals in the web server",
    "terminado": "terminals in the web server",
    "argon2-cffi": "password hashing for the web server's login",
    "send2trash": "the web server's file deletion",
    "jupyter-events": "the web server's event schemas",
    "overrides": "decorators of the web server's classes, imported by its app only",
    "websocket-client": "the web server's gateway client",
    "debugpy": "ipykernel's debugger (off unless a front end asks for it)",
    "jedi": "IPython's tab completion",
}
# The wheels' platform: the GPU machine's Python (3.12.3, glibc 2.39) takes any of these.
PLATFORM_ARGS = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                 "--abi", "abi3", "--abi", "none", "--platform", "manylinux2014_x86_64", "--platform",
                 "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64"]
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def normalize(name: str) -> str:
    """PyPI's normal form of a distribution name (PEP 503): 'SQLAlchemy' -> 'sqlalchemy', 'nest_asyncio2' alike."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    """The normalised names scripts/gpu_image_packages.txt lists (what the GPU image already holds)."""
    return {normalize(line) for line in IMAGE.read_text().splitlines() if line.strip() and not line.startswith("#")}


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{normalised name: version} of the lock's ``name==version --hash=...`` lines."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def top_pins() -> list[str]:
    """``name==version`` for each of TOP, as requirements.txt pins it. Raises KeyError for one it does not pin."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", line.strip())
        if m:
            pins[normalize(m.group(1))] = f"{m.group(1)}=={m.group(2)}"
    return [pins[name] for name in TOP]


def wheel_requires(wheels: dict[str, Path]):
    """A `requires` for ``needed``: the Requires-Dist lines of the wheel of each name in `wheels` ({name: path})."""
    def requires(name: str) -> list[str]:
        with zipfile.ZipFile(wheels[name]) as wheel:
            meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            lines = wheel.read(meta).decode().splitlines()
        return [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    return requires


def needed(requires, skip: set[str]) -> dict[str, list[str]]:
    """The closure of TOP over `requires` (name -> its Requires-Dist strings), markers evaluated for the GPU
    machine with the extras a requirement names (``bleach[css]``), not entering `skip`: {name: its requirers}."""
    from packaging.requirements import Requirement

    via: dict[str, list[str]] = {name: [] for name in TOP}
    extras: dict[str, set[str]] = {name: set() for name in TOP}
    todo = list(TOP)
    while todo:
        name = todo.pop()
        for line in requires(name):
            req = Requirement(line)
            dep = normalize(req.name)
            wanted = req.marker is None or any(req.marker.evaluate({**MARKER_ENV, "extra": extra})
                                               for extra in {"", *extras[name]})
            if not wanted or dep in skip:
                continue
            if dep not in via or not set(req.extras) <= extras[dep]:
                via.setdefault(dep, [])
                extras[dep] = extras.get(dep, set()) | set(req.extras)
                todo.append(dep)
            via[dep].append(name)
    return via


def relock() -> None:
    """Resolve TOP for the GPU machine's platform from PyPI and rewrite the lock (names, versions, sha256)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", *PLATFORM_ARGS, "-d", tmp, *top_pins()],
                       check=True)
        wheels = {normalize(p.name.split("-")[0]): p for p in Path(tmp).glob("*.whl")}
        image = image_packages()
        via = needed(wheel_requires(wheels), skip=set(LEFT_OUT) | image)
        lines = ["# The GPU kit: wheels for CPython 3.12 manylinux x86-64 that scripts/gpu_check.sh needs beyond the",
                 "# GPU image (scripts/gpu_image_packages.txt). Written by `python scripts/gpu_kit_lock.py relock`;",
                 "# scripts/gpu_kit.sh downloads exactly these (--require-hashes), gpu_check.sh --kit installs them",
                 "# with --no-deps. Left out on purpose: " + ", ".join(sorted(LEFT_OUT)) + " (see gpu_kit_lock.py)."]
        for name in sorted(via):
            path = wheels[name]
            version = path.name.split("-")[1]
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            lines += [f"{name}=={version} --hash=sha256:{digest}",
                      f"    # via {', '.join(sorted(set(via[name]))) or 'the check itself'}"]
        LOCK.write_text("\n".join(lines) + "\n")
        print(f"{LOCK.relative_to(REPO)}: {len(via)} packages")


if __name__ == "__main__":
    if sys.argv[1:] != ["relock"]:
        sys.exit(__doc__)
    relock()
