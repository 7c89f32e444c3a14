"""MkDocs hook (mkdocs.yml ``hooks``): the module's screenshot stays at ``Screenshots/FSDiffReg.png`` (where the
Extensions Manager reads it); the pages link it as ``../Screenshots/FSDiffReg.png``, which GitHub shows, and the
site serves the same file at ``Screenshots/FSDiffReg.png``, without a second copy."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
SHARED = ("Screenshots/FSDiffReg.png",)  # repository files outside docs/ that pages show


def on_files(files: Files, config) -> Files:
    for path in SHARED:
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page: Page, config, files: Files) -> str:
    """Links to ``../<shared file>`` from a page at the top of docs/ point at the file the site serves."""
    if "/" in page.file.src_uri:
        return markdown
    for path in SHARED:
        markdown = markdown.replace(f"](../{path})", f"]({path})")
    return markdown
