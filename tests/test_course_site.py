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
