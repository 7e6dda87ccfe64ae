"""Collecting SUBMISSIONS (grader.pipeline.collect): Canvas, Moodle and Blackboard downloads, folders, nbgrader's
submitted/ layout, notebooks one folder down or in a zip, unsafe zip entries, ids that
must not merge, the latest attempt winning, and OUT kept apart from SUBMISSIONS. Fast: no kernel is started.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
    from grader.grade import main   # here, not at the top: the collection tests must not need the whole grader

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


# --- Real LMS downloads (issue 15). Notebooks are built from the released ps1, one small edit per student. ------

EXERCISE = REPO / "exercises" / "ps1" / "ps1.ipynb"
BB1, BB2 = "2026-03-01-09-15-00", "2026-03-02-18-40-05"
# One class, three LMSs: (Canvas lastfirst, Canvas user id, Moodle full name, Moodle participant id, Blackboard user)
CLASS = {
    "jane": ("doejane", "101", "Jane Doe", "501", "jane.doe"),
    "pat": ("obrienpat", "102", "Pat O'Brien", "502", "o-brien"),
    "kim": ("leekim", "103", "Kim Lee", "503", "kim@uni.edu"),
}


def student_notebook(who: str) -> bytes:
    """The released ps1 with this student's answer in the first answer cell."""
    import nbformat
    notebook = nbformat.read(str(EXERCISE), as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "attention_scores":
            cell.source = f"# {who}'s answer\ndef attention_scores(queries, keys):\n    return queries @ keys.mT\n"
    return nbformat.writes(notebook).encode()


def lms_zips(tmp_path: Path) -> dict[str, Path]:
    """The same class as Canvas, Moodle and Blackboard download it."""
    canvas, moodle, blackboard = {}, {}, {}
    for who, (lastfirst, user, full, participant, username) in CLASS.items():
        data = student_notebook(who)
        late = "_LATE" if who == "pat" else ""
        canvas[f"{lastfirst}{late}_{user}_{9000 + int(user)}_ps1{'-1' if who == 'pat' else ''}.ipynb"] = data
        folder = f"{full}_{participant}_assignsubmission_file_"
        moodle[f"{folder}/{'ps1-main/' if who == 'pat' else ''}ps1.ipynb"] = data
        moodle[f"{full}_{participant}_assignsubmission_onlinetext_/onlinetext.html"] = b"<p>see the file</p>"
        blackboard[f"ps1_{username}_attempt_{BB1}_ps1.ipynb"] = data
        blackboard[f"ps1_{username}_attempt_{BB1}.txt"] = b"Name: ...\nSubmission Field: ...\n"
    return {"canvas": make_zip(tmp_path / "canvas.zip", canvas), "moodle": make_zip(tmp_path / "moodle.zip", moodle),
            "blackboard": make_zip(tmp_path / "blackboard.zip", blackboard)}


def test_canvas_moodle_and_blackboard_zips_of_one_class_collect_alike(tmp_path):
    from grader.pipeline.sanitize import load_source, sanitize
    source = load_source(REPO / "solutions" / "ps1" / "ps1.ipynb")
    column = {"canvas": 1, "moodle": 3, "blackboard": 4}
    restored = {}
    for lms, archive in lms_zips(tmp_path).items():
        subs = by_id(collect(archive, "ps1.ipynb"))
        # The LMS's own ids, one row per student (Moodle's online-text folder is no second student).
        assert sorted(subs) == sorted(person[column[lms]] for person in CLASS.values()), lms
        for who, person in CLASS.items():
            sub = subs[person[column[lms]]]
            assert sub.found_by == lms and sub.notebook_bytes == student_notebook(who), (lms, who)
            assert sub.notebook_name.endswith("ps1.ipynb") and not any("instead of" in n for n in sub.notes)
            nb, _ = sanitize(sub, source, "ps1")
            restored.setdefault(who, []).append([(c.cell_type, c.source) for c in nb.cells])
        assert subs["102"].late if lms == "canvas" else not any(s.late for s in subs.values())
        assert {s.name for s in subs.values()} == ({"doejane", "obrienpat", "leekim"} if lms == "canvas" else
                                                   {"Jane Doe", "Pat O'Brien", "Kim Lee"} if lms == "moodle" else
                                                   {""})
        if lms == "blackboard":
            assert {s.submitted_at for s in subs.values()} == {"2026-03-01 09:15:00"}
            assert not any(s.extra_files for s in subs.values())      # the receipt .txt is no extra file
    # The notebook each LMS gives a student runs as the same cells.
    for who, versions in restored.items():
        assert versions[0] == versions[1] == versions[2], who


@pytest.mark.parametrize("prefix", ["ps1_", "Problem Set 1_"])
def test_blackboard_ids_with_dot_dash_and_at_keep_their_rows(tmp_path, prefix):
    ids = ["jane.doe", "o-brien", "jane.doe@uni.edu", "a_doe"]
    archive = make_zip(tmp_path / "bb.zip", {f"{prefix}{i}_attempt_{STAMP1}_ps1.ipynb": nb(i) for i in ids})
    subs = by_id(collect(archive, "ps1.ipynb"))
    expected = ids if prefix == "ps1_" else ids[:3] + ["doe"]     # without the prefix an id cannot hold "_"
    assert sorted(subs) == sorted(expected)
    assert all(subs[i].notebook_bytes == nb(i) for i in ids[:3])


def test_unsafe_zip_entries_are_never_read_and_the_others_keep_their_rows(tmp_path, monkeypatch):
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    archive = make_zip(tmp_path / "class.zip", {
        "/tmp/evil/ps1.ipynb": nb("abs"), "../escape.ipynb": nb("up"), "alice/../../up2.ipynb": nb("up2"),
        "C:\\Users\\x\\ps1.ipynb": nb("drive"), "alice/ps1.ipynb": nb("a"), "bob/ps1.ipynb": nb("b")})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    subs = collect(archive, "ps1.ipynb")
    assert {s.student_id: s.notebook_bytes for s in subs} == {"alice": nb("a"), "bob": nb("b")}
    assert sorted(p.name for p in tmp_path.rglob("*")) == before        # nothing written anywhere
    assert not Path("/tmp/evil").exists()
    assert len(subs.unsafe) == 4 and "../escape.ipynb" in " ".join(subs.summary())


def test_canvas_download_late_resubmissions_and_students_without_a_notebook(tmp_path):
    archive = make_zip(tmp_path / "submissions.zip", {
        "doejane_101_5001_ps1.ipynb": nb("first"),             # a resubmission keeps only the latest...
        "doejane_101_5002_ps1-1.ipynb": nb("second"),
        "doejane_101_5003_ps1-2.ipynb": nb("third"),           # ...the highest number, with the expected name
        "doejane_101_5004_notes.txt": b"notes",
        "leekim_LATE_103_5010_My Work.ipynb": nb("kim"),
        "smithjo_104_5020_ps1.pdf": b"%PDF",                   # no notebook: still a row
    })
    subs = by_id(collect(archive, "ps1.ipynb"))
    assert sorted(subs) == ["101", "103", "104"]
    jane = subs["101"]
    assert jane.notebook_bytes == nb("third") and jane.notebook_name == "ps1.ipynb" and jane.name == "doejane"
    assert not jane.late and jane.source == "doejane_101_5003_ps1-2.ipynb"
    assert subs["103"].late and subs["103"].notebook_bytes == nb("kim")
    assert subs["104"].notebook_bytes is None and subs["104"].extra_files == ["ps1.pdf"]


def test_a_file_that_matches_no_student_id_still_gets_a_row(tmp_path):
    archive = make_zip(tmp_path / "submissions.zip", {"doejane_101_5001_ps1.ipynb": nb("jane"),
                                                      "Pat's ps1.ipynb": nb("pat")})
    subs = collect(archive, "ps1.ipynb")
    stray = by_id(subs)["Pat's ps1.ipynb"]
    assert stray.found_by == "unmatched" and stray.notebook_bytes == nb("pat")
    assert "matched no student id" in " ".join(stray.notes)
    assert subs.counts() == {"canvas": 1, "unmatched": 1}
    assert "Pat's ps1.ipynb" in "\n".join(subs.summary())


@pytest.mark.parametrize("as_zip", [False, True])
def test_moodle_online_text_is_no_second_student_flattened_or_in_folders(tmp_path, as_zip):
    files = {"Jane Doe_501_assignsubmission_file_ps1.ipynb": nb("jane"),
             "Jane Doe_501_assignsubmission_onlinetext_onlinetext.html": b"<p>hi</p>",
             "Kim Lee_503_assignsubmission_onlinetext_/onlinetext.html": b"<p>my code is below</p>",
             "Pat O'Brien_502_assignsubmission_file_/ps1.ipynb": nb("pat")}
    if as_zip:
        root = make_zip(tmp_path / "moodle.zip", files)
    else:       # an unzipped download, both Moodle styles in one folder
        root = tmp_path / "moodle"
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    subs = by_id(collect(root, "ps1.ipynb"))
    assert sorted(subs) == ["501", "502", "503"]
    assert subs["501"].notebook_bytes == nb("jane") and not subs["501"].notes    # online text is not "extra"
    assert subs["502"].notebook_bytes == nb("pat")
    assert subs["503"].notebook_bytes is None and subs["503"].extra_files == ["onlinetext.html"]


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_notebook_one_folder_down_is_found_even_beside_nbgrader_layouts(tmp_path, as_zip):
    files = {"alice/ps1-main/ps1.ipynb": nb("alice"), "alice/ps1-main/README.md": b"# ps1",
             "bob/Downloads/ps1.ipynb": nb("bob"),
             "carol/ps1/ps1.ipynb": nb("carol"), "carol/ps1/timestamp.txt": b"2026-03-01 10:00:00.000000 UTC\n"}
    if as_zip:
        root = make_zip(tmp_path / "class.zip", {f"ps1-class/{k}": v for k, v in files.items()})
    else:
        root = tmp_path / "class"
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    subs = by_id(collect(root, "ps1.ipynb"))
    assert {s: subs[s].notebook_bytes for s in subs} == {"alice": nb("alice"), "bob": nb("bob"), "carol": nb("carol")}
    assert not any("named" in n for s in subs.values() for n in s.notes)
    assert subs["carol"].found_by == "nbgrader" and subs["carol"].submitted_at.startswith("2026-03-01 10:00")
    # A one-student zip with the notebook one folder down is that student, not its sub-folder.
    one = make_zip(tmp_path / "one.zip", {"alice/ps1-main/ps1.ipynb": nb("alice")})
    assert [s.student_id for s in collect(one, "ps1.ipynb")] == ["alice"]


def test_a_zip_inside_a_students_folder_is_read_in_memory(tmp_path):
    import io
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("ps1/ps1.ipynb", nb("zipped"))
        zf.writestr("../outside.ipynb", nb("escape"))
    root = tmp_path / "class"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "ps1.zip").write_bytes(inner.getvalue())
    (root / "bob").mkdir()
    (root / "bob" / "ps1.zip").write_bytes(b"not a zip")
    (root / "carol").mkdir()
    (root / "carol" / "ps1.ipynb").write_bytes(nb("carol"))
    subs = by_id(collect(root, "ps1.ipynb"))
    assert subs["alice"].notebook_bytes == nb("zipped") and subs["alice"].notebook_name == "ps1.zip/ps1/ps1.ipynb"
    assert "inside ps1.zip" in " ".join(subs["alice"].notes) and "outside" in " ".join(subs["alice"].notes)
    assert subs["bob"].notebook_bytes is None and "could not be opened" in " ".join(subs["bob"].notes)
    assert subs["carol"].notebook_bytes == nb("carol")
    assert sorted(p.name for p in root.rglob("*")) == ["alice", "bob", "carol", "ps1.ipynb", "ps1.zip", "ps1.zip"]
    # A Canvas download of a zip is read the same way, under the Canvas user id.
    canvas = make_zip(tmp_path / "canvas.zip", {"doejane_101_5001_ps1.zip": inner.getvalue()})
    assert by_id(collect(canvas, "ps1.ipynb"))["101"].notebook_bytes == nb("zipped")


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_class_folder_of_notebooks_named_by_id_gives_one_student_each(tmp_path, as_zip):
    files = {"alice.ipynb": nb("alice"), "jane.doe@uni.edu.ipynb": nb("jane"), "index.csv": b"id,name\n"}
    if as_zip:
        root = make_zip(tmp_path / "class.zip", {f"ps1-submissions/{k}": v for k, v in files.items()})
    else:
        root = tmp_path / "ps1-submissions"
        root.mkdir()
        for name, data in files.items():
            (root / name).write_bytes(data)
    subs = collect(root, "ps1.ipynb")
    assert {s.student_id: s.notebook_bytes for s in subs} == {"alice": nb("alice"), "jane.doe@uni.edu": nb("jane")}
    assert all(s.found_by == "notebook" and not s.notes for s in subs)
    assert any(i.endswith("index.csv") for i in subs.ignored) and "index.csv" in "\n".join(subs.summary())


