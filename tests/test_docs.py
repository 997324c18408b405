"""The pages link to each other and every link lands: README.md and docs/*.md, relative
links to files of the repository and `#anchors` on GitHub's heading slugs; and every page
of docs/ is reachable from the README, the front door."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Links that leave the repository on purpose: the contract kept beside the checkouts. A
# fresh clone does not have it, so only the path is checked.
OUTSIDE = {"shared/API.md"}

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[(?:[^\]\n]|\][^(])*?\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The page without code: neither fenced blocks nor inline code hold links."""
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and
    underscores kept), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text()))


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            if str(resolved.relative_to(root.parent)) not in OUTSIDE:
                problems.append(f"{target}: leaves the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


def test_every_link_of_every_page_lands() -> None:
    problems = {
        str(page.relative_to(ROOT)): broken for page in PAGES if (broken := broken_links(page))
    }
    assert problems == {}
    assert sum(len(links(page)) for page in PAGES) > 50  # the pages were read at all


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    readme = ROOT / "README.md"
    linked = {
        (readme.parent / target.partition("#")[0]).resolve()
        for target in links(readme)
        if target.startswith("docs/")
    }
    pages = set((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    assert pages - linked == set()


def test_the_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_github_slugs() -> None:
    assert slug("Choices where API.md is silent") == "choices-where-apimd-is-silent"
    assert slug("PgBouncer in transaction mode") == "pgbouncer-in-transaction-mode"
    assert slug("`make bench`, the figures") == "make-bench-the-figures"
    assert slug("Past one primary: the service on Citus") == "past-one-primary-the-service-on-citus"


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Two words\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#two-words) [gone](docs/b.md) [anchor](docs/a.md#three)"
        " [self](#nowhere) [out](../elsewhere.md) `[code](docs/c.md)`\n"
        "```\n[fenced](docs/d.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/b.md: no such file",
        "docs/a.md#three: no heading #three in docs/a.md",
        "#nowhere: no heading #nowhere in README.md",
        "../elsewhere.md: leaves the repository",
    ]
