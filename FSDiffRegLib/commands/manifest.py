"""The manifest of a cohort for ``fsdiffreg batch``: a CSV file with a header, one case a row.

The header says what every row does (one kind per manifest):

- ``id,fixed,moving[,moving_labels]``: register ``moving`` to ``fixed`` (as ``fsdiffreg register``);
- ``id,cine,labels[,reference_frame]``: track ``cine`` from the labels of its reference frame (as
  ``fsdiffreg track``; 1-based, default 1).

Columns may come in any order; a file path relative to the manifest's folder is read from there.
An ``id`` names the case's folder under ``--out-root``: letters, digits, ``.``, ``_`` and ``-``, not
starting with ``.``, unique in the manifest. Blank lines are skipped. Imports nothing heavy.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

KINDS = {"register": (("id", "fixed", "moving"), ("moving_labels",)),
         "track": (("id", "cine", "labels"), ("reference_frame",))}
PATH_COLUMNS = ("fixed", "moving", "moving_labels", "cine", "labels")
CASE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Case:
    """One row: its id, its line in the manifest, its files by column (absolute) and, for track, the reference."""

    id: str
    line: int
    paths: dict[str, Path] = field(default_factory=dict)
    reference_frame: int = 1


@dataclass(frozen=True)
class Manifest:
    kind: str  # "register" or "track"
    cases: list[Case]


def manifest_kind(header: list[str], where: str) -> str:
    """The kind the header's columns say, or InputError naming the column that does not fit."""
    columns = set(header)
    kinds = [kind for kind, (required, _) in KINDS.items() if set(required) <= columns]
    if len(kinds) != 1:
        raise InputError(f"{where} line 1 (the header): give the columns id,fixed,moving[,moving_labels] (register) "
                         f"or id,cine,labels[,reference_frame] (track), got {','.join(header)}")
    required, optional = KINDS[kinds[0]]
    for column in header:
        if column not in required + optional:
            raise InputError(f"{where} line 1 column {column!r}: not a column of a {kinds[0]} manifest "
                             f"({','.join(required + optional)})")
        if header.count(column) > 1:
            raise InputError(f"{where} line 1 column {column!r}: given twice")
    return kinds[0]


def read_manifest(path: str | Path) -> Manifest:
    """The manifest's cases, or InputError naming the line and column that is wrong."""
    path = Path(path)
    where = f"manifest {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise InputError(f"cannot read the {where}: {str(reason).lower()}") from None
    rows = [(number, row) for number, row in enumerate(csv.reader(text.splitlines()), start=1)
            if any(cell.strip() for cell in row)]
    if not rows or rows[0][0] != 1:
        raise InputError(f"{where} line 1: give a header, e.g. id,fixed,moving")
    header = [cell.strip() for cell in rows[0][1]]
    kind = manifest_kind(header, where)
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, row in rows[1:]:
        if len(row) != len(header):
            raise InputError(f"{where} line {number}: {len(row)} fields, the header has {len(header)}")
        case = read_case(dict(zip(header, (cell.strip() for cell in row))), number, path.parent, where)
        if case.id in seen:
            raise InputError(f"{where} line {number} column 'id': {case.id!r} is the id of line {seen[case.id]} too")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise InputError(f"{where}: no cases below the header")
    return Manifest(kind, cases)


def read_case(cells: dict[str, str], line: int, folder: Path, where: str) -> Case:
    """One row's case; optional cells may be empty."""
    required = next(req for req, _ in KINDS.values() if set(req) <= set(cells))
    for column in required:
        if not cells[column]:
            raise InputError(f"{where} line {line} column {column!r}: empty")
    if not CASE_ID.fullmatch(cells["id"]) or cells["id"] in (".", ".."):
        raise InputError(f"{where} line {line} column 'id': {cells['id']!r} is not a folder name of letters, "
                         "digits, '.', '_' and '-'")
    paths = {column: folder / cells[column] for column in PATH_COLUMNS if cells.get(column)}
    reference = cells.get("reference_frame") or "1"
    if not reference.isdigit() or int(reference) < 1:
        raise InputError(f"{where} line {line} column 'reference_frame': frames are counted from 1, got {reference!r}")
    return Case(cells["id"], line, {k: Path(p).absolute() for k, p in paths.items()}, int(reference))