def test_one_students_assignment_folder_does_not_hide_the_others_notebooks(tmp_path):
    root = tmp_path / "class"
    for path, data in {"alice/ps1/ps1.ipynb": nb("a"), "bob/work/ps1.ipynb": nb("b"),
                       "dan/ps2/ps2.ipynb": nb("d2")}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    subs = by_id(collect(root, "ps1.ipynb"))
    assert subs["alice"].notebook_bytes == nb("a") and subs["bob"].notebook_bytes == nb("b")
    assert subs["dan"].notebook_bytes is None       # another assignment's folder is never graded as this one


def test_summary_says_how_many_students_each_rule_found(tmp_path):
    root = tmp_path / "mixed"
    for path, data in {"alice/ps1.ipynb": nb("a"), f"ps1_bob_attempt_{STAMP1}_ps1.ipynb": nb("b"),
                       "Kim Lee_503_assignsubmission_file_/ps1.ipynb": nb("k"), "readme.txt": b"x"}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    subs = collect(root, "ps1.ipynb")
    assert subs.counts() == {"folder": 1, "blackboard": 1, "moodle": 1}
    first, *rest = subs.summary()
    assert first.startswith("found 3 student(s) in mixed:") and "1 by Blackboard" in first
    assert "readme.txt" in " ".join(rest)


def test_old_nbformat_3_notebook_is_collected_as_is(tmp_path):
    import nbformat
    v3 = nbformat.writes(nbformat.convert(nbformat.read(str(EXERCISE), as_version=4), 3)).encode()
    root = tmp_path / "class"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "ps1.ipynb").write_bytes(v3)
    [alice] = collect(root, "ps1.ipynb")
    assert alice.notebook_bytes == v3       # collect never parses; sanitize converts (see the next test)


def test_old_nbformat_3_notebook_is_converted_not_rejected(tmp_path):
    import nbformat
    from grader.pipeline import Submission
    from grader.pipeline.sanitize import load_source, sanitize
    v3 = nbformat.writes(nbformat.convert(nbformat.reads(student_notebook("old"), as_version=4), 3)).encode()
    source = load_source(REPO / "solutions" / "ps1" / "ps1.ipynb")
    nb3, _ = sanitize(Submission("old", "ps1.ipynb", v3), source, "ps1")
    nb4, _ = sanitize(Submission("new", "ps1.ipynb", student_notebook("old")), source, "ps1")
    assert [c.source for c in nb3.cells] == [c.source for c in nb4.cells]
