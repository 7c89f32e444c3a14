"""The documentation: the CLI reference matches the parsers, the README stays short, and every relative link
or included file of the README and the pages exists (``make docs`` builds the site in strict mode too)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.MULTILINE)


def _cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "Utilities" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current():
    reference = _cli_reference()
    assert reference.PAGE.read_text(encoding="utf-8") == reference.reference(), (
        "docs/cli.md differs from the fsdiffreg parsers: run python Utilities/cli_reference.py")


def test_cli_reference_lists_every_command_and_option():
    reference = _cli_reference()
    page = reference.PAGE.read_text(encoding="utf-8")
    for name, _, parser in reference._subcommands(reference.build_parser()):
        section = page.split(f"## `fsdiffreg {name}`\n", 1)[1].split("\n## ", 1)[0]
        flags = {f for a in parser._actions for f in a.option_strings if f not in ("-h", "--help")}
        missing = [f for f in flags if f"`{f}" not in section and f"--[no-]{f[5 if f.startswith('--no-') else 2:]}"
                   not in section]
        assert not missing, f"fsdiffreg {name}: {missing} not in docs/cli.md"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the details belong in docs/"


def _local_targets(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # links inside code blocks are not links
    return [t.split("#")[0] for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_relative_links_exist(page: Path):
    missing = [t for t in _local_targets(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_included_files_exist(page: Path):
    missing = [s for s in SNIPPET.findall(page.read_text(encoding="utf-8")) if not (ROOT / s).is_file()]
    assert not missing, f"{page.relative_to(ROOT)} includes missing files: {missing}"


def test_every_page_is_in_the_site():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert [p.name for p in PAGES if f": {p.name}" not in nav] == []


def test_the_diagrams_are_written_from_their_sources_and_need_no_network():
    """docs/diagrams/*.svg are Graphviz's pictures of the .dot beside them as they are now (no Graphviz needed to
    check: each SVG records its source's SHA256), and no page draws with Mermaid (a script from a CDN)."""
    spec = importlib.util.spec_from_file_location("diagrams", ROOT / "Utilities" / "diagrams.py")
    diagrams = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagrams)
    sources = sorted(diagrams.FOLDER.glob("*.dot"))
    assert sources and diagrams.stale() == []
    shown = "".join(page.read_text(encoding="utf-8") for page in PAGES)
    assert all(f"diagrams/{dot.stem}.svg" in shown for dot in sources)
    assert "```mermaid" not in shown and "mermaid" not in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
