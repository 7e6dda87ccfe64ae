#!/usr/bin/env bash
# Run every CUDA path of the course on one GPU, in under 8 minutes, and write a summary.
#
#   scripts/gpu_check.sh            # from anywhere; works in the repository that holds this script
#   OUT=/some/folder scripts/gpu_check.sh
#
# Steps (each under its own time limit; a failed step is reported and the others still run):
#   chapters   the timing chapters 7, 9 and 10 executed on CUDA (nbclient), the executed notebooks kept
#   grade      sample ps5 and ps6 classes graded with --gpus all, side by side: ps5's hidden test times a real
#              CUDA kernel (diagnose_perf.gpu_spin_module), ps6 checks masks where SDPA and nn.MultiheadAttention
#              take their CUDA kernels (rows with no visible key), in the sandbox with the GPU's device nodes
#   bench      python -m grader bench --sections attention: the race at full size on the GPU
#   tests      the tests that take another path with CUDA (the chapters' classes on CUDA, the real GPU spin, the
#              simulated CUDA restoring the real one, the bench's variants)
# Writes $OUT/gpu_check_summary.txt (one line per step: PASS/FAIL, seconds, what it saw) and $OUT/gpu_check.log;
# without OUT, into _build/gpu-check/. Exit status: 0 when every step passed, 1 when one failed, 2 when there is
# no CUDA device or a needed package is missing (nothing is run then).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$REPO/_build/gpu-check}
mkdir -p "$OUT/chapters"
SUMMARY=$OUT/gpu_check_summary.txt
LOG=$OUT/gpu_check.log
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
: >"$SUMMARY"
: >"$LOG"

# ---------------------------------------------------------------------------------------------- preconditions
if ! "$PYTHON" - <<'EOF' 2>>"$LOG"
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
missing=$("$PYTHON" -c '
import importlib.util
need = ["nbclient", "nbformat", "jupytext", "ipykernel", "nbgrader", "pytest", "matplotlib", "yaml"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))')
if [ -n "$missing" ]; then
    echo "gpu_check: missing Python packages: $missing (python -m pip install -r requirements.txt)" | tee -a "$SUMMARY" >&2
    exit 2
fi
"$PYTHON" -c 'import torch; print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")' >>"$SUMMARY"

failed=0
export PYTHON OUT WORK
# step NAME SECONDS COMMAND...: run it (a program or a function of this script) with a time limit, log its
# output, write one summary line. The limits add up to under 8 minutes.
step() {
    local name=$1 limit=$2
    shift 2
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
step chapters 180 run_chapters

# ------------------------------------------------------------------------------------ 2. grading with --gpus
grade_with_gpus() {
    local sandbox=() pids=() ps
    if ! command -v bwrap >/dev/null; then
        echo "bubblewrap is missing: grading without the sandbox (--no-sandbox); the GPU nodes are not tested inside it"
        sandbox=(--no-sandbox)
    fi
    for ps in ps5 ps6 ; do
        "$PYTHON" samples/make_class.py "$ps" --dest "$WORK/$ps-class" || return 1
        "$PYTHON" -m grader grade "$ps" "$WORK/$ps-class" --out "$WORK/grade-$ps" --gpus all --jobs 4 \
            "${sandbox[@]}" > "$WORK/grade-$ps.log" 2>&1 &
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
step grade 110 grade_with_gpus

# ------------------------------------------------------------------------------------------ 3. the bench race
step bench 90 "$PYTHON" -m grader bench --sections attention --repeats 10 --out "$WORK/bench"
cp "$WORK/bench/results.md" "$OUT/bench_attention.md" 2>/dev/null

# ---------------------------------------------------------------------------------- 4. tests with a CUDA path
step tests 90 "$PYTHON" -m pytest -q -p no:cacheprovider -m "not slow and not browser" \
    tests/test_book_preface_and_heads.py tests/test_book_splitting_and_projection.py tests/test_bench.py \
    "tests/test_exercises_ps45.py::test_simulated_cuda_behaves_like_an_asynchronous_gpu" \
    "tests/test_exercises_ps45.py::test_gpu_spin_keeps_a_real_gpu_busy_asynchronously"

rm -rf "$WORK"
echo "total ${SECONDS}s" >>"$SUMMARY"
cat "$SUMMARY"
exit $failed
