"""What a ``register`` or ``track`` set records and refuses: its inputs described for metrics.json, and
images with NaN or infinite values, which are never written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import OutputError
from ..model.weights import sha256


def describe(path: str | Path) -> dict:
    """An input as metrics.json names it: absolute path, and a file's size and SHA256 (a folder's file count and
    the SHA256 of its files' relative paths and SHA256s, subfolders' too, hidden ones left out)."""
    path = Path(path).resolve()
    if path.is_dir():
        files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        listing = "".join(f"{name}\0{sha256(path / name)}\n" for name in files)
        return {"path": str(path), "files": len(files), "sha256": hashlib.sha256(listing.encode()).hexdigest()}
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256(path)}


def refuse_non_finite(images: dict[str, sitk.Image]) -> None:
    """OutputError naming the first output (by file name) that holds NaN or infinite values."""
    for name, image in images.items():
        if not np.all(np.isfinite(sitk.GetArrayViewFromImage(image))):
            raise OutputError(f"the registration gave NaN or infinite values in {name}; nothing written")
