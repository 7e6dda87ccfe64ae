"""``python -m grader bench`` (issue 25): nbgrader's programs are found from the benchmark's own interpreter, not
PATH, and a run of some sections never erases the other sections of the results.json already in --out."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from grader import bench
from grader.bench_grading import _nbgrader_autograde, interpreter_env

REPO = Path(__file__).resolve().parents[1]
BARE_PATH = "/usr/bin:/bin"      # what a shell has when the environment's bin/ was never activated


def earlier_results(quick: bool = False) -> dict:
    """A results.json as a full run leaves it: every section measured, each marked so a test can tell it apart."""
    return {"quick": quick, "date": "then", "git_commit": "aaa", "torch": "t", "python": "p", "cores": 2,
            "load_average_at_start": [0.1, 0, 0], "load_average_at_end": [0.1, 0, 0], "command": "full",
            "sections": list(bench.SECTIONS),
            **{s: {"measured": True, "marker": f"committed {s}"} for s in bench.SECTIONS}}


@pytest.fixture
def fake_run(monkeypatch):
    """bench.run with every section a fake, instant one: what main does with the results is what is tested."""
    def run(quick, sections, *args, **kwargs):
        return {"quick": quick, "date": "now", "git_commit": "bbb", "torch": "t", "python": "p", "cores": 2,
                "load_average_at_start": [1.0, 0, 0], "load_average_at_end": [1.0, 0, 0], "command": "now",
                "sections": sections,
                **{s: ({"measured": True, "marker": f"new {s}"} if s in sections
                       else {"measured": False, "reason": "not selected (--sections)"}) for s in bench.SECTIONS}}
    monkeypatch.setattr(bench, "run", run)
    monkeypatch.setattr(bench, "markdown", lambda results: "table\n")


def test_a_partial_run_keeps_every_other_committed_section(tmp_path, fake_run):
    (tmp_path / "results.json").write_text(json.dumps(earlier_results()))
    assert bench.main(["--sections", "cluster", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["cluster"]["marker"] == "new cluster" and results["cluster"]["run"]["git_commit"] == "bbb"
    for section in set(bench.SECTIONS) - {"cluster"}:
        assert results[section] == {"measured": True, "marker": f"committed {section}"}, section
    assert results["sections"] == list(bench.SECTIONS) and results["date"] == "then"


def test_a_full_run_replaces_everything_and_a_first_partial_run_writes_its_sections(tmp_path, fake_run):
    (tmp_path / "results.json").write_text(json.dumps(earlier_results()))
    assert bench.main(["--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(results[s]["marker"] == f"new {s}" for s in bench.SECTIONS) and results["date"] == "now"
    fresh = tmp_path / "fresh"
    assert bench.main(["--sections", "cluster", "--out", str(fresh)]) == 0
    assert json.loads((fresh / "results.json").read_text())["cluster"]["marker"] == "new cluster"


def test_a_partial_run_that_cannot_be_merged_is_refused_and_erases_nothing(tmp_path, fake_run, capsys):
    (tmp_path / "results.json").write_text(json.dumps(earlier_results(quick=True)))
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(SystemExit) as stop:
        bench.main(["--sections", "cluster", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "would erase the other sections" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_bytes() == before


def test_nbgraders_programs_come_from_the_benchmarks_interpreter(monkeypatch):
    monkeypatch.setenv("PATH", BARE_PATH)
    env = interpreter_env()
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["PATH"].endswith(BARE_PATH)
    assert shutil.which("alembic", path=env["PATH"]), "nbgrader's alembic is not beside this interpreter"


@pytest.mark.slow
def test_serial_nbgrader_step_runs_without_the_environments_bin_on_path(tmp_path, monkeypatch):
    """The step that crashed (nbgrader runs `alembic` by name): one notebook, PATH without this interpreter's bin/."""
    if shutil.which("alembic", path=BARE_PATH):
        pytest.fail(f"alembic is on {BARE_PATH} here, so this test could not tell the fix from its absence")
    monkeypatch.setenv("PATH", BARE_PATH)
    seconds = _nbgrader_autograde(REPO / "solutions" / "ps1" / "ps1.ipynb", tmp_path / "course", 1)
    assert seconds > 0 and (tmp_path / "course" / "autograded" / "student000" / "ps1" / "ps1.ipynb").is_file()
