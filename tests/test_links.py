"""Every file a page of the project cites lies in the repository: a user's clone can follow each link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", REPO / "config" / "README.md", *REPO.glob("docs/*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# files of the source study's materials that live outside the repository
OUTSIDE = ("METHOD.md", "shared/reference")


def local_targets(page: Path) -> list[str]:
    targets = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a web address, mailto:, or an anchor on the same page
        targets.append(target.split("#")[0])
    return targets


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_resolve(page):
    missing = [target for target in local_targets(page) if not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to files not in the repository: {missing}"


def test_no_page_or_source_cites_files_outside_the_repository():
    cited = []
    for path in [*PAGES, *REPO.glob("src/dpst/**/*.py"), *REPO.glob("workflow/**/*.*"), *REPO.glob("tests/*.py")]:
        if path.is_file() and path.suffix in (".md", ".py", ".smk", ".yaml", ".rst") and path.name != "test_links.py":
            text = path.read_text(errors="replace")
            cited += [f"{path.relative_to(REPO)}: {name}" for name in OUTSIDE if name in text]
    assert not cited, f"cited but not in the repository: {cited}"
