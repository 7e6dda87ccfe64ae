#!/usr/bin/env bash
# Run every CUDA path of the course on one GPU, in under 8 minutes, and write a summary.
#
#   scripts/gpu_check.sh                        # from anywhere; works in the repository that holds this script
#   OUT=/some/folder scripts/gpu_check.sh
#   scripts/gpu_check.sh --kit _build/gpu-kit   # on a lent GPU machine: no network, its own PyTorch (see below)
#   scripts/gpu_check.sh --steps grade,bench    # only these steps (a rerun of the ones that failed)
#
# Steps (each under its own time limit; a failed step is reported and the others still run):
#   chapters   the timing chapters 7, 9 and 10 executed on CUDA (nbclient), the executed notebooks kept
#   grade      sample ps5 and ps6 classes graded with --gpus all, side by side: ps5's hidden test times a real
#              CUDA kernel (diagnose_perf.gpu_spin_module), ps6 checks masks where SDPA and nn.MultiheadAttention
#              take their CUDA kernels (rows with no visible key), in the sandbox with the GPU's device nodes
#   bench      python -m grader bench --sections attention: the race at full size on the GPU
#   tests      the tests that take another path with CUDA (the chapters' classes on CUDA, the real GPU spin, the
#              simulated CUDA restoring the real one, the bench's variants)
# --kit DIR (a kit from scripts/gpu_kit.sh): first installs the kit's wheels offline (--no-index --no-deps) into
# a private venv that sees the machine's own packages (GPU_KIT_ENV, default _build/gpu-kit-env), or, where the
# machine's Python is itself a venv (a venv made from a venv does not see its packages), into that environment
# (read-only: into the private venv, a .pth file adding the machine's packages, and grading without the sandbox,
# which binds only a Python's own folders). The machine's PyTorch is used, whatever its version. Where bwrap is
# not installed, the kit's bubblewrap is used; where none runs, ps5 and ps6 are graded with --no-sandbox and the
# summary says so.
# --install-only (with --kit): install the kit, print the Python to use, run nothing (needs no GPU).
# Writes $OUT/gpu_check_summary.txt (one line per step: PASS/FAIL, seconds, what it saw) and $OUT/gpu_check.log;
# without OUT, into _build/gpu-check/. Exit status: 0 when every step passed, 1 when one failed, 2 when there is
# no CUDA device, a needed package is missing or the kit does not install (nothing is run then).
set -uo pipefail

KIT="" INSTALL_ONLY=0 STEPS="chapters grade bench tests"
while [ $# -gt 0 ]; do
    case $1 in
        --kit) KIT=$(cd "${2:?--kit needs a folder}" && pwd) || exit 2; shift 2 ;;
        --steps) STEPS=${2//,/ }; shift 2 ;;
        --install-only) INSTALL_ONLY=1; shift ;;
        -h|--help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for name in $STEPS; do
    case $name in chapters|grade|bench|tests) ;; *) echo "gpu_check: no step $name" >&2; exit 2 ;; esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$REPO/_build/gpu-check}
mkdir -p "$OUT/chapters"
SUMMARY=$OUT/gpu_check_summary.txt
LOG=$OUT/gpu_check.log
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
: >"$SUMMARY"
: >"$LOG"
KIT_LIMIT=40      # seconds for the kit's venv and install; with the steps' limits, under 8 minutes

# install_kit: the kit's wheels, offline, where $PYTHON's packages (its PyTorch) stay visible. Prints three lines:
# the Python that sees both, where it installed, and why the sandbox cannot be used (empty when it can).
install_kit() {
    local env=${GPU_KIT_ENV:-$REPO/_build/gpu-kit-env} site_dir
    # pip from the machine's Python, run for the target's (pip --python): a venv made here holds no pip.
    pip_into() {
        # --no-user: where the target's folder is read-only, pip would otherwise install for the user instead.
        "$PYTHON" -m pip --python "$1" install -q --no-user --no-index --no-deps --no-cache-dir \
            --find-links "$KIT/wheels" -r "$KIT/gpu_kit.lock" >&2
    }
    # Not under /tmp: the sandbox gives kernels a fresh /tmp, over any Python installed there.
    new_venv() { rm -rf "$env" && "$PYTHON" -m venv --system-site-packages --without-pip "$env" >&2; }
    if "$PYTHON" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then
        if ! cmp -s "$KIT/gpu_kit.lock" "$env/gpu_kit.lock"; then     # a rerun reuses it
            new_venv || return 1
        fi
        pip_into "$env/bin/python" || return 1
        cp "$KIT/gpu_kit.lock" "$env/gpu_kit.lock"
        printf '%s\n' "$env/bin/python" "into the private venv $env (--system-site-packages)" ""
    elif pip_into "$PYTHON"; then
        # A venv (the GPU image's is): a venv made from it would see its base's packages, not its own.
        printf '%s\n' "$("$PYTHON" -c 'import sys; print(sys.executable)')" \
            "into the machine's own environment $("$PYTHON" -c 'import sys; print(sys.prefix)') (a venv)" ""
    else
        # That environment took no install (read-only): a private venv that adds its packages by a .pth file.
        echo "gpu_check: the machine's environment took no install; a private venv that adds it instead" >&2
        new_venv || return 1
        site_dir=$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
        "$PYTHON" -c 'import site; print(*(f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()),
                      sep="\n")' >"$site_dir/machine_site_packages.pth" || return 1
        pip_into "$env/bin/python" || return 1
        printf '%s\n' "$env/bin/python" \
            "into the private venv $env, which adds the machine's read-only environment by a .pth file" \
            "the sandbox binds a Python's own folders, not those a .pth file adds (the machine's PyTorch)"
    fi
}

