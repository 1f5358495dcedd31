"""The README stays one screen per use, and no link in it or in docs/ points at a file that is not there."""

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def _documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_at_most_10000_characters():
    assert len((ROOT / "README.md").read_text(encoding="utf-8")) <= 10_000


def test_every_relative_link_resolves():
    broken = []
    for document in _documents():
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or a heading on the same page
            path = (document.parent / unquote(target.split("#", 1)[0])).resolve()
            if not path.exists():
                broken.append(f"{document.relative_to(ROOT)} → {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
