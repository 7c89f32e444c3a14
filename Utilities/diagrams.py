"""Write each ``docs/diagrams/*.dot`` (Graphviz) as the SVG beside it, which the docs show and git keeps.

``python Utilities/diagrams.py`` needs Graphviz's ``dot`` (``apt-get install graphviz``); the build and the tests
do not: each SVG records its source's SHA256 (``stamp``), and ``--check`` (as ``Testing/test_docs.py``) exits 1
when a source changed since its SVG was written.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "docs" / "diagrams"


def stamp(source: Path) -> str:
    """The comment an SVG opens with: the source it was written from and that source's SHA256."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return f"<!-- Written from {source.name} (sha256 {digest}) by Utilities/diagrams.py: do not edit by hand. -->"


def stale() -> list[str]:
    """The sources whose SVG is missing or was written from another version of them."""
    return [dot.name for dot in sorted(FOLDER.glob("*.dot"))
            if not dot.with_suffix(".svg").is_file() or stamp(dot) not in dot.with_suffix(".svg").read_text("utf-8")]


def write(dot: Path) -> None:
    svg = subprocess.run(["dot", "-Tsvg", str(dot)], check=True, capture_output=True, text=True).stdout
    head, _, rest = svg.partition("\n")  # the XML declaration stays first
    dot.with_suffix(".svg").write_text(f"{head}\n{stamp(dot)}\n{rest}", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        names = stale()
        sys.exit(f"stale diagrams (run python Utilities/diagrams.py): {', '.join(names)}" if names else 0)
    for source in sorted(FOLDER.glob("*.dot")):
        write(source)
