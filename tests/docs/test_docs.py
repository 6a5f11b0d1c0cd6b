"""The README and the docs site stay true: the site builds strictly, links land, shown commands run.

Commands are marked for testing in the docs by an HTML comment right before a ```console block:
`<!-- doc-test -->` (or `<!-- doc-test exit=2 -->` for a command expected to fail that way).
In such a block a line starting with `$ ` is a command run from the project root; the lines
after it, up to the next command, are output that must appear in what it prints (stdout and
stderr together, whitespace at the ends ignored), where `...` stands for any text.
Only cheap commands (help, refusals of bad input, `cat`) are marked: nothing here trains.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250
MKDOCS = Path(sys.executable).parent / "mkdocs"

MARKER = re.compile(r"<!--\s*doc-test(?:\s+exit=(\d+))?\s*-->\s*\n```console\n(.*?)\n```", re.S)
# Markdown links and images, [text](target) and ![alt](target); code spans are dropped first.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


@dataclass(frozen=True)
class ShownCommand:
    page: str
    command: str
    expected_exit: int
    shown_output: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}: {self.command}"


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def shown_commands() -> list[ShownCommand]:
    """Every command in a doc-test block of the docs or the README, with the output it shows."""
    found = []
    for path in markdown_files():
        for match in MARKER.finditer(path.read_text(encoding="utf-8")):
            expected_exit = int(match.group(1) or 0)
            command, output = None, []
            for line in [*match.group(2).splitlines(), "$ "]:
                if line.startswith("$ "):
                    if command:
                        page = str(path.relative_to(ROOT))
                        found.append(ShownCommand(page, command, expected_exit, tuple(output)))
                    command, output = line[2:].strip(), []
                elif line.strip():
                    output.append(line.strip())
    return found


def relative_links(path: Path) -> list[str]:
    text = CODE.sub("", path.read_text(encoding="utf-8"))
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def test_readme_is_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file(path):
    missing = [
        target
        for target in relative_links(path)
        if not (path.parent / target.split("#")[0]).exists()
    ]
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_the_readme_links_to_every_docs_page():
    linked = {(ROOT / target.split("#")[0]).resolve() for target in relative_links(README)}
    unlinked = [
        str(page.relative_to(ROOT)) for page in DOCS.glob("*.md") if page.resolve() not in linked
    ]
    assert not unlinked, f"README.md does not link to {unlinked}"


def test_the_site_builds_strictly(tmp_path):
    """No broken link, missing page or anchor, nor any other warning (--strict fails on them)."""
    build = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert (tmp_path / "site" / "index.html").exists()


def test_some_commands_are_marked_for_testing():
    assert len(shown_commands()) >= 5


def output_pattern(shown_line: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in shown_line.split("...")))


@pytest.mark.parametrize("shown", shown_commands(), ids=str)
def test_shown_command_runs_and_prints_what_the_docs_show(shown):
    argv = shlex.split(shown.command)
    if argv[0].startswith(".venv/bin/"):
        # The docs say .venv/bin/ as `make` lays it out; run the venv running these tests.
        argv[0] = str(Path(sys.executable).parent / Path(argv[0]).name)
    ran = subprocess.run(
        argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        # argparse wraps its help to the terminal's width: the docs show 80 columns.
        env={**os.environ, "COLUMNS": "80"},
        timeout=60,
    )
    printed = ran.stdout + ran.stderr
    assert ran.returncode == shown.expected_exit, printed
    lines = [line.strip() for line in printed.splitlines()]
    missing = [
        shown_line
        for shown_line in shown.shown_output
        if shown_line != "..." and not any(output_pattern(shown_line).search(ln) for ln in lines)
    ]
    assert not missing, f"{shown} no longer prints {missing}; it printed:\n{printed}"
