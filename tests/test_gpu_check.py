"""scripts/gpu_check.sh, the one command that runs every CUDA path, and scripts/gpu_kit.sh, the kit that carries
what it needs onto a lent GPU machine: what can be checked without a GPU.

Its GPU steps run only where CUDA is (a session lent a GPU runs the script itself); here: it parses, its Python
parts compile, what it names exists, the book's teaching part names it, and without CUDA it refuses at once, saying why; the
kit's lock covers what the check imports, its size limits hold, it installs offline where the machine's PyTorch
stays visible, and the kit's bubblewrap (or none) is chosen for grading.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_script_parses_and_its_python_compiles():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = SCRIPT.read_text()
    snippets = re.findall(r"<<'EOF'[^\n]*\n(.*?)\nEOF\n", text, re.S)
    assert len(snippets) == 4, "expected the CUDA check, the device line, the chapter runner and the grades check"
    for snippet in snippets:
        compile(snippet, str(SCRIPT), "exec")


def test_everything_the_script_names_exists():
    text = SCRIPT.read_text()
    for chapter in re.findall(r'"(\d\d_[a-z0-9_]+)"', text):
        assert (REPO / "book" / f"{chapter}.md").is_file(), chapter
    assert set(re.findall(r'"(\d\d)_', text)) == {"07", "09", "10"}, "the timing chapters are 7, 9 and 10"
    for path, test in re.findall(r"(tests/test_\w+\.py)(?:::(\w+))?", text):
        assert (REPO / path).is_file(), path
        if test:
            assert re.search(rf"^def {test}\(", (REPO / path).read_text(), re.M), f"{path}::{test} is gone"
    assert (REPO / "samples" / "make_class.py").is_file()
    for ps in re.findall(r"^    for ps in ((?:ps\d )+)", text, re.M)[0].split():
        assert (REPO / "solutions" / ps / f"{ps}.ipynb").is_file(), ps
    limits = [int(n) for n in re.findall(r"^step \w+ (\d+) ", text, re.M)]
    limits.append(int(re.search(r"^KIT_LIMIT=(\d+)", text, re.M)[1]))        # the kit's install, with --kit
    # 20 s left for what runs outside the steps (two imports of torch, the sandbox probe)
    assert len(limits) == 5 and sum(limits) <= 8 * 60 - 20, f"limits {limits} must add up to under 8 minutes"


def test_the_teaching_part_names_the_gpu_check():
    page = (REPO / "book" / "teaching" / "site.md").read_text()
    assert re.search(r"Running the GPU checks.*scripts/gpu_check\.sh", page, re.S)


def test_without_cuda_it_refuses_and_runs_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path)}  # no GPU, even on a machine with one
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: no CUDA device" in proc.stderr and "needs one" in proc.stderr
    assert "REFUSED" in (tmp_path / "gpu_check_summary.txt").read_text()
    assert not list((tmp_path / "chapters").iterdir()), "a step ran without CUDA"


# ------------------------------------------------------------------------------------------------- the GPU kit
# The kit (scripts/gpu_kit.sh) carries what the check needs onto a lent GPU machine: Python 3.12 with its own CUDA
# PyTorch, no network, no bubblewrap. What can be checked here: the lock, the size limits, the offline install
# (with a wheel built here for this machine's Python) and the choice of sandbox.

KIT_SCRIPT = REPO / "scripts" / "gpu_kit.sh"
_spec = importlib.util.spec_from_file_location("gpu_kit_lock", REPO / "scripts" / "gpu_kit_lock.py")
gpu_kit_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_kit_lock)
# Imported somewhere in what the check runs, but only on paths it does not take.
NOT_IN_CHECK = {"dask": "grade --cluster only", "distributed": "grade --cluster only",
                "playwright": "the browser tests, which the check deselects (-m 'not browser')"}
# A Python that is not a venv, as on a machine; what the kit installs goes into a venv made from it.
BASE_PYTHON = Path(sys.base_exec_prefix) / "bin" / "python3"
CHECKED_TESTS = ("conftest", "test_book_preface_and_heads", "test_book_splitting_and_projection", "test_bench", "test_exercises_ps45")


def test_the_lock_pins_every_wheel_by_hash_and_never_torch_or_what_the_image_has():
    text = gpu_kit_lock.LOCK.read_text()
    pins = gpu_kit_lock.read_lock()
    entries = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert len(entries) == len(pins) > 10
    for line in entries:
        assert re.fullmatch(r"[a-z0-9-]+==[\w.+!-]+ --hash=sha256:[0-9a-f]{64}", line), line
    image = gpu_kit_lock.image_packages()
    assert {"torch", "triton", "numpy", "pytest", "matplotlib"} <= image, "the image list lost what the check uses"
    assert not [n for n in pins if n in ("torch", "triton") or n.startswith("nvidia-")], "the machine's own CUDA"
    assert not set(pins) & image, "a package the GPU image already has (a second version stops the install)"
    assert not set(pins) & set(gpu_kit_lock.LEFT_OUT)
    # Each pin past the top-level ones says which pinned package needs it.
    vias = dict(re.findall(r"^([a-z0-9-]+)==.*\n    # via (.*)$", text, re.M))
    assert set(vias) == set(pins)
    for name, via in vias.items():
        if name not in gpu_kit_lock.TOP:
            assert via != "the check itself" and set(via.split(", ")) <= set(pins), (name, via)


def test_the_kit_runs_the_versions_ci_runs():
    pins = gpu_kit_lock.read_lock()
    for pin in gpu_kit_lock.top_pins():           # requirements.txt's pins
        name, version = pin.split("==")
        assert pins[gpu_kit_lock.normalize(name)] == version, f"{pin}: relock (python scripts/gpu_kit_lock.py relock)"


def _imports(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _code(notebook) -> str:
    return "\n".join("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
                     for cell in notebook.cells if cell.cell_type == "code")


def test_every_package_the_check_imports_is_in_the_kit_or_on_the_gpu_image():
    text = SCRIPT.read_text()
    modules = set()
    for path in [*(REPO / "grader").rglob("*.py"), REPO / "samples" / "make_class.py",
                 REPO / "book" / "attention_variants.py"]:
        modules |= _imports(path.read_text())
    for page in (REPO / "book").glob("*.md"):    # the timing chapters run; the tests run others' definitions
        modules |= _imports(_code(jupytext.read(page, fmt="md:myst")))
    for ps in re.findall(r"^    for ps in ((?:ps\d )+)", text, re.M)[0].split():     # what the kernels run
        modules |= _imports(_code(nbformat.read(REPO / "solutions" / ps / f"{ps}.ipynb", as_version=4)))
    assert set(re.findall(r"tests/(test_\w+)\.py", text)) <= set(CHECKED_TESTS)
    todo, local = list(CHECKED_TESTS), set()
    while todo:                                   # the test files and the helpers they import from tests/
        name = todo.pop()
        if name not in local:
            local.add(name)
            found = _imports((REPO / "tests" / f"{name}.py").read_text())
            modules |= found
            todo += [m for m in found if (REPO / "tests" / f"{m}.py").is_file()]
    distributions = importlib.metadata.packages_distributions()
    covered = set(gpu_kit_lock.read_lock()) | gpu_kit_lock.image_packages() | set(NOT_IN_CHECK)
    third_party = {m for m in modules - local - set(sys.stdlib_module_names) - {"grader", "attention_variants"}
                   if not (REPO / "tests" / m).is_dir()}
    assert {"nbgrader", "nbclient", "ipykernel", "torch", "ipywidgets"} <= third_party, "the scan found too little"
    for module in sorted(third_party):
        names = {gpu_kit_lock.normalize(d) for d in distributions.get(module, [module])}
        assert names & covered, f"the check imports {module} ({names}): neither the kit nor the GPU image has it"


def _run_kit(*args, **env):
    return subprocess.run([str(KIT_SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_the_size_check_fails_a_kit_over_60_mib_or_one_that_would_not_travel(tmp_path):
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "wheel.whl").write_bytes(b"x" * 2**20)
    proc = _run_kit("--check-size", str(kit))
    assert proc.returncode == 0 and "kit is 1.0 MiB (limit 60 MiB)" in proc.stdout, proc.stdout + proc.stderr
    os.truncate(kit / "wheel.whl", 61 * 2**20)       # sparse: 61 MiB as du --apparent-size counts, no disk used
    proc = _run_kit("--check-size", str(kit))
    assert proc.returncode == 1 and "the kit is over 60 MiB" in proc.stderr, proc.stdout + proc.stderr
    tree = subprocess.run("git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s --",
                          shell=True, cwd=REPO, capture_output=True, text=True).stdout.split()
    os.truncate(kit / "wheel.whl", 64 * 2**20 - sum(map(int, tree)) + 2**20)
    assert (kit / "wheel.whl").stat().st_size <= 60 * 2**20, "the tree grew: this case no longer fits the kit limit"
    proc = _run_kit("--check-size", str(kit))
    assert proc.returncode == 1 and "pass the 64 MiB a device run carries" in proc.stderr, proc.stdout + proc.stderr


def test_kit_script_parses_and_its_default_folder_is_ignored():
    proc = subprocess.run(["bash", "-n", str(KIT_SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^KIT=\$\{1:-\$REPO/_build/gpu-kit\}$", KIT_SCRIPT.read_text(), re.M)
    for path in ("_build/gpu-kit/wheels/a.whl", "_build/gpu-kit-env/bin/python"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path}: the kit and its venv must never be committed"


@pytest.fixture(scope="module")
def wheel_kit(tmp_path_factory):
    """A kit of one wheel built here for this machine's Python (no network), locked by its hash."""
    root = tmp_path_factory.mktemp("kit")
    src = root / "src"
    (src / "gpukit_probe").mkdir(parents=True)
    (src / "gpukit_probe" / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\n'
                                        'build-backend = "setuptools.build_meta"\n'
                                        '[project]\nname = "gpukit-probe"\nversion = "1.0"\n')
    kit = root / "kit"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(kit / "wheels"), str(src)], check=True, capture_output=True, timeout=120)
    wheel = next((kit / "wheels").glob("*.whl"))
    digest = subprocess.run(["sha256sum", str(wheel)], capture_output=True, text=True).stdout.split()[0]
    (kit / "gpu_kit.lock").write_text(f"# a test kit\ngpukit-probe==1.0 --hash=sha256:{digest}\n")
    return kit


