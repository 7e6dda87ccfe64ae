"""Collecting SUBMISSIONS (grader.pipeline.collect): LMS zips and folders, nbgrader's submitted/ layout, ids that
must not merge, the latest attempt winning, and OUT kept apart from SUBMISSIONS. Fast: no kernel is started.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.grade import main
from grader.pipeline.collect import collect, lms_match

REPO = Path(__file__).resolve().parents[1]
STAMP1, STAMP2 = "2026-01-01-10-00-00", "2026-01-02-09-30-00"


def nb(tag: str) -> bytes:
    """Distinct notebook bytes, so a test can tell which file was picked."""
    return ('{"cells": [], "metadata": {"tag": "%s"}, "nbformat": 4, "nbformat_minor": 5}' % tag).encode()


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def by_id(subs):
    return {s.student_id: s for s in subs}


def test_lms_zip_inside_one_top_folder_gives_one_student_per_name(tmp_path):
    archive = make_zip(tmp_path / "lms.zip", {
        f"gradebook_ps1/ps1_alice_attempt_{STAMP1}_ps1.ipynb": nb("alice"),
        f"gradebook_ps1/ps1_bob_attempt_{STAMP1}_ps1.ipynb": nb("bob"),
    })
    subs = by_id(collect(archive, "ps1.ipynb"))
    assert sorted(subs) == ["alice", "bob"]
    assert subs["alice"].notebook_bytes == nb("alice") and subs["bob"].notebook_bytes == nb("bob")
    assert subs["alice"].notebook_name == "ps1.ipynb" and not subs["alice"].notes


def test_class_folder_zip_still_strips_its_top_folder(tmp_path):
    archive = make_zip(tmp_path / "class.zip", {"ps1-class/alice/ps1.ipynb": nb("a"),
                                                "ps1-class/bob/ps1.ipynb": nb("b")})
    assert sorted(by_id(collect(archive, "ps1.ipynb"))) == ["alice", "bob"]


def test_unzipped_lms_download_is_collected(tmp_path):
    root = tmp_path / "download"
    root.mkdir()
    (root / f"ps1_alice_attempt_{STAMP1}_ps1.ipynb").write_bytes(nb("alice"))
    (root / f"ps1_bob_attempt_{STAMP1}_ps1.ipynb").write_bytes(nb("bob"))
    (root / "readme.txt").write_text("not a submission")
    subs = by_id(collect(root, "ps1.ipynb"))
    assert sorted(subs) == ["alice", "bob"]
    assert subs["bob"].notebook_bytes == nb("bob")


def test_submissions_without_any_student_exit_non_zero(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "ps1.ipynb").write_bytes(nb("x"))     # not an LMS name, and no student folder
    with pytest.raises(SystemExit) as stop:
        collect(root, "ps1.ipynb")
    assert "no student found" in str(stop.value.code)
    empty = make_zip(tmp_path / "empty.zip", {"notes.txt": b"hello"})
    with pytest.raises(SystemExit):
        collect(empty, "ps1.ipynb")


def test_ids_with_underscores_do_not_merge(tmp_path):
    assert lms_match(f"ps1_a_doe_attempt_{STAMP1}_ps1.ipynb", "ps1")["student_id"] == "a_doe"
    archive = make_zip(tmp_path / "lms.zip", {
        f"ps1_a_doe_attempt_{STAMP1}_ps1.ipynb": nb("a"),
        f"ps1_b_doe_attempt_{STAMP1}_ps1.ipynb": nb("b"),
    })
    subs = by_id(collect(archive, "ps1.ipynb"))
    assert sorted(subs) == ["a_doe", "b_doe"]
    assert subs["a_doe"].notebook_bytes == nb("a") and subs["b_doe"].notebook_bytes == nb("b")


def test_two_names_mapping_to_one_id_fail_that_row(tmp_path):
    # Names without the assignment prefix fall back to nbgrader's greedy pattern: both give the id "doe".
    archive = make_zip(tmp_path / "lms.zip", {
        f"x_a_doe_attempt_{STAMP1}_ps1.ipynb": nb("a"),
        f"y_doe_attempt_{STAMP1}_ps1.ipynb": nb("b"),
        f"ps1_carol_attempt_{STAMP1}_ps1.ipynb": nb("c"),
    })
    subs = by_id(collect(archive, "ps1.ipynb"))
    assert sorted(subs) == ["carol", "doe"]
    assert subs["doe"].notebook_bytes is None           # graded as neither student's work
    assert "x_a_doe" in subs["doe"].notes[0] and "y_doe" in subs["doe"].notes[0]
    assert subs["carol"].notebook_bytes == nb("c")


def test_latest_attempt_wins_over_the_expected_name(tmp_path):
    archive = make_zip(tmp_path / "lms.zip", {
        f"ps1_alice_attempt_{STAMP1}_ps1.ipynb": nb("old"),
        f"ps1_alice_attempt_{STAMP2}_ps1_final.ipynb": nb("new"),
    })
    alice = by_id(collect(archive, "ps1.ipynb"))["alice"]
    assert alice.notebook_bytes == nb("new")
    assert alice.notebook_name == "ps1_final.ipynb"
    # Folders have no timestamps: the expected name still wins there.
    (tmp_path / "c" / "bob").mkdir(parents=True)
    (tmp_path / "c" / "bob" / "ps1.ipynb").write_bytes(nb("exact"))
    (tmp_path / "c" / "bob" / "copy of ps1 (large).ipynb").write_bytes(nb("a much larger renamed copy"))
    assert by_id(collect(tmp_path / "c", "ps1.ipynb"))["bob"].notebook_bytes == nb("exact")


def test_nbgrader_layout_reads_only_the_assignment_folder(tmp_path):
    root = tmp_path / "submitted"
    (root / "alice" / "ps1").mkdir(parents=True)
    (root / "alice" / "ps2").mkdir(parents=True)
    (root / "alice" / "ps1" / "ps1.ipynb").write_bytes(nb("a1"))
    (root / "alice" / "ps2" / "ps2.ipynb").write_bytes(nb("a2"))
    (root / "bob" / "ps2").mkdir(parents=True)
    (root / "bob" / "ps2" / "ps2.ipynb").write_bytes(nb("b2"))
    subs = by_id(collect(root, "ps1.ipynb"))
    assert subs["alice"].notebook_bytes == nb("a1") and subs["alice"].notebook_name == "ps1.ipynb"
    assert "ps2.ipynb" not in " ".join(subs["alice"].extra_files + subs["alice"].notes)
    # bob handed in only ps2: for ps1 his ps2 notebook must not be graded (it is not his ps1 answer).
    assert subs["bob"].notebook_bytes is None
    assert by_id(collect(root, "ps2.ipynb"))["bob"].notebook_bytes == nb("b2")


def test_nbgrader_layout_missing_notebook_end_to_end(tmp_path):
    from grader.pipeline.sanitize import Rejected, sanitize
    root = tmp_path / "submitted"
    (root / "bob" / "ps2").mkdir(parents=True)
    (root / "bob" / "ps2" / "ps2.ipynb").write_bytes(nb("b2"))
    (root / "alice" / "ps1").mkdir(parents=True)   # a ps1 folder with no notebook at all
    for sub in collect(root, "ps1.ipynb"):
        with pytest.raises(Rejected) as why:
            sanitize(sub, None, "ps1")
        assert why.value.status == "missing_notebook"


@pytest.mark.parametrize("layout", ["out_in_subs", "subs_in_out", "same"])
def test_out_and_submissions_must_not_nest(tmp_path, layout, capsys):
    subs = tmp_path / "class"
    (subs / "alice").mkdir(parents=True)
    out = {"out_in_subs": subs / "results", "subs_in_out": tmp_path, "same": subs}[layout]
    assert main(["ps1", str(subs), "--out", str(out)]) == 2
    assert "must not contain one another" in capsys.readouterr().err
    assert not (subs / "results").exists()


def test_cli_exits_non_zero_without_students(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "ps1", str(empty), "--out",
                           str(tmp_path / "out"), "--no-preload"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode != 0
    assert "no student found" in proc.stderr
