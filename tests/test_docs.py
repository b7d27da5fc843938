"""The architecture lives in the repository: ``docs/architecture.md``.

Comments, docstrings and documents cite it as ``docs/architecture.md §N`` (or ``§N.M``); every
cited section must exist as a numbered heading, so a renumbering or a removed section shows
up here instead of leaving dangling references. Nothing may point at an architecture file
outside the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"

# Written so that this file does not match them itself.
OUTSIDE_REFERENCES = re.compile(r"\.\./shared/ARCHITECTURE\.md|ARCHITECTURE(?:\.md)?\s*§")
CITATION = re.compile(r"docs/architecture\.md[`)\]]*\s*§\s*(\d+(?:\.\d+)?)")
HEADING = re.compile(r"^(#{2,3}) (\d+(?:\.\d+)?)\.? +\S")
SECTION_SIGN = re.compile(r"§\s*(\d+(?:\.\d+)?)")

# Outside-reference check only: the benchmark log quotes history verbatim.
NOT_CHECKED_FOR_OUTSIDE_REFERENCES = {"bench/RESULTS.md"}
# Directories that are never the project's own files (fallback walk without git).
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".streamspace", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class Hit:
    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text.strip()}"


def repository_files() -> list[str]:
    """Tracked and new (not ignored) files, relative to the root; ``.venv`` and ``.git`` excluded."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8")
        names = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        names = []
        for directory, subdirs, files in os.walk(ROOT):
            subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS]
            names += [str((Path(directory) / f).relative_to(ROOT)) for f in files]
    return sorted(n for n in names if n.split("/", 1)[0] not in (".venv", ".git") and (ROOT / n).is_file())


def text_of(name: str) -> str | None:
    """The file's text, or None for a binary file."""
    data = (ROOT / name).read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def matches(pattern: re.Pattern[str], names: list[str]) -> list[tuple[Hit, re.Match[str]]]:
    found = []
    for name in names:
        text = text_of(name)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            found += [(Hit(name, number, line), match) for match in pattern.finditer(line)]
    return found


def sections() -> set[str]:
    """Numbers of the document's headings: ``## N. Title`` and ``### N.M Title``."""
    numbers: list[str] = []
    current = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = HEADING.match(line)
        if heading is None:
            continue
        level, number = heading.groups()
        if level == "##":
            assert "." not in number, f"section heading with a subsection number: {line}"
            current = number
        else:
            assert number.startswith(f"{current}."), f"subsection {number} is not under section {current}: {line}"
        numbers.append(number)
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    assert not duplicates, f"docs/architecture.md numbers these sections twice: {duplicates}"
    return set(numbers)


def test_nothing_points_at_an_architecture_file_outside_the_repository():
    names = [n for n in repository_files() if n not in NOT_CHECKED_FOR_OUTSIDE_REFERENCES]
    assert "README.md" in names and "sessions_app/state.py" in names  # the listing found the project
    hits = [str(hit) for hit, _ in matches(OUTSIDE_REFERENCES, names)]
    assert not hits, "cite docs/architecture.md §N instead:\n" + "\n".join(hits)


def test_every_cited_section_exists():
    known = sections()
    assert {str(n) for n in range(1, 16)} <= known, "docs/architecture.md is missing numbered sections"
    citations = matches(CITATION, repository_files())
    assert len(citations) >= 20, (
        "fewer than 20 citations of docs/architecture.md found: does CITATION match how the code cites it?"
    )
    dangling = [f"{hit} (§{match.group(1)})" for hit, match in citations if match.group(1) not in known]
    assert not dangling, "these cite sections docs/architecture.md does not have:\n" + "\n".join(dangling)


def test_the_document_refers_only_to_its_own_sections():
    known = sections()
    references = matches(SECTION_SIGN, ["docs/architecture.md"])
    assert references, "docs/architecture.md refers to none of its sections"
    dangling = [f"{hit} (§{match.group(1)})" for hit, match in references if match.group(1) not in known]
    assert not dangling, "docs/architecture.md refers to sections it does not have:\n" + "\n".join(dangling)


def test_the_readme_links_the_architecture():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/architecture.md)" in readme