def _install_only(kit, tmp_path, python, **env):
    return subprocess.run([str(SCRIPT), "--kit", str(kit), "--install-only"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": str(python),
                                            "GPU_KIT_ENV": str(tmp_path / "env"), **env})


def _where_probe(python) -> str:
    return subprocess.run([str(python), "-c", "import gpukit_probe; print(gpukit_probe.__file__)"],
                          capture_output=True, text=True).stdout.strip()


def test_the_kit_installs_offline_into_a_private_venv_that_sees_the_machines_packages(wheel_kit, tmp_path):
    base = BASE_PYTHON
    proc = _install_only(wheel_kit, tmp_path, base)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env_python = tmp_path / "env" / "bin" / "python"
    assert proc.stdout.strip().splitlines()[-1] == str(env_python)
    assert _where_probe(env_python).startswith(str(tmp_path / "env")), "the kit's wheel is not in the private venv"
    assert _where_probe(base) == "", "the machine's own Python was changed"
    # pip ran from the venv: the machine's packages (its pip, its PyTorch) stay visible there.
    assert "include-system-site-packages = true" in (tmp_path / "env" / "pyvenv.cfg").read_text()
    summary = (tmp_path / "out" / "gpu_check_summary.txt").read_text()
    assert re.search(r"^kit +PASS +\d+s +1 wheels installed into the private venv", summary, re.M), summary


