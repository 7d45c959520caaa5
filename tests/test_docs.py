"""The documentation: every ``docs/methods.md §…`` citation in the code resolves, links resolve, no machine paths."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHODS = ROOT / "docs" / "methods.md"
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

_NUM = r"\d+(?:\.\d+)*"
#: one reference: ``§1.4``, or a range ``§4.2–§4.4`` / ``§0.3–0.5`` / ``§0.3-0.5``
_REF = rf"§\s?{_NUM}(?:\s*[–-]\s*§?\s?{_NUM})?"
#: ``docs/methods.md`` followed by section references, single, ranges or lists ``§1, §8`` (each item with its ``§``)
_CITATION = re.compile(rf"docs/methods\.md\s+({_REF}(?:\s*(?:,|and|/)\s*{_REF})*)")
_SECTION = re.compile(rf"§?\s?({_NUM})")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|tmp)(?![\w-])")
_REGISTRY_HOSTS = ("pypi.org", "pypi.python.org", "pythonhosted.org", "download.pytorch.org", "anaconda.org",
                   "anaconda.com", "npmjs.org", "npmjs.com", "yarnpkg.com", "proxy.golang.org", "crates.io",
                   "rubygems.org", "maven.org", "maven.apache.org", "docker.io", "ghcr.io", "quay.io", "nuget.org",
                   "packagist.org")


def _headings(path: Path) -> list[str]:
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            out.append(m.group(2))
    return out


def _section_numbers() -> set[str]:
    """Section numbers of the headings of docs/methods.md: the leading ``§X`` token of each heading's text."""
    nums = set()
    for text in _headings(METHODS):
        m = re.match(rf"§({_NUM})(?![\d.])", text)
        if m:
            nums.add(m.group(1))
    return nums


def _citations() -> list[tuple[str, int, str]]:
    """``(file, line, section number)`` for every section cited as ``docs/methods.md §…`` in the code and tests."""
    out = []
    for path in sorted([*(ROOT / "scclust_core").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        rel = str(path.relative_to(ROOT))
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for m in _CITATION.finditer(line):
                out.extend((rel, i, n) for n in _SECTION.findall(m.group(1)))
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (letters, digits, ``_``, ``-`` kept),
    spaces → ``-``."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for h in _headings(path):
        s = _slug(h)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def test_the_citation_pattern_reads_ranges_and_lists():
    def nums(text: str) -> list[str]:
        return [n for m in _CITATION.finditer(text) for n in _SECTION.findall(m.group(1))]

    assert nums("(docs/methods.md §0.3–§0.5)") == ["0.3", "0.5"]
    assert nums("(docs/methods.md §0.3–0.5) and more") == ["0.3", "0.5"]
    assert nums("docs/methods.md §4.2-4.4, §4.9:") == ["4.2", "4.4", "4.9"]
    assert nums("(docs/methods.md §1, §8)") == ["1", "8"]
    assert nums("docs/methods.md §4.3 steps 1–7") == ["4.3"]
    assert nums("docs/methods.md §1.4 item 2") == ["1.4"]


def test_every_cited_section_has_a_heading():
    cites = _citations()
    assert len(cites) >= 20, "the code cites docs/methods.md; did the citation format change?"
    have = _section_numbers()
    missing = sorted({f"§{n} ({f}:{i})" for f, i, n in cites if n not in have})
    assert not missing, f"cited in the code but no heading of docs/methods.md starts with it: {missing}"


def test_no_citation_of_the_old_spec_file():
    spec = "METHODS" + ".md"  # the spec outside the repository (spelled in two parts so this file does not match)
    old = [f"{p.relative_to(ROOT)}:{i}"
           for p in [*(ROOT / "scclust_core").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1) if spec in line]
    assert not old, f"cite docs/methods.md instead: {old}"


def test_methods_sections_are_unique():
    nums = [re.match(rf"§({_NUM})", h).group(1) for h in _headings(METHODS) if re.match(rf"§{_NUM}", h)]
    assert len(nums) == len(set(nums)), sorted(n for n in nums if nums.count(n) > 1)


def test_readme_links_the_docs():
    text = README.read_text(encoding="utf-8")
    targets = {t.split("#")[0] for t in _LINK.findall(text)}
    for doc in ("docs/methods.md", "docs/benchmarks.md"):
        assert doc in targets, f"README.md does not link {doc}"
        assert (ROOT / doc).is_file()


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    bad = []
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no such heading)")
    assert not bad, bad


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_paths_or_registry_hosts(path: Path):
    bad = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if _MACHINE_PATH.search(line):
            bad.append(f"line {i}: machine path: {line.strip()[:100]}")
        low = line.lower()
        bad += [f"line {i}: package-registry host {h}" for h in _REGISTRY_HOSTS if h in low]
    assert not bad, bad
