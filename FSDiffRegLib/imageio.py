"""Reading and checking the images a user gives, and writing outputs atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ACDC's sform notes are harmless noise


def read_image(path: str | Path, role: str) -> sitk.Image:
    """Read a 3D scalar image SimpleITK understands, or raise InputError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} image not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(f"cannot read {role} image {path}: {first}") from None
    check_image(image, role)
    return image


def check_image(image: sitk.Image, role: str) -> None:
    """Require a non-empty, finite, scalar 3D image with some contrast."""
    size = image.GetSize()
    if image.GetDimension() != 3:
        raise InputError(f"{role} image must be 3D, got {image.GetDimension()}D of size {size}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{role} image must have one component per voxel")
    if 0 in size or min(size) < 2:
        raise InputError(f"{role} image is empty or flat: size {size}")
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{role} image contains NaN or infinite values")
    if float(array.max()) == float(array.min()):
        raise InputError(f"{role} image is empty: every voxel is {float(array.min())}")


def check_labels(labels: sitk.Image, image: sitk.Image, role: str) -> None:
    """Labels must be a 3D integer image on the same grid as their image."""
    if labels.GetDimension() != 3:
        raise InputError(f"{role} labels must be 3D, got {labels.GetDimension()}D")
    same = labels.GetSize() == image.GetSize() and np.allclose(
        labels.GetOrigin() + labels.GetSpacing() + labels.GetDirection(),
        image.GetOrigin() + image.GetSpacing() + image.GetDirection(),
        atol=1e-3,
    )
    if not same:
        raise InputError(f"{role} labels are not on the {role} image's grid")


@contextmanager
def atomic_directory(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; on success move its files into ``out_dir``.

    On any error the temporary folder is removed and ``out_dir`` is left as it was.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield staging
        out_dir.mkdir(exist_ok=True)
        for item in staging.iterdir():
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
