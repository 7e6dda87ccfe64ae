"""Headless Chromium (Debian's package) driven by Playwright, against the built site served on localhost."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
INSTALL_HINT = ("headless Chromium is not installed: run `apt-get install chromium chromium-driver` "
                "(Debian's packages; Playwright's own browser download does not work offline)")
# Without the background-networking flags Chromium keeps dialling Google's hosts from a closed network.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def require_browser() -> str:
    """The Chromium executable; skip (or fail where MHA_REQUIRE_BROWSER=1, as in CI) when there is none."""
    path = chromium_path()
    if path is None:
        if os.environ.get("MHA_REQUIRE_BROWSER") == "1":
            pytest.fail(INSTALL_HINT + " (MHA_REQUIRE_BROWSER=1: the browser tests are required here)")
        pytest.skip(INSTALL_HINT)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output readable
        pass


@contextmanager
def serve(directory: Path):
    """Serve a folder on 127.0.0.1 on a free port; yields the base URL (ending in '/')."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class PageLog:
    """Everything a page did that a reader would not want: console errors, failed or external requests."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.failed: list[str] = []
        self.external: list[str] = []

    def attach(self, page) -> None:
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})")
                if r.url.startswith(self.base_url) else None)
        page.on("response", lambda r: self.failed.append(f"{r.url} (HTTP {r.status})")
                if r.status >= 400 else None)

        def route(route):
            url = route.request.url
            if url.startswith(self.base_url) or url.startswith(("data:", "blob:", "about:")):
                route.continue_()
            else:
                # The network is "off": anything outside the site is recorded and refused.
                self.external.append(url)
                route.abort()

        page.route("**/*", route)

    def problems(self) -> list[str]:
        return ([f"console error: {m}" for m in self.console_errors]
                + [f"page error: {m}" for m in self.page_errors]
                + [f"failed request: {m}" for m in self.failed]
                + [f"external request: {m}" for m in self.external])


@contextmanager
def chromium_browser():
    """Headless Chromium (Debian's) under Playwright's sync API; yields the browser."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


# axe-core (Deque, MPL-2.0), vendored at the version in tests/vendor/package.json (refresh: tests/vendor/update.sh).
AXE_JS = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
# WCAG 2.1 levels A and AA: what ADA Title II asks of US public universities' course material.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING_IMPACTS = ("serious", "critical")


def axe_violations(page) -> list[dict]:
    """Run axe-core on the page as it stands; returns its violations (rule id, impact, help, nodes)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE_JS.read_text(encoding="utf-8"))
    return page.evaluate(
        """async tags => (await axe.run(document, {runOnly: {type: 'tag', values: tags},
                                                  resultTypes: ['violations']})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => ({target: n.target.join(' '), html: n.html.slice(0, 160),
                                                  summary: (n.failureSummary || '').slice(0, 300)}))}))""",
        WCAG_TAGS)


def describe_violations(violations: list[dict], per_rule: int = 4) -> str:
    """A readable failure message: each rule, its impact, how many elements, and the first few of them."""
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}, {len(v['nodes'])} elements): {v['help']}")
        for node in v["nodes"][:per_rule]:
            lines.append(f"    {node['target']}: {node['html']}")
            if node["summary"]:
                lines.append("      " + node["summary"].replace("\n", " "))
    return "\n".join(lines)
