"""The benchmark: its implementations compute one function, its work counts are right, and the quick mode runs
end to end and writes every field the performance chapter renders. Nothing here judges speed."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import REPO


@pytest.fixture(scope="module")
def av():
    spec = importlib.util.spec_from_file_location("attention_variants", REPO / "book" / "attention_variants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("d_in,d_out", [(48, 48), (24, 48)])
def test_every_variant_computes_the_reference_function(av, d_in, d_out):
    """Same weights, same output: at d_in != d_out too, where transposed einsum weights would fail (#857)."""
    cfg = av.AttentionConfig(batch=2, num_tokens=20, d_in=d_in, d_out=d_out, num_heads=4)
    names = [n for n in av.VARIANTS if d_in == d_out or not n.startswith("torch_mha")]
    modules = av.build_variants(cfg, "cpu", torch.float64, names=names)
    torch.manual_seed(1)
    x = torch.randn(cfg.batch, cfg.num_tokens, d_in, dtype=torch.float64)
    differences = av.max_differences(modules, x)
    assert set(differences) == set(names) - {av.BUGGY}
    assert all(d < 1e-10 for d in differences.values()), differences
    # Causality: changing the last token must not move any earlier output of any variant.
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        for name, module in modules.items():
            moved = (module(x2) - module(x))[:, :-1].abs().max().item()
            assert moved < 1e-10, f"{name} lets earlier tokens see the last one"


def test_block_causal_is_exact_when_blocks_do_not_divide_the_sequence(av):
    torch.manual_seed(2)
    reference = av.MultiHeadAttention(16, 16, 50, 0.0, 2).double()
    fast = av.copy_weights(reference, av.MultiHeadAttentionBlockCausal(16, 16, 50, 0.0, 2, block_size=7)).double()
    x = torch.randn(3, 45, 16, dtype=torch.float64)
    assert torch.allclose(fast(x), reference(x), atol=1e-12)


def test_full_size_shapes_and_work_match_the_facts(av):
    cfg = av.FULL_CONFIG
    with torch.device("meta"):
        modules = av.build_variants(cfg, "meta", names=("mha", "wrapper_9216"))
        x = torch.empty(cfg.batch, cfg.num_tokens, cfg.d_in)
        with FlopCounterMode(display=False) as counter:
            out = modules["mha"](x)
        assert tuple(out.shape) == (8, 1024, 768)
        assert tuple(modules["wrapper_9216"](x).shape) == (8, 1024, 9216)
    flops = av.forward_flops(cfg)
    assert round(flops["projections"] / 1e9) == 39 and round(flops["attention"] / 1e9) == 26
    # PyTorch's own FLOP counter, over the ops actually dispatched, agrees with the formula.
    assert counter.get_total_flops() == sum(flops.values())
    assert sum(p.numel() for p in modules["mha"].parameters()) == 2_360_064


def test_peak_tensor_bytes_counts_new_tensors_not_existing_ones(av):
    existing = torch.zeros(1000)
    with av.PeakTensorBytes([existing]) as tracker:
        a = torch.ones(256, 256)  # 256 KiB, alive together with b
        b = a * 2
        del a, b
        c = torch.ones(64)  # small, after the peak
        existing.add_(1)  # in place on an existing tensor: no new memory
    assert tracker.peak_bytes == 2 * 256 * 256 * 4
    assert c.numel() == 64


def test_race_returns_median_spread_and_paired_ratios(av):
    steps = {"short": lambda: sum(range(2_000)), "long": lambda: sum(range(200_000))}
    timed = av.race(steps, repeats=3, warmup=1)
    for name in steps:
        assert len(timed[name]["samples_s"]) == 3
        assert timed[name]["iqr_s"] >= 0 and timed[name]["median_s"] > 0
    assert av.paired_ratio(timed, "short", "short") == 1.0


def test_quick_bench_runs_and_writes_every_field(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "grader", "bench", "--quick", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["quick"] is True and results["torch"] == torch.__version__ and results["date"]
    att = results["attention"]
    assert att["implementations_agree"] is True
    cfg = att["config"]
    assert att["buggy_output_shape"] == [cfg["batch"], cfg["num_tokens"], cfg["num_heads"] * cfg["d_out"]]
    for phase in ("forward", "forward_backward"):
        rows = att["phases"][phase]["rows"]
        assert len(rows) == 9
        assert rows["sdpa"]["ratio_to_sdpa"] == 1.0
        for row in rows.values():
            assert row["median_ms"] > 0 and row["iqr_ms"] >= 0 and math.isfinite(row["ratio_to_sdpa"])
            assert row["gflops"] > 0 and row["peak_memory_mib"] >= 0
        assert att["phases"][phase]["ratio_9216_to_fixed"] > 0
    summary = att["summary"]
    assert summary["best_from_scratch"] in rows and rows[summary["best_from_scratch"]]["from_scratch"]
    assert summary["target_met"] is None  # a quick run judges no target
    for section in ("grading", "book", "cluster"):
        assert results[section]["measured"] is False and "quick" in results[section]["reason"]
    table = (tmp_path / "results.md").read_text()
    assert "quick mode" in table and all(row["label"] in table for row in rows.values())


@pytest.mark.slow
def test_quick_cluster_section_grades_three_ways_and_reports_ratios(tmp_path):
    """--sections cluster: the same submissions graded with --cluster local:1, local:2 and --jobs 2 in one run;
    the ratios follow from the wall times recorded beside them, and the three grades.csv agree."""
    proc = subprocess.run([sys.executable, "-m", "grader", "bench", "--quick", "--sections", "cluster", "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    cluster = results["cluster"]
    assert cluster["measured"] is True and cluster["n_submissions"] == 2
    runs = cluster["runs"]
    assert set(runs) == {"cluster_local_1", "cluster_local_2", "pool_jobs_2"}
    for run in runs.values():
        assert 0 < run["startup_s"] < run["wall_s"]
    assert cluster["ratio_local_1_to_local_2"] == round(runs["cluster_local_1"]["wall_s"]
                                                        / runs["cluster_local_2"]["wall_s"], 2)
    assert cluster["overhead_local_2_to_jobs_2"] == round(runs["cluster_local_2"]["wall_s"]
                                                          / runs["pool_jobs_2"]["wall_s"], 2)
    assert cluster["same_rows"] is True and cluster["statuses"] == ["graded"]
    assert cluster["load_average_before"] >= 0 and cluster["target_met"] is None   # quick: not judged
    table = (tmp_path / "results.md").read_text()
    assert f"Scaling local:1 / local:2: {cluster['ratio_local_1_to_local_2']:.2f}x" in table
    assert f"local:2 / --jobs 2: {cluster['overhead_local_2_to_jobs_2']:.2f}x" in table


def test_update_replaces_only_the_selected_sections(tmp_path):
    from grader.bench import markdown, merge, read_previous

    previous = {"quick": False, "date": "then", "git_commit": "aaa", "torch": "t", "python": "p", "cores": 2,
                "load_average_at_start": [0.3, 0, 0], "command": "full", "sections": ["attention", "grading"],
                "attention": {"measured": False, "reason": "kept"}, "grading": {"measured": False, "reason": "old"},
                "book": {"measured": False, "reason": "old"}, "cluster": {"measured": False, "reason": "old"}}
    (tmp_path / "results.json").write_text(json.dumps(previous))
    assert read_previous(tmp_path / "results.json", quick=False) == previous
    assert "full results" in read_previous(tmp_path / "results.json", quick=True)
    assert "does not exist" in read_previous(tmp_path / "nothing.json", quick=False)
    now = {"date": "now", "git_commit": "bbb", "command": "update", "load_average_at_start": [1.5, 0, 0],
           "load_average_at_end": [2.0, 0, 0], "grading": {"measured": False, "reason": "new"},
           "cluster": {"measured": False, "reason": "new"}}
    merged = merge(previous, now, ["cluster"])
    assert merged["cluster"]["reason"] == "new" and merged["cluster"]["run"]["git_commit"] == "bbb"
    assert merged["grading"] == previous["grading"] and merged["date"] == "then"   # the rest is the earlier run
    assert merged["sections"] == ["attention", "grading", "cluster"]
    assert "The cluster section comes from a later run (`--update`): now, commit bbb" in markdown(merged)


def test_unknown_section_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "grader", "bench", "--sections", "nope", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown sections" in proc.stderr


def test_committed_results_agree_with_their_own_samples(av):
    """The committed results.json (rendered by chapter 9) is internally consistent: every median, ratio and
    GFLOP/s figure follows from the raw samples and the configuration recorded next to it."""
    import statistics

    results = json.loads((REPO / "benchmarks" / "results.json").read_text())
    att = results["attention"]
    cfg = av.AttentionConfig(**att["config"])
    expected = av.TINY_CONFIG if results["quick"] else (av.FULL_CONFIG if att["device"].startswith("cuda")
                                                         else av.CPU_CONFIG)
    assert cfg == expected
    assert att["implementations_agree"] and all(d < 1e-4 for d in att["max_abs_difference_to_sdpa"].values())
    work = sum(av.forward_flops(cfg).values())
    for phase, factor in (("forward", 1), ("forward_backward", 3)):
        rows = att["phases"][phase]["rows"]
        assert set(rows) == set(av.VARIANTS)
        for name, row in rows.items():
            assert len(row["samples_ms"]) == att["repeats"]
            assert row["median_ms"] == pytest.approx(statistics.median(row["samples_ms"]))
            paired = statistics.median(a / b for a, b in zip(row["samples_ms"], rows["sdpa"]["samples_ms"]))
            assert row["ratio_to_sdpa"] == pytest.approx(paired)
            flops = av.buggy_forward_flops(cfg) if name == av.BUGGY else work
            assert row["gflops"] == pytest.approx(factor * flops / row["median_ms"] / 1e6)
        buggy = statistics.median(a / b for a, b in zip(rows[av.BUGGY]["samples_ms"], rows[av.FIXED]["samples_ms"]))
        assert att["phases"][phase]["ratio_9216_to_fixed"] == pytest.approx(buggy)
    summary = att["summary"]
    if not results["quick"] and att["device"] == "cpu":
        assert summary["target_met"] == (summary["best_from_scratch_vs_torch_mha"] <= summary["target"])