# ---------------------------------------------------------------------------------------------- preconditions
if [ $INSTALL_ONLY -eq 0 ] && ! "$PYTHON" - <<'EOF' 2>>"$LOG"
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu_check: PyTorch is not installed for this Python (python -m pip install -r requirements.txt)")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}) "
             "sees no GPU. This script checks the course's GPU paths and needs one; on a machine without a GPU "
             "the ordinary test suite covers the CPU paths")
print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
then
    tail -n 1 "$LOG" >&2
    echo "gpu_check: REFUSED (no CUDA), nothing was run" >>"$SUMMARY"
    exit 2
fi
if [ -n "$KIT" ]; then
    started=$SECONDS
    export KIT REPO PYTHON
    if ! installed=$(timeout --kill-after=5 "$KIT_LIMIT" bash -c "$(declare -f install_kit); install_kit" \
            2>>"$LOG"); then
        echo "gpu_check: the kit in $KIT did not install (see $LOG), nothing was run" | tee -a "$SUMMARY" >&2
        tail -n 5 "$LOG" >&2
        exit 2
    fi
    PYTHON=$(sed -n 1p <<<"$installed")
    NO_SANDBOX_BECAUSE=$(sed -n 3p <<<"$installed")
    printf '%-9s %-30s %4ds  %s wheels installed %s\n' kit PASS $((SECONDS - started)) \
        "$(grep -c '^[A-Za-z0-9]' "$KIT/gpu_kit.lock")" "$(sed -n 2p <<<"$installed")" >>"$SUMMARY"
fi
# The sandbox for grading: the machine's bwrap, else the kit's (through the system's dynamic loader, with the
# libraries it brought; BWRAP_FROM_KIT=1 prefers it, to test it), else none. Probed before it is trusted.
GRADE_SANDBOX=""
if { [ "${BWRAP_FROM_KIT:-0}" = 1 ] || ! command -v bwrap >/dev/null; } \
        && [ -n "$KIT" ] && [ -f "$KIT/bubblewrap/usr/bin/bwrap" ]; then
    mkdir -p "$WORK/bin"
    libs=$KIT/bubblewrap/lib/x86_64-linux-gnu:$KIT/bubblewrap/usr/lib/x86_64-linux-gnu
    printf '#!/bin/sh\nexec /lib64/ld-linux-x86-64.so.2 --library-path "%s" "%s" "$@"\n' \
        "$libs" "$KIT/bubblewrap/usr/bin/bwrap" >"$WORK/bin/bwrap"
    chmod +x "$WORK/bin/bwrap"
    export PATH="$WORK/bin:$PATH"
fi
if [ -n "${NO_SANDBOX_BECAUSE:-}" ]; then
    GRADE_SANDBOX="--no-sandbox" why=$NO_SANDBOX_BECAUSE
elif ! command -v bwrap >/dev/null; then
    GRADE_SANDBOX="--no-sandbox" why="bubblewrap is not installed and no kit brought it"
elif ! why=$(bwrap --unshare-pid --unshare-net --ro-bind / / --proc /proc --dev /dev true 2>&1); then
    GRADE_SANDBOX="--no-sandbox" why="bubblewrap ($(command -v bwrap)) does not run here: $why"
fi
if [ -n "$GRADE_SANDBOX" ]; then
    echo "sandbox: NONE: ps5 and ps6 are graded with --no-sandbox, so the GPU's device nodes are not tested" \
         "inside it; $why" >>"$SUMMARY"
else
    echo "sandbox: bubblewrap $(bwrap --version 2>&1 | awk '{print $2}') ($(command -v bwrap))" >>"$SUMMARY"
fi
if [ $INSTALL_ONLY -eq 1 ]; then
    cat "$SUMMARY" >&2
    echo "$PYTHON"
    exit 0
fi
missing=$("$PYTHON" -c '
import importlib.util
need = ["nbclient", "nbformat", "jupytext", "ipykernel", "nbgrader", "pytest", "matplotlib", "yaml"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))')
if [ -n "$missing" ]; then
    echo "gpu_check: missing Python packages: $missing (python -m pip install -r requirements.txt," \
         "or --kit DIR from scripts/gpu_kit.sh)" | tee -a "$SUMMARY" >&2
    exit 2
fi
"$PYTHON" - >>"$SUMMARY" <<'EOF'
import sys
import torch
# The newest PyTorch API the course calls is SDPA's enable_gqa (2.5; ps6, chapter 11); the rest is older.
try:
    kv = torch.zeros(1, 1, 1, 4)
    torch.nn.functional.scaled_dot_product_attention(torch.zeros(1, 2, 1, 4), kv, kv, enable_gqa=True)
    floor = ""
