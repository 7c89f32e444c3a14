"""The extension is ready for the Slicer Extensions Index: catalog entry, CMake metadata, licence, images.

What is checked follows the index's own rules: the catalog entry schema
(Slicer/Slicer ``Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json``), the checks its
CI runs on a submission (ExtensionsIndex ``scripts/check_description_files.py``: the project
name matches the entry's file name, icon and screenshot URLs are images, a licence file
lies at the root, the repository name contains "Slicer") and the developer guide's metadata
conventions (contributors as "Name (Organisation)", a one-line description, a 128 x 128 icon).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "FSDiffReg.json"  # the file to submit to the index, named after the extension
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"

#: slicer-extension-catalog-entry-schema v1.0.2, its constraints encoded (draft-07: required,
#: additionalProperties false, each property's type, enum and bounds).
REQUIRED = ("$schema", "category", "scm_url")
PROPERTIES = {
    "$schema": {"type": str},
    "category": {"type": str},
    "scm_url": {"type": str},
    "scm_revision": {"type": str},
    "scm_type": {"type": str, "enum": ("git", "local")},
    "build_dependencies": {"type": list, "items": str},
    "dicom_support_rule": {"type": str},
    "build_subdirectory": {"type": str},
    "enabled": {"type": bool},
    "tier": {"type": int, "minimum": 1, "maximum": 5},
}

#: The repository's raw-file address that the CMake image URLs must start with.
RAW = "https://raw.githubusercontent.com/FSDiffReg/SlicerFSDiffReg/main/"
SCREENSHOT_SIZE = (1280, 720)
ICON_SIZE = (128, 128)
MAX_SCREENSHOT_BYTES = 512 * 1024
#: Standard licence texts by SPDX id: words their first lines must hold.
LICENCE_TITLES = {"Apache-2.0": ("Apache License", "Version 2.0, January 2004")}
CONTRIBUTOR = r"[^(),]+? \([^()]+\)"


def schemaErrors(entry: dict) -> list[str]:
    """Where ``entry`` breaks the catalog entry schema (empty: valid)."""
    errors = [f"missing required {key}" for key in REQUIRED if key not in entry]
    for key, value in entry.items():
        rule = PROPERTIES.get(key)
        if rule is None:
            errors.append(f"unknown property {key}")
            continue
        expected = rule["type"]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors.append(f"{key} is not a {expected.__name__}")
            continue
        if "enum" in rule and value not in rule["enum"]:
            errors.append(f"{key} is not one of {rule['enum']}")
        if "items" in rule and not all(isinstance(item, rule["items"]) for item in value):
            errors.append(f"{key} holds an item that is not a {rule['items'].__name__}")
        if not rule.get("minimum", value) <= value <= rule.get("maximum", value):
            errors.append(f"{key} is out of range")
    return errors


def cmakeMetadata(path: Path = ROOT / "CMakeLists.txt") -> dict[str, str]:
    """The ``set(EXTENSION_X "value")`` lines of the top-level CMakeLists, and the project name."""
    text = path.read_text()
    metadata = dict(re.findall(r'set\s*\(\s*(EXTENSION_\w+)\s+"([^"]*)"\s*\)', text))
    metadata["PROJECT"] = re.search(r"project\s*\(\s*([^\s)]+)", text).group(1)
    return metadata


def pngSize(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (fails on anything that is not a PNG)."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def repositoryFile(url: str) -> Path:
    """The file in this repository that a raw GitHub URL of its main branch names."""
    assert url.startswith(RAW), f"{url} is not a file of {RAW}"
    return ROOT / url[len(RAW):]


@pytest.fixture(scope="module")
def entry() -> dict:
    return json.loads(ENTRY.read_text())


@pytest.fixture(scope="module")
def cmake() -> dict[str, str]:
    return cmakeMetadata()


def test_catalog_entry_follows_the_schema(entry):
    assert entry["$schema"] == SCHEMA_URL
    assert schemaErrors(entry) == []


@pytest.mark.parametrize("change, error", [
    (lambda e: e.pop("scm_url"), "missing required scm_url"),
    (lambda e: e.update(homepage="https://example.org"), "unknown property homepage"),
    (lambda e: e.update(tier="1"), "tier is not a int"),
    (lambda e: e.update(tier=6), "tier is out of range"),
    (lambda e: e.update(enabled=1), "enabled is not a bool"),
    (lambda e: e.update(build_dependencies=["PyTorch", 3]), "build_dependencies holds an item that is not a str"),
    (lambda e: e.update(scm_type="svn"), "scm_type is not one of ('git', 'local')"),
])
def test_schema_check_refuses_bad_entries(entry, change, error):
    broken = dict(entry)
    change(broken)
    assert error in schemaErrors(broken)


def test_catalog_entry_agrees_with_cmake(entry, cmake):
    assert cmake["PROJECT"] == ENTRY.stem
    assert entry["category"] == cmake["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == cmake["EXTENSION_DEPENDS"].split()
    assert entry["scm_url"] == cmake["EXTENSION_HOMEPAGE"] + ".git"
    url = urlsplit(entry["scm_url"])
    assert url.scheme in ("https", "git")
    assert "slicer" in Path(url.path).stem.lower()


def test_screenshot_is_a_png_of_the_expected_size(cmake):
    urls = cmake["EXTENSION_SCREENSHOTURLS"].split()
    assert urls, "no screenshot URL"
    for url in urls:
        path = repositoryFile(url)
        assert path.is_file(), f"{url}: {path.relative_to(ROOT)} is not in the repository"
        assert pngSize(path) == SCREENSHOT_SIZE
        assert path.stat().st_size <= MAX_SCREENSHOT_BYTES


def test_icon_is_a_128_pixel_png(cmake):
    assert pngSize(repositoryFile(cmake["EXTENSION_ICONURL"])) == ICON_SIZE


def test_licence_file_matches_pyproject():
    licence = re.search(r'^license\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    text = (ROOT / "LICENSE").read_text()
    for words in LICENCE_TITLES[licence]:
        assert words in text[:400], f"LICENSE is not the {licence} text"
    assert re.search(r"^Copyright \d{4} \S", text, re.MULTILINE)


def test_description_names_the_licences(cmake):
    description = cmake["EXTENSION_DESCRIPTION"]
    assert "\n" not in description and ";" not in description  # one s4ext line, not a CMake list
    for words in ("CC BY-NC-SA 4.0", "ACDC", "non-commercial", "Apache-2.0"):
        assert words in description


@pytest.mark.parametrize("contributors, ok", [
    ("FSDiffReg developers (FSDiffReg project)", True),
    ("Jane Roe (Superware), John Doe (Lab, University)", True),
    ("FSDiffReg developers", False),
    ("Jane Roe (Superware), John Doe", False),
])
def test_contributor_pattern(contributors, ok):
    assert bool(re.fullmatch(rf"{CONTRIBUTOR}(, {CONTRIBUTOR})*", contributors)) == ok


def test_contributors_are_name_and_organisation(cmake):
    assert re.fullmatch(rf"{CONTRIBUTOR}(, {CONTRIBUTOR})*", cmake["EXTENSION_CONTRIBUTORS"])