def test_where_the_machines_python_is_a_venv_the_kit_goes_into_it(wheel_kit, tmp_path):
    machine = tmp_path / "machine"        # like the GPU image's /opt/torch/.venv
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(machine)],
                   check=True, timeout=60)
    proc = _install_only(wheel_kit, tmp_path, machine / "bin" / "python")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _where_probe(machine / "bin" / "python").startswith(str(machine))
    assert not (tmp_path / "env").exists()
    assert "installed into the machine's own environment" in (tmp_path / "out" / "gpu_check_summary.txt").read_text()


def test_where_the_machines_venv_is_read_only_a_private_venv_adds_it_and_grading_goes_without_sandbox(
        wheel_kit, tmp_path):
    machine = tmp_path / "machine"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(machine)],
                   check=True, timeout=60)
    site_dir = subprocess.run([str(machine / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                               "'purelib'))"], capture_output=True, text=True).stdout.strip()
    (Path(site_dir) / "machine_only.py").write_text("WHERE = 'the machine'\n")
    assert shutil.which("bwrap"), "bubblewrap (apt: bubblewrap) makes the machine's venv read-only here"
    read_only = ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(machine), str(machine), "--"]
    proc = subprocess.run([*read_only, str(SCRIPT), "--kit", str(wheel_kit), "--install-only"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OUT": str(tmp_path / "out"),
                                                       "PYTHON": str(machine / "bin" / "python"),
                                                       "GPU_KIT_ENV": str(tmp_path / "env")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env_python = tmp_path / "env" / "bin" / "python"
    assert _where_probe(env_python).startswith(str(tmp_path / "env"))
    seen = subprocess.run([str(env_python), "-c", "import machine_only; print(machine_only.WHERE)"],
                          capture_output=True, text=True)
    assert seen.stdout.strip() == "the machine", seen.stderr
    summary = (tmp_path / "out" / "gpu_check_summary.txt").read_text()
    assert "adds the machine's read-only environment by a .pth file" in summary, summary
    assert "sandbox: NONE: ps5 and ps6 are graded with --no-sandbox" in summary and "a .pth file adds" in summary


def test_a_kit_that_does_not_install_stops_the_check(wheel_kit, tmp_path):
    broken = tmp_path / "kit"
    shutil.copytree(wheel_kit, broken)
    (broken / "gpu_kit.lock").write_text("gpukit-probe==2.0\n")       # no such wheel in the kit
    proc = _install_only(broken, tmp_path, BASE_PYTHON)
    assert proc.returncode == 2 and "did not install" in proc.stderr, proc.stdout + proc.stderr


def test_the_kits_bubblewrap_is_used_and_a_broken_one_means_no_sandbox(wheel_kit, tmp_path):
    kit = tmp_path / "kit"
    shutil.copytree(wheel_kit, kit)
    (kit / "bubblewrap" / "usr" / "bin").mkdir(parents=True)
    assert shutil.which("bwrap"), "bubblewrap (apt: bubblewrap) stands in for the kit's here"
    shutil.copy(shutil.which("bwrap"), kit / "bubblewrap" / "usr" / "bin" / "bwrap")   # links this machine's libs
    probe = subprocess.run(["bwrap", "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "--proc", "/proc",
                            "--dev", "/dev", "true"], capture_output=True)
    proc = _install_only(kit, tmp_path, BASE_PYTHON, BWRAP_FROM_KIT="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sandbox = re.search(r"^sandbox: .*", (tmp_path / "out" / "gpu_check_summary.txt").read_text(), re.M)[0]
    assert "/bin/bwrap" in sandbox and "/usr/bin/bwrap" not in sandbox, sandbox       # the kit's, not the machine's
    assert sandbox.startswith("sandbox: bubblewrap" if probe.returncode == 0 else "sandbox: NONE"), sandbox
    (kit / "bubblewrap" / "usr" / "bin" / "bwrap").write_bytes(b"\x7fELF broken")
    proc = _install_only(kit, tmp_path, BASE_PYTHON, BWRAP_FROM_KIT="1")
    summary = (tmp_path / "out" / "gpu_check_summary.txt").read_text()
    assert proc.returncode == 0 and "sandbox: NONE: ps5 and ps6 are graded with --no-sandbox" in summary, summary
    assert "does not run here" in summary


def test_with_a_kit_and_no_cuda_it_refuses_before_installing(wheel_kit, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path), "GPU_KIT_ENV": str(tmp_path / "env")}
    proc = subprocess.run([str(SCRIPT), "--kit", str(wheel_kit)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and "gpu_check: no CUDA device" in proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "env").exists(), "installed the kit without a GPU to use it on"


def test_a_rerun_names_only_steps_that_exist(tmp_path):
    proc = subprocess.run([str(SCRIPT), "--steps", "grade,bogus"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 2 and "gpu_check: no step bogus" in proc.stderr, proc.stdout + proc.stderr
    text = SCRIPT.read_text()
    assert set(re.findall(r"^step (\w+) ", text, re.M)) == set(re.search(r'STEPS="([a-z ]+)"', text)[1].split())
