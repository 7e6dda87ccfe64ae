"""The README is a front door: its two set-up commands are there (and CI runs the same test command), it stays
short, and every relative link in it, and in the book's part "Teaching with this course" it points to, leads to a
file of the repository. Fast: reads text only."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import REFERENCE_PART, REPO

README = REPO / "README.md"
INSTALL = "python -m pip install -r requirements.txt && jupyter-book build ."
TEST = "python -m pytest"
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def bash_lines(text: str) -> list[str]:
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(path.read_text())
            if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


def test_the_two_set_up_commands_come_first_in_a_virtual_environment():
    text = README.read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    assert bash_lines(setup)[:2] == [INSTALL, TEST], "the first bash block is the two set-up commands"
    assert "python3 -m venv .venv && . .venv/bin/activate" in setup
    assert "--index-url https://download.pytorch.org/whl/cpu" in setup, "how to get the CPU wheel without a GPU"
    assert "--allow-root" in text


def test_ci_runs_the_readme_test_command_in_its_full_tier():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert any(line.startswith(TEST + " --full") for line in ci), "CI runs the README's test command with --full"


def test_the_readme_is_a_page_not_a_manual():
    lines = README.read_text().splitlines()
    assert len(lines) <= 140, f"README.md has {len(lines)} lines: the reference belongs in book/teaching/"


@pytest.mark.parametrize("path", [README, *sorted((REPO / REFERENCE_PART).glob("*.md"))],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_leads_to_a_file(path):
    links = relative_links(path)
    if path == README:
        assert links, "the README links nothing"
    missing = [t for t in links if not (path.parent / t.split("#", 1)[0]).is_file()]
    assert not missing, f"{path.relative_to(REPO)} links to files that do not exist: {missing}"


def test_every_teaching_page_is_in_the_table_of_contents():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p["caption"] == "Teaching with this course")
    listed = {c["file"] for c in part["chapters"]}
    pages = {p.relative_to(REPO).with_suffix("").as_posix() for p in (REPO / REFERENCE_PART).glob("*.md")}
    assert listed == pages