except TypeError:
    floor = " (older than 2.5: its SDPA has no enable_gqa, which ps6 and chapter 11 call)"
print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}{floor}, CUDA {torch.version.cuda}, "
      f"Python {sys.version.split()[0]} at {sys.executable}")
EOF

failed=0
export PYTHON OUT WORK GRADE_SANDBOX
# step NAME SECONDS COMMAND...: run it (a program or a function of this script) with a time limit, log its
# output, write one summary line. The limits add up to under 8 minutes.
step() {
    local name=$1 limit=$2
    shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    local started=$SECONDS
    echo "=== $name (limit ${limit}s): $*" >>"$LOG"
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >>"$LOG" 2>&1
    local rc=$? verdict=PASS
    if [ $rc -ne 0 ]; then
        verdict=FAIL failed=1
        [ $rc -eq 124 ] && verdict="FAIL (past its ${limit}s limit)"
    fi
    printf '%-9s %-30s %4ds  exit %d\n' "$name" "$verdict" $((SECONDS - started)) "$rc" >>"$SUMMARY"
    echo "gpu_check: $name: $verdict ($((SECONDS - started)) s)"
}

# ------------------------------------------------------------------------------------------ 1. timing chapters
run_chapters() {
    "$PYTHON" - "$OUT/chapters" <<'EOF'
import re
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

out = Path(sys.argv[1])
for name in ("07_bug_clinic_9216", "09_performance_lab", "10_checklist"):
    notebook = jupytext.read(f"book/{name}.md", fmt="md:myst")
    # The chapters run in book/, as in the build; a cell error (other than one tagged raises-exception) stops it.
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": "book"}}).execute()
    nbformat.write(notebook, out / f"{name}.ipynb")
    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    on_cuda = re.findall(r".*\bcuda\b.*", text)
    if not on_cuda:
        sys.exit(f"{name}: ran, but no output line says cuda: the chapter did not take its GPU path")
    print(f"{name}: executed on CUDA; {len(on_cuda)} output lines name it, e.g. {on_cuda[0].strip()[:120]}")
EOF
}
export -f run_chapters
step chapters 165 run_chapters

# ------------------------------------------------------------------------------------ 2. grading with --gpus
grade_with_gpus() {
    local pids=() ps
    [ -n "$GRADE_SANDBOX" ] && echo "grading without the sandbox ($GRADE_SANDBOX): see the summary's sandbox line"
    for ps in ps5 ps6 ; do
        "$PYTHON" samples/make_class.py "$ps" --dest "$WORK/$ps-class" || return 1
        "$PYTHON" -m grader grade "$ps" "$WORK/$ps-class" --out "$WORK/grade-$ps" --gpus all --jobs 4 \
            $GRADE_SANDBOX > "$WORK/grade-$ps.log" 2>&1 &
        pids+=($!)
    done
    local rc=0 pid
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    cat "$WORK/grade-ps5.log" "$WORK/grade-ps6.log"
    [ $rc -eq 0 ] || return 1
    cp "$WORK/grade-ps5/grades.csv" "$OUT/ps5_grades.csv"
    cp "$WORK/grade-ps6/grades.csv" "$OUT/ps6_grades.csv"
    # ada solved everything (ps5's GPU timing, ps6's masks on CUDA): full marks, status graded, in both.
    "$PYTHON" - "$WORK/grade-ps5/grades.csv" "$WORK/grade-ps6/grades.csv" <<'EOF'
import csv, sys
ok = True
for path in sys.argv[1:]:
    ada = {r["student_id"]: r for r in csv.DictReader(open(path))}["ada"]
    print(ada["assignment"], "ada:", ada["status"], ada["score"], "/", ada["max_score"], ada["message"][:200])
    ok = ok and ada["status"] == "graded" and float(ada["score"]) == float(ada["max_score"])
sys.exit(0 if ok else 1)
EOF
}
export -f grade_with_gpus
step grade 105 grade_with_gpus

# ------------------------------------------------------------------------------------------ 3. the bench race
step bench 75 "$PYTHON" -m grader bench --sections attention --repeats 10 --out "$WORK/bench"
[ -f "$WORK/bench/results.md" ] && cp "$WORK/bench/results.md" "$OUT/bench_attention.md"

# ---------------------------------------------------------------------------------- 4. tests with a CUDA path
step tests 75 "$PYTHON" -m pytest -q -p no:cacheprovider -m "not slow and not browser" \
    tests/test_book_preface_and_heads.py tests/test_book_splitting_and_projection.py tests/test_bench.py \
    "tests/test_exercises_ps45.py::test_simulated_cuda_behaves_like_an_asynchronous_gpu" \
    "tests/test_exercises_ps45.py::test_gpu_spin_keeps_a_real_gpu_busy_asynchronously"

echo "total ${SECONDS}s" >>"$SUMMARY"
cat "$SUMMARY"
exit $failed
