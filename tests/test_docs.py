"""The front page and the docs pages: size, links, and the generated configuration reference."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

from rnngen import configdoc
from rnngen.config import valid_keys

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
RESULTS = sorted((ROOT / "docs" / "results").glob("*.md"))  # dated measurement logs, linked from the pages
MAX_PAGE_BYTES = 15 * 1024  # a docs page is read at once; its logs go to docs/results/
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def without_code_blocks(text: str) -> str:
    text = re.sub(r"(?ms)^```.*?^```", "", text)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    ")) + "\n"


def prose(text: str) -> str:
    """Markdown without code: fenced blocks, indented blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"(?m)^#{1,6} (.+)$", without_code_blocks(path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug if slug not in found else slug + "-1")
    return found


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size < 16 * 1024, f"README.md is {size:,} bytes; move depth into docs/ pages"


def test_readme_links_every_docs_page():
    targets = set(LINK.findall(prose(README.read_text(encoding="utf-8"))))
    missing = [f"docs/{page.name}" for page in DOCS if f"docs/{page.name}" not in targets]
    assert not missing, f"README.md does not link {missing}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_pages_are_short(page):
    size = len(page.read_bytes())
    assert size <= MAX_PAGE_BYTES, f"{page.name} is {size:,} bytes; move measurement logs into docs/results/"


def test_every_results_log_is_linked_from_a_page():
    targets = {
        (page.parent / t.partition("#")[0]).resolve()
        for page in DOCS
        for t in LINK.findall(prose(page.read_text(encoding="utf-8")))
    }
    assert [log.name for log in RESULTS if log.resolve() not in targets] == []


@pytest.mark.parametrize("page", [README, *DOCS, *RESULTS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_broken_relative_link(page):
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.name}: broken links {broken}"


def test_configuration_page_matches_the_code():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    expected = configdoc.render()
    diff = "".join(list(difflib.unified_diff(page.splitlines(True), expected.splitlines(True), "page", "code"))[:40])
    assert page == expected, (
        f"docs/configuration.md is out of date; regenerate it with\n  {configdoc.REGENERATE}\n{diff}"
    )
    assert all(f"`{key}`" in page for key in valid_keys())
