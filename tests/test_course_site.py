"""The book's Sphinx extension (book/_ext/course_site.py): the parts that need no build."""
from __future__ import annotations

import importlib.util

from nbformat.v4 import new_output

from conftest import REPO

spec = importlib.util.spec_from_file_location("course_site", REPO / "book" / "_ext" / "course_site.py")
course_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(course_site)


def stdout(*chunks):
    return [new_output("stream", name="stdout", text=chunk) for chunk in chunks]


def test_stream_chunks_merge_the_same_wherever_the_kernel_flushed():
    """A busy machine flushes a print in other places; the page must read the same (bug clinic I's diagnosis)."""
    from myst_nb.core import render

    course_site.use_exact_stream_merge()
    assert render.coalesce_streams is course_site.coalesce_streams_exactly
    text = "fixed wrapper\n  [ok] output width == embed_dim\n"
    # An idle machine: one chunk. A loaded one: a chunk ends before the newline, or inside a word.
    for chunks in ([text], ["fixed wrapper", "\n  [ok] output width == embed_dim\n"],
                   ["fixed wra", "pper\n  [ok] output ", "width == embed_dim\n"]):
        merged = render.coalesce_streams(stdout(*chunks))
        assert [o["text"] for o in merged] == [text], chunks
    # The rest is still myst-nb's: carriage returns overwrite, other outputs keep their place.
    figure = new_output("display_data", data={"text/plain": "<Figure>"})
    merged = render.coalesce_streams(stdout("progress 1\r", "progress 2\n") + [figure] + stdout("done\n"))
    assert [o.get("text") for o in merged] == ["progress 2\ndone\n", None]


def test_a_build_notes_the_placeholder_repository_until_it_is_set():
    """The Colab buttons open notebooks from repository.url: the build says so while it is the placeholder, as a
    note (the book is built with -W, so a warning would fail every fresh clone's build)."""
    import yaml

    shipped = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    for unset in (course_site.PLACEHOLDER_REPOSITORY, course_site.PLACEHOLDER_REPOSITORY + "/", "", None):
        note = course_site.placeholder_note(unset)
        assert note and "repository.url" in note and "Colab" in note, unset
    assert course_site.placeholder_note("https://github.com/some-university/attention-course") is None
    if shipped.rstrip("/") == course_site.PLACEHOLDER_REPOSITORY:
        assert course_site.PLACEHOLDER_REPOSITORY in course_site.placeholder_note(shipped)


def test_the_placeholder_note_is_logged_at_the_end_of_an_html_build(caplog):
    from types import SimpleNamespace

    app = SimpleNamespace(builder=SimpleNamespace(format="html"),
                          config=SimpleNamespace(html_theme_options={"repository_url":
                                                                     course_site.PLACEHOLDER_REPOSITORY}))
    with caplog.at_level("INFO"):
        course_site.note_placeholder_repository(app, None)
    assert any("NOTE: repository.url" in r.getMessage() and r.levelname == "INFO" for r in caplog.records)
    caplog.clear()
    app.config.html_theme_options["repository_url"] = "https://github.com/some-university/attention-course"
    with caplog.at_level("INFO"):
        course_site.note_placeholder_repository(app, None)
    assert not caplog.records
