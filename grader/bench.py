"""``python -m grader bench [--quick] [--out DIR]``: the course's performance claims, measured in one run.

Three sections, each reported as ratios measured side by side (the machines are shared and noisy, so absolute
times move; ratios taken in the same run, round by round, move much less):

1. attention: the performance lab's implementations (book/attention_variants.py, loaded by path: the book's
   code, not part of this package), forward and forward+backward, median and spread, ratio to
   F.scaled_dot_product_attention, the 9216 wrapper against the fixed one, GFLOP/s, peak memory;
2. grading: ``grade --jobs`` against serial ``nbgrader autograde`` (grader/bench_grading.py);
3. book: a cold ``jupyter-book build`` into a fresh folder, then a warm rebuild with nothing changed;
4. cluster: the same class graded with ``--cluster local:1``, ``--cluster local:2`` and ``--jobs 2``: the scaling
   ratio and the cluster's overhead against the thread pool (grader/bench_grading.py, grader/cluster.py).

Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/``; ``benchmarks/quick/`` for
``--quick``, so a smoke run never overwrites the committed full results). ``--update`` replaces only the selected
sections of the results.json already there and keeps the rest; each section measured records its own run. A run
of some sections does so too whenever a results.json is there, so it never erases the committed sections.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.paths import REPO

VARIANTS_FILE = REPO / "book" / "attention_variants.py"
SECTIONS = ("attention", "grading", "book", "cluster")
TARGETS = {
    "best_from_scratch_vs_torch_mha_cpu": 1.5,  # at most, forward, on CPU
    "grading_speedup": 1.8,  # at least, on 2 cores
    "grading_per_notebook_vs_floor": 1.5,  # at most
    "book_cold_s": 600.0,
    "book_warm_s": 30.0,
    "cluster_scaling": 1.7,  # at least: --cluster local:1 / local:2 wall time, on 2 cores at low load
}
# Datasheet FP32 peaks (non-tensor-core; PyTorch keeps TF32 off for float32 matmuls by default), FLOP/s.
GPU_FP32_PEAK = {"H200": 67e12, "H100": 67e12, "A100": 19.5e12, "L40S": 91.6e12, "L4": 30.3e12,
                 "A10G": 31.2e12, "V100": 15.7e12, "T4": 8.1e12}


def load_variants():
    """The book's implementations, imported from their file (book/ is not a package and not installed)."""
    if not VARIANTS_FILE.exists():
        raise FileNotFoundError(f"{VARIANTS_FILE} not found: run the bench from a clone of the course repository")
    spec = importlib.util.spec_from_file_location("attention_variants", VARIANTS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def device_peak(torch, device) -> dict:
    """The ceiling to compare GFLOP/s with: a datasheet FP32 peak for known GPUs; on a CPU, no datasheet is
    known here, so a large square matmul is timed instead (the practical roof for these shapes)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_FP32_PEAK.items():
            if key in name:
                return {"name": name, "peak_gflops": peak / 1e9, "source": "datasheet FP32 (non-tensor-core)"}
        return {"name": name, "peak_gflops": None, "source": "unknown GPU: no datasheet peak recorded"}
    from torch.utils import benchmark

    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = benchmark.Timer("a @ b", globals={"a": a, "b": b}).blocked_autorange(min_run_time=0.5).median
    return {"name": platform.processor() or platform.machine(), "peak_gflops": None,
            "matmul_roof_gflops": round(2 * n ** 3 / seconds / 1e9, 1),
            "source": f"no datasheet peak for this CPU; measured {n}x{n} float32 matmul instead"}


def bench_attention(quick: bool, repeats: int | None, threads: int | None) -> dict:
    import torch

    av = load_variants()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if threads is None and device.type == "cpu":
        # On a shared CPU, two intra-op threads per matmul turn other processes' load into barrier stalls
        # (measured here under load: the same race ~8x slower and far noisier than with one thread).
        threads = 1
    if threads:
        torch.set_num_threads(threads)
    dtype = torch.float32
    if quick:
        cfg, why = av.TINY_CONFIG, "quick mode: tiny sizes, one repeat (checks the code runs, not its speed)"
    elif device.type == "cuda":
        cfg, why = av.FULL_CONFIG, "the historical benchmark's size (GPT-2 small)"
    else:
        cfg, why = av.CPU_CONFIG, ("CPU: one 512-token sequence at GPT-2-small width (the full size takes about "
                                   "2 s per forward on 2 cores)")
    repeats = 1 if quick else (repeats or (30 if device.type == "cuda" else 15))
    min_seconds = 0.0 if quick or device.type == "cpu" else 0.05
    modules = av.build_variants(cfg, device, dtype)
    torch.manual_seed(0)
    x = torch.randn(cfg.batch, cfg.num_tokens, cfg.d_in, device=device, dtype=dtype)

    differences = av.max_differences(modules, x)
    agree = all(d < 1e-4 for d in differences.values())
    buggy_shape = list(modules[av.BUGGY].eval()(x).shape) if av.BUGGY in modules else None

    flops = av.forward_flops(cfg)
    forward_flops = {name: (av.buggy_forward_flops(cfg) if name == av.BUGGY else sum(flops.values()))
                     for name in modules}
    peak = device_peak(torch, device)
    phases, kinds = {}, (("forward", False), ("forward_backward", True))
    # One round-robin over both phases, so a burst of load cannot land on one phase only.
    steps = {(phase, name): av.make_step(m, x, backward) for phase, backward in kinds for name, m in modules.items()}
    both = av.race(steps, repeats=repeats, min_seconds=min_seconds, warmup=1 if quick else 3)
    for phase, backward in kinds:
        timed = {name: both[(phase, name)] for name in modules}
        rows = {}
        for name, t in timed.items():
            work = forward_flops[name] * (3 if backward else 1)  # backward: two matmuls per forward matmul
            gflops = work / t["median_s"] / 1e9
            memory, how = av.peak_memory_bytes(modules[name], x, backward)
            rows[name] = {
                "label": av.VARIANTS[name][0], "from_scratch": av.VARIANTS[name][1],
                "median_ms": t["median_s"] * 1e3, "iqr_ms": t["iqr_s"] * 1e3,
                "samples_ms": [s * 1e3 for s in t["samples_s"]],
                "ratio_to_sdpa": av.paired_ratio(timed, name, av.REFERENCE),
                "gflops": gflops,
                "fraction_of_peak": gflops / peak["peak_gflops"] if peak.get("peak_gflops") else None,
                "fraction_of_matmul_roof": (gflops / peak["matmul_roof_gflops"] if peak.get("matmul_roof_gflops")
                                            else None),
                "peak_memory_mib": memory / 2 ** 20,
            }
        phases[phase] = {"rows": rows, "memory_method": how,
                         "ratio_9216_to_fixed": av.paired_ratio(timed, av.BUGGY, av.FIXED)}
    forward = phases["forward"]["rows"]
    # "From scratch" = the course's own code; the buggy wrapper computes something else, so it is not a contender.
    contenders = [n for n, r in forward.items() if r["from_scratch"] and n != av.BUGGY]
    best = min(contenders, key=lambda n: forward[n]["median_ms"])
    fwd_timed = {n: {"samples_s": r["samples_ms"]} for n, r in forward.items()}
    best_ratio = av.paired_ratio(fwd_timed, best, "torch_mha")
    return {
        "device": str(device), "device_peak": peak, "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "config": cfg.as_dict(), "config_reason": why,
        "repeats": repeats, "forward_gflop": {k: v / 1e9 for k, v in flops.items()},
        "max_abs_difference_to_sdpa": differences, "implementations_agree": agree,
        "buggy_output_shape": buggy_shape, "phases": phases,
        "summary": {
            "ratio_9216_to_fixed_forward": phases["forward"]["ratio_9216_to_fixed"],
            "ratio_9216_to_fixed_forward_backward": phases["forward_backward"]["ratio_9216_to_fixed"],
            "best_from_scratch": best, "best_from_scratch_label": av.VARIANTS[best][0],
            "best_from_scratch_vs_torch_mha": best_ratio,
            "target": TARGETS["best_from_scratch_vs_torch_mha_cpu"],
            "target_met": (best_ratio <= TARGETS["best_from_scratch_vs_torch_mha_cpu"]
                           if device.type == "cpu" and not quick else None),
        },
    }


def bench_grading(quick: bool, jobs: int, workdir: Path) -> dict:
    if importlib.util.find_spec("grader.bench_grading") is None:
        return {"measured": False, "reason": "grader/bench_grading.py (measure_grading) does not exist yet"}
    from grader.bench_grading import measure_grading

    result = measure_grading(n_submissions=20, jobs=jobs, workdir=workdir, quick=quick)
    per_notebook = result["grader_parallel_s"] * result["jobs"] / result["n_submissions"]
    result["per_notebook_core_s"] = per_notebook
    result["per_notebook_vs_floor"] = per_notebook / result["import_torch_s"]
    result["targets"] = {"speedup": TARGETS["grading_speedup"],
                         "per_notebook_vs_floor": TARGETS["grading_per_notebook_vs_floor"]}
    result["speedup_target_met"] = result["speedup"] >= TARGETS["grading_speedup"]
    result["floor_target_met"] = result["per_notebook_vs_floor"] <= TARGETS["grading_per_notebook_vs_floor"]
    return {"measured": True, **result}


def bench_cluster(quick: bool, workdir: Path) -> dict:
    from grader.bench_grading import measure_cluster

    result = measure_cluster(n_submissions=20, workdir=workdir, quick=quick)
    result["target"] = TARGETS["cluster_scaling"]
    # Judged only where it means something: a full run with two cores for the two workers.
    result["target_met"] = (None if quick or result["cores"] < 2
                            else result["ratio_local_1_to_local_2"] >= TARGETS["cluster_scaling"])
    return {"measured": True, **result}


def _build(output: Path, extra: tuple[str, ...] = ()) -> tuple[float, int, str]:
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", *extra, "--path-output", str(output), "."]
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    return time.perf_counter() - started, proc.returncode, (proc.stdout + proc.stderr)[-1500:]


def bench_book(workdir: Path, toc: Path | None = None) -> dict:
    """Cold: a fresh --path-output, so no execution cache and no Sphinx environment. Warm: the same again.
    ``toc`` builds only the pages of another table of contents (to try the section out quickly)."""
    output = workdir / "book"
    shutil.rmtree(output, ignore_errors=True)
    extra = ("--toc", str(toc)) if toc else ()
    cold_s, cold_rc, cold_tail = _build(output, extra)
    warm_s, warm_rc, warm_tail = _build(output, extra)
    result = {"measured": True, "toc": str(toc) if toc else "_toc.yml (the whole book)",
              "cold_s": cold_s, "cold_exit": cold_rc, "warm_s": warm_s, "warm_exit": warm_rc,
              "targets_s": {"cold": TARGETS["book_cold_s"], "warm": TARGETS["book_warm_s"]},
              "cold_target_met": cold_rc == 0 and cold_s < TARGETS["book_cold_s"],
              "warm_target_met": warm_rc == 0 and warm_s < TARGETS["book_warm_s"]}
    if cold_rc or warm_rc:
        result["log_tail"] = cold_tail if cold_rc else warm_tail
    return result


def git_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() or None


def run(quick: bool, sections: list[str], jobs: int, repeats: int | None, workdir: Path,
        threads: int | None = None, command: str = "python -m grader bench", book_toc: Path | None = None,
        explicit: bool = False) -> dict:
    import torch

    started = time.perf_counter()
    results = {
        "quick": quick,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(), "cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()), "git_commit": git_commit(),
        "command": command, "sections": sections,
    }
    skipped = ("skipped in quick mode (select it with --sections)" if quick and not explicit
               else "not selected (--sections)")
    results["attention"] = (bench_attention(quick, repeats, threads) if "attention" in sections
                            else {"measured": False, "reason": skipped})
    results["grading"] = (bench_grading(quick, jobs, workdir / "grading") if "grading" in sections
                          else {"measured": False, "reason": skipped})
    results["book"] = bench_book(workdir, book_toc) if "book" in sections else {"measured": False, "reason": skipped}
    results["cluster"] = (bench_cluster(quick, workdir / "cluster") if "cluster" in sections
                          else {"measured": False, "reason": skipped})
    results["load_average_at_end"] = list(os.getloadavg())
    results["total_s"] = time.perf_counter() - started
    return results


def _fmt(value, digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ceiling(peak: dict) -> str:
    if peak.get("peak_gflops"):
        return f"{peak['peak_gflops']:.0f} GFLOP/s ({peak['source']})"
    if peak.get("matmul_roof_gflops"):
        return f"{peak['matmul_roof_gflops']:.1f} GFLOP/s ({peak['source']})"
    return peak["source"]


def markdown(results: dict) -> str:
    lines = [f"# Benchmark results{' (quick mode: not a measurement of speed)' if results['quick'] else ''}", "",
             f"Run {results['date']}, torch {results['torch']}, Python {results['python']}, {results['cores']} "
             f"cores, load average at start {results['load_average_at_start'][0]:.1f}, commit "
             f"{results['git_commit']}. Command: `{results['command']}`.", ""]
    att = results["attention"]
    if att.get("measured", True):
        cfg = att["config"]
        lines += ["## Attention implementations", "",
                  f"Device {att['device']} ({att['device_peak']['name']}), {att['dtype']}, threads: {att['threads']}; "
                  f"batch {cfg['batch']}, {cfg['num_tokens']} tokens, d_in = d_out = {cfg['d_out']}, "
                  f"{cfg['num_heads']} heads ({att['config_reason']}); median of {att['repeats']} rounds.",
                  f"Implementations agree with SDPA (same weights): {att['implementations_agree']}; "
                  f"the buggy wrapper's output shape: {att['buggy_output_shape']}.", "",
                  "| implementation | forward ms (IQR) | x SDPA | GFLOP/s | fwd+bwd ms (IQR) | x SDPA | "
                  "peak MiB fwd / fwd+bwd |", "|---|---|---|---|---|---|---|"]
        fwd, both = att["phases"]["forward"]["rows"], att["phases"]["forward_backward"]["rows"]
        for name, r in fwd.items():
            b = both[name]
            lines.append(f"| {r['label']} | {_fmt(r['median_ms'])} ({_fmt(r['iqr_ms'])}) | "
                         f"{_fmt(r['ratio_to_sdpa'])} | {_fmt(r['gflops'], 1)} | {_fmt(b['median_ms'])} "
                         f"({_fmt(b['iqr_ms'])}) | {_fmt(b['ratio_to_sdpa'])} | "
                         f"{_fmt(r['peak_memory_mib'], 1)} / {_fmt(b['peak_memory_mib'], 1)} |")
        s = att["summary"]
        lines += ["", f"- 9216 wrapper / fixed wrapper: forward {_fmt(s['ratio_9216_to_fixed_forward'])}x, "
                      f"forward+backward {_fmt(s['ratio_9216_to_fixed_forward_backward'])}x.",
                  f"- Best from-scratch ({s['best_from_scratch_label']}) / nn.MultiheadAttention(need_weights="
                  f"False), forward: {_fmt(s['best_from_scratch_vs_torch_mha'])}x (target <= {s['target']} on "
                  f"CPU: {'met' if s['target_met'] else 'not met' if s['target_met'] is False else 'not judged'}).",
                  f"- Device ceiling: {_ceiling(att['device_peak'])}.",
                  f"- Memory: {att['phases']['forward']['memory_method']}.", ""]
    else:
        lines += ["## Attention implementations", "", f"Not measured: {att['reason']}.", ""]
    grading = results["grading"]
    lines += ["## Grading throughput", ""]
    if grading.get("measured"):
        lines += [f"{grading['n_submissions']} submissions of {grading['assignment']}: serial nbgrader autograde "
                  f"{_fmt(grading['nbgrader_serial_s'], 1)} s, grader grade --jobs {grading['jobs']} "
                  f"{_fmt(grading['grader_parallel_s'], 1)} s: speedup {_fmt(grading['speedup'])}x (target >= "
                  f"{TARGETS['grading_speedup']}). Floor: import torch {_fmt(grading['import_torch_s'])} s per "
                  f"notebook; per notebook per core {_fmt(grading['per_notebook_core_s'])} s = "
                  f"{_fmt(grading['per_notebook_vs_floor'])}x the floor (target <= "
                  f"{TARGETS['grading_per_notebook_vs_floor']}).", ""]
    else:
        lines += [f"Not measured: {grading['reason']}.", ""]
    book = results["book"]
    lines += ["## Book build", ""]
    if book.get("measured"):
        lines += [f"Cold build {_fmt(book['cold_s'], 1)} s (exit {book['cold_exit']}, target < "
                  f"{TARGETS['book_cold_s']:.0f} s), warm rebuild {_fmt(book['warm_s'], 1)} s (exit "
                  f"{book['warm_exit']}, target < {TARGETS['book_warm_s']:.0f} s).", ""]
    else:
        lines += [f"Not measured: {book['reason']}.", ""]
    cluster = results.get("cluster", {"measured": False, "reason": "not a section of this run"})
    lines += ["## Grading on a cluster", ""]
    if cluster.get("measured"):
        runs = cluster["runs"]

        def wall(name: str) -> str:
            return f"{_fmt(runs[name]['wall_s'], 1)} s (start-up {_fmt(runs[name]['startup_s'], 1)} s)"

        judged = {True: "met", False: "not met", None: "not judged"}[cluster["target_met"]]
        grading = {name: run["wall_s"] - (run["startup_s"] or 0) for name, run in runs.items()}
        lines += [f"{cluster['n_submissions']} submissions of {cluster['assignment']}, {cluster['cores']} cores, load "
                  f"average {_fmt(cluster['load_average_before'])} before and {_fmt(cluster['load_average_after'])} "
                  f"after: `--cluster local:1` {wall('cluster_local_1')}, `--cluster local:2` "
                  f"{wall('cluster_local_2')}, thread pool `--jobs 2` {wall('pool_jobs_2')}.",
                  f"Scaling local:1 / local:2: {_fmt(cluster['ratio_local_1_to_local_2'])}x (target >= "
                  f"{cluster['target']} on 2 cores: {judged}); overhead of the cluster, local:2 / --jobs 2: "
                  f"{_fmt(cluster['overhead_local_2_to_jobs_2'])}x; the same grades.csv all three ways: "
                  f"{cluster['same_rows']}. After start-up only: local:1 / local:2 "
                  f"{_fmt(grading['cluster_local_1'] / grading['cluster_local_2'])}x, local:2 / --jobs 2 "
                  f"{_fmt(grading['cluster_local_2'] / grading['pool_jobs_2'])}x.", ""]
    else:
        lines += [f"Not measured: {cluster['reason']}.", ""]
    for section in SECTIONS:
        run = results.get(section, {}).get("run")
        if run:
            lines.append(f"- The {section} section comes from a later run (`--update`): {run['date']}, commit "
                         f"{run['git_commit']}, load average at start {run['load_average_at_start'][0]:.1f}.")
    return "\n".join(lines).rstrip("\n") + "\n"


def read_previous(path: Path, quick: bool) -> dict | str:
    """The results.json that --update adds to, or why it cannot be updated (a message for the command line)."""
    if not path.is_file():
        return f"--update: {path} does not exist; run without --update to write it"
    try:
        previous = json.loads(path.read_text())
    except ValueError as err:
        return f"--update: {path} is not valid JSON ({err}); run without --update to write it anew"
    if previous.get("quick") != quick:
        return (f"--update: {path} holds {'quick' if previous.get('quick') else 'full'} results; a "
                f"{'quick' if quick else 'full'} run cannot be merged into them")
    return previous


def merge(previous: dict, results: dict, sections: list[str]) -> dict:
    """`previous` with the selected sections of `results` in place of its own; each one records the run it came
    from (date, commit, load average), since the file's top-level fields describe the earlier run."""
    merged = dict(previous)
    run = {key: results[key] for key in ("date", "git_commit", "command", "load_average_at_start",
                                         "load_average_at_end")}
    for section in sections:
        merged[section] = {**results[section], "run": run}
    merged["sections"] = [s for s in SECTIONS if s in set(previous.get("sections", [])) | set(sections)]
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run for CI")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.json and results.md (default benchmarks/, quick: benchmarks/quick/)")
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all; quick: attention)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="grading workers")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 15 on CPU, 30 on GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the attention race (default: 1 on CPU, PyTorch's default on GPU)")
    parser.add_argument("--book-toc", type=Path, default=None,
                        help="build only this table of contents in the book section (default: the whole book)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--update", action="store_true",
                        help="replace only the selected sections in the results.json already in --out, keep the "
                             "others (each section measured records its own run)")
    args = parser.parse_args(argv)
    sections = (args.sections or ("attention" if args.quick else ",".join(SECTIONS))).split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    out = args.out or (REPO / "benchmarks" / ("quick" if args.quick else ""))
    previous = None
    # A run of some sections only never erases the others (chapter 9 renders benchmarks/results.json): it adds
    # to the results.json already in --out as --update does, or refuses when it cannot.
    partial = set(sections) != set(SECTIONS) and (out / "results.json").is_file()
    if args.update or partial:
        previous = read_previous(out / "results.json", args.quick)
        if isinstance(previous, str):
            if not args.update:
                previous = (f"--sections {','.join(sections)} would erase the other sections of "
                            f"{out / 'results.json'}, which cannot take this run's: "
                            f"{previous.removeprefix('--update: ')} (give another --out)")
            parser.error(previous)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mha-bench-") as tmp:
        results = run(args.quick, sections, args.jobs, args.repeats, args.workdir or Path(tmp), args.threads,
                      " ".join(["python -m grader bench", *(argv if argv is not None else sys.argv[2:])]),
                      args.book_toc, explicit=args.sections is not None)
    if previous is not None:
        results = merge(previous, results, sections)
        kept = [s for s in SECTIONS if s not in sections and s in previous]
        print(f"kept the earlier {', '.join(kept) or 'nothing'} of {out / 'results.json'}; "
              f"replaced {', '.join(sections)}")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    # Jupyter Book's execution cache is keyed on the code of a page, not on the files it reads.
    print("chapter 9 renders benchmarks/results.json; to see new results there, rebuild without the execution "
          "cache: jupyter-book clean --all . && jupyter-book build .")
    return 0
