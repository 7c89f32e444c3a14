"""Displacement fields in physical space: from network flows to ITK fields, applying and writing them.

An ITK displacement field holds, at each point x of its grid, the vector u(x) in LPS
millimetres such that x + u(x) is the corresponding point of the moving image.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk

from ..errors import WriteError
from ..files import write_failure, written
from .imageio import holds, write_image

NIFTI_VECTOR, NIFTI_DISPLACEMENT = 1007, 1006  # NIfTI intent codes: vector, displacement vector
INTENT_OFFSET = 68  # of intent_code (int16) in a NIfTI-1 header


def flow_to_field(flow: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """A flow (3, D, H, W) in grid voxels along (D, H, W) -> an ITK field on ``grid``."""
    ijk = np.moveaxis(flow[::-1], 0, -1).astype(np.float64)  # (D, H, W, 3) ordered (i, j, k)
    matrix = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())[None, :]
    field = sitk.GetImageFromArray(ijk @ matrix.T, isVector=True)
    field.CopyInformation(grid)
    return field


def field_to_flow(field: sitk.Image) -> np.ndarray:
    """An ITK field -> a flow (3, D, H, W) in voxels of the field's own grid."""
    matrix = np.array(field.GetDirection()).reshape(3, 3) * np.array(field.GetSpacing())[None, :]
    ijk = sitk.GetArrayFromImage(field) @ np.linalg.inv(matrix).T
    return np.moveaxis(ijk, -1, 0)[::-1].astype(np.float32)


def resample_field(field: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """The same physical displacements sampled on ``reference``'s grid (zero outside)."""
    out = sitk.Resample(field, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    return out


def apply_field(image: sitk.Image, field: sitk.Image, nearest: bool = False) -> sitk.Image:
    """``image`` resampled onto the field's grid through the field (labels: nearest)."""
    transform = sitk.DisplacementFieldTransform(sitk.Image(field))  # it takes ownership: pass a copy
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, field, transform, interp, 0.0, image.GetPixelID())


def write_field(field: sitk.Image, path: Path, compression: int = 6) -> None:
    """``field`` as a gzipped NIfTI displacement field, as Slicer and ITK 5.4 write one: intent 1006
    (displacement vector), its vectors stored in RAS; ITK 5.4 and later (Slicer 5.8+, SimpleITK 2.4+) read
    them back in LPS. Slicer warns that a field of any other intent "may not contain valid displacement field".

    SimpleITK writes a vector image with intent 1007 (vector), as stored: so the vectors are turned to RAS,
    written uncompressed beside ``path`` (hidden), given intent 1006 and compressed into ``path``, which is
    then read back whole (WriteError, naming ``path`` and the cause, where it does not hold the field).
    """
    ras = sitk.GetArrayFromImage(field)
    ras[..., :2] *= -1
    image = sitk.GetImageFromArray(ras, isVector=True)
    image.CopyInformation(field)
    plain = path.with_name(f".{path.name.split('.')[0]}.nii")
    try:
        try:
            write_image(image, plain)
        except WriteError as err:
            raise WriteError(path, err.cause) from None
        with written(path), plain.open("r+b") as file:
            set_intent(file, path.name)
            file.seek(0)
            with gzip.open(path, "wb", compresslevel=compression) as packed:
                shutil.copyfileobj(file, packed)
    finally:
        plain.unlink(missing_ok=True)
    if not holds(path, image):
        raise WriteError(path, write_failure(path))


def set_intent(file: BinaryIO, name: str) -> None:
    """Turn the intent of the NIfTI-1 file open in ``file`` from vector to displacement vector."""
    header = file.read(INTENT_OFFSET + 2)
    order = next((o for o in "<>" if struct.unpack(f"{o}i", header[:4])[0] == 348), None)
    if order is None or struct.unpack_from(f"{order}h", header, INTENT_OFFSET)[0] != NIFTI_VECTOR:
        raise OSError(f"cannot write {name}: SimpleITK wrote no NIfTI-1 vector image")
    file.seek(INTENT_OFFSET)
    file.write(struct.pack(f"{order}h", NIFTI_DISPLACEMENT))
