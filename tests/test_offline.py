"""The built site needs nothing from outside itself, offers notebooks for download and leaks no solution."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

from conftest import REPO, toc_files

EXTERNAL = re.compile(r"^(https?:)?//", re.I)
# Attributes through which a page pulls in code, styles, fonts or frames.
LOADING_ATTRS = re.compile(
    r"<(script|link|img|iframe|source|embed|object)\b[^>]*?\b(src|href|data)\s*=\s*[\"']([^\"']+)[\"']", re.I | re.S)
CSS_URL = re.compile(r"url\(\s*[\"']?([^\"')]+)", re.I)
CSS_IMPORT = re.compile(r"@import\s+[\"']([^\"']+)", re.I)


def test_pages_load_nothing_from_outside(built_book: Path):
    offenders = []
    for page in built_book.rglob("*.html"):
        text = page.read_text(errors="replace")
        for tag, attr, url in LOADING_ATTRS.findall(text):
            if tag.lower() == "link" and "stylesheet" not in text[text.find(url) - 200:text.find(url)] \
                    and not url.endswith((".css", ".js", ".woff", ".woff2", ".ttf")):
                continue  # a plain <link rel="next"> is navigation, not a load
            if EXTERNAL.match(url):
                offenders.append(f"{page.relative_to(built_book)}: <{tag} {attr}={url}>")
        for inline in re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S):
            for url in re.findall(r"[\"'](https?://[^\"']+\.(?:js|css|woff2?|ttf))[\"']", inline):
                offenders.append(f"{page.relative_to(built_book)}: inline script loads {url}")
    for sheet in built_book.rglob("*.css"):
        text = sheet.read_text(errors="replace")
        for url in CSS_URL.findall(text) + CSS_IMPORT.findall(text):
            if EXTERNAL.match(url.strip()):
                offenders.append(f"{sheet.relative_to(built_book)}: {url}")
    assert not offenders, "the site reaches outside itself:\n" + "\n".join(offenders[:30])


def test_vendored_assets_are_in_the_site(built_book: Path):
    vendor = built_book / "_static" / "vendor"
    for rel in ("require.js", "widgets-setup.js", "html-manager/embed-amd.js", "mathjax/tex-chtml.js"):
        assert (vendor / rel).is_file() and (vendor / rel).stat().st_size > 0, f"_static/vendor/{rel} is missing"
    pins = json.loads((REPO / "book" / "_vendor" / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned to an exact version: {version}"
    lock = json.loads((REPO / "book" / "_vendor" / "package-lock.json").read_text())
    for name, version in pins.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    assert json.loads((vendor / "mathjax" / "package.json").read_text())["version"] == pins["mathjax"]


def test_pages_with_math_or_widgets_use_the_local_copies(built_book: Path):
    math_pages = widget_pages = 0
    for page in built_book.rglob("*.html"):
        text = page.read_text(errors="replace")
        if 'class="math' in text:
            math_pages += 1
            assert "vendor/mathjax/tex-chtml.js" in text, page
        if "application/vnd.jupyter.widget-view+json" in text:
            widget_pages += 1
            assert "vendor/require.js" in text and "vendor/html-manager/embed-amd.js" in text, page
            assert "application/vnd.jupyter.widget-state+json" in text, f"{page}: widget state was not saved"
    assert math_pages > 0 and widget_pages > 0, "expected pages with equations and pages with widgets"


def test_every_chapter_offers_its_notebook(built_book: Path):
    for docname in toc_files(reference=False):
        html = (built_book / f"{docname}.html").read_text()
        match = re.search(r'href="([^"]*_notebooks/[^"]+\.ipynb)"', html)
        assert match, f"{docname} has no .ipynb download link"
        target = (built_book / docname).parent / match.group(1)
        notebook = json.loads(target.resolve().read_text())
        assert notebook["nbformat"] == 4
        code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        assert code, f"{docname}: the downloadable notebook has no code cells"
        assert "_sources/" not in html, f"{docname} links to page sources, which the site does not publish"


def test_exercises_page_links_only_student_notebooks(built_book: Path):
    html = (built_book / "book" / "exercises.html").read_text()
    links = re.findall(r'href="(\.\./exercises/[^"]+\.ipynb)"', html)
    released = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "exercises").glob("*/*.ipynb"))
    assert released, "no student notebook in exercises/"
    assert sorted(urlparse(link).path.replace("../", "", 1) for link in links) == released
    for rel in released:
        served = built_book / rel
        assert served.read_bytes() == (REPO / rel).read_bytes(), f"{rel} in the site differs from the release"
        text = served.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{rel} in the site contains {marker}"
    assert not list(built_book.rglob("solutions")), "a solutions folder was copied into the site"


def test_jupyterhub_launch_button_is_one_key_away(scratch_copy: Path, tmp_path: Path):
    """Off by default; setting launch_buttons.jupyterhub_url alone adds an nbgitpuller link to every chapter."""
    from conftest import jupyter_book_build

    default = yaml.safe_load((REPO / "_config.yml").read_text())
    assert default["launch_buttons"]["jupyterhub_url"] == "", "the launch button must be off by default"
    config = yaml.safe_load((scratch_copy / "_config.yml").read_text())
    config["launch_buttons"]["jupyterhub_url"] = "https://hub.example.edu"
    (scratch_copy / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    page = scratch_copy / "book" / "hub.md"
    page.write_text("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
                    "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
                    "# Hub\n\n```{code-cell} ipython3\nprint(6 * 7)\n```\n")
    (scratch_copy / "_toc.yml").write_text("format: jb-book\nroot: book/hub\n")
    proc = jupyter_book_build(scratch_copy, tmp_path / "out", timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    html = (tmp_path / "out" / "_build" / "html" / "book" / "hub.html").read_text()
    match = re.search(r'href="(https://hub\.example\.edu/hub/user-redirect/git-pull\?[^"]+)"', html)
    assert match, "no JupyterHub launch link on the chapter"
    link = match.group(1).replace("&amp;", "&")
    assert "urlpath=lab/tree/" in link and "book/hub.md" in link, link
    assert "repo=" + config["repository"]["url"].replace(":", "%3A") in link or config["repository"]["url"] in link
    assert not (tmp_path / "out" / "_build" / "html" / "_sources").exists(), "sources published with the hub on"
